//! Input trees materialized in memory: the tmpfs the daemon mounts, as
//! root, in a mount namespace of its own (`STATE/inputs-mem`). It must hold
//! the trees that fit, send the others (and a tree that fills it) to disk,
//! stay invisible from the host, vanish with the daemon, serve builds as a
//! disk tree does, and never take a step's writes.
//!
//! These tests need root (the daemon mounts nothing without it); CI runs
//! them as root.

use attest_e2e::TestDaemon;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn is_root() -> bool {
    attest_proto::current_uid() == 0
}

fn stderr_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The mount points (field 5) of a mountinfo file, `\040`-style escapes
/// left as they are (our temp paths have none).
/// Runs `script` as a step over `src` with `output` declared, checks it
/// succeeded and returns what it wrote there.
fn run_step(daemon: &TestDaemon, work: &Path, src: &Path, output: &str, script: &str) -> String {
    let out = daemon.attest_run(work, src, &["--out", output, "--", "sh", "-c", script]);
    assert!(
        out.status.success(),
        "{}\n{}",
        stderr_of(&out),
        daemon.log()
    );
    std::fs::read_to_string(work.join(output)).unwrap()
}

fn mount_points(mountinfo: &Path) -> Vec<PathBuf> {
    std::fs::read_to_string(mountinfo)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(PathBuf::from))
        .collect()
}

/// The line of `mountinfo` that mounts something at `point`.
fn mount_line(mountinfo: &Path, point: &Path) -> Option<String> {
    std::fs::read_to_string(mountinfo)
        .unwrap_or_default()
        .lines()
        .find(|l| l.split(' ').nth(4).map(Path::new) == Some(point))
        .map(str::to_string)
}

