//! Runs inside the sandbox in the escape tests and tries to break out.
//! `attest-probe MODE [ARGS...]`. For every attempt it prints `blocked: ...`
//! or `ESCAPED: ...`; it exits 3 if any attempt succeeded, 4 if a sanity
//! check (something that must work in the sandbox) failed, else 0. The limit
//! modes (forkbomb, memhog, fill, spin) exhaust a resource instead.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::time::Duration;

struct Probe {
    escaped: bool,
    insane: bool,
}

impl Probe {
    /// `ok` = the attack failed.
    fn check(&mut self, what: &str, attack_failed: bool, detail: String) {
        if attack_failed {
            println!("blocked: {what}: {detail}");
        } else {
            println!("ESCAPED: {what}: {detail}");
            self.escaped = true;
        }
    }

    fn sanity(&mut self, what: &str, ok: bool, detail: String) {
        if ok {
            println!("sane: {what}");
        } else {
            println!("INSANE: {what}: {detail}");
            self.insane = true;
        }
    }
}

fn res<T, E: std::fmt::Debug>(r: &Result<T, E>) -> String {
    match r {
        Ok(_) => "succeeded".into(),
        Err(e) => format!("{e:?}"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map(String::as_str).unwrap_or("");
    let mut p = Probe {
        escaped: false,
        insane: false,
    };
    match mode {
        "net" => {
            let port: u16 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1);
            let mut targets: Vec<SocketAddr> = vec![
                format!("127.0.0.1:{port}")
                    .parse()
                    .unwrap_or_else(|_| unreachable!()),
                "1.1.1.1:53".parse().unwrap_or_else(|_| unreachable!()),
                "8.8.8.8:443".parse().unwrap_or_else(|_| unreachable!()),
                "10.0.2.2:22".parse().unwrap_or_else(|_| unreachable!()),
                "[2606:4700:4700::1111]:53"
                    .parse()
                    .unwrap_or_else(|_| unreachable!()),
            ];
            for ip in args.iter().skip(2) {
                if let Ok(a) = format!("{ip}:{port}").parse() {
                    targets.push(a);
                }
            }
            for t in targets {
                let r = TcpStream::connect_timeout(&t, Duration::from_millis(500));
                p.check(&format!("tcp connect {t}"), r.is_err(), res(&r));
            }
            let r = "example.com:443"
                .to_socket_addrs()
                .map(|v| v.collect::<Vec<_>>());
            p.check(
                "resolve example.com",
                r.as_ref().map(|v| v.is_empty()).unwrap_or(true),
                res(&r),
            );
            let sent = UdpSocket::bind("0.0.0.0:0").and_then(|s| s.send_to(b"x", "8.8.8.8:53"));
            p.check("udp send to 8.8.8.8:53", sent.is_err(), res(&sent));
            let lo = std::net::TcpListener::bind("127.0.0.1:0");
            p.sanity("own loopback works", lo.is_ok(), res(&lo));
        }
        "read" => {
            for path in &args[1..] {
                for candidate in [
                    path.clone(),
                    format!("/proc/1/root{path}"),
                    format!("/proc/self/root{path}"),
                ] {
                    let r = std::fs::read(&candidate);
                    p.check(&format!("read {candidate}"), r.is_err(), res(&r));
                }
            }
        }
        "write-rootfs" => {
            for path in [
                "/escape",
                "/usr/escape",
                "/etc/escape",
                "/bin/escape",
                "/usr/bin/escape",
                "/dev/escape",
                "/proc/escape",
                "/etc/passwd",
            ] {
                let r = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path);
                p.check(&format!("write {path}"), r.is_err(), res(&r));
            }
            let r = std::fs::create_dir("/usr/lib/escape");
            p.check("mkdir /usr/lib/escape", r.is_err(), res(&r));
            use std::os::unix::fs::PermissionsExt;
            let r = std::fs::set_permissions("/usr/bin", std::fs::Permissions::from_mode(0o777));
            p.check("chmod /usr/bin", r.is_err(), res(&r));
            let ok = std::fs::write("/build/ok", "ok");
            p.sanity("write /build/ok", ok.is_ok(), res(&ok));
            let ok = std::fs::write("/tmp/ok", "ok");
            p.sanity("write /tmp/ok", ok.is_ok(), res(&ok));
        }
        "modify-input" => {
            let ok = std::fs::write("/build/input.txt", "changed by the step")
                .and_then(|()| std::fs::remove_file("/build/sub/deep.txt"))
                .and_then(|()| std::fs::write("/build/new.txt", "new"))
                .and_then(|()| std::fs::create_dir("/build/sub/newdir"));
            p.sanity("modify the work layer", ok.is_ok(), res(&ok));
            use std::os::unix::fs::PermissionsExt;
            let ok = std::fs::set_permissions(
                "/build/input.txt",
                std::fs::Permissions::from_mode(0o777),
            );
            p.sanity("chmod in the work layer", ok.is_ok(), res(&ok));
        }
        "pids" => {
            let host_pid: i32 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1);
            let r = nix::sys::signal::kill(nix::unistd::Pid::from_raw(host_pid), None);
            p.check(
                &format!("signal 0 to host pid {host_pid}"),
                r.is_err(),
                res(&r),
            );
            let r = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(host_pid),
                nix::sys::signal::Signal::SIGTERM,
            );
            p.check(
                &format!("SIGTERM to host pid {host_pid}"),
                r.is_err(),
                res(&r),
            );
            let pids: Vec<String> = std::fs::read_dir("/proc")
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
                        .collect()
                })
                .unwrap_or_default();
            p.check(
                "see host processes in /proc",
                pids.len() <= 2,
                format!("{pids:?}"),
            );
            let me = std::process::id();
            p.check(
                "own pid is small (pid namespace)",
                me <= 3,
                format!("pid {me}"),
            );
        }
        "ptrace" => {
            // SAFETY: the probe is single-threaded.
            match unsafe { nix::unistd::fork() } {
                Ok(nix::unistd::ForkResult::Child) => {
                    std::thread::sleep(Duration::from_secs(5));
                    std::process::exit(0)
                }
                Ok(nix::unistd::ForkResult::Parent { child }) => {
                    let r = nix::sys::ptrace::attach(child);
                    p.check("ptrace attach to a sibling", r.is_err(), res(&r));
                    let r = nix::sys::ptrace::seize(child, nix::sys::ptrace::Options::empty());
                    p.check("ptrace seize a sibling", r.is_err(), res(&r));
                    let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                    let r = nix::sys::ptrace::attach(nix::unistd::Pid::from_raw(1));
                    p.check("ptrace attach to the init", r.is_err(), res(&r));
                }
                Err(e) => p.sanity("fork", false, format!("{e}")),
            }
        }
        "ns" => {
            use nix::mount::{mount, MsFlags};
            use nix::sched::{setns, unshare, CloneFlags};
            let r = mount(
                Some("tmpfs"),
                "/tmp",
                Some("tmpfs"),
                MsFlags::empty(),
                None::<&str>,
            );
            p.check("mount tmpfs", r.is_err(), res(&r));
            let r = mount(
                Some("/"),
                "/build",
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            );
            p.check("bind mount /", r.is_err(), res(&r));
            let r = nix::mount::umount2("/proc", nix::mount::MntFlags::MNT_DETACH);
            p.check("umount /proc", r.is_err(), res(&r));
            for f in [
                CloneFlags::CLONE_NEWUSER,
                CloneFlags::CLONE_NEWNS,
                CloneFlags::CLONE_NEWNET,
                CloneFlags::CLONE_NEWPID,
            ] {
                let r = unshare(f);
                p.check(&format!("unshare {f:?}"), r.is_err(), res(&r));
            }
            for ns in ["mnt", "user", "net", "pid"] {
                let r = std::fs::File::open(format!("/proc/self/ns/{ns}"))
                    .map_err(|e| format!("{e}"))
                    .and_then(|f| setns(f, CloneFlags::empty()).map_err(|e| format!("{e}")));
                p.check(&format!("setns {ns}"), r.is_err(), res(&r));
            }
            // SAFETY: a raw clone with CLONE_NEWUSER and no stack: if it ever
            // succeeded the child exits immediately.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_clone,
                    (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_ulong,
                    0usize,
                    0usize,
                    0usize,
                    0usize,
                )
            };
            if r == 0 {
                // SAFETY: in the child, exit without running anything.
                unsafe { libc::_exit(0) };
            }
            let errno = std::io::Error::last_os_error();
            p.check("clone(CLONE_NEWUSER)", r < 0, format!("{r} {errno}"));
            // SAFETY: clone3 with a null argument: the filter answers before
            // the kernel reads it.
            let r = unsafe { libc::syscall(libc::SYS_clone3, 0usize, 0usize) };
            let errno = std::io::Error::last_os_error().raw_os_error();
            p.check(
                "clone3 is ENOSYS",
                r < 0 && errno == Some(libc::ENOSYS),
                format!("{r} {errno:?}"),
            );
            let r = nix::unistd::chroot("/build");
            p.check("chroot", r.is_err(), res(&r));
            // fork still works (clone without namespace flags is allowed)
            let out = std::process::Command::new("/bin/true").status();
            p.sanity(
                "spawn a process",
                out.map(|s| s.success()).unwrap_or(false),
                String::new(),
            );
        }
        "setuid" => {
            let bin = args.get(1).cloned().unwrap_or_default();
            let out = std::process::Command::new(&bin).arg("-u").output();
            let euid = out
                .as_ref()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_default();
            p.sanity(
                "the setuid binary ran",
                out.as_ref().map(|o| o.status.success()).unwrap_or(false),
                res(&out),
            );
            p.check(
                &format!("setuid {bin} gives euid 0"),
                euid != "0",
                format!("euid {euid:?}"),
            );
            let r = nix::unistd::setuid(nix::unistd::Uid::from_raw(0));
            p.check("setuid(0)", r.is_err(), res(&r));
        }
        "host-state" => {
            let r = nix::unistd::sethostname("escaped");
            p.check("sethostname", r.is_err(), res(&r));
            let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME);
            if let Ok(now) = now {
                let r = nix::time::clock_settime(nix::time::ClockId::CLOCK_REALTIME, now);
                p.check("clock_settime", r.is_err(), res(&r));
            }
            // SAFETY: settimeofday with a valid timeval on our stack.
            let r = unsafe {
                let tv = libc::timeval {
                    tv_sec: 1,
                    tv_usec: 0,
                };
                libc::settimeofday(&tv, std::ptr::null())
            };
            p.check("settimeofday", r != 0, format!("{r}"));
            let h = nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned());
            p.sanity(
                "hostname is fixed",
                h.as_deref().ok() == args.get(1).map(String::as_str),
                res(&h),
            );
        }
        "blockdev" => {
            for dev in [
                "/dev/vda",
                "/dev/sda",
                "/dev/nvme0n1",
                "/dev/mem",
                "/dev/kmem",
                "/dev/kmsg",
                "/dev/tty",
                "/dev/console",
                "/dev/ptmx",
            ] {
                let r = std::fs::File::open(dev);
                p.check(&format!("open {dev}"), r.is_err(), res(&r));
            }
            let r = nix::sys::stat::mknod(
                "/tmp/vda",
                nix::sys::stat::SFlag::S_IFBLK,
                nix::sys::stat::Mode::from_bits_truncate(0o600),
                nix::sys::stat::makedev(254, 0),
            );
            p.check("mknod a block device", r.is_err(), res(&r));
            let entries: Vec<String> = std::fs::read_dir("/dev")
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            let allowed = [
                "null", "zero", "full", "random", "urandom", "fd", "stdin", "stdout", "stderr",
            ];
            p.check(
                "only the minimal /dev",
                entries.iter().all(|e| allowed.contains(&e.as_str())),
                format!("{entries:?}"),
            );
            let mut b = [0u8; 8];
            let r = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
            p.sanity("read /dev/urandom", r.is_ok(), res(&r));
        }
        "identity" => {
            let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
            let field = |k: &str| {
                status
                    .lines()
                    .find(|l| l.starts_with(k))
                    .map(|l| l[k.len()..].trim().to_string())
                    .unwrap_or_default()
            };
            for cap in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
                let v = field(cap);
                p.check(
                    &format!("{cap} is empty"),
                    v.chars().all(|c| c == '0') && !v.is_empty(),
                    v,
                );
            }
            p.check(
                "NoNewPrivs",
                field("NoNewPrivs:") == "1",
                field("NoNewPrivs:"),
            );
            p.check(
                "Seccomp filter mode",
                field("Seccomp:") == "2",
                field("Seccomp:"),
            );
            let uid = field("Uid:");
            p.check(
                "uid is 1000",
                uid.split_whitespace().all(|u| u == "1000"),
                uid,
            );
            let gid = field("Gid:");
            p.check(
                "gid is 1000",
                gid.split_whitespace().all(|g| g == "1000"),
                gid,
            );
            let map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
            println!("uid_map: {}", map.trim());
            let fds: Vec<String> = std::fs::read_dir("/proc/self/fd")
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            p.check(
                "only fds 0, 1, 2 inherited",
                fds.len() <= 4 && ["0", "1", "2"].iter().all(|f| fds.contains(&f.to_string())),
                format!("{fds:?}"),
            );
            let stdin = std::fs::read_link("/proc/self/fd/0").map(|p| p.display().to_string());
            p.check(
                "stdin is /dev/null",
                stdin.as_deref().ok() == Some("/dev/null"),
                res(&stdin),
            );
            let mut env: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
            env.sort();
            for e in env {
                println!("env: {e}");
            }
            let cwd = std::env::current_dir()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            println!("cwd: {cwd}");
            // SAFETY: umask only changes our own file creation mask.
            let um = unsafe { libc::umask(0o022) };
            println!("umask: {um:o}");
        }
        "symlink-outputs" => {
            let ok = std::os::unix::fs::symlink("/etc/passwd", "/build/out-passwd")
                .and_then(|()| {
                    std::os::unix::fs::symlink("/proc/self/root/etc/passwd", "/build/out-procroot")
                })
                .and_then(|()| std::os::unix::fs::symlink("/", "/build/rootlink"))
                .and_then(|()| std::fs::create_dir("/build/dir"))
                .and_then(|()| std::fs::write("/build/dir/real", "r"))
                .and_then(|()| std::os::unix::fs::symlink("../../etc/passwd", "/build/dir/link"))
                .and_then(|()| std::fs::write("/build/good", "good"));
            p.sanity("make the symlinks", ok.is_ok(), res(&ok));
        }
        "forkbomb" => {
            let mut n = 0u64;
            loop {
                // SAFETY: single-threaded; the child only sleeps and exits.
                match unsafe { nix::unistd::fork() } {
                    Ok(nix::unistd::ForkResult::Child) => {
                        std::thread::sleep(Duration::from_secs(60));
                        std::process::exit(0)
                    }
                    Ok(_) => n += 1,
                    Err(e) => {
                        println!("fork refused after {n} processes: {e}");
                        std::process::exit(1)
                    }
                }
                if n > 100_000 {
                    println!("ESCAPED: forked {n} processes");
                    std::process::exit(3)
                }
            }
        }
        "memhog" => {
            let mut chunks: Vec<Vec<u8>> = Vec::new();
            for i in 0..4096 {
                chunks.push(vec![i as u8 | 1; 1 << 20]);
            }
            println!("ESCAPED: allocated {} MiB", chunks.len());
            std::process::exit(3)
        }
        "fill" => {
            let path = args.get(1).cloned().unwrap_or_else(|| "/build/fill".into());
            let mut f = match std::fs::File::create(&path) {
                Ok(f) => f,
                Err(e) => {
                    println!("INSANE: create {path}: {e}");
                    std::process::exit(4)
                }
            };
            let buf = vec![7u8; 1 << 16];
            let mut total = 0u64;
            loop {
                match f.write_all(&buf) {
                    Ok(()) => total += buf.len() as u64,
                    Err(e) => {
                        println!("write refused after {total} bytes: {e}");
                        std::process::exit(1)
                    }
                }
                if total > 1 << 34 {
                    println!("ESCAPED: wrote {total} bytes");
                    std::process::exit(3)
                }
            }
        }
        "socket-families" => {
            // Every family outside the allowlist, with every socket type and
            // protocol 0 (AF_KEY also with its own protocol): the answer must
            // be the filter's EAFNOSUPPORT, whatever the kernel has built in.
            // Any other answer, success or not, means the family's kernel
            // code was reached.
            let allowed = [
                libc::AF_UNIX,
                libc::AF_INET,
                libc::AF_INET6,
                libc::AF_NETLINK,
            ];
            let types = [
                libc::SOCK_STREAM,
                libc::SOCK_DGRAM,
                libc::SOCK_RAW,
                libc::SOCK_SEQPACKET,
                libc::SOCK_RDM,
            ];
            // Past AF_MAX (46 on Linux 6.x) too, so a new family is covered.
            for family in (0..64).filter(|f| !allowed.contains(f)) {
                for ty in types {
                    let protocols: &[i32] = if family == libc::AF_KEY {
                        &[0, 2]
                    } else {
                        &[0]
                    };
                    for &protocol in protocols {
                        let r = raw_socket(family, ty, protocol);
                        p.check(
                            &format!("socket({}, {ty}, {protocol})", family_name(family)),
                            r == Err(libc::EAFNOSUPPORT),
                            format!("{r:?}"),
                        );
                    }
                    let r = raw_socketpair(family, ty);
                    p.check(
                        &format!("socketpair({}, {ty})", family_name(family)),
                        r == Err(libc::EAFNOSUPPORT),
                        format!("{r:?}"),
                    );
                }
            }
            // Netlink: every protocol (MAX_LINKS is 32) but ROUTE and
            // SOCK_DIAG must be the filter's EPROTONOSUPPORT.
            for protocol in
                (0..32).filter(|p| ![libc::NETLINK_ROUTE, libc::NETLINK_SOCK_DIAG].contains(p))
            {
                let r = raw_socket(libc::AF_NETLINK, libc::SOCK_RAW, protocol);
                p.check(
                    &format!("socket(AF_NETLINK, SOCK_RAW, {protocol})"),
                    r == Err(libc::EPROTONOSUPPORT),
                    format!("{r:?}"),
                );
            }
            let r = raw_socket(libc::AF_NETLINK, libc::SOCK_DGRAM, libc::NETLINK_SOCK_DIAG);
            p.sanity(
                "socket(AF_NETLINK, NETLINK_SOCK_DIAG)",
                r.is_ok(),
                format!("{r:?}"),
            );
            for (family, ty, protocol) in [
                (libc::AF_UNIX, libc::SOCK_STREAM, 0),
                (libc::AF_INET, libc::SOCK_STREAM, 0),
                (libc::AF_INET6, libc::SOCK_DGRAM, 0),
                (libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE),
            ] {
                let r = raw_socket(family, ty, protocol);
                p.sanity(
                    &format!("socket({})", family_name(family)),
                    r.is_ok(),
                    format!("{r:?}"),
                );
            }
            let r = raw_socketpair(libc::AF_UNIX, libc::SOCK_STREAM);
            p.sanity("socketpair(AF_UNIX)", r.is_ok(), format!("{r:?}"));
            let r = std::net::TcpListener::bind("[::1]:0");
            p.sanity("listen on ::1", r.is_ok(), res(&r));
        }
        "personality" => {
            for (name, value) in [
                ("MMAP_PAGE_ZERO", 0x0100000u32),
                ("READ_IMPLIES_EXEC", 0x0400000),
                ("UNAME26", 0x0020000),
                ("PER_SVR4", 0x0000001 | 0x0400000 | 0x4000000),
                ("PER_BSD", 0x0000006),
                ("PER_LINUX with high bits", 0xdead_0000),
            ] {
                let r = raw_personality(u64::from(value));
                p.check(
                    &format!("personality({name})"),
                    r == Err(libc::EPERM),
                    format!("{r:?}"),
                );
                // Whatever happened, back to plain Linux for the next try.
                let _ = raw_personality(0);
            }
            // The argument is a 32-bit int: an allowed value in the low half
            // with junk above is what the kernel reads as that value.
            let r = raw_personality(0x1_ffff_ffff);
            p.sanity(
                "personality query with high bits",
                r.is_ok(),
                format!("{r:?}"),
            );
            for value in [0xffff_ffffu64, 0, 0x0008, 0x0040000, 0] {
                let r = raw_personality(value);
                p.sanity(
                    &format!("personality({value:#x})"),
                    r.is_ok(),
                    format!("{r:?}"),
                );
            }
            // SAFETY: memfd_secret with flags 0 only returns a descriptor or
            // an error; the descriptor (if any) is closed at exit.
            let r = unsafe { libc::syscall(libc::SYS_memfd_secret, 0usize) };
            let errno = std::io::Error::last_os_error().raw_os_error();
            p.check(
                "memfd_secret is ENOSYS",
                r < 0 && errno == Some(libc::ENOSYS),
                format!("{r} {errno:?}"),
            );
        }
        "spin" => {
            // fork a helper too, so "nothing left running" covers children
            // SAFETY: single-threaded; both sides only spin.
            let _ = unsafe { nix::unistd::fork() };
            let mut x = 0u64;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        _ => {
            println!("INSANE: unknown mode {mode:?}");
            std::process::exit(4)
        }
    }
    let _ = std::io::stdout().flush();
    std::process::exit(if p.escaped {
        3
    } else if p.insane {
        4
    } else {
        0
    })
}

