//! Attacks by a hostile build step, through the real daemon and client:
//! each step reports what it managed to do in its declared output, and the
//! test fails if any attempt succeeded.

use attest_e2e::TestDaemon;

/// Runs `script` (Python, since the host's python3 is visible read-only
/// under /usr) as the step and returns the content of its output `report`.
fn step_report(daemon: &TestDaemon, script: &str) -> String {
    let src = daemon.dir.path().join("attack-src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("attack.py"), script).unwrap();
    let work = daemon.work_dir("attack-work");
    let out = daemon.attest_run(
        &work,
        &src,
        &["--out", "report", "--", "python3", "attack.py"],
    );
    assert!(
        out.status.success(),
        "the attack step itself failed:\n{}",
        daemon.log()
    );
    std::fs::read_to_string(work.join("report")).unwrap()
}

#[test]
fn the_signing_key_and_undeclared_host_files_are_unreadable_from_a_step() {
    let daemon = TestDaemon::start();
    let key = daemon.state_dir.join("keys/signing-key.pem");
    assert!(key.exists());
    let secret = daemon.dir.path().join("host-secret.txt");
    std::fs::write(&secret, "TOP-SECRET").unwrap();
    let script = format!(
        r#"
import os
leaks = []
for path in [{key:?}, {secret:?}, "/proc/1/root" + {key:?}, "/etc/shadow", "/root/.bash_history"]:
    try:
        with open(path, "rb") as f:
            f.read()
        leaks.append(path)
    except OSError:
        pass
for d in [{state:?}, {tmp:?}, "/root", "/home", "/var/lib"]:
    try:
        os.listdir(d)
        leaks.append("listed " + d)
    except OSError:
        pass
open("report", "w").write("\n".join(leaks) if leaks else "nothing leaked")
"#,
        key = key.to_str().unwrap(),
        secret = secret.to_str().unwrap(),
        state = daemon.state_dir.to_str().unwrap(),
        tmp = daemon.dir.path().to_str().unwrap(),
    );
    assert_eq!(step_report(&daemon, &script), "nothing leaked");
}

#[test]
fn a_step_cannot_reach_host_loopback_and_has_no_interface_or_route_out() {
    let daemon = TestDaemon::start();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = format!(
        r#"
import socket
reached = []
s = socket.socket()
s.settimeout(1)
try:
    s.connect(("127.0.0.1", {port}))
    reached.append("host loopback")
except OSError:
    pass
finally:
    s.close()
# No traffic is sent anywhere else: the step's network namespace must have
# only the loopback interface and no route at all.
interfaces = [line.split(":")[0].strip() for line in open("/proc/net/dev").read().splitlines()[2:]]
if interfaces != ["lo"]:
    reached.append("interfaces " + ",".join(interfaces))
routes = open("/proc/net/route").read().splitlines()[1:]
if routes:
    reached.append("routes " + ";".join(routes))
try:
    socket.getaddrinfo("example.com", 443)
    reached.append("dns")
except OSError:
    pass
open("report", "w").write(",".join(reached) if reached else "unreachable")
"#
    );
    assert_eq!(step_report(&daemon, &script), "unreachable");
    assert!(
        listener.accept().is_err(),
        "a connection reached the host listener"
    );
}

#[test]
fn a_step_that_rewrites_its_inputs_changes_nothing_a_later_build_or_the_client_sees() {
    let daemon = TestDaemon::start();
    let src = daemon.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("input.txt"), "original\n").unwrap();
    let work = daemon.work_dir("work");
    let build =
        |script: &str| daemon.attest_run(&work, &src, &["--out", "seen", "--", "sh", "-c", script]);
    let first = build("echo corrupted > input.txt; rm -f missing; chmod 777 . ; cp input.txt seen");
    assert!(first.status.success());
    assert_eq!(
        std::fs::read_to_string(work.join("seen")).unwrap(),
        "corrupted\n"
    );
    let second = build("cp input.txt seen");
    assert!(second.status.success());
    assert_eq!(
        std::fs::read_to_string(work.join("seen")).unwrap(),
        "original\n",
        "a later build saw the first build's change"
    );
    assert_eq!(
        std::fs::read_to_string(src.join("input.txt")).unwrap(),
        "original\n"
    );
}

#[test]
fn a_step_cannot_see_or_kill_a_concurrent_build() {
    let daemon = TestDaemon::start_with(&["--max-parallel-builds", "2"]);
    let src = daemon.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("input.txt"), "x\n").unwrap();
    let victim_work = daemon.work_dir("victim");
    let attacker_work = daemon.work_dir("attacker");
    std::thread::scope(|scope| {
        let victim = scope.spawn(|| {
            daemon.attest_run(
                &victim_work,
                &src,
                &[
                    "--out",
                    "alive",
                    "--",
                    "sh",
                    "-c",
                    "echo started > /tmp/victim-marker; sleep 3; echo intact > alive",
                ],
            )
        });
        // Give the victim time to start, then attack from a second build.
        std::thread::sleep(std::time::Duration::from_millis(800));
        let attacker = daemon.attest_run(
            &attacker_work,
            &src,
            &[
                "--out",
                "seen",
                "--",
                "sh",
                "-c",
                "kill -9 -1 2>/dev/null; pkill -9 sleep 2>/dev/null; \
                 { ls /proc | grep -c '^[0-9]'; ls /tmp; } > seen",
            ],
        );
        assert!(attacker.status.success());
        let victim = victim.join().unwrap();
        assert!(
            victim.status.success(),
            "the victim build was disturbed:\n{}",
            daemon.log()
        );
    });
    assert_eq!(
        std::fs::read_to_string(victim_work.join("alive")).unwrap(),
        "intact\n"
    );
    let seen = std::fs::read_to_string(attacker_work.join("seen")).unwrap();
    assert!(
        !seen.contains("victim-marker"),
        "the attacker saw the victim's /tmp: {seen}"
    );
    let visible_pids: u32 = seen.lines().next().unwrap().trim().parse().unwrap();
    assert!(
        visible_pids <= 4,
        "the attacker saw {visible_pids} processes: {seen}"
    );
}