/// Pids of every process whose mount table has something at `point`.
fn processes_mounting(point: &Path) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| {
            mount_points(&e.path().join("mountinfo"))
                .iter()
                .any(|p| p == point)
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The materialized trees (not lists) in one place.
fn trees_in(dir: &Path) -> Vec<String> {
    names_in(dir)
        .into_iter()
        .filter(|n| !n.starts_with('.'))
        .collect()
}

#[test]
fn a_tree_that_fits_is_built_in_a_tmpfs_the_host_never_sees_and_that_goes_with_a_killed_daemon() {
    if !is_root() {
        eprintln!("skipped: the memory tmpfs needs root");
        return;
    }
    let mut daemon = TestDaemon::start();
    let point = daemon.state_dir.join("inputs-mem");
    // Mounted in the daemon's namespace, 0700, nosuid, nodev, sized.
    let line = mount_line(
        Path::new(&format!("/proc/{}/mountinfo", daemon.pid())),
        &point,
    )
    .unwrap_or_else(|| panic!("no tmpfs at {} in the daemon's namespace", point.display()));
    assert!(line.contains(" - tmpfs "), "{line}");
    assert!(line.contains("nosuid") && line.contains("nodev"), "{line}");
    assert!(
        line.contains("mode=700") && line.contains("size="),
        "{line}"
    );
    // Not in ours (the host's): nothing propagated out.
    assert!(
        mount_line(Path::new("/proc/self/mountinfo"), &point).is_none(),
        "the daemon's tmpfs is visible from the host"
    );

    let src = daemon.work_dir("src");
    std::fs::write(src.join("input.txt"), "from the client\n").unwrap();
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("sub/deep.txt"), "deep\n").unwrap();
    let work = daemon.work_dir("work");
    // The step reads its inputs, then tries to change them every way it
    // can: rewrite, delete, create, and chmod.
    let seen = run_step(&daemon, &work, &src, "seen.txt", "cat input.txt sub/deep.txt > seen.txt && echo rewritten > input.txt && rm sub/deep.txt && echo new > new.txt && chmod 0777 input.txt");
    assert_eq!(seen, "from the client\ndeep\n");

    // The tree is in memory (as the daemon sees it), not on disk, and the
    // step's writes went to its overlay only.
    let memory = daemon.daemon_view(&point);
    let trees = trees_in(&memory);
    assert_eq!(trees.len(), 1, "{:?}", names_in(&memory));
    assert!(trees_in(&daemon.state_dir.join("inputs")).is_empty());
    assert!(
        trees_in(&point).is_empty(),
        "from the host the mount point is an empty directory"
    );
    let tree = memory.join(&trees[0]);
    assert_eq!(
        std::fs::read_to_string(tree.join("input.txt")).unwrap(),
        "from the client\n"
    );
    assert_eq!(
        std::fs::read_to_string(tree.join("sub/deep.txt")).unwrap(),
        "deep\n"
    );
    assert!(!tree.join("new.txt").exists());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(tree.join("input.txt"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o644
    );

    // A second build reuses it and sees the inputs as uploaded.
    let again = run_step(
        &daemon,
        &work,
        &src,
        "again.txt",
        "cat input.txt > again.txt",
    );
    assert_eq!(again, "from the client\n");
    assert_eq!(trees_in(&memory), trees);

    // SIGKILL: no clean-up of its own, yet nothing stays mounted anywhere
    // once the daemon and its helpers are gone (they die with it).
    daemon.crash();
    assert!(mount_line(Path::new("/proc/self/mountinfo"), &point).is_none());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let holders = processes_mounting(&point);
        if holders.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "processes still hold the tmpfs after the daemon was killed: {holders:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A restarted daemon starts with an empty tmpfs and builds again.
    daemon.restart();
    assert!(trees_in(&daemon.daemon_view(&point)).is_empty());
    let _third = run_step(
        &daemon,
        &work,
        &src,
        "third.txt",
        "cat input.txt > third.txt",
    );
    assert_eq!(trees_in(&daemon.daemon_view(&point)), trees);
}

#[test]
fn a_tree_bigger_than_half_the_tmpfs_goes_to_disk() {
    if !is_root() {
        eprintln!("skipped: the memory tmpfs needs root");
        return;
    }
    let daemon = TestDaemon::start_with(&["--inputs-memory-size", "64K"]);
    let src = daemon.work_dir("src");
    std::fs::write(src.join("big.bin"), vec![7u8; 100 << 10]).unwrap();
    let work = daemon.work_dir("work");
    let size = run_step(
        &daemon,
        &work,
        &src,
        "size.txt",
        "wc -c < big.bin > size.txt",
    );
    assert_eq!(size.trim(), "102400");
    assert_eq!(trees_in(&daemon.state_dir.join("inputs")).len(), 1);
    assert!(names_in(&daemon.daemon_view(&daemon.state_dir.join("inputs-mem"))).is_empty());
}

#[test]
fn a_tree_that_fills_the_tmpfs_while_being_built_is_built_on_disk_instead() {
    if !is_root() {
        eprintln!("skipped: the memory tmpfs needs root");
        return;
    }
    let daemon = TestDaemon::start_with(&["--inputs-memory-size", "1M"]);
    // One small file (its bytes fit many times over), and 400 symlinks
    // whose 300-byte targets each take a page of tmpfs (targets past 128
    // bytes are stored in a page): 1.6 MB that the file bytes do not
    // count, so the tree is sent to memory and finds it full.
    let src = daemon.work_dir("src");
    std::fs::write(src.join("input.txt"), "small\n").unwrap();
    let target = "d/".repeat(150);
    for i in 0..400 {
        std::os::unix::fs::symlink(&target, src.join(format!("link{i}"))).unwrap();
    }
    let work = daemon.work_dir("work");
    let seen = run_step(
        &daemon,
        &work,
        &src,
        "seen.txt",
        "cat input.txt > seen.txt && readlink link399 >> seen.txt",
    );
    assert_eq!(seen, format!("small\n{target}\n"));
    assert!(
        daemon.log().contains("filled up"),
        "the fallback was not taken:\n{}",
        daemon.log()
    );
    assert_eq!(trees_in(&daemon.state_dir.join("inputs")).len(), 1);
    // The half-built tree was removed: the tmpfs is empty again.
    assert!(
        names_in(&daemon.daemon_view(&daemon.state_dir.join("inputs-mem"))).is_empty(),
        "{:?}",
        names_in(&daemon.daemon_view(&daemon.state_dir.join("inputs-mem")))
    );
}

#[test]
fn with_the_memory_cache_off_nothing_is_mounted_and_trees_stay_on_disk() {
    let daemon = TestDaemon::start_with(&["--inputs-memory-size", "0"]);
    let point = daemon.state_dir.join("inputs-mem");
    assert!(mount_line(
        Path::new(&format!("/proc/{}/mountinfo", daemon.pid())),
        &point
    )
    .is_none());
    let src = daemon.work_dir("src");
    std::fs::write(src.join("input.txt"), "on disk\n").unwrap();
    let work = daemon.work_dir("work");
    let seen = run_step(&daemon, &work, &src, "seen.txt", "cat input.txt > seen.txt");
    assert_eq!(seen, "on disk\n");
    assert_eq!(trees_in(&daemon.state_dir.join("inputs")).len(), 1);
}

#[test]
fn the_tmpfs_is_made_by_the_sandbox_launcher_and_the_daemon_keeps_its_pid() {
    if !is_root() {
        eprintln!("skipped: the memory tmpfs needs root");
        return;
    }
    let daemon = TestDaemon::start();
    // The daemon execs `attestd-sandbox memory-namespace`, which mounts and
    // execs the daemon back: the process we started is attestd again, in a
    // namespace that holds the tmpfs, and it says who made it.
    let exe = std::fs::read_link(format!("/proc/{}/exe", daemon.pid())).unwrap();
    assert_eq!(exe.file_name().unwrap(), "attestd", "{}", exe.display());
    let point = daemon.state_dir.join("inputs-mem");
    assert!(mount_line(
        Path::new(&format!("/proc/{}/mountinfo", daemon.pid())),
        &point
    )
    .is_some());
    let log = daemon.log();
    assert!(
        log.contains("\"attestd-sandbox memory-namespace\""),
        "{log}"
    );
}

#[test]
fn a_tmpfs_the_service_manager_mounted_is_used_as_it_is_and_not_mounted_again() {
    if !is_root() {
        eprintln!("skipped: the memory tmpfs needs root");
        return;
    }
    // What systemd's `TemporaryFileSystem=STATE/inputs-mem:size=8M` does: a
    // private mount namespace with the tmpfs, then the daemon.
    let daemon = TestDaemon::start_under(
        &[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mkdir -p {state}/inputs-mem && mount -t tmpfs -o size=8m,mode=0700 tmpfs {state}/inputs-mem && exec \"$0\" \"$@\"",
        ],
        &[],
    );
    let point = daemon.state_dir.join("inputs-mem");
    let mountinfo = std::fs::read_to_string(format!("/proc/{}/mountinfo", daemon.pid())).unwrap();
    let mounts_there = mountinfo
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some(point.to_str().unwrap()))
        .count();
    assert_eq!(mounts_there, 1, "{mountinfo}");
    let log = daemon.log();
    assert!(log.contains("\"the service manager\""), "{log}");
    // Sized by what it found (8 MiB), not by --inputs-memory-size.
    assert!(log.contains("8.4 MB"), "{log}");
    let src = daemon.work_dir("src");
    std::fs::write(src.join("input.txt"), "small\n").unwrap();
    let work = daemon.work_dir("work");
    assert_eq!(
        run_step(&daemon, &work, &src, "seen.txt", "cat input.txt > seen.txt"),
        "small\n"
    );
    assert_eq!(trees_in(&daemon.daemon_view(&point)).len(), 1);
}
