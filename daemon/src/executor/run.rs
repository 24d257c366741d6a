//! One accepted build after its slot: stage the inputs, run the step
//! through the helper, and on success collect, sign and index. Each of
//! those is a function here; [`run`] calls them in order.

use super::daemon_state::set_mode;
use super::logs::{check_capture, pump_log};
use super::outputs::{collect_outputs, Collected};
use super::request::ValidatedRequest;
use super::{now_rfc3339, send, Daemon, Ending, EventSender, ExecutorError, EXIT_OUTPUT_REFUSED};
use crate::index::IndexedAttestation;
use crate::materialize::{FileList, TreeStats};
use crate::provenance_of_build::{
    build_link, sign_provenance, BuildFacts, BuildProvenanceError, LinkFacts,
};
use crate::rootfs::{RootfsFacts, StepWatch};
use attest_proto::v1::{
    build_event::Event, log_chunk::Stream, Collecting, LogCut, OutputFile, ResourceUsage, Signed,
    Staging, Started, Termination,
};
use attest_sandbox::{Outcome, RootfsSpec, SandboxReport, SandboxSpec};
use attest_tree::Digest;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::process::Child;

pub(super) async fn run(
    daemon: &Arc<Daemon>,
    request: &ValidatedRequest,
    input: TreeStats,
    invocation_id: &str,
    run_dir: &Path,
    tx: &EventSender,
) -> Result<Ending, ExecutorError> {
    let (input_dir, input_files) = stage(daemon, request, input, tx).await?;
    let spec = prepare_run_dir(daemon, request, invocation_id, input_dir, run_dir)?;
    let spec_path = run_dir.join("spec.json");
    let report_path = run_dir.join("report.json");
    attest_sandbox::write_spec(&spec_path, &spec).map_err(|source| ExecutorError::WriteSpec {
        path: spec_path.clone(),
        source,
    })?;

    let log_cap = spec.limits.max_log_bytes;
    let Some((mut child, step)) =
        run_step(daemon, &spec_path, &report_path, invocation_id, log_cap, tx).await?
    else {
        return Ok(Ending::failed(
            Termination::Cancelled,
            attest_sandbox::EXIT_CANCELLED,
            "the build was cancelled because its client went away".into(),
        ));
    };
    // The helper's own exit (sandbox teardown) runs alongside the rest of
    // the build and is awaited before its result is returned.
    let helper_exit = tokio::spawn(async move { child.wait().await });
    let result = collect_and_attest(
        daemon,
        request,
        invocation_id,
        &input_files,
        &spec.out_dir,
        step,
        tx,
    )
    .await;
    match helper_exit.await {
        Ok(Ok(status)) if status.success() => {}
        Ok(Ok(status)) => {
            tracing::warn!(invocation_id, %status, "the sandbox helper exited with a failure after its report")
        }
        Ok(Err(e)) => {
            tracing::warn!(invocation_id, error = %e, "waiting for the sandbox helper failed")
        }
        Err(e) => tracing::warn!(invocation_id, error = %e, "the helper-exit task failed"),
    }
    result
}

