//! `hermetic` rests on what the step's own process saw of itself right
//! before its exec, not on what the helper meant to set up: a real step,
//! cold and through a warm helper, and the observation its report carries.
//! Needs root (CI runs it as root); without root every test prints
//! "skipped: needs root" and returns.

mod common;

use attest_sandbox::{Outcome, OBSERVED_NAMESPACES};
use common::{run, warm_from_env};

/// The one skip of the workspace: counted, and a failure under
/// `ATTEST_REQUIRE_ROOT=1` (as CI runs).
macro_rules! needs_root {
    () => {
        attest_testkit::needs_root!("the sandbox's namespaces, cgroups and mounts");
    };
}

/// The step prints its own net namespace link and every descriptor its
/// shell holds (listed by a child, so that the listing opens none in it).
const LOOK: &str = "readlink /proc/self/ns/net; ls -l /proc/$$/fd";

fn the_step_saw_itself_sealed_and_holds_no_observation_pipe(warm: bool) {
    let ran = run(&["/bin/sh", "-c", LOOK], "", warm, |_| {});
    assert_eq!(
        ran.report.outcome,
        Outcome::Exited { code: 0 },
        "{}",
        ran.stderr
    );
    let o = ran.report.observed.clone().expect("the step's observation");
    assert_eq!(o.no_new_privs, Some(1), "{o:?}");
    assert_eq!(o.seccomp_mode, Some(2), "{o:?}");
    // Linux 5.9 and later say how many filters are stacked.
    if let Some(n) = o.seccomp_filters {
        assert!(n >= 1, "{o:?}");
    }
    for (set, v) in [
        ("CapEff", o.cap_eff),
        ("CapPrm", o.cap_prm),
        ("CapInh", o.cap_inh),
        ("CapBnd", o.cap_bnd),
        ("CapAmb", o.cap_amb),
    ] {
        assert_eq!(v, Some(0), "{set}");
    }
    assert_eq!(o.interfaces, Some(vec!["lo".to_string()]));
    assert_eq!(o.namespaces.len(), OBSERVED_NAMESPACES.len());
    for n in &o.namespaces {
        assert!(
            n.distinct(),
            "{} namespace shared with the helper: {n:?}",
            n.name
        );
    }
    assert!(o.hermetic());
    // Observed in the namespace the program then ran in.
    let net = o.namespace("net").and_then(|n| n.step_inode).unwrap();
    let mut lines = ran.stdout.lines();
    assert_eq!(lines.next(), Some(format!("net:[{net}]").as_str()));
    // The observation pipe closed at the exec: the shell holds its stdin
    // (/dev/null) and the two log pipes, no other pipe.
    let fds: Vec<(&str, &str)> = lines
        .filter_map(|l| l.split_once(" -> "))
        .map(|(a, target)| (a.rsplit(' ').next().unwrap_or(a), target))
        .collect();
    assert!(fds.iter().any(|(fd, _)| *fd == "1"), "{}", ran.stdout);
    let pipes: Vec<_> = fds
        .iter()
        .filter(|(fd, target)| target.starts_with("pipe:") && !["1", "2"].contains(fd))
        .collect();
    assert!(
        pipes.is_empty(),
        "the step holds {pipes:?}:\n{}",
        ran.stdout
    );
}

#[test]
fn the_step_saw_itself_sealed_and_holds_no_observation_pipe_cold() {
    needs_root!();
    the_step_saw_itself_sealed_and_holds_no_observation_pipe(warm_from_env());
}

#[test]
fn the_step_saw_itself_sealed_and_holds_no_observation_pipe_warm() {
    needs_root!();
    the_step_saw_itself_sealed_and_holds_no_observation_pipe(true);
}

fn a_step_that_fails_before_it_looks_is_not_hermetic(warm: bool) {
    // Its working directory is a file: the step ends by E14, before E16.
    let ran = run(&["/bin/true"], "a-file", warm, |d| {
        std::fs::write(d.join("a-file"), "not a directory").unwrap()
    });
    assert!(
        matches!(ran.report.outcome, Outcome::SetupFailed { .. }),
        "{:?}",
        ran.report.outcome
    );
    assert_eq!(ran.report.observed, None);
}

#[test]
fn a_step_that_fails_before_it_looks_is_not_hermetic_cold() {
    needs_root!();
    a_step_that_fails_before_it_looks_is_not_hermetic(warm_from_env());
}

#[test]
fn a_step_that_fails_before_it_looks_is_not_hermetic_warm() {
    needs_root!();
    a_step_that_fails_before_it_looks_is_not_hermetic(true);
}
