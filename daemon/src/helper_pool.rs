//! A small pool of warm sandbox helpers (`attestd-sandbox serve`).
//!
//! A warm helper has already joined its cgroup and built its whole sandbox
//! for the daemon's rootfs and hostname, up to a hardened step process
//! waiting for what to exec (the spec-independent part of a sandbox start:
//! see `attest_sandbox::warm`), so handing it a build costs one line on its
//! stdin. Each helper serves exactly one build, because its stdout and stderr
//! are that build's output pipes. The pool keeps `target` idle helpers,
//! refills in the background after each take, and a build falls back to a
//! cold `attestd-sandbox run` when the pool is empty or its helper died.
//!
//! Idle helpers are spawned without `kill_on_drop`: dropping one (daemon
//! shutdown) closes its stdin, on which it exits and removes its cgroup by
//! itself. A SIGKILL would leave the cgroup for the next start's cleanup.
//! The daemon never forks here: it only spawns processes.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use attest_sandbox::run::Shape;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin, Command};

/// A started helper for one build: the process, and its stdin, which the
/// caller must keep open for the helper's whole life (EOF = the daemon is
/// gone: the helper cancels the step).
pub struct Started {
    /// The helper; its stdout and stderr are the step's.
    pub child: Child,
    /// The liveness pipe.
    pub lifeline: Option<ChildStdin>,
    /// Whether it came warm from the pool.
    pub warm: bool,
}

/// The pool.
pub struct HelperPool {
    helper: PathBuf,
    target: usize,
    /// What idle helpers build their sandbox for (the daemon's rootfs and
    /// hostname); a spec of another shape still runs, rebuilt.
    shape: Shape,
    idle: Mutex<VecDeque<Child>>,
}

impl HelperPool {
    /// A pool of `target` warm helpers of binary `helper` (0 = always cold),
    /// each building its sandbox ahead for `shape`. Nothing is spawned until
    /// [`HelperPool::fill`].
    pub fn new(helper: PathBuf, target: usize, shape: Shape) -> Arc<HelperPool> {
        Arc::new(HelperPool {
            helper,
            target,
            shape,
            idle: Mutex::new(VecDeque::new()),
        })
    }

    /// How many idle helpers the pool holds now.
    pub fn idle(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Child>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Spawns helpers until `target` are idle. Must run inside a tokio
    /// runtime. A spawn failure stops the refill (builds then start cold).
    pub fn fill(&self) {
        loop {
            if self.lock().len() >= self.target {
                return;
            }
            let spawned = Command::from(attest_sandbox::serve_command(&self.helper, &self.shape))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(false)
                .spawn();
            match spawned {
                Ok(child) => self.lock().push_back(child),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start a warm sandbox helper");
                    return;
                }
            }
        }
    }

    /// Refills in the background (no-op outside a tokio runtime).
    pub fn refill_soon(self: &Arc<Self>) {
        if self.target == 0 {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let pool = self.clone();
            rt.spawn(async move { pool.fill() });
        }
    }

    /// An idle helper still alive, if any; schedules a refill.
    fn take(self: &Arc<Self>) -> Option<Child> {
        let mut got = None;
        {
            let mut idle = self.lock();
            while let Some(mut c) = idle.pop_front() {
                if matches!(c.try_wait(), Ok(None)) {
                    got = Some(c);
                    break;
                }
            }
        }
        self.refill_soon();
        got
    }

    /// Starts the build of `spec_path` (report to `report_path`): hands it to
    /// a warm helper, or spawns a cold one when none is ready or the warm one
    /// does not take the request.
    pub async fn start(
        self: &Arc<Self>,
        spec_path: &Path,
        report_path: &Path,
    ) -> std::io::Result<Started> {
        let line = attest_sandbox::request_line(spec_path, report_path)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        if let Some(mut child) = self.take() {
            if let Some(mut stdin) = child.stdin.take() {
                if stdin.write_all(&line).await.is_ok() && stdin.flush().await.is_ok() {
                    return Ok(Started {
                        child,
                        lifeline: Some(stdin),
                        warm: true,
                    });
                }
            }
            // It died between the check and the write: its stdin is closed
            // now, so it exits and cleans up by itself.
        }
        self.start_cold(spec_path, report_path)
    }