/// Collect, then attest: for a step that succeeded, hashes and stores its
/// outputs, signs the provenance and indexes it; for one that did not,
/// says how it ended.
async fn collect_and_attest(
    daemon: &Arc<Daemon>,
    request: &ValidatedRequest,
    invocation_id: &str,
    input_files: &FileList,
    out_dir: &Path,
    step: StepRun,
    tx: &EventSender,
) -> Result<Ending, ExecutorError> {
    let StepRun {
        report,
        stdout,
        stderr,
        started_on,
        finished_on,
        rootfs_watch,
        sandbox_started,
    } = step;
    for (stream, capture) in [
        (Stream::Stdout, report.logs.stdout),
        (Stream::Stderr, report.logs.stderr),
    ] {
        if capture.truncated() {
            send(
                tx,
                Event::LogCut(LogCut {
                    stream: stream as i32,
                    cap_bytes: report.settings.limits.max_log_bytes,
                    step_bytes: capture.step_bytes,
                    dropped_bytes: capture.dropped_bytes,
                    head_bytes: capture.head_bytes,
                }),
            )
            .await;
        }
    }
    let usage = ResourceUsage {
        wall_ms: report.usage.wall_ms,
        user_cpu_ms: report.usage.user_cpu_ms,
        sys_cpu_ms: report.usage.sys_cpu_ms,
        max_rss_kib: report.usage.max_rss_kib,
    };
    if !report.outcome.is_success() {
        let (termination, exit_code) = termination_of(&report.outcome);
        return Ok(Ending {
            termination,
            exit_code,
            exit_status: report.outcome.exit_code(),
            message: report.outcome.describe(),
            outputs: Vec::new(),
            envelope: Vec::new(),
            link: Vec::new(),
            usage: Some(usage),
        });
    }

    // The log counts go into the provenance: checked first.
    check_capture(Stream::Stdout, &stdout, &report.logs.stdout)?;
    check_capture(Stream::Stderr, &stderr, &report.logs.stderr)?;
    // Re-validates the rootfs while the outputs are collected: the
    // change feed, else a walk (stat only, through the digest cache).
    let rootfs_check = crate::rootfs::RootfsCheck::spawn(daemon.rootfs.clone(), rootfs_watch);
    tracing::debug!(
        elapsed_ms = sandbox_started.elapsed().as_millis() as u64,
        "step ended, its report read"
    );
    send(tx, Event::Collecting(Collecting {})).await;
    let collected = {
        let store = daemon.store.clone();
        let outputs = report.outputs.clone();
        let declared = request.outputs.clone();
        let out_dir = out_dir.to_path_buf();
        let max_files = daemon.config.max_output_files;
        tokio::task::spawn_blocking(move || {
            collect_outputs(&store, &out_dir, &declared, &outputs, max_files)
        })
        .await
        .map_err(ExecutorError::task("output collection"))??
    };
    let outputs = match collected {
        Ok(outputs) => outputs,
        Err(message) => {
            let mut ending =
                Ending::failed(Termination::OutputRefused, EXIT_OUTPUT_REFUSED, message);
            ending.usage = Some(usage);
            return Ok(ending);
        }
    };
    let rootfs = rootfs_check.facts().await;
    let signed = sign(
        daemon,
        request,
        &Attesting {
            invocation_id,
            input_files,
            report: &report,
            rootfs: &rootfs,
            outputs: &outputs,
            stdout,
            stderr,
            started_on: &started_on,
            finished_on: &finished_on,
        },
    )?;
    let subjects: Vec<String> = outputs.iter().map(|(_, d, _)| d.hex()).collect();
    let message = format!(
        "the step succeeded; {} output file(s) attested",
        outputs.len()
    );
    let outputs: Vec<OutputFile> = outputs
        .into_iter()
        .map(|(path, digest, is_executable)| {
            let (path, raw_path) = attest_tree::split_name(path);
            OutputFile {
                path,
                raw_path,
                digest: Some(digest.to_proto()),
                is_executable,
            }
        })
        .collect();
    // The result is one BuildDone message: one the client cannot
    // decode is refused here, before the envelope is indexed or sent,
    // so no attestation exists of a build nobody received.
    let result_bytes = result_message_bytes(&outputs, &signed, &message);
    if result_bytes > RESULT_MESSAGE_MAX {
        let mut ending = Ending::failed(
            Termination::OutputRefused,
            EXIT_OUTPUT_REFUSED,
            format!(
                "the build's result would be a message of {result_bytes} bytes, over the \
                 {RESULT_MESSAGE_MAX} a client accepts: fewer or shorter-named outputs \
                 (see --max-output-files); nothing was attested"
            ),
        );
        ending.usage = Some(usage);
        return Ok(ending);
    }
    index(daemon, invocation_id, &signed.envelope, subjects).await?;
    send(
        tx,
        Event::Signed(Signed {
            keyids: vec![daemon.signer.public_key().keyid(daemon.config.keyid_scheme)],
        }),
    )
    .await;
    Ok(Ending {
        termination: Termination::Exited,
        exit_code: 0,
        exit_status: 0,
        message,
        outputs,
        envelope: signed.envelope.into_bytes(),
        link: signed.link,
        usage: Some(usage),
    })
}

