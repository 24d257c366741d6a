//! One build, from accepted request to signed provenance:
//! stage (materialize the input tree) -> sandbox (through the helper) ->
//! collect (hash and store the declared outputs) -> attest (sign, index).
//!
//! Events go to the caller's stream as they happen. If the caller goes
//! away, the step is cancelled. Whatever happens, the build's run directory
//! is removed at the end.

use crate::config::Config;
use crate::error::{error_chain, DaemonError};
use crate::index::{AttestationIndex, IndexedAttestation};
use crate::materialize::{remove_tree, InputTrees, TreeStats};
use crate::provenance_of_build::{build_link, sign_provenance, BuildFacts, LinkFacts};
use crate::signer::Signer;
use crate::store::{BlobStore, BlobWriter};
use attest_proto::v1::{
    build_event::Event, log_chunk::Stream, BuildDone, BuildEvent, BuildRequest, Collecting,
    LogChunk, OutputFile, Queued, ResourceUsage, Signed, SourceInfo, Staging, Started, Termination,
};
use attest_sandbox::{CollectedOutput, Outcome, OutputState, RootfsSpec, SandboxSpec};
use attest_tree::{validate_name, Digest};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, Semaphore};
use tonic::Status;

/// Exit status `attest run` uses when outputs could not be collected.
pub const EXIT_OUTPUT_REFUSED: i32 = 70;
/// Exit status when the daemon itself failed.
pub const EXIT_INTERNAL: i32 = 71;

/// Shared state of the running daemon.
pub struct Daemon {
    pub config: Config,
    pub store: BlobStore,
    pub inputs: InputTrees,
    pub index: AttestationIndex,
    pub signer: Signer,
    slots: Semaphore,
    runs_dir: PathBuf,
    /// Warm sandbox helpers, one per build slot.
    pub helpers: std::sync::Arc<crate::helper_pool::HelperPool>,
    /// None with `--rootfs-hashing off`.
    pub rootfs: Option<Arc<crate::rootfs::RootfsHasher>>,
}

impl Daemon {
    /// Opens (creating) everything under the state dir and cleans what a
    /// crashed daemon left behind.
    pub fn open(config: Config) -> Result<Daemon, DaemonError> {
        let state = &config.state_dir;
        // The sandbox runs as an unprivileged mapped uid that must reach its
        // run directory, so the state dir and runs/ are traverse-only (0711:
        // no listing); keys, the content store, the materialized inputs and
        // the index stay owner-only, out of the sandbox's and other users' reach.
        std::fs::create_dir_all(state).map_err(DaemonError::io("create", state))?;
        set_mode(state, 0o711)?;
        check_ancestors_traversable(state)?;
        let runs_dir = state.join("runs");
        std::fs::create_dir_all(&runs_dir).map_err(DaemonError::io("create", &runs_dir))?;
        set_mode(&runs_dir, 0o711)?;
        let cas_dir = state.join("cas");
        std::fs::create_dir_all(&cas_dir).map_err(DaemonError::io("create", &cas_dir))?;
        set_mode(&cas_dir, 0o700)?;
        let inputs_dir = state.join("inputs");
        std::fs::create_dir_all(&inputs_dir).map_err(DaemonError::io("create", &inputs_dir))?;
        // The helper copies the input tree as root before it drops into the
        // step's user namespace, so the mapped uid never needs this path:
        // 0700 keeps other local users out of every uploaded source tree.
        set_mode(&inputs_dir, 0o700)?;
        clean_stale_runs(&config.sandbox_helper, &runs_dir)?;
        // After the cleanup, which removes every `attestd-*` cgroup.
        // Where warm helpers mount their scratch tmpfs, each in its own
        // mount namespace (so all share the one empty directory); traversed
        // by the sandbox's mapped root like the run directories.
        let pool_scratch = state.join("pool-scratch");
        std::fs::create_dir_all(&pool_scratch).map_err(DaemonError::io("create", &pool_scratch))?;
        set_mode(&pool_scratch, 0o711)?;
        let helpers = crate::helper_pool::HelperPool::new(
            config.sandbox_helper.clone(),
            config.max_parallel_builds,
            attest_sandbox::run::Shape {
                scratch_dir: pool_scratch,
                rootfs: RootfsSpec::host_default(),
                hostname: attest_sandbox::launch::DEFAULT_HOSTNAME.into(),
            },
        );
        helpers.refill_soon();
        let rootfs = config
            .rootfs_hashing
            .then(|| crate::rootfs::RootfsHasher::start_for_host(state));
        Ok(Daemon {
            helpers,
            rootfs,
            store: BlobStore::open(&cas_dir)?,
            // The memory tmpfs, which `main` mounted when the config still
            // names a size for it.
            inputs: InputTrees::open(
                &inputs_dir,
                (config.inputs_memory_bytes > 0).then(|| {
                    crate::materialize::MemoryPlace::new(
                        state.join(crate::materialize::MEMORY_DIR),
                        config.inputs_memory_bytes,
                    )
                }),
            )?,
            index: {
                let path = state.join("index.redb");
                let index = AttestationIndex::open(&path)?;
                set_mode(&path, 0o600)?;
                index
            },
            signer: Signer::load_or_generate(state)?,
            slots: Semaphore::new(config.max_parallel_builds),
            runs_dir,
            config,
        })
    }
}

