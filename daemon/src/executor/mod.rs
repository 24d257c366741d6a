//! One build, from accepted request to signed provenance:
//! stage (materialize the input tree) -> sandbox (through the helper) ->
//! collect (hash and store the declared outputs) -> attest (sign, index).
//!
//! Events go to the caller's stream as they happen. If the caller goes
//! away, the step is cancelled. Whatever happens, the build's run directory
//! is removed at the end.
//!
//! The pieces, in the order a build meets them: [`daemon_state`] (the
//! state directory, opened once at start), [`request`] (what is checked
//! before a build is accepted), [`run`] (stage, sandbox, attest),
//! [`outputs`] (hashing and storing the declared outputs), [`logs`] (the
//! step's stdout and stderr).

mod daemon_state;
mod logs;
mod outputs;
pub mod request;
mod run;

pub use daemon_state::Daemon;
pub use request::{validate, validate_relative_path, ValidatedRequest};

use crate::error::error_chain;
use crate::materialize::{remove_tree, TreeStats};
use attest_proto::v1::{
    build_event::Event, BuildDone, BuildEvent, OutputFile, Queued, ResourceUsage, Termination,
};
use run::run;
use std::sync::Arc;
use tokio::sync::mpsc;
use tonic::Status;

/// Exit status `attest run` uses when outputs could not be collected.
pub const EXIT_OUTPUT_REFUSED: i32 = 70;
/// Exit status when the daemon itself failed.
pub const EXIT_INTERNAL: i32 = 71;

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
        Err(error) => {
            tracing::error!(invocation_id, error = %error_chain(&error), "build failed inside the daemon");
            Ending::failed(
                Termination::SetupFailed,
                EXIT_INTERNAL,
                format!(
                    "the daemon could not complete the build: {}",
                    error_chain(&error)
                ),
            )
        }
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
