//! The run's cgroup: v2 where the host delegates memory and pids on a cgroup2
//! mount, else v1 memory + pids hierarchies, else none (rlimits only).
//! Plain file I/O on cgroupfs; the kill goes through [`Syscalls`].

use std::path::{Path, PathBuf};

use crate::sys::Syscalls;

/// Prefix of every cgroup the helper creates.
pub const PREFIX: &str = "attestd-";

/// Which cgroup flavour is in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroup {
    /// One cgroup2 directory.
    V2(PathBuf),
    /// The memory and pids v1 directories.
    V1 {
        /// In the memory hierarchy.
        memory: PathBuf,
        /// In the pids hierarchy.
        pids: PathBuf,
    },
}

/// Mount points of the cgroup hierarchies, from /proc/self/mountinfo.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Mounts {
    /// The cgroup2 mount.
    pub v2: Option<PathBuf>,
    /// The v1 memory hierarchy.
    pub v1_memory: Option<PathBuf>,
    /// The v1 pids hierarchy.
    pub v1_pids: Option<PathBuf>,
}

/// Parses mountinfo text.
pub fn parse_mounts(mountinfo: &str) -> Mounts {
    let mut m = Mounts::default();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mount_point = left.split(' ').nth(4).map(PathBuf::from);
        let mut r = right.split(' ');
        let fstype = r.next().unwrap_or("");
        let _source = r.next();
        let opts = r.next().unwrap_or("");
        let Some(mp) = mount_point else { continue };
        match fstype {
            "cgroup2" if m.v2.is_none() => m.v2 = Some(mp),
            "cgroup" => {
                for o in opts.split(',') {
                    match o {
                        "memory" => m.v1_memory = Some(mp.clone()),
                        "pids" => m.v1_pids = Some(mp.clone()),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    m
}

/// Our own cgroup path in a hierarchy (`0::/x` for v2, `N:memory:/x` for v1),
/// from /proc/self/cgroup text.
pub fn own_path(proc_cgroup: &str, controller: Option<&str>) -> Option<PathBuf> {
    for line in proc_cgroup.lines() {
        let mut it = line.splitn(3, ':');
        let (_id, ctrls, path) = (it.next()?, it.next()?, it.next()?);
        let hit = match controller {
            None => ctrls.is_empty(),
            Some(c) => ctrls.split(',').any(|x| x == c),
        };
        if hit {
            return Some(PathBuf::from(path.trim_start_matches('/')));
        }
    }
    None
}

fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

fn write(p: &Path, v: &str) -> std::io::Result<()> {
    std::fs::write(p, v)
}

/// The value of `key` in a flat-keyed file (`key N` lines).
pub fn keyed(text: &str, key: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

impl Cgroup {
    /// Creates `attestd-<run_id>` with the limits, in v2 if usable, else v1,
    /// else returns `None` (not root, or no controllers).
    pub fn create(run_id: &str, memory: u64, pids: u64) -> Option<Cgroup> {
        let cg = Self::create_named(&format!("{PREFIX}{run_id}"))?;
        if cg.set_limits(memory, pids).is_err() {
            cg.remove();
            return None;
        }
        Some(cg)
    }

    /// Creates the directories of cgroup `name` (which must start with
    /// [`PREFIX`], so a restart's cleanup finds it) next to our own, without
    /// limits: v2 if the parent delegates memory and pids, else v1 memory +
    /// pids, else `None`. A warm helper creates its cgroup this way before it
    /// knows the limits ([`Cgroup::set_limits`] follows).
    pub fn create_named(name: &str) -> Option<Cgroup> {
        let mounts = parse_mounts(&read(Path::new("/proc/self/mountinfo"))?);
        let self_cg = read(Path::new("/proc/self/cgroup")).unwrap_or_default();
        if let Some(v2) = &mounts.v2 {
            let parent = v2.join(own_path(&self_cg, None).unwrap_or_default());
            if let Some(cg) = Self::create_v2(&parent, name) {
                return Some(cg);
            }
        }
        let (Some(mm), Some(pm)) = (&mounts.v1_memory, &mounts.v1_pids) else {
            return None;
        };
        let mem = mm
            .join(own_path(&self_cg, Some("memory")).unwrap_or_default())
            .join(name);
        let pid = pm
            .join(own_path(&self_cg, Some("pids")).unwrap_or_default())
            .join(name);
        let cg = Cgroup::V1 {
            memory: mem.clone(),
            pids: pid.clone(),
        };
        if std::fs::create_dir(&mem).is_err() {
            return None;
        }
        if std::fs::create_dir(&pid).is_err() {
            cg.remove();
            return None;
        }
        Some(cg)
    }

    fn create_v2(parent: &Path, name: &str) -> Option<Cgroup> {
        let avail = read(&parent.join("cgroup.controllers"))?;
        let has = |c: &str| avail.split_whitespace().any(|x| x == c);
        if !has("memory") || !has("pids") {
            return None;
        }
        let sub = read(&parent.join("cgroup.subtree_control")).unwrap_or_default();
        if !sub.contains("memory") || !sub.contains("pids") {
            write(&parent.join("cgroup.subtree_control"), "+memory +pids").ok()?;
        }
        let dir = parent.join(name);
        std::fs::create_dir(&dir).ok()?;
        Some(Cgroup::V2(dir))
    }

    /// Writes the memory limit (swap included: none allowed) and pids.max.
    /// Fast (no RCU grace period, unlike joining); may run while processes
    /// already sit in the cgroup, as long as they use less than `memory`.
    pub fn set_limits(&self, memory: u64, pids: u64) -> std::io::Result<()> {
        match self {
            Cgroup::V2(dir) => {
                write(&dir.join("memory.max"), &memory.to_string())?;
                if dir.join("memory.swap.max").exists() {
                    write(&dir.join("memory.swap.max"), "0")?;
                }
                write(&dir.join("pids.max"), &pids.to_string())
            }
            Cgroup::V1 {
                memory: mem,
                pids: pid,
            } => {
                write(&mem.join("memory.limit_in_bytes"), &memory.to_string())?;
                let memsw = mem.join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    write(&memsw, &memory.to_string())?;
                }
                write(&pid.join("pids.max"), &pids.to_string())
            }
        }
    }

    /// `"v2"` or `"v1 (memory, pids)"`.
    pub fn describe(&self) -> &'static str {
        match self {
            Cgroup::V2(_) => "v2",
            Cgroup::V1 { .. } => "v1 (memory, pids)",
        }
    }

    /// The cgroup's directories (one for v2; memory, then pids for v1).
    pub fn dirs(&self) -> Vec<&Path> {
        match self {
            Cgroup::V2(d) => vec![d],
            Cgroup::V1 { memory, pids } => vec![memory, pids],
        }
    }

    /// Moves `pid` into the cgroup.
    pub fn join(&self, pid: i32) -> std::io::Result<()> {
        for d in self.dirs() {
            write(&d.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Whether a process was OOM-killed in the cgroup.
    pub fn oom_killed(&self) -> bool {
        match self {
            Cgroup::V2(d) => {
                keyed(
                    &read(&d.join("memory.events")).unwrap_or_default(),
                    "oom_kill",
                ) > 0
            }
            Cgroup::V1 { memory, .. } => {
                keyed(
                    &read(&memory.join("memory.oom_control")).unwrap_or_default(),
                    "oom_kill",
                ) > 0
            }
        }
    }

    /// Whether a fork was refused by pids.max.
    pub fn pids_limit_hit(&self) -> bool {
        let d = match self {
            Cgroup::V2(d) => d,
            Cgroup::V1 { pids, .. } => pids,
        };
        keyed(&read(&d.join("pids.events")).unwrap_or_default(), "max") > 0
    }

    fn pids_in(&self) -> Vec<i32> {
        let mut text = String::new();
        for d in self.dirs() {
            text.push_str(&read(&d.join("cgroup.procs")).unwrap_or_default());
        }
        others(&text, std::process::id() as i32)
    }

    /// CPU time, in milliseconds (user, system), used so far by the
    /// processes in the cgroup but us: for each, its own time plus what it
    /// has reaped of its children (`/proc/PID/stat`). A process that exits
    /// moves into its parent's count when reaped (orphans into the
    /// sandbox's init, which sits here too), so nothing the step ran drops
    /// out of the sum. This machine's v1 hierarchies have no cpuacct, hence
    /// /proc.
    pub fn cpu_ms(&self) -> (u64, u64) {
        let mut pids = self.pids_in();
        pids.sort_unstable();
        pids.dedup();
        let (user, system) = pids
            .iter()
            .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
            .filter_map(|s| stat_cpu_ticks(&s))
            .fold((0u64, 0u64), |(u, s), (du, ds)| (u + du, s + ds));
        let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .filter(|t| *t > 0)
            .unwrap_or(100) as u64;
        let ms = |t: u64| t.saturating_mul(1000) / per_second;
        (ms(user), ms(system))
    }

    /// SIGKILLs every process in the cgroup but ourselves until it is empty
    /// of them (bounded). A warm helper sits in its step's cgroup (so the
    /// step inherits it at clone, without a slow join): it must sweep the
    /// step's processes without killing itself, and a v2 `cgroup.kill` would
    /// take it along, so it is only used when we are not inside.
    pub fn kill_all(&self, sys: &dyn Syscalls) {
        if let Cgroup::V2(d) = self {
            if !self.holds_us() {
                let _ = write(&d.join("cgroup.kill"), "1");
            }
        }
        for _ in 0..200 {
            let pids = self.pids_in();
            if pids.is_empty() {
                return;
            }
            for p in pids {
                let _ = sys.kill(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Moves the calling process into the cgroup (every hierarchy). This is
    /// the slow write (the kernel waits for an RCU grace period), which a
    /// warm helper does before it knows its spec.
    pub fn join_self(&self) -> std::io::Result<()> {
        self.join(std::process::id() as i32)
    }

    fn holds_us(&self) -> bool {
        let me = std::process::id().to_string();
        self.dirs().iter().any(|d| {
            read(&d.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .any(|l| l.trim() == me)
        })
    }

    /// Removes the cgroup directories (retrying while exiting processes
    /// leave). Returns whether every directory is gone.
    pub fn remove(&self) -> bool {
        let mut all = true;
        for d in self.dirs() {
            let mut gone = !d.exists();
            for _ in 0..200 {
                if gone {
                    break;
                }
                match std::fs::remove_dir(d) {
                    Ok(()) => gone = true,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => gone = true,
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                }
            }
            all &= gone;
        }
        all
    }
}

/// Finds leftover `attestd-*` cgroups in every hierarchy (depth-limited walk):
/// those of `stale_runs` (the crashed daemon's run ids) and of warm helpers
/// whose keeper is dead; kills their processes and removes them. Returns the
/// directories removed.
pub fn cleanup_leftovers(sys: &dyn Syscalls, stale_runs: &[String]) -> Vec<PathBuf> {
    let Some(mi) = read(Path::new("/proc/self/mountinfo")) else {
        return vec![];
    };
    let m = parse_mounts(&mi);
    let mut removed = Vec::new();
    for root in [m.v2, m.v1_memory, m.v1_pids].into_iter().flatten() {
        let mut found = Vec::new();
        walk(&root, 0, &|name| is_leftover(name, stale_runs), &mut found);
        for d in found {
            let cg = if root.join("cgroup.controllers").exists() {
                Cgroup::V2(d.clone())
            } else {
                Cgroup::V1 {
                    memory: d.clone(),
                    pids: d.clone(),
                }
            };
            cg.kill_all(sys);
            if cg.remove() {
                removed.push(d);
            }
        }
    }
    removed
}

/// The keeper pid in a warm helper's cgroup name `attestd-pool-<pid>-<ns>`.
pub fn pool_keeper(name: &str) -> Option<i32> {
    let rest = name.strip_prefix(PREFIX)?.strip_prefix("pool-")?;
    let (pid, ns) = rest.split_once('-')?;
    ns.parse::<u128>().ok()?;
    pid.parse().ok()
}

/// Whether a warm helper's keeper still runs. A killed keeper whose parent
/// died too stays a zombie until it is reaped, and a zombie still shows its
/// name: it counts as dead.
fn keeper_alive(pid: i32) -> bool {
    let Some(stat) = read(Path::new(&format!("/proc/{pid}/stat"))) else {
        return false;
    };
    // "pid (comm) state ...": comm may hold spaces, so split at the last ')'.
    let Some((head, tail)) = stat.rsplit_once(')') else {
        return false;
    };
    let comm = head.split_once('(').map(|(_, c)| c).unwrap_or_default();
    let state = tail.split_whitespace().next().unwrap_or("Z");
    comm == "attestd-sandbox" && state != "Z" && state != "X"
}

/// The pids listed in `cgroup.procs` text, without `me`.
pub fn others(procs: &str, me: i32) -> Vec<i32> {
    procs
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .filter(|p| *p != me)
        .collect()
}

/// (utime + cutime, stime + cstime), in clock ticks, from the text of a
/// `/proc/PID/stat` (fields 14-17; counted after the `)` that ends the
/// command name, which may itself hold spaces and parentheses).
pub fn stat_cpu_ticks(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state): utime is field 14, so index 11.
    let v: Vec<u64> = fields
        .get(11..15)?
        .iter()
        .map(|f| f.parse::<i64>().ok().map(|v| v.max(0) as u64))
        .collect::<Option<_>>()?;
    Some((v[0] + v[2], v[1] + v[3]))
}

/// Whether a cgroup named `name` is ours to remove after a crash: a warm
/// helper's whose keeper is dead (a dead keeper took its zygote along,
/// parent-death signal), or a cold run's whose run directory the restarting
/// daemon found stale. Another daemon's live runs and pools are left alone.
fn is_leftover(name: &str, stale_runs: &[String]) -> bool {
    match pool_keeper(name) {
        Some(keeper) => !keeper_alive(keeper),
        None => name
            .strip_prefix(PREFIX)
            .is_some_and(|run_id| stale_runs.iter().any(|r| r == run_id)),
    }
}

fn walk(dir: &Path, depth: usize, is_leftover: &dyn Fn(&str) -> bool, found: &mut Vec<PathBuf>) {
    if depth > 4 {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(PREFIX) {
            if is_leftover(&name) {
                found.push(p);
            }
        } else {
            walk(&p, depth + 1, is_leftover, found);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_daemons_stale_runs_and_dead_pools_are_leftovers() {
        let stale = vec!["run-a".to_string()];
        assert!(is_leftover("attestd-run-a", &stale));
        assert!(
            !is_leftover("attestd-run-b", &stale),
            "another daemon's live run"
        );
        // pid 0 is never a live attestd-sandbox keeper.
        assert!(is_leftover("attestd-pool-0-123", &stale));
    }

    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn finds_v1_and_v2_mounts() {
        let m = parse_mounts(MOUNTINFO);
        assert_eq!(m.v2.as_deref(), Some(Path::new("/sys/fs/cgroup/unified")));
        assert_eq!(
            m.v1_memory.as_deref(),
            Some(Path::new("/sys/fs/cgroup/memory"))
        );
        assert_eq!(m.v1_pids.as_deref(), Some(Path::new("/sys/fs/cgroup/pids")));
    }

    #[test]
    fn own_paths() {
        let c = "12:pids:/a/b\n4:memory:/m\n1:name=systemd:/s\n0::/u\n";
        assert_eq!(own_path(c, Some("pids")), Some(PathBuf::from("a/b")));
        assert_eq!(own_path(c, Some("memory")), Some(PathBuf::from("m")));
        assert_eq!(own_path(c, None), Some(PathBuf::from("u")));
    }

    #[test]
    fn the_sweep_never_lists_the_caller() {
        assert_eq!(others("12\n7\n 30\n\n", 7), [12, 30]);
        // A command name with spaces and parentheses; utime 100, stime 20,
        // cutime 300, cstime 4.
        let stat = "4242 (a (b) c) R 1 4242 4242 0 -1 4194560 150 0 0 0 100 20 300 4 20 0 1 0 123 4096 1 18446744073709551615";
        assert_eq!(stat_cpu_ticks(stat), Some((400, 24)));
        assert_eq!(stat_cpu_ticks("4242 (x) R 1 2"), None);
        assert_eq!(stat_cpu_ticks("garbage"), None);
        assert_eq!(others("7\n", 7), Vec::<i32>::new());
    }

    #[test]
    fn pool_cgroup_names_carry_their_keeper() {
        assert_eq!(
            pool_keeper("attestd-pool-123-1795429791405090412"),
            Some(123)
        );
        assert_eq!(pool_keeper("attestd-0b1c-uuid"), None);
        assert_eq!(pool_keeper("attestd-pool-x-1"), None);
        assert_eq!(pool_keeper("attestd-pool-12"), None);
    }

    #[test]
    fn keyed_values() {
        let t = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(keyed(t, "oom_kill"), 3);
        assert_eq!(keyed("max 0\n", "max"), 0);
        assert_eq!(keyed("", "max"), 0);
    }
}
