//! Run one build step in fresh Linux namespaces with limits.
//!
//! The daemon uses [`daemon_side`] (plain data and a `Command`, no forking);
//! the `attestd-sandbox` helper binary does the namespace work through
//! [`helper::run`]; the sandbox's pid 1 and the step before its exec run
//! [`sandbox_init`]; a warm helper's keeper and zygote run [`warm_keeper`]. Every kernel call goes through [`sys::Syscalls`]; this is the
//! only crate of the project with `unsafe`, all of it in [`sys`].

// Shared by every process: the kernel interface, errors, cgroups, the
// seccomp profile, and the typed spec and report the daemon and the helper
// exchange.
pub mod cgroup;
pub mod error;
pub mod seccomp;
pub mod spec;
pub mod sys;

// One module per process that runs the code in it.
pub mod daemon_side;
pub mod helper;
pub mod sandbox_init;
pub mod warm_keeper;
// The launcher that makes the daemon's memory namespace and execs the
// daemon in it, and the daemon's detection of that tmpfs.
pub mod memory_namespace;

// The paths of the flat layout, kept so that `attest_sandbox::run::Shape`,
// `attest_sandbox::launch::...` and `attest_sandbox::warm::...` still name
// the same items.
pub use daemon_side::launch;
pub use helper as run;
pub use helper::outputs;
pub use sandbox_init::setup;
pub use warm_keeper as warm;