/// Stage: materializes the input tree (once per root digest) and lists its
/// files, the provenance's materials.
async fn stage(
    daemon: &Arc<Daemon>,
    request: &ValidatedRequest,
    input: TreeStats,
    tx: &EventSender,
) -> Result<(PathBuf, FileList), ExecutorError> {
    send(
        tx,
        Event::Staging(Staging {
            input_files: input.files,
            input_bytes: input.bytes,
        }),
    )
    .await;
    let daemon = daemon.clone();
    let root = request.input_root;
    let staged = tokio::task::spawn_blocking(move || -> Result<_, ExecutorError> {
        let dir = daemon.inputs.materialize(&daemon.store, &root)?;
        let files = daemon.inputs.list_files(&daemon.store, &root)?;
        Ok((dir, files))
    })
    .await
    .map_err(ExecutorError::task("staging"))??;
    Ok(staged)
}

/// Creates the run directory with its `out` and `scratch` and returns the
/// sandbox spec of the step.
fn prepare_run_dir(
    daemon: &Daemon,
    request: &ValidatedRequest,
    invocation_id: &str,
    input_dir: PathBuf,
    run_dir: &Path,
) -> Result<SandboxSpec, ExecutorError> {
    let out_dir = run_dir.join("out");
    let scratch_dir = run_dir.join("scratch");
    for dir in [run_dir, &out_dir, &scratch_dir] {
        std::fs::create_dir_all(dir).map_err(ExecutorError::io("create", dir))?;
        set_mode(dir, 0o711)?;
    }
    Ok(SandboxSpec {
        run_id: invocation_id.to_string(),
        argv: request.argv.clone(),
        env: request.env.clone(),
        input_dir,
        cwd: request.working_directory.clone(),
        outputs: request.outputs.clone(),
        out_dir,
        scratch_dir,
        rootfs: RootfsSpec::host_default(),
        limits: daemon.config.limits.resolve(request.limits.as_ref()),
        source_date_epoch: request.source_date_epoch,
        hostname: attest_sandbox::launch::DEFAULT_HOSTNAME.into(),
        // The materialized tree is owned by the step's ids with writable
        // directories (materialize/): an overlay over it costs nothing per
        // input byte. The helper falls back to a copy where it cannot mount
        // one, and the provenance says which it was.
        work_layer: attest_sandbox::WorkLayer::Overlay,
    })
}

/// The step as the helper ran it, up to its report.
struct StepRun {
    report: SandboxReport,
    stdout: Digest,
    stderr: Digest,
    started_on: String,
    finished_on: String,
    rootfs_watch: Option<StepWatch>,
    sandbox_started: std::time::Instant,
}

/// Sandbox: starts the helper, passes the step's output to the client and
/// the store until the helper lets go of it, and reads its report; returns
/// it with the helper, still tearing the sandbox down. None when the
/// client went away and the step was cancelled.
async fn run_step(
    daemon: &Arc<Daemon>,
    spec_path: &Path,
    report_path: &Path,
    invocation_id: &str,
    log_cap: u64,
    tx: &EventSender,
) -> Result<Option<(Child, StepRun)>, ExecutorError> {
    let started_on = now_rfc3339();
    let sandbox_started = std::time::Instant::now();
    let rootfs_watch = daemon.rootfs.as_ref().map(|r| r.step_starting());
    // A warm helper from the pool, else a cold one (helper_pool.rs).
    let started = daemon
        .helpers
        .start(spec_path, report_path)
        .await
        .map_err(|source| ExecutorError::HelperStart {
            helper: daemon.config.sandbox_helper.clone(),
            source,
        })?;
    let mut child = started.child;
    // Held open for the helper's whole life: EOF on it tells the helper
    // the daemon is gone.
    let _lifeline = started.lifeline;
    send(tx, Event::Started(Started {})).await;

    let stdout_task = tokio::spawn(pump_log(
        child.stdout.take().expect("piped"),
        Stream::Stdout,
        log_cap,
        tx.clone(),
        daemon.store.writer_unnamed()?,
    ));
    let stderr_task = tokio::spawn(pump_log(
        child.stderr.take().expect("piped"),
        Stream::Stderr,
        log_cap,
        tx.clone(),
        daemon.store.writer_unnamed()?,
    ));

    // The helper lets go of the step's output pipes once its report is in
    // place (all of the step's processes gone, outputs collected), before it
    // has finished tearing the sandbox down: EOF on both is the signal to
    // read the report. Its exit is awaited at the end of the build.
    let mut cancelled = false;
    let pumped = async { tokio::join!(stdout_task, stderr_task) };
    tokio::pin!(pumped);
    let (stdout, stderr) = tokio::select! {
        pumped = &mut pumped => pumped,
        () = tx.closed() => {
            cancelled = true;
            tracing::info!(invocation_id, "client went away: cancelling the step");
            if let Some(pid) = child.id() {
                let _ = attest_sandbox::request_stop(pid);
            }
            pumped.await
        }
    };
    let stdout = stdout.map_err(ExecutorError::task("stdout"))??;
    let stderr = stderr.map_err(ExecutorError::task("stderr"))??;
    let finished_on = now_rfc3339();
    if cancelled {
        let _ = child.wait().await;
        return Ok(None);
    }
    let report = match attest_sandbox::read_report(report_path) {
        Ok(report) => report,
        Err(source) => {
            // No report: the helper died. Its status says how.
            let status = child.wait().await.map_err(ExecutorError::HelperWait)?;
            return Err(ExecutorError::HelperNoReport { status, source });
        }
    };
    Ok(Some((
        child,
        StepRun {
            report,
            stdout,
            stderr,
            started_on,
            finished_on,
            rootfs_watch,
            sandbox_started,
        },
    )))
}