/// `socket(2)` with any family; Ok holds the descriptor (closed at exit),
/// Err the errno.
fn raw_socket(family: i32, ty: i32, protocol: i32) -> Result<i32, i32> {
    // SAFETY: socket takes integers only and returns a descriptor or -1.
    let fd = unsafe { libc::socket(family, ty | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(fd)
    }
}

/// `socketpair(2)` with any family; Err holds the errno.
fn raw_socketpair(family: i32, ty: i32) -> Result<[i32; 2], i32> {
    let mut fds = [-1i32; 2];
    // SAFETY: `fds` is a valid array of two ints the kernel writes into.
    let r = unsafe { libc::socketpair(family, ty | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) };
    if r < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(fds)
    }
}

/// `personality(2)` with a full 64-bit register, as an attacker would pass
/// it; Ok holds the previous personality, Err the errno.
fn raw_personality(value: u64) -> Result<i64, i32> {
    // SAFETY: personality takes one integer and touches no memory of ours.
    let r = unsafe { libc::syscall(libc::SYS_personality, value as libc::c_ulong) };
    // The previous personality is never negative as an int; -1 is an error.
    if r == -1 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(r)
    }
}

/// The kernel's name for an address family, for readable probe output
/// (`include/linux/socket.h`, Linux 6.x; AF_MAX is 46).
fn family_name(family: i32) -> String {
    const NAMES: [&str; 46] = [
        "AF_UNSPEC",
        "AF_UNIX",
        "AF_INET",
        "AF_AX25",
        "AF_IPX",
        "AF_APPLETALK",
        "AF_NETROM",
        "AF_BRIDGE",
        "AF_ATMPVC",
        "AF_X25",
        "AF_INET6",
        "AF_ROSE",
        "AF_DECnet",
        "AF_NETBEUI",
        "AF_SECURITY",
        "AF_KEY",
        "AF_NETLINK",
        "AF_PACKET",
        "AF_ASH",
        "AF_ECONET",
        "AF_ATMSVC",
        "AF_RDS",
        "AF_SNA",
        "AF_IRDA",
        "AF_PPPOX",
        "AF_WANPIPE",
        "AF_LLC",
        "AF_IB",
        "AF_MPLS",
        "AF_CAN",
        "AF_TIPC",
        "AF_BLUETOOTH",
        "AF_IUCV",
        "AF_RXRPC",
        "AF_ISDN",
        "AF_PHONET",
        "AF_IEEE802154",
        "AF_CAIF",
        "AF_ALG",
        "AF_NFC",
        "AF_VSOCK",
        "AF_KCM",
        "AF_QIPCRTR",
        "AF_SMC",
        "AF_XDP",
        "AF_MCTP",
    ];
    usize::try_from(family)
        .ok()
        .and_then(|i| NAMES.get(i))
        .map_or_else(|| format!("family {family}"), |n| n.to_string())
}