pub use error::SandboxError;
pub use launch::{
    cleanup_command, find_helper, helper_command, read_report, request_stop, serve_command,
    write_spec,
};
pub use spec::*;
pub use warm::request_line;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::PathBuf;

    pub(crate) fn spec_for_tests() -> SandboxSpec {
        SandboxSpec {
            run_id: "r1".into(),
            argv: vec!["make".into()],
            env: vec![
                ("CC".into(), "cc".into()),
                ("TZ".into(), "Europe/Paris".into()),
            ],
            input_dir: "/in".into(),
            cwd: "src".into(),
            outputs: vec!["out/bin".into()],
            out_dir: "/out".into(),
            scratch_dir: "/scratch".into(),
            rootfs: RootfsSpec::Host {
                ro_binds: vec![PathBuf::from("/usr")],
            },
            limits: Limits {
                timeout_ms: 1000,
                memory_bytes: 1 << 29,
                pids: 64,
                cpu_time_ms: 0,
                max_output_bytes: 1 << 20,
                tmp_bytes: 1 << 20,
                max_log_bytes: 1 << 16,
            },
            source_date_epoch: 1_700_000_000,
            hostname: "attest".into(),
            work_layer: WorkLayer::Copy,
        }
    }

    #[test]
    fn valid_spec_passes() {
        spec_for_tests().validate().unwrap();
    }

    #[test]
    fn bad_specs_name_the_field() {
        type Mutation = Box<dyn Fn(&mut SandboxSpec)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("run_id", Box::new(|s| s.run_id = "../x".into())),
            ("run_id", Box::new(|s| s.run_id = "a".repeat(65))),
            ("argv", Box::new(|s| s.argv.clear())),
            ("env", Box::new(|s| s.env.push(("A=B".into(), "x".into())))),
            (
                "outputs",
                Box::new(|s| s.outputs.push("../etc/passwd".into())),
            ),
            (
                "outputs",
                Box::new(|s| s.outputs.push("/etc/passwd".into())),
            ),
            ("outputs", Box::new(|s| s.outputs.push("a//b".into()))),
            ("cwd", Box::new(|s| s.cwd = "../up".into())),
            ("input_dir", Box::new(|s| s.input_dir = "rel".into())),
            ("limits", Box::new(|s| s.limits.pids = 0)),
            ("hostname", Box::new(|s| s.hostname = "a b".into())),
            (
                "rootfs",
                Box::new(|s| {
                    s.rootfs = RootfsSpec::Host {
                        ro_binds: vec!["/proc".into()],
                    }
                }),
            ),
            (
                "rootfs",
                Box::new(|s| {
                    s.rootfs = RootfsSpec::Host {
                        ro_binds: vec!["/usr/../etc".into()],
                    }
                }),
            ),
        ];
        for (field, mutate) in cases {
            let mut s = spec_for_tests();
            mutate(&mut s);
            match s.validate() {
                Err(SandboxError::InvalidSpec { field: f, .. }) => assert_eq!(f, field),
                other => panic!("expected invalid {field}, got {other:?}"),
            }
        }
    }

    #[test]
    fn outcome_words_and_codes() {
        let oom = Outcome::OutOfMemory {
            limit_bytes: 512 << 20,
        };
        assert_eq!(
            oom.describe(),
            "the step ran out of its 512 MiB memory limit and was killed"
        );
        assert_eq!(oom.exit_code(), EXIT_OUT_OF_MEMORY);
        assert_eq!(Outcome::Signaled { signal: 9 }.exit_code(), 137);
        assert_eq!(Outcome::Exited { code: 3 }.exit_code(), 3);
        assert!(Outcome::Exited { code: 0 }.is_success());
        assert!(!Outcome::Cancelled.is_success());
        assert_eq!(
            Outcome::TimedOut { limit_ms: 90_000 }.describe(),
            "the step ran longer than its 90 s time limit and was killed"
        );
        let codes = [
            Outcome::TimedOut { limit_ms: 1 }.exit_code(),
            Outcome::OutOfMemory { limit_bytes: 1 }.exit_code(),
            Outcome::PidsLimit { limit: 1 }.exit_code(),
            Outcome::CpuTimeLimit { limit_ms: 1 }.exit_code(),
            Outcome::OutputLimit { limit_bytes: 1 }.exit_code(),
            Outcome::Cancelled.exit_code(),
            Outcome::SetupFailed {
                step: "a".into(),
                message: "b".into(),
            }
            .exit_code(),
        ];
        let mut d = codes.to_vec();
        d.sort();
        d.dedup();
        assert_eq!(d.len(), codes.len());
    }

    #[test]
    fn report_json_round_trip_and_tags() {
        let r = SandboxReport {
            outcome: Outcome::PidsLimit { limit: 3 },
            usage: Usage::default(),
            settings: run::settings(&spec_for_tests(), true, &[]),
            outputs: vec![CollectedOutput {
                path: "a".into(),
                state: OutputState::File { executable: true },
            }],
            logs: Logs {
                stdout: LogCapture {
                    step_bytes: 10,
                    dropped_bytes: 4,
                    head_bytes: 3,
                },
                stderr: LogCapture::default(),
            },
            observed: Some(Observed {
                seccomp_mode: Some(2),
                interfaces: Some(vec!["lo".into()]),
                ..Observed::default()
            }),
        };
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["outcome"]["kind"], "pids_limit");
        assert_eq!(j["outputs"][0]["state"]["kind"], "file");
        assert_eq!(j["settings"]["uid_map"], "0 100000 65536");
        assert_eq!(j["logs"]["stdout"]["dropped_bytes"], 4);
        // A report without logs (an older helper's) reads as none dropped.
        let mut old = j.clone();
        old.as_object_mut().unwrap().remove("logs");
        assert_eq!(j["observed"]["seccomp_mode"], 2);
        assert_eq!(j["observed"]["interfaces"][0], "lo");
        // Nor an observation: none, and so never hermetic.
        old.as_object_mut().unwrap().remove("observed");
        let old: SandboxReport = serde_json::from_value(old).unwrap();
        assert_eq!(old.logs, Logs::default());
        assert_eq!(old.observed, None);
        let back: SandboxReport = serde_json::from_value(j).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn spec_file_round_trip_and_commands() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("spec.json");
        write_spec(&p, &spec_for_tests()).unwrap();
        assert_eq!(launch::read_spec(&p).unwrap(), spec_for_tests());
        let c = helper_command("/h".as_ref(), &p, "/r".as_ref());
        let args: Vec<_> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(args[0], "run");
        assert_eq!(args[1], "--spec");
        assert_eq!(args[3], "--report");
        let c = cleanup_command("/h".as_ref(), "/s".as_ref());
        let args: Vec<_> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(args, ["cleanup", "--scratch-root", "/s"]);
        assert!(matches!(
            read_report(&t.path().join("none")),
            Err(SandboxError::Io { .. })
        ));
    }

    #[test]
    fn host_default_lists_existing_paths() {
        let RootfsSpec::Host { ro_binds } = RootfsSpec::host_default();
        assert!(ro_binds.contains(&PathBuf::from("/usr")));
        assert!(ro_binds.iter().all(|p| p.symlink_metadata().is_ok()));
    }
}