/// What a successful step's attestation is made of.
struct Attesting<'a> {
    invocation_id: &'a str,
    input_files: &'a FileList,
    report: &'a SandboxReport,
    rootfs: &'a RootfsFacts,
    outputs: &'a [Collected],
    stdout: Digest,
    stderr: Digest,
    started_on: &'a str,
    finished_on: &'a str,
}

/// The signed documents of a build.
struct Attested {
    /// The DSSE envelope, JSON on one line.
    envelope: String,
    /// The signed in-toto link, when one was asked for; else empty.
    link: Vec<u8>,
}

/// Largest BuildDone the daemon sends: the 4 MiB a gRPC client (tonic,
/// grpc-go, grpcio) decodes by default, `attest` included.
pub(super) const RESULT_MESSAGE_MAX: usize = 4 << 20;

/// The encoded size of the BuildDone carrying these, rounded up: each
/// output's fields and their framing, the envelope, the link and the
/// message, plus the event's few fixed fields.
fn result_message_bytes(outputs: &[OutputFile], signed: &Attested, message: &str) -> usize {
    const FRAMING: usize = 6;
    const FIXED_FIELDS: usize = 512;
    outputs
        .iter()
        .map(|o| prost::Message::encoded_len(o) + FRAMING)
        .sum::<usize>()
        + signed.envelope.len()
        + signed.link.len()
        + message.len()
        + 3 * FRAMING
        + FIXED_FIELDS
}

/// Attest, first half: signs the provenance, and the link when asked for.
/// Nothing is recorded yet.
fn sign(
    daemon: &Daemon,
    request: &ValidatedRequest,
    facts: &Attesting<'_>,
) -> Result<Attested, ExecutorError> {
    let named: Vec<(Vec<u8>, Digest)> = facts
        .outputs
        .iter()
        .map(|(p, d, _)| (p.clone(), *d))
        .collect();
    let signing_started = std::time::Instant::now();
    let envelope = sign_provenance(
        &BuildFacts {
            invocation_id: facts.invocation_id,
            builder_id: &daemon.config.builder_id,
            argv: &request.argv,
            env: &request.env,
            working_directory: &request.working_directory,
            output_paths: &request.outputs,
            requested_limits: request.limits.as_ref(),
            source: request.source.as_ref(),
            input_root: request.input_root,
            input_files: facts.input_files,
            settings: &facts.report.settings,
            observed: facts.report.observed.as_ref(),
            rootfs: facts.rootfs,
            source_date_epoch: request.source_date_epoch,
            outputs: &named,
            stdout: facts.stdout,
            stderr: facts.stderr,
            exit_code: 0,
            usage: &facts.report.usage,
            started_on: facts.started_on,
            finished_on: facts.finished_on,
            logs: facts.report.logs,
            requester: request.requester.as_ref(),
            dangerous_options: &daemon.config.dangerous_options,
            requester_claims: &request.requester_claims,
        },
        &[daemon.signer.key()],
        daemon.config.keyid_scheme,
    )?;
    let envelope = envelope.to_json();
    tracing::debug!(
        materials = facts.input_files.len(),
        envelope_bytes = envelope.len(),
        elapsed_ms = signing_started.elapsed().as_millis() as u64,
        "provenance built and signed"
    );
    let link = match &request.link_name {
        Some(name) => build_link(&LinkFacts {
            name,
            invocation_id: facts.invocation_id,
            argv: &request.argv,
            working_directory: &request.working_directory,
            input_files: facts.input_files,
            outputs: &named,
            stdout: facts.stdout,
            stderr: facts.stderr,
            exit_code: 0,
        })?
        .sign(&[daemon.signer.key()])
        .map_err(BuildProvenanceError::SignLink)?,
        None => Vec::new(),
    };
    Ok(Attested { envelope, link })
}

