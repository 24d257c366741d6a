//! `attestd-sandbox run --spec F --report F`,
//! `attestd-sandbox serve --scratch-dir DIR [--hostname NAME] [--ro-bind P]...` (a warm
//! helper: builds its sandbox ahead, then reads `SPEC<TAB>REPORT` on stdin,
//! see `attest_sandbox::warm_keeper`), `attestd-sandbox cleanup --scratch-root DIR`
//! and `attestd-sandbox memory-namespace --dir DIR --size BYTES -- DAEMON
//! ARGS...` (makes the daemon's mount namespace and input-tree tmpfs, then
//! execs the daemon in it: see `attest_sandbox::memory_namespace`).
//!
//! Writes nothing to stdout or stderr itself: those carry only the step's
//! output. Exit status 0 = a report was written (run) / clean (cleanup);
//! 2 = bad usage; 1 = the report could not be written.

use std::path::PathBuf;

use attest_sandbox::helper::Shape;
use attest_sandbox::sys::LinuxSyscalls;
use attest_sandbox::{launch, memory_namespace, RootfsSpec, SandboxError};

enum Cmd {
    Run { spec: PathBuf, report: PathBuf },
    Serve(Shape),
    Cleanup { scratch_root: PathBuf },
}

fn parse(args: &[String]) -> Result<Cmd, SandboxError> {
    let usage = || {
        SandboxError::Usage(
            "attestd-sandbox run --spec FILE --report FILE \
             | serve --scratch-dir DIR [--hostname NAME] [--ro-bind PATH]... \
             | cleanup --scratch-root DIR"
                .into(),
        )
    };
    let get = |flag: &str| -> Option<PathBuf> {
        let i = args.iter().position(|a| a == flag)?;
        args.get(i + 1).map(PathBuf::from)
    };
    match args.first().map(String::as_str) {
        Some("run") if args.len() == 5 => Ok(Cmd::Run {
            spec: get("--spec").ok_or_else(usage)?,
            report: get("--report").ok_or_else(usage)?,
        }),
        Some("serve") => parse_serve(&args[1..]).ok_or_else(usage),
        Some("cleanup") if args.len() == 3 => Ok(Cmd::Cleanup {
            scratch_root: get("--scratch-root").ok_or_else(usage)?,
        }),
        _ => Err(usage()),
    }
}

/// `--scratch-dir DIR [--hostname NAME] [--ro-bind PATH]...`; without any
/// `--ro-bind`, the host's default rootfs.
fn parse_serve(args: &[String]) -> Option<Cmd> {
    let (mut scratch_dir, mut hostname, mut binds) = (None, None, Vec::new());
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next()?;
        match flag.as_str() {
            "--scratch-dir" => scratch_dir = Some(PathBuf::from(value)),
            "--hostname" => hostname = Some(value.clone()),
            "--ro-bind" => binds.push(PathBuf::from(value)),
            _ => return None,
        }
    }
    Some(Cmd::Serve(Shape {
        scratch_dir: scratch_dir?,
        rootfs: if binds.is_empty() {
            RootfsSpec::host_default()
        } else {
            RootfsSpec::Host { ro_binds: binds }
        },
        hostname: hostname.unwrap_or_else(|| launch::DEFAULT_HOSTNAME.to_string()),
    }))
}

/// `memory-namespace`: on success the process becomes the daemon and this
/// never returns. Unlike the other modes it runs before the daemon has any
/// output of its own, so it may explain a failure on stderr.
fn launch_daemon(sys: &LinuxSyscalls, args: &[std::ffi::OsString]) -> i32 {
    use std::os::unix::process::CommandExt;
    let Some(request) = memory_namespace::parse_launch(args) else {
        eprintln!(
            "usage: attestd-sandbox memory-namespace --dir DIR --size BYTES -- DAEMON ARGS..."
        );
        return 2;
    };
    let error = memory_namespace::prepare_daemon(sys, &request).exec();
    eprintln!(
        "attestd-sandbox: {}",
        memory_namespace::exec_failed(&request, error).chain()
    );
    1
}

fn main() {
    // Before anything else: no descriptor the daemon leaked (sockets, keys,
    // the store) survives into the helper, let alone the step.
    let sys = LinuxSyscalls;
    let closed = attest_sandbox::helper::close_inherited_fds(&sys);
    // A panic must not write to the step's stderr.
    std::panic::set_hook(Box::new(|_| {}));
    let args_os: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if args_os.first().is_some_and(|a| a == "memory-namespace") {
        std::process::exit(launch_daemon(&sys, &args_os[1..]));
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match parse(&args) {
        Err(_) => 2,
        Ok(Cmd::Run { spec, report }) => {
            let spec = closed.and_then(|()| launch::read_spec(&spec));
            let written = match spec {
                Ok(s) => attest_sandbox::helper::run(&s, &report),
                Err(e) => attest_sandbox::helper::deliver(
                    &sys,
                    &report,
                    &attest_sandbox::helper::setup_failed(
                        attest_sandbox::helper::unknown_settings(),
                        &e,
                    ),
                ),
            };
            i32::from(!written)
        }
        // A warm helper that may hold a leaked descriptor starts nothing;
        // the daemon sees it exit without a report.
        Ok(Cmd::Serve(_)) if closed.is_err() => 1,
        Ok(Cmd::Serve(shape)) => attest_sandbox::warm_keeper::serve(&sys, &shape),
        Ok(Cmd::Cleanup { scratch_root }) => {
            // The run directories under the scratch root are this daemon's
            // stale runs: only their cgroups (and dead pools') are removed.
            let stale_runs: Vec<String> = std::fs::read_dir(&scratch_root)
                .map(|entries| {
                    entries
                        .flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            // Runs nothing of a step, so a descriptor that could not be
            // closed leaks nowhere: the sweep goes on.
            attest_sandbox::cgroup::cleanup_leftovers(&sys, &stale_runs);
            attest_sandbox::helper::unmount_under(&sys, &scratch_root);
            let left = attest_sandbox::helper::unmount_under(&sys, &scratch_root);
            i32::from(!left.is_empty())
        }
    };
    std::process::exit(code)
}