    fn start_cold(&self, spec_path: &Path, report_path: &Path) -> std::io::Result<Started> {
        let mut child = Command::from(attest_sandbox::helper_command(
            &self.helper,
            spec_path,
            report_path,
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
        let lifeline = child.stdin.take();
        Ok(Started {
            child,
            lifeline,
            warm: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn shape() -> Shape {
        Shape {
            scratch_dir: "/nonexistent".into(),
            rootfs: attest_sandbox::RootfsSpec::Host { ro_binds: vec![] },
            hostname: "attestd".into(),
        }
    }

    /// A fake helper: `serve` records its request line to `$0.req` and exits
    /// 0; `run --spec S --report R` records its args to `$0.cold`.
    fn fake_helper(dir: &Path) -> PathBuf {
        let p = dir.join("fake-helper");
        std::fs::write(
            &p,
            "#!/bin/sh\nif [ \"$1\" = serve ]; then read -r line; printf '%s\\n' \"$line\" >> \"$0.req\"; exit 0; fi\necho \"$@\" >> \"$0.cold\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[tokio::test]
    async fn a_build_takes_a_warm_helper_and_the_pool_refills() {
        let t = tempfile::tempdir().unwrap();
        let h = fake_helper(t.path());
        let pool = HelperPool::new(h.clone(), 2, shape());
        pool.fill();
        assert_eq!(pool.idle(), 2);
        let mut s = pool
            .start(Path::new("/r/spec.json"), Path::new("/r/report.json"))
            .await
            .unwrap();
        assert!(s.warm);
        drop(s.lifeline.take());
        assert!(s.child.wait().await.unwrap().success());
        let req = std::fs::read_to_string(h.with_extension("req")).unwrap();
        assert_eq!(req, "/r/spec.json\t/r/report.json\n");
        for _ in 0..100 {
            if pool.idle() == 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(pool.idle(), 2, "the pool did not refill");
        assert!(!h.with_extension("cold").exists());
    }

    #[tokio::test]
    async fn an_empty_pool_falls_back_to_a_cold_start() {
        let t = tempfile::tempdir().unwrap();
        let h = fake_helper(t.path());
        let pool = HelperPool::new(h.clone(), 0, shape());
        let mut s = pool
            .start(Path::new("/r/s"), Path::new("/r/r"))
            .await
            .unwrap();
        assert!(!s.warm);
        assert!(s.child.wait().await.unwrap().success());
        assert_eq!(
            std::fs::read_to_string(h.with_extension("cold")).unwrap(),
            "run --spec /r/s --report /r/r\n"
        );
        assert_eq!(pool.idle(), 0);
    }

    #[tokio::test]
    async fn a_dead_idle_helper_is_skipped() {
        let t = tempfile::tempdir().unwrap();
        let h = fake_helper(t.path());
        let pool = HelperPool::new(h.clone(), 1, shape());
        pool.fill();
        // Kill the idle helper behind the pool's back.
        let mut c = pool.lock().pop_front().unwrap();
        c.start_kill().unwrap();
        c.wait().await.unwrap();
        pool.lock().push_back(c);
        let mut s = pool
            .start(Path::new("/r/s"), Path::new("/r/r"))
            .await
            .unwrap();
        assert!(!s.warm);
        assert!(s.child.wait().await.unwrap().success());
    }

    #[tokio::test]
    async fn unframeable_paths_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let pool = HelperPool::new(fake_helper(t.path()), 0, shape());
        let e = pool
            .start(Path::new("/r/a\tb"), Path::new("/r/r"))
            .await
            .err()
            .unwrap();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    }
}