/// Attest, second half: records the envelope in the index under its
/// invocation id and each subject's sha256.
async fn index(
    daemon: &Arc<Daemon>,
    invocation_id: &str,
    envelope: &str,
    subjects: Vec<String>,
) -> Result<(), ExecutorError> {
    let record = IndexedAttestation {
        invocation_id: invocation_id.to_string(),
        envelope: envelope.to_string(),
        signed_on: now_rfc3339(),
    };
    let daemon = daemon.clone();
    tokio::task::spawn_blocking(move || daemon.index.insert(&record, &subjects))
        .await
        .map_err(ExecutorError::task("index"))??;
    Ok(())
}

fn termination_of(outcome: &Outcome) -> (Termination, i32) {
    match outcome {
        Outcome::Exited { code } => (Termination::Exited, *code),
        Outcome::Signaled { signal } => (Termination::Signaled, *signal),
        Outcome::TimedOut { .. } => (Termination::TimedOut, 0),
        Outcome::OutOfMemory { .. } => (Termination::OutOfMemory, 0),
        Outcome::PidsLimit { .. } => (Termination::PidsLimit, 0),
        Outcome::CpuTimeLimit { .. } => (Termination::CpuTimeLimit, 0),
        Outcome::OutputLimit { .. } => (Termination::OutputLimit, 0),
        Outcome::Cancelled => (Termination::Cancelled, 0),
        Outcome::SetupFailed { .. } => (Termination::SetupFailed, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use attest_proto::v1::{BuildDone, BuildEvent};

    fn outputs(count: usize) -> Vec<OutputFile> {
        (0..count)
            .map(|i| {
                let mut name = format!("out/dir/f{i}\u{e9}").into_bytes();
                name.push(0xff);
                let (path, raw_path) = attest_tree::split_name(name);
                OutputFile {
                    path,
                    raw_path,
                    digest: Some(attest_tree::hash_bytes(&i.to_le_bytes()).to_proto()),
                    is_executable: i % 2 == 0,
                }
            })
            .collect()
    }

    #[test]
    fn the_result_size_estimate_never_falls_short_of_the_message_sent() {
        for count in [0, 1, 1000] {
            let signed = Attested {
                envelope: "e".repeat(50 * count + 700),
                link: vec![b'l'; 30 * count],
            };
            let message = "the step succeeded; 1000 output file(s) attested".to_string();
            let outputs = outputs(count);
            let estimate = result_message_bytes(&outputs, &signed, &message);
            let sent = prost::Message::encoded_len(&BuildEvent {
                event: Some(Event::Done(BuildDone {
                    invocation_id: uuid::Uuid::new_v4().to_string(),
                    success: true,
                    termination: Termination::Exited as i32,
                    exit_code: 0,
                    message,
                    suggested_exit_status: 0,
                    outputs,
                    envelope: signed.envelope.into_bytes(),
                    link: signed.link,
                    usage: Some(ResourceUsage {
                        wall_ms: u64::MAX,
                        user_cpu_ms: u64::MAX,
                        sys_cpu_ms: u64::MAX,
                        max_rss_kib: u64::MAX,
                    }),
                })),
            });
            assert!(
                estimate >= sent,
                "{count} outputs: estimated {estimate} < {sent}"
            );
            assert!(
                estimate < sent + 1024 + 8 * count,
                "{count}: {estimate} vs {sent}"
            );
        }
    }
}
