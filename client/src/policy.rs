//! `attest verify --policy`: reading policy files and evaluating them in a
//! child process whose memory and time are bounded.
//!
//! Why a child: regorus checks its time budget between interpreter steps,
//! but nothing in it bounds what one builtin allocates
//! (`numbers.range(0, 1e12)` asks for terabytes in one call) unless its
//! mimalloc global allocator is compiled in, which would replace the
//! allocator of everything linking the provenance crate. So `attest verify`
//! re-runs itself as the hidden `attest __policy-eval`, which sets its own
//! address-space limit (RLIMIT_AS) before it reads the policy, evaluates,
//! and writes the decision as JSON. An allocation past the limit aborts the
//! child; the parent reports that as [`PolicyError::MemoryLimit`]. The
//! parent also kills a child that outlives the time limit, so a builtin the
//! timer cannot interrupt is bounded too.

use crate::error::ClientError;
use attest_provenance::policy::{evaluate, Decision, Limits, PolicyError, PolicySource};
use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The hidden subcommand the child runs.
pub const CHILD_SUBCOMMAND: &str = "__policy-eval";

/// Address space the child may use: the binary and its libraries take tens
/// of MiB; the rest is for the input document and what evaluation builds.
pub const DEFAULT_MEMORY_LIMIT: u64 = 1 << 30;

/// How long the parent waits beyond the evaluation's own time limit for
/// the child to start, parse and load its input.
const CHILD_GRACE: Duration = Duration::from_secs(5);

/// What the parent sends the child on stdin.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Request {
    policies: Vec<PolicySource>,
    data: Option<Value>,
    input: Value,
    limits: Limits,
    memory_limit: u64,
}

/// Reads the policy files.
pub fn read_policies(paths: &[PathBuf]) -> Result<Vec<PolicySource>, ClientError> {
    paths
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).map_err(ClientError::io("read", p))?;
            Ok(PolicySource {
                name: p.display().to_string(),
                text,
            })
        })
        .collect()
}

/// Reads the `--policy-data` JSON file.
pub fn read_policy_data(path: &Path) -> Result<Value, ClientError> {
    let bytes = std::fs::read(path).map_err(ClientError::io("read", path))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ClientError::Invalid(format!("{}: not json: {e}", path.display())))
}

/// Evaluates in a child `attest __policy-eval` limited to `memory_limit`
/// bytes of address space and `limits.time` (plus start-up grace).
pub fn evaluate_bounded(
    policies: &[PolicySource],
    data: Option<&Value>,
    input: &Value,
    limits: Limits,
    memory_limit: u64,
) -> Result<Decision, PolicyError> {
    let spawn_failed = |what: &str, e: std::io::Error| PolicyError::Eval {
        rule: "allow".into(),
        reason: format!("cannot {what} the policy evaluator process: {e}"),
    };
    let exe = std::env::current_exe().map_err(|e| spawn_failed("find", e))?;
    let request = serde_json::to_vec(&Request {
        policies: policies.to_vec(),
        data: data.cloned(),
        input: input.clone(),
        limits,
        memory_limit,
    })
    .map_err(|e| PolicyError::Eval {
        rule: "allow".into(),
        reason: format!("cannot encode the evaluation request: {e}"),
    })?;
    let mut child = Command::new(exe)
        .arg(CHILD_SUBCOMMAND)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| spawn_failed("start", e))?;
    // Feed stdin and drain stdout/stderr on threads so neither side blocks
    // on a full pipe while the parent watches the clock.
    let mut stdin = child.stdin.take();
    let writer = std::thread::spawn(move || {
        if let Some(s) = stdin.as_mut() {
            let _ = s.write_all(&request);
        }
    });
    let mut stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_end(&mut out);
        }
        out
    });
    let mut stderr = child.stderr.take();
    let err_reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        if let Some(s) = stderr.as_mut() {
            // Bounded: an abort message is one line.
            let _ = s.take(64 * 1024).read_to_end(&mut out);
        }
        out
    });
    let deadline = Instant::now() + limits.time + CHILD_GRACE;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                // Only our own child, by its handle.
                let _ = child.kill();
                let _ = child.wait();
                return Err(PolicyError::TimeLimit { limit: limits.time });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(spawn_failed("wait for", e)),
        }
    };
    let _ = writer.join();
    let out = reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    if status.success() {
        let result: Result<Decision, PolicyError> =
            serde_json::from_slice(&out).map_err(|e| PolicyError::Eval {
                rule: "allow".into(),
                reason: format!("the policy evaluator printed no result: {e}"),
            })?;
        return result;
    }
    // A child that did not exit cleanly never allows. An abort (the
    // allocator refusing past RLIMIT_AS) or a kill by the OOM killer is the
    // memory limit; anything else is reported as it was.
    use std::os::unix::process::ExitStatusExt;
    let stderr = String::from_utf8_lossy(&err).trim().to_string();
    match status.signal() {
        Some(sig)
            if sig == nix::sys::signal::Signal::SIGABRT as i32
                || sig == nix::sys::signal::Signal::SIGKILL as i32 =>
        {
            Err(PolicyError::MemoryLimit {
                limit_bytes: memory_limit,
                reason: if stderr.is_empty() {
                    format!("the evaluator was killed by signal {sig}")
                } else {
                    stderr
                },
            })
        }
        _ => Err(PolicyError::Eval {
            rule: "allow".into(),
            reason: format!("the policy evaluator failed ({status}): {stderr}"),
        }),
    }
}

/// The child's side: limit the address space, read the request from
/// stdin, evaluate, print the `Result<Decision, PolicyError>` as JSON.
/// Returns the exit code (0 whenever a result was printed).
pub fn child_main() -> i32 {
    let mut bytes = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut bytes) {
        eprintln!("attest {CHILD_SUBCOMMAND}: cannot read the request: {e}");
        return 2;
    }
    let request: Request = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("attest {CHILD_SUBCOMMAND}: malformed request: {e}");
            return 2;
        }
    };
    drop(bytes);
    // The limit is set before the policy is parsed: everything regorus
    // does happens under it.
    // Never above a hard limit already in force (a CI runner's `ulimit -v`):
    // raising it would fail, and a lower limit bounds us all the same.
    let limit = match nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_AS) {
        Ok((_, hard)) => request.memory_limit.min(hard),
        Err(_) => request.memory_limit,
    };
    if let Err(e) =
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_AS, limit, limit)
    {
        eprintln!("attest {CHILD_SUBCOMMAND}: cannot limit memory to {limit} bytes: {e}");
        return 2;
    }
    let result = evaluate(
        &request.policies,
        request.data.as_ref(),
        &request.input,
        request.limits,
    );
    match serde_json::to_string(&result) {
        Ok(text) => {
            println!("{text}");
            0
        }
        Err(e) => {
            eprintln!("attest {CHILD_SUBCOMMAND}: cannot encode the result: {e}");
            2
        }
    }
}
