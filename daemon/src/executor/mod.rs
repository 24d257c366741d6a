//! One build, from accepted request to signed provenance:
//! stage (materialize the input tree) -> sandbox (through the helper) ->
//! collect (hash and store the declared outputs) -> attest (sign, index).
//!
//! Events go to the caller's stream as they happen. If the caller goes
//! away, the step is cancelled. Whatever happens, the build's run directory
//! is removed at the end.
//!
//! The pieces, in the order a build meets them: `daemon_state` (the
//! state directory, opened once at start), [`request`] (what is checked
//! before a build is accepted), `run` (stage, sandbox, attest),
//! `outputs` (hashing and storing the declared outputs), `logs` (the
//! step's stdout and stderr).

mod daemon_state;
mod logs;
mod outputs;
pub mod request;
mod run;

pub use daemon_state::Daemon;
pub use request::{validate, validate_relative_path, PathRole, RequestError, ValidatedRequest};

use crate::error::error_chain;
use crate::index::IndexError;
use crate::materialize::{remove_tree, MaterializeError, TreeStats};
use crate::provenance_of_build::BuildProvenanceError;
use crate::signer::SignerError;
use crate::store::StoreError;
use attest_proto::v1::{
    build_event::Event, BuildDone, BuildEvent, OutputFile, Queued, ResourceUsage, Termination,
};
use attest_sandbox::SandboxError;
use run::run;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::mpsc;
use tonic::Status;

/// Exit status `attest run` uses when outputs could not be collected.
pub const EXIT_OUTPUT_REFUSED: i32 = 70;
/// Exit status when the daemon itself failed.
pub const EXIT_INTERNAL: i32 = 71;
/// Exit status when the request was refused as invalid (EX_USAGE of
/// sysexits.h): the caller's to fix, not a fault of the daemon or sandbox.
/// The client uses it for a request refused before the build started
/// (INVALID_ARGUMENT) too.
pub const EXIT_INVALID_REQUEST: i32 = 64;

