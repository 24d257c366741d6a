//! The daemon's shared state and its state directory: created with the
//! modes the sandbox needs, cleaned of what a crashed daemon left.

use super::ExecutorError;
use crate::config::Config;
use crate::index::AttestationIndex;
use crate::materialize::{remove_tree, InputTrees};
use crate::signer::Signer;
use crate::store::BlobStore;
use attest_sandbox::RootfsSpec;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Shared state of the running daemon.
pub struct Daemon {
    pub config: Config,
    pub store: BlobStore,
    pub inputs: InputTrees,
    pub index: AttestationIndex,
    pub signer: Signer,
    pub(super) slots: Semaphore,
    pub(super) runs_dir: PathBuf,
    /// Warm sandbox helpers, one per build slot.
    pub helpers: std::sync::Arc<crate::helper_pool::HelperPool>,
    /// None with `--rootfs-hashing off`.
    pub rootfs: Option<Arc<crate::rootfs::RootfsHasher>>,
}

impl Daemon {
    /// Opens (creating) everything under the state dir and cleans what a
    /// crashed daemon left behind.
    pub fn open(config: Config) -> Result<Daemon, ExecutorError> {
        let state = &config.state_dir;
        // The sandbox runs as an unprivileged mapped uid that must reach its
        // run directory, so the state dir and runs/ are traverse-only (0711:
        // no listing); keys, the content store, the materialized inputs and
        // the index stay owner-only, out of the sandbox's and other users' reach.
        std::fs::create_dir_all(state).map_err(ExecutorError::io("create", state))?;
        set_mode(state, 0o711)?;
        check_ancestors_traversable(state)?;
        let runs_dir = state.join("runs");
        std::fs::create_dir_all(&runs_dir).map_err(ExecutorError::io("create", &runs_dir))?;
        set_mode(&runs_dir, 0o711)?;
        let cas_dir = state.join("cas");
        std::fs::create_dir_all(&cas_dir).map_err(ExecutorError::io("create", &cas_dir))?;
        set_mode(&cas_dir, 0o700)?;
        let inputs_dir = state.join("inputs");
        std::fs::create_dir_all(&inputs_dir).map_err(ExecutorError::io("create", &inputs_dir))?;
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
        std::fs::create_dir_all(&pool_scratch)
            .map_err(ExecutorError::io("create", &pool_scratch))?;
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
fn check_ancestors_traversable(state: &Path) -> Result<(), ExecutorError> {
    if attest_proto::current_uid() != 0 {
        return Ok(());
    }
    let absolute = std::fs::canonicalize(state).map_err(ExecutorError::io("resolve", state))?;
    for ancestor in absolute.ancestors().skip(1) {
        let mode = std::fs::metadata(ancestor)
            .map_err(ExecutorError::io("stat", ancestor))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            return Err(ExecutorError::StateDirNotTraversable {
                ancestor: ancestor.to_path_buf(),
                mode: mode & 0o7777,
            });
        }
    }
    Ok(())
}

pub(super) fn set_mode(path: &Path, mode: u32) -> Result<(), ExecutorError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(ExecutorError::io("chmod", path))
}

/// Asks the helper to remove cgroups and mounts of runs a crash left, then
/// deletes their directories.
fn clean_stale_runs(helper: &Path, runs_dir: &Path) -> Result<(), ExecutorError> {
    let stale: Vec<PathBuf> = std::fs::read_dir(runs_dir)
        .map_err(ExecutorError::io("list", runs_dir))?
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
        .map_err(|source| ExecutorError::HelperCleanup {
            helper: helper.to_path_buf(),
            source,
        })?;
    if !status.success() {
        tracing::warn!(%status, "sandbox cleanup reported a failure");
    }
    for run in stale {
        remove_tree(&run)?;
    }
    Ok(())
}
