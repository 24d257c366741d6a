//! Test support shared by the test suites of several crates (the sandbox's
//! escape suite, the daemon's CLI tests, the provenance interop tests and
//! the end-to-end tests), kept free of the crates under test so that any of
//! them can take it as a dev-dependency.
//!
//! - [`root_or_skip`] / [`needs_root!`]: the one way a test that needs root
//!   skips, so that a skip is never silent and CI can forbid it.
//! - [`interop`]: the Python interpreter and scripts of `tests/interop/`.
#![forbid(unsafe_code)]

pub mod interop;

use std::io::Write;
use std::path::Path;

/// Set to `1` (CI does, in `.ci/run`): a test that needs root and does not
/// have it fails instead of skipping.
pub const REQUIRE_ROOT_VAR: &str = "ATTEST_REQUIRE_ROOT";
/// A file each skip appends one line to (`TEST<TAB>WHY`), so that a run of
/// many test binaries can count its skips (`scripts/test.sh` sets it and
/// prints the count at the end).
pub const SKIP_LOG_VAR: &str = "ATTEST_SKIP_LOG";

/// Whether the calling test, which needs root for `why`, can go on: true as
/// root. Otherwise, with `ATTEST_REQUIRE_ROOT=1` this panics (the skip is a
/// failure); without it, it says so on stderr, past the test harness's
/// output capture so the line shows in a green run, appends to the
/// `ATTEST_SKIP_LOG` file when one is named, and returns false.
pub fn root_or_skip(why: &str) -> bool {
    // libtest runs each test on a thread named after it.
    let thread = std::thread::current();
    decide(
        nix::unistd::geteuid().is_root(),
        std::env::var(REQUIRE_ROOT_VAR).is_ok_and(|v| v == "1"),
        std::env::var_os(SKIP_LOG_VAR)
            .filter(|p| !p.is_empty())
            .as_deref()
            .map(Path::new),
        thread.name().unwrap_or("a test"),
        why,
    )
}

/// [`root_or_skip`] with its environment as arguments, for its own tests.
fn decide(root: bool, require: bool, log: Option<&Path>, test: &str, why: &str) -> bool {
    if root {
        return true;
    }
    if require {
        panic!("{test} needs root ({why}) and {REQUIRE_ROOT_VAR}=1 makes that skip a failure");
    }
    // `eprintln!` would be captured and shown only for a failing test.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: needs root ({why}); {REQUIRE_ROOT_VAR}=1 makes this a failure"
    );
    if let Some(log) = log {
        // One append of one short line: lines from parallel tests and test
        // binaries do not interleave.
        let line = format!("{test}\t{why}\n");
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = appended {
            // A skip that is not counted would be silent: refuse it.
            panic!("cannot record the skip in {}: {e}", log.display());
        }
    }
    false
}

/// Returns from the calling test when it is not root, through
/// [`root_or_skip`]: `needs_root!("the memory tmpfs is mounted by root")`.
#[macro_export]
macro_rules! needs_root {
    ($why:expr) => {
        if !$crate::root_or_skip($why) {
            return;
        }
    };
}

#[cfg(test)]
mod tests {
    use super::decide;

    #[test]
    fn root_runs_the_test_whatever_is_required() {
        assert!(decide(true, true, None, "t", "why"));
        assert!(decide(true, false, None, "t", "why"));
    }

    #[test]
    #[should_panic(expected = "t needs root (the tmpfs) and ATTEST_REQUIRE_ROOT=1")]
    fn a_required_skip_is_a_failure() {
        decide(false, true, None, "t", "the tmpfs");
    }

    #[test]
    fn each_skip_appends_a_line_to_the_log() {
        let dir = std::env::temp_dir().join(format!("attest-testkit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("skips");
        let _ = std::fs::remove_file(&log);
        assert!(!decide(false, false, Some(&log), "a::one", "mounts"));
        assert!(!decide(false, false, Some(&log), "a::two", "cgroups"));
        let lines = std::fs::read_to_string(&log).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(lines, "a::one\tmounts\na::two\tcgroups\n");
    }

    #[test]
    #[should_panic(expected = "cannot record the skip")]
    fn a_skip_that_cannot_be_counted_is_a_failure() {
        decide(
            false,
            false,
            Some(std::path::Path::new("/nonexistent/dir/skips")),
            "t",
            "why",
        );
    }
}