/// Why a build (or opening the daemon's state) failed inside the daemon.
/// [`ExecutorError::class`] says whose fault it was, which decides the
/// exit status the client is told to use.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Materialize(#[from] MaterializeError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Signer(#[from] SignerError),
    #[error(transparent)]
    Provenance(#[from] BuildProvenanceError),
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Refused at start: every build would fail with EACCES deep in the
    /// sandbox setup otherwise.
    #[error("{ancestor} (mode {mode:o}) cannot be traversed by the sandbox's unprivileged uid; chmod o+x it or choose a --state-dir elsewhere")]
    StateDirNotTraversable { ancestor: PathBuf, mode: u32 },
    #[error("cannot run {helper} cleanup")]
    HelperCleanup {
        helper: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the sandbox spec {path}")]
    WriteSpec {
        path: PathBuf,
        #[source]
        source: SandboxError,
    },
    #[error("cannot start the sandbox helper {helper}")]
    HelperStart {
        helper: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("waiting for the sandbox helper failed")]
    HelperWait(#[source] std::io::Error),
    #[error("the sandbox helper exited with {status} without a usable report")]
    HelperNoReport {
        status: std::process::ExitStatus,
        #[source]
        source: SandboxError,
    },
    #[error("reading the step's {stream} failed")]
    StepOutput {
        stream: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The helper passed on more of a log than its cap; what was past the
    /// cap was dropped unstored.
    #[error("the sandbox helper passed on {received} bytes of the step's {stream}, over its cap of {cap}")]
    LogOverCap {
        stream: &'static str,
        cap: u64,
        received: u64,
    },
    /// The helper's report of a log disagrees with the log the daemon
    /// stored: its counts are not put into a provenance.
    #[error("the sandbox helper reports the step's {stream} as {step_bytes} bytes written, {dropped_bytes} dropped after the first {head_bytes}, but {stored} bytes of it arrived")]
    LogReportMismatch {
        stream: &'static str,
        stored: u64,
        step_bytes: u64,
        dropped_bytes: u64,
        head_bytes: u64,
    },
    /// A task the build ran on a blocking thread panicked or was cancelled.
    #[error("the {task} task failed")]
    Task {
        task: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
}

/// Whose fault a failed build was: what the client's exit status tells
/// apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// The request (or the tree it names) is not acceptable:
    /// [`EXIT_INVALID_REQUEST`].
    Request,
    /// The sandbox helper could not be started or died without a report:
    /// [`attest_sandbox::EXIT_SETUP_FAILED`], as for a setup failure the
    /// helper reports itself.
    Sandbox,
    /// The daemon itself (its disk, its index, its key, a task):
    /// [`EXIT_INTERNAL`].
    Daemon,
}

impl FailureClass {
    /// The exit status the client is told to use.
    pub fn exit_status(self) -> i32 {
        match self {
            FailureClass::Request => EXIT_INVALID_REQUEST,
            FailureClass::Sandbox => attest_sandbox::EXIT_SETUP_FAILED,
            FailureClass::Daemon => EXIT_INTERNAL,
        }
    }
}

impl ExecutorError {
    /// Wraps an I/O error with what was being done and to which path.
    pub fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> ExecutorError {
        let path = path.into();
        move |source| ExecutorError::Io {
            action,
            path,
            source,
        }
    }

    /// A join error of the blocking task named `task`.
    pub fn task(task: &'static str) -> impl FnOnce(tokio::task::JoinError) -> ExecutorError {
        move |source| ExecutorError::Task { task, source }
    }

    pub fn class(&self) -> FailureClass {
        match self {
            ExecutorError::Request(_)
            | ExecutorError::Provenance(BuildProvenanceError::AmbiguousLinkKey { .. }) => {
                FailureClass::Request
            }
            ExecutorError::Materialize(e) if e.is_bad_tree() => FailureClass::Request,
            ExecutorError::HelperStart { .. }
            | ExecutorError::HelperWait(_)
            | ExecutorError::HelperNoReport { .. }
            | ExecutorError::StepOutput { .. }
            | ExecutorError::LogOverCap { .. }
            | ExecutorError::LogReportMismatch { .. } => FailureClass::Sandbox,
            _ => FailureClass::Daemon,
        }
    }
}

pub(super) type EventSender = mpsc::Sender<Result<BuildEvent, Status>>;

pub(super) async fn send(tx: &EventSender, event: Event) -> bool {
    tx.send(Ok(BuildEvent { event: Some(event) })).await.is_ok()
}

pub(super) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// How a finished build ended, before it is turned into a BuildDone.
pub(super) struct Ending {
    pub(super) termination: Termination,
    pub(super) exit_code: i32,
    pub(super) exit_status: i32,
    pub(super) message: String,
    pub(super) outputs: Vec<OutputFile>,
    pub(super) envelope: Vec<u8>,
    pub(super) link: Vec<u8>,
    pub(super) usage: Option<ResourceUsage>,
}

impl Ending {
    pub(super) fn failed(termination: Termination, exit_status: i32, message: String) -> Ending {
        Ending {
            termination,
            exit_code: 0,
            exit_status,
            message,
            outputs: Vec::new(),
            envelope: Vec::new(),
            link: Vec::new(),
            usage: None,
        }
    }
}

/// How a build that failed with `error` ends: its message says whose fault
/// it was, its exit status tells the three classes apart.
fn ending_of_error(invocation_id: &str, error: &ExecutorError) -> Ending {
    let class = error.class();
    let chain = error_chain(error);
    let message = match class {
        FailureClass::Request => {
            tracing::info!(invocation_id, error = %chain, "build refused");
            format!("the request cannot be built: {chain}")
        }
        FailureClass::Sandbox => {
            tracing::error!(invocation_id, error = %chain, "the sandbox helper failed");
            format!("the sandbox could not run the build: {chain}")
        }
        FailureClass::Daemon => {
            tracing::error!(invocation_id, error = %chain, "build failed inside the daemon");
            format!("the daemon could not complete the build: {chain}")
        }
    };
    Ending::failed(Termination::SetupFailed, class.exit_status(), message)
}

/// Runs one validated build to the end, streaming its events.
pub async fn execute(
    daemon: Arc<Daemon>,
    request: ValidatedRequest,
    input: TreeStats,
    tx: EventSender,
) {
    let invocation_id = uuid::Uuid::new_v4().to_string();
    if !send(
        &tx,
        Event::Queued(Queued {
            invocation_id: invocation_id.clone(),
        }),
    )
    .await
    {
        return;
    }
    let Ok(_slot) = daemon.slots.acquire().await else {
        return;
    };
    let run_dir = daemon.runs_dir.join(&invocation_id);
    let ending = match run(&daemon, &request, input, &invocation_id, &run_dir, &tx).await {
        Ok(ending) => ending,
        Err(error) => ending_of_error(&invocation_id, &error),
    };
    if run_dir.exists() {
        if let Err(e) = tokio::task::spawn_blocking(move || remove_tree(&run_dir))
            .await
            .unwrap_or(Ok(()))
        {
            tracing::warn!(error = %error_chain(&e), "could not remove a run directory");
        }
    }
    let success = ending.termination == Termination::Exited
        && ending.exit_code == 0
        && !ending.envelope.is_empty();
    tracing::info!(invocation_id, success, message = %ending.message, "build finished");
    send(
        &tx,
        Event::Done(BuildDone {
            invocation_id,
            success,
            termination: ending.termination as i32,
            exit_code: ending.exit_code,
            message: ending.message,
            suggested_exit_status: ending.exit_status,
            outputs: ending.outputs,
            envelope: ending.envelope,
            link: ending.link,
            usage: ending.usage,
        }),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io_error() -> std::io::Error {
        std::io::Error::from(std::io::ErrorKind::NotFound)
    }

    #[test]
    fn request_sandbox_and_daemon_faults_end_with_their_own_exit_status() {
        let request = ExecutorError::from(RequestError::EmptyArgv);
        let bad_tree = ExecutorError::from(MaterializeError::TooDeep {
            max: 256,
            at: PathBuf::from("a"),
        });
        let ambiguous = ExecutorError::from(BuildProvenanceError::AmbiguousLinkKey {
            files: "inputs",
            key: "caf%E9.txt".into(),
        });
        for error in [&request, &bad_tree, &ambiguous] {
            assert_eq!(error.class(), FailureClass::Request, "{error}");
        }
        let helper_start = ExecutorError::HelperStart {
            helper: PathBuf::from("/usr/libexec/attestd-sandbox"),
            source: io_error(),
        };
        let step_output = ExecutorError::StepOutput {
            stream: "stdout",
            source: io_error(),
        };
        for error in [&helper_start, &step_output] {
            assert_eq!(error.class(), FailureClass::Sandbox, "{error}");
        }
        let disk = ExecutorError::io("create", "/state/runs/x")(io_error());
        let store = ExecutorError::from(StoreError::Corrupt {
            digest: attest_tree::hash_bytes(b"x"),
        });
        let missing_blob = ExecutorError::from(MaterializeError::BlobMissing {
            digest: attest_tree::hash_bytes(b"x"),
        });
        for error in [&disk, &store, &missing_blob] {
            assert_eq!(error.class(), FailureClass::Daemon, "{error}");
        }

        let ending = ending_of_error("id", &request);
        assert_eq!(
            (ending.termination, ending.exit_status),
            (Termination::SetupFailed, EXIT_INVALID_REQUEST)
        );
        assert_eq!(
            ending.message,
            "the request cannot be built: argv is empty: name the command to run"
        );
        let ending = ending_of_error("id", &helper_start);
        assert_eq!(ending.exit_status, attest_sandbox::EXIT_SETUP_FAILED);
        assert!(
            ending
                .message
                .starts_with("the sandbox could not run the build: cannot start the sandbox helper /usr/libexec/attestd-sandbox: "),
            "{}",
            ending.message
        );
        let ending = ending_of_error("id", &disk);
        assert_eq!(ending.exit_status, EXIT_INTERNAL);
        assert!(
            ending.message.starts_with(
                "the daemon could not complete the build: cannot create /state/runs/x: "
            ),
            "{}",
            ending.message
        );
    }
}
