//! One accepted build after its slot: stage the inputs, run the step
//! through the helper, and on success sign and index its provenance.

use super::daemon_state::set_mode;
use super::logs::pump_log;
use super::outputs::collect_outputs;
use super::request::ValidatedRequest;
use super::{now_rfc3339, send, Daemon, Ending, EventSender, EXIT_OUTPUT_REFUSED};
use crate::error::{error_chain, DaemonError};
use crate::index::IndexedAttestation;
use crate::materialize::TreeStats;
use crate::provenance_of_build::{build_link, sign_provenance, BuildFacts, LinkFacts};
use attest_proto::v1::{
    build_event::Event, log_chunk::Stream, Collecting, OutputFile, ResourceUsage, Signed, Staging,
    Started, Termination,
};
use attest_sandbox::{Outcome, RootfsSpec, SandboxSpec};
use attest_tree::Digest;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub(super) async fn run(
    daemon: &Arc<Daemon>,
    request: &ValidatedRequest,
    input: TreeStats,
    invocation_id: &str,
    run_dir: &Path,
    tx: &EventSender,
) -> Result<Ending, DaemonError> {
    send(
        tx,
        Event::Staging(Staging {
            input_files: input.files,
            input_bytes: input.bytes,
        }),
    )
    .await;
    let staged = {
        let daemon = daemon.clone();
        let root = request.input_root;
        tokio::task::spawn_blocking(
            move || -> Result<(PathBuf, crate::materialize::FileList), DaemonError> {
                let dir = daemon.inputs.materialize(&daemon.store, &root)?;
                let files = daemon.inputs.list_files(&daemon.store, &root)?;
                Ok((dir, files))
            },
        )
        .await
        .map_err(|e| DaemonError::Sandbox(format!("staging task failed: {e}")))??
    };
    let (input_dir, input_files) = staged;

    let out_dir = run_dir.join("out");
    let scratch_dir = run_dir.join("scratch");
    for dir in [run_dir, &out_dir, &scratch_dir] {
        std::fs::create_dir_all(dir).map_err(DaemonError::io("create", dir))?;
        set_mode(dir, 0o711)?;
    }
    let limits = daemon.config.limits.resolve(request.limits.as_ref());
    let spec = SandboxSpec {
        run_id: invocation_id.to_string(),
        argv: request.argv.clone(),
        env: request.env.clone(),
        input_dir,
        cwd: request.working_directory.clone(),
        outputs: request.outputs.clone(),
        out_dir: out_dir.clone(),
        scratch_dir,
        rootfs: RootfsSpec::host_default(),
        limits,
        source_date_epoch: request.source_date_epoch,
        hostname: attest_sandbox::launch::DEFAULT_HOSTNAME.into(),
        // The materialized tree is owned by the step's ids with writable
        // directories (materialize.rs): an overlay over it costs nothing per
        // input byte. The helper falls back to a copy where it cannot mount
        // one, and the provenance says which it was.
        work_layer: attest_sandbox::WorkLayer::Overlay,
    };
    let spec_path = run_dir.join("spec.json");
    let report_path = run_dir.join("report.json");
    attest_sandbox::write_spec(&spec_path, &spec)
        .map_err(|e| DaemonError::Sandbox(error_chain(&e)))?;

    let started_on = now_rfc3339();
    let sandbox_started = std::time::Instant::now();
    let rootfs_watch = daemon.rootfs.as_ref().map(|r| r.step_starting());
    // A warm helper from the pool, else a cold one (helper_pool.rs).
    let started = daemon
        .helpers
        .start(&spec_path, &report_path)
        .await
        .map_err(|e| {
            DaemonError::Sandbox(format!(
                "cannot start {}: {e}",
                daemon.config.sandbox_helper.display()
            ))
        })?;
    let mut child = started.child;
    // Held open for the helper's whole life: EOF on it tells the helper
    // the daemon is gone.
    let _lifeline = started.lifeline;
    send(tx, Event::Started(Started {})).await;

    let stdout_task = tokio::spawn(pump_log(
        child.stdout.take().expect("piped"),
        Stream::Stdout,
        tx.clone(),
        daemon.store.writer_unnamed()?,
    ));
    let stderr_task = tokio::spawn(pump_log(
        child.stderr.take().expect("piped"),
        Stream::Stderr,
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
    let stdout = stdout.map_err(|e| DaemonError::Sandbox(e.to_string()))??;
    let stderr = stderr.map_err(|e| DaemonError::Sandbox(e.to_string()))??;
    let finished_on = now_rfc3339();
    if cancelled {
        let _ = child.wait().await;
        return Ok(Ending::failed(
            Termination::Cancelled,
            attest_sandbox::EXIT_CANCELLED,
            "the build was cancelled because its client went away".into(),
        ));
    }
    let report = match attest_sandbox::read_report(&report_path) {
        Ok(report) => report,
        Err(e) => {
            // No report: the helper died. Its status says how.
            let status = child
                .wait()
                .await
                .map_err(|e| DaemonError::Sandbox(format!("waiting for the helper failed: {e}")))?;
            return Err(DaemonError::Sandbox(format!(
                "the helper exited with {status} without a usable report: {}",
                error_chain(&e)
            )));
        }
    };
    // The helper's own exit (sandbox teardown) runs alongside the rest of
    // the build and is awaited before its result is returned.
    let helper_exit = tokio::spawn(async move { child.wait().await });
    let result: Result<Ending, DaemonError> = async {
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
            tokio::task::spawn_blocking(move || {
                collect_outputs(&store, &out_dir, &declared, &outputs)
            })
            .await
            .map_err(|e| DaemonError::Sandbox(format!("collect task failed: {e}")))??
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

        let named: Vec<(Vec<u8>, Digest)> =
            outputs.iter().map(|(p, d, _)| (p.clone(), *d)).collect();
        let rootfs = rootfs_check.facts().await;
        let signing_started = std::time::Instant::now();
        let envelope = sign_provenance(
            &BuildFacts {
                invocation_id,
                builder_id: &daemon.config.builder_id,
                argv: &request.argv,
                env: &request.env,
                working_directory: &request.working_directory,
                output_paths: &request.outputs,
                requested_limits: request.limits.as_ref(),
                source: request.source.as_ref(),
                input_root: request.input_root,
                input_files: &input_files,
                settings: &report.settings,
                rootfs: &rootfs,
                source_date_epoch: request.source_date_epoch,
                outputs: &named,
                stdout,
                stderr,
                exit_code: 0,
                usage: &report.usage,
                started_on: &started_on,
                finished_on: &finished_on,
            },
            &[daemon.signer.key()],
            daemon.config.keyid_scheme,
        )?;
        let envelope_json = envelope.to_json();
        tracing::debug!(
            materials = input_files.len(),
            envelope_bytes = envelope_json.len(),
            elapsed_ms = signing_started.elapsed().as_millis() as u64,
            "provenance built and signed"
        );
        let link = match &request.link_name {
            Some(name) => build_link(&LinkFacts {
                name,
                invocation_id,
                argv: &request.argv,
                working_directory: &request.working_directory,
                input_files: &input_files,
                outputs: &named,
                stdout,
                stderr,
                exit_code: 0,
            })?
            .sign(&[daemon.signer.key()])
            .map_err(|e| DaemonError::Signing(error_chain(&e)))?,
            None => Vec::new(),
        };
        let record = IndexedAttestation {
            invocation_id: invocation_id.to_string(),
            envelope: envelope_json.clone(),
            signed_on: now_rfc3339(),
        };
        let subjects: Vec<String> = named.iter().map(|(_, d)| d.hex()).collect();
        {
            let daemon = daemon.clone();
            tokio::task::spawn_blocking(move || daemon.index.insert(&record, &subjects))
                .await
                .map_err(|e| DaemonError::Index(e.to_string()))??;
        }
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
            message: format!(
                "the step succeeded; {} output file(s) attested",
                outputs.len()
            ),
            outputs: outputs
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
                .collect(),
            envelope: envelope_json.into_bytes(),
            link,
            usage: Some(usage),
        })
    }
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