/// When the daemon is root, steps run as an unprivileged mapped uid that
/// must be able to walk down to its run directory; a state dir below a
/// 0700 directory would fail every build with EACCES deep in the sandbox
/// setup, so it is refused at start with the directory named.
fn check_ancestors_traversable(state: &Path) -> Result<(), DaemonError> {
    if attest_proto::current_uid() != 0 {
        return Ok(());
    }
    let absolute = std::fs::canonicalize(state).map_err(DaemonError::io("resolve", state))?;
    for ancestor in absolute.ancestors().skip(1) {
        let mode = std::fs::metadata(ancestor)
            .map_err(DaemonError::io("stat", ancestor))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            return Err(DaemonError::Setting {
                name: "state-dir",
                reason: format!(
                    "{} (mode {:o}) cannot be traversed by the sandbox's unprivileged uid; chmod o+x it or choose a --state-dir elsewhere",
                    ancestor.display(),
                    mode & 0o7777
                ),
            });
        }
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<(), DaemonError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(DaemonError::io("chmod", path))
}

/// Asks the helper to remove cgroups and mounts of runs a crash left, then
/// deletes their directories.
fn clean_stale_runs(helper: &Path, runs_dir: &Path) -> Result<(), DaemonError> {
    let stale: Vec<PathBuf> = std::fs::read_dir(runs_dir)
        .map_err(DaemonError::io("list", runs_dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    // Always run: besides stale runs, a crash can leave warm helpers'
    // cgroups whose keepers were killed along with the daemon.
    if !stale.is_empty() {
        tracing::warn!(
            count = stale.len(),
            "cleaning up builds left by an earlier daemon"
        );
    }
    let status = attest_sandbox::cleanup_command(helper, runs_dir)
        .stdin(Stdio::null())
        .status()
        .map_err(|e| {
            DaemonError::Sandbox(format!("cannot run {} cleanup: {e}", helper.display()))
        })?;
    if !status.success() {
        tracing::warn!(%status, "sandbox cleanup reported a failure");
    }
    for run in stale {
        remove_tree(&run)?;
    }
    Ok(())
}

/// A request that passed validation.
#[derive(Debug, Clone)]
pub struct ValidatedRequest {
    pub input_root: Digest,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_directory: String,
    pub outputs: Vec<String>,
    pub limits: Option<attest_proto::v1::Limits>,
    pub source: Option<SourceInfo>,
    pub source_date_epoch: u64,
    /// The in-toto step name when the request asked for a link.
    pub link_name: Option<String>,
}

/// Checks a relative path from a request: no "..", not absolute, no empty
/// or "." components, no NUL. Returns it unchanged.
pub fn validate_relative_path(
    what: &str,
    path: &str,
    allow_empty: bool,
) -> Result<String, DaemonError> {
    if path.is_empty() {
        return if allow_empty {
            Ok(String::new())
        } else {
            Err(DaemonError::InvalidRequest(format!("{what} is empty")))
        };
    }
    if path.starts_with('/') {
        return Err(DaemonError::InvalidRequest(format!(
            "{what} {path:?} is absolute; give it relative to the source root"
        )));
    }
    for component in path.split('/') {
        if component == ".." {
            return Err(DaemonError::InvalidRequest(format!(
                "{what} {path:?} contains \"..\", which could leave the build's tree"
            )));
        }
        if let Err(why) = validate_name(component) {
            return Err(DaemonError::InvalidRequest(format!(
                "{what} {path:?}: {why}"
            )));
        }
    }
    Ok(path.to_string())
}

/// Validates everything in a request that can be checked without the store.
pub fn validate(request: &BuildRequest) -> Result<ValidatedRequest, DaemonError> {
    let root = request
        .input_root
        .as_ref()
        .ok_or_else(|| DaemonError::InvalidRequest("input_root is missing".into()))?;
    let input_root = Digest::from_proto(root)
        .map_err(|e| DaemonError::InvalidRequest(format!("input_root: {e}")))?;
    if request.argv.is_empty() || request.argv[0].is_empty() {
        return Err(DaemonError::InvalidRequest(
            "argv is empty: name the command to run".into(),
        ));
    }
    if let Some(arg) = request.argv.iter().find(|a| a.contains('\0')) {
        return Err(DaemonError::InvalidRequest(format!(
            "argument {arg:?} contains NUL"
        )));
    }
    let mut env = Vec::with_capacity(request.env.len());
    for var in &request.env {
        if var.name.is_empty()
            || var.name.contains('=')
            || var.name.contains('\0')
            || var.value.contains('\0')
        {
            return Err(DaemonError::InvalidRequest(format!(
                "environment variable {:?} is malformed: names must be non-empty without '=' or NUL",
                var.name
            )));
        }
        env.push((var.name.clone(), var.value.clone()));
    }
    if request.output_paths.is_empty() {
        return Err(DaemonError::InvalidRequest(
            "no output paths: declare at least one product to attest".into(),
        ));
    }
    let mut outputs = Vec::new();
    for path in &request.output_paths {
        let path = validate_relative_path("output path", path, false)?;
        if outputs.contains(&path) {
            return Err(DaemonError::InvalidRequest(format!(
                "output path {path:?} is declared twice"
            )));
        }
        outputs.push(path);
    }
    Ok(ValidatedRequest {
        input_root,
        argv: request.argv.clone(),
        env,
        working_directory: validate_relative_path(
            "working directory",
            &request.working_directory,
            true,
        )?,
        outputs,
        limits: request.limits,
        source: request.source.clone(),
        source_date_epoch: request.source_date_epoch,
        link_name: validate_link_name(request)?,
    })
}

/// The link's step name when one was requested: the request's, or
/// [`crate::provenance_of_build::DEFAULT_LINK_NAME`]. The client turns it into a
/// file name, so it is checked here too.
fn validate_link_name(request: &BuildRequest) -> Result<Option<String>, DaemonError> {
    if !request.emit_link {
        return Ok(None);
    }
    let name = if request.link_name.is_empty() {
        crate::provenance_of_build::DEFAULT_LINK_NAME
    } else {
        &request.link_name
    };
    attest_provenance::link::validate_step_name(name)
        .map_err(|e| DaemonError::InvalidRequest(format!("link_name: {e}")))?;
    Ok(Some(name.to_string()))
}

type EventSender = mpsc::Sender<Result<BuildEvent, Status>>;

async fn send(tx: &EventSender, event: Event) -> bool {
    tx.send(Ok(BuildEvent { event: Some(event) })).await.is_ok()
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// How a finished build ended, before it is turned into a BuildDone.
struct Ending {
    termination: Termination,
    exit_code: i32,
    exit_status: i32,
    message: String,
    outputs: Vec<OutputFile>,
    envelope: Vec<u8>,
    link: Vec<u8>,
    usage: Option<ResourceUsage>,
}

impl Ending {
    fn failed(termination: Termination, exit_status: i32, message: String) -> Ending {
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

async fn run(
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

/// Forwards one of the step's output streams to the client as it comes,
/// and stores it whole in the content store (its digest goes into the
/// provenance's byproducts).
async fn pump_log(
    mut pipe: impl tokio::io::AsyncRead + Unpin,
    stream: Stream,
    tx: EventSender,
    mut blob: BlobWriter,
) -> Result<Digest, DaemonError> {
    let mut buffer = vec![0u8; 64 * 1024];
    let mut client_gone = false;
    loop {
        let n = match pipe.read(&mut buffer).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                return Err(DaemonError::Sandbox(format!(
                    "reading the step's output failed: {e}"
                )))
            }
        };
        tokio::task::block_in_place(|| blob.write(&buffer[..n]))?;
        if !client_gone {
            let chunk = LogChunk {
                stream: stream as i32,
                data: buffer[..n].to_vec(),
            };
            client_gone = !send(&tx, Event::Log(chunk)).await;
        }
    }
    tokio::task::block_in_place(|| blob.finish())
}

/// One collected output file: its path (the names' bytes, which need not
/// be UTF-8 inside a declared directory), digest and executable bit.
type Collected = (Vec<u8>, Digest, bool);

/// Hashes and stores every declared output. Returns Err(message) when an
/// output is missing or was refused by the helper.
fn collect_outputs(
    store: &BlobStore,
    out_dir: &Path,
    declared: &[String],
    collected: &[CollectedOutput],
) -> Result<Result<Vec<Collected>, String>, DaemonError> {
    let mut outputs = Vec::new();
    for path in declared {
        let Some(found) = collected.iter().find(|c| &c.path == path) else {
            return Ok(Err(format!(
                "declared output {path:?} was not reported by the sandbox"
            )));
        };
        match &found.state {
            OutputState::Missing => {
                return Ok(Err(format!(
                    "the step succeeded but did not produce the declared output {path:?}"
                )))
            }
            OutputState::Refused { reason } => {
                return Ok(Err(format!(
                    "declared output {path:?} was refused: {reason}"
                )))
            }
            OutputState::File { executable } => {
                let digest = store.put_file(&out_dir.join(path))?;
                outputs.push((path.as_bytes().to_vec(), digest, *executable));
            }
            OutputState::Directory => {
                if let Err(message) =
                    collect_directory(store, out_dir, Path::new(path), &mut outputs)?
                {
                    return Ok(Err(message));
                }
            }
        }
    }
    Ok(Ok(outputs))
}

/// Collects every file under a declared directory, by the entries' byte
/// names (UTF-8 or not), depth first in name order.
fn collect_directory(
    store: &BlobStore,
    out_dir: &Path,
    relative: &Path,
    outputs: &mut Vec<Collected>,
) -> Result<Result<(), String>, DaemonError> {
    let dir = out_dir.join(relative);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .map_err(DaemonError::io("list", &dir))?
        .collect::<Result<_, _>>()
        .map_err(DaemonError::io("list", &dir))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let child = relative.join(entry.file_name());
        let meta = std::fs::symlink_metadata(entry.path())
            .map_err(DaemonError::io("stat", entry.path()))?;
        if meta.is_dir() {
            if let Err(message) = collect_directory(store, out_dir, &child, outputs)? {
                return Ok(Err(message));
            }
        } else if meta.is_file() {
            let digest = store.put_file(&entry.path())?;
            outputs.push((
                child.as_os_str().as_bytes().to_vec(),
                digest,
                meta.permissions().mode() & 0o111 != 0,
            ));
        } else {
            return Ok(Err(format!(
                "output {child:?} is not a regular file or directory"
            )));
        }
    }
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(outputs: &[&str], argv: &[&str]) -> BuildRequest {
        BuildRequest {
            input_root: Some(attest_tree::hash_bytes(b"").to_proto()),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            output_paths: outputs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn hostile_output_paths_are_refused_with_the_path_named() {
        for bad in [
            "../etc/passwd",
            "/etc/passwd",
            "a/../../b",
            "a//b",
            "./a",
            "a/",
            "nul\0",
        ] {
            match validate(&request(&[bad], &["true"])) {
                Err(DaemonError::InvalidRequest(message)) => {
                    assert!(message.contains("output path"), "{message}")
                }
                other => panic!("{bad:?} was not refused: {other:?}"),
            }
        }
        assert!(validate(&request(&["out/bin"], &["true"])).is_ok());
    }

    #[test]
    fn link_names_default_to_build_and_hostile_ones_are_refused() {
        let with_link = |name: &str| BuildRequest {
            emit_link: true,
            link_name: name.to_string(),
            ..request(&["out"], &["true"])
        };
        assert_eq!(
            validate(&request(&["out"], &["true"])).unwrap().link_name,
            None
        );
        assert_eq!(
            validate(&with_link("")).unwrap().link_name.as_deref(),
            Some("build")
        );
        assert_eq!(
            validate(&with_link("compile"))
                .unwrap()
                .link_name
                .as_deref(),
            Some("compile")
        );
        for bad in ["../../etc/cron.d/x", "a/b", ".link", "-x", "a b"] {
            match validate(&with_link(bad)) {
                Err(DaemonError::InvalidRequest(message)) => {
                    assert!(message.contains("link_name"), "{message}")
                }
                other => panic!("{bad:?} was not refused: {other:?}"),
            }
        }
    }

    #[test]
    fn empty_argv_and_missing_outputs_are_refused() {
        assert!(
            matches!(validate(&request(&["a"], &[])), Err(DaemonError::InvalidRequest(m)) if m.contains("argv"))
        );
        assert!(
            matches!(validate(&request(&[], &["true"])), Err(DaemonError::InvalidRequest(m)) if m.contains("output"))
        );
        assert!(
            matches!(validate(&request(&["a", "a"], &["true"])), Err(DaemonError::InvalidRequest(m)) if m.contains("twice"))
        );
    }

    #[test]
    fn malformed_root_digest_is_refused() {
        let mut bad = request(&["a"], &["true"]);
        bad.input_root = Some(attest_proto::v1::Digest {
            hash: "zz".into(),
            size_bytes: 0,
        });
        assert!(
            matches!(validate(&bad), Err(DaemonError::InvalidRequest(m)) if m.contains("input_root"))
        );
    }
}
