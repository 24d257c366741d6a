//! What a step can learn about the host from its own /proc, through a real
//! daemon (and its warm pool). The overlay's options in
//! `/proc/self/mountinfo` name its layers by neutral names, and
//! `/proc/1/cmdline` is `attestd-init` (see SECURITY.md, "known gaps"):
//! these tests pin that no path under the state directory appears but the
//! sandbox's own scratch and run places, never an input tree, the key, the
//! store or the socket, and that the helper's environment, root and
//! descriptors stay unreadable.

use attest_e2e::TestDaemon;
use std::path::Path;

/// Every absolute path in `text` (split on whitespace, `,`, `=` and `:`).
fn absolute_paths(text: &str) -> Vec<&str> {
    text.split(|c: char| c.is_whitespace() || matches!(c, ',' | '=' | ':'))
        .filter(|w| w.starts_with('/'))
        .collect()
}

#[test]
fn mountinfo_and_the_helpers_command_line_name_no_key_store_or_socket_path() {
    let daemon = TestDaemon::start();
    let src = daemon.work_dir("src");
    std::fs::write(src.join("in.txt"), b"x").unwrap();
    let work = daemon.work_dir("work");
    let script = "cat /proc/self/mountinfo > facts; \
                  tr '\\0' ' ' < /proc/1/cmdline >> facts; echo >> facts; \
                  if cat /proc/1/environ > /dev/null 2>&1; then echo READABLE environ >> facts; fi; \
                  if ls /proc/1/root/ > /dev/null 2>&1; then echo READABLE root >> facts; fi; \
                  if ls /proc/1/fd/ > /dev/null 2>&1; then echo READABLE fd >> facts; fi";
    let built = daemon.attest_run(&work, &src, &["--out", "facts", "--", "sh", "-c", script]);
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let facts = std::fs::read_to_string(work.join("facts")).unwrap();
    assert!(facts.contains("overlay"), "no overlay in:\n{facts}");
    // The overlay names its layers by neutral names relative to the
    // helper's scratch directory, not by their host paths.
    assert!(
        facts.contains("lowerdir=lower,upperdir=space/upper/u,workdir=space/upper/w"),
        "{facts}"
    );
    assert!(!facts.contains("READABLE"), "{facts}");
    let state = daemon.state_dir.to_string_lossy().into_owned();
    for secret in [
        daemon.state_dir.join("keys"),
        daemon.state_dir.join("cas"),
        daemon.state_dir.join("index.redb"),
        daemon.socket.clone(),
    ] {
        assert!(
            !facts.contains(&*secret.to_string_lossy()),
            "{} is visible:\n{facts}",
            secret.display()
        );
    }
    assert!(!facts.contains("signing-key"), "{facts}");
    // Under the state directory, only the sandbox's own scratch and run
    // places appear (in the helper's command line), never an input tree.
    let allowed = ["pool-scratch", "runs/"];
    for path in absolute_paths(&facts) {
        if let Ok(rest) = Path::new(path).strip_prefix(&state) {
            let rest = rest.to_string_lossy();
            assert!(
                allowed.iter().any(|a| rest.starts_with(a)),
                "{path} is visible to the step:\n{facts}"
            );
        }
    }
}
