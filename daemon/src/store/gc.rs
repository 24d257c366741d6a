//! Garbage collection of the content store and the materialized-tree
//! cache: each has a size cap, and when over it the least recently used
//! entries go first until it is under. Trees in the memory tmpfs and trees
//! on disk are two such caches, each under its own cap
//! (`inputs_memory_max_bytes`, half the tmpfs; `inputs_max_bytes`).
//! `attestd gc`, a separate process, sees only the disk trees: a running
//! daemon's tmpfs exists only in its private mount namespace, and a
//! stopped daemon's went with it.
//!
//! What is never evicted:
//! - anything used within the policy's minimum age (blobs: looked up or
//!   written; trees: materialized or reused). This covers the time between
//!   a client's FindMissingBlobs and its build, and between `materialize`
//!   and the run directory's `spec.json` appearing;
//! - a materialized tree named as `input_dir` by the `spec.json` of any run
//!   directory under `STATE/runs`: a build holds its run directory from
//!   before the sandbox starts until after it ends, so a running build's
//!   tree is never removed whatever its age.
//!
//! Blobs need no such lock: a materialized tree hardlinks (or, for
//! executables, copies) what it needs out of the store before the build
//! runs, so removing a blob's store name leaves every tree that links it
//! whole, and a blob being downloaded stays readable through its open
//! descriptor when it is unlinked. A blob evicted between a client's
//! FindMissingBlobs and its Execute (only possible for a blob unused for
//! the minimum age until that moment) makes the Execute fail with
//! FAILED_PRECONDITION naming it; nothing is lost.
//!
//! Packs. The small blobs of uploads live in packs (`packs.rs`), which
//! the collector takes as units: a pack's last use is its newest blob's,
//! and evicting it drops all its blobs' index entries, then the file.
//! The report counts the blobs it held. Materialized trees hold copies of
//! packed blobs, never links, so evicting a pack leaves every tree whole.
//!
//! Sizes and hardlinks. A blob's bytes are freed only once its store name
//! and every materialized file linking it are gone. The store's size is
//! the full size of every blob it names, shared with trees or not; a
//! tree's size counts only what no other name keeps (directories, its file
//! list, copies, and files whose blob left the store: `MaterializedTree`).
//! So the two caps never count the same bytes twice. They can undercount:
//! a file linked by two trees after its blob left the store is counted by
//! neither until one of them goes, and removing a blob still linked by a
//! tree frees nothing until that tree goes (the report's removed bytes
//! are store bytes, not disk space freed).
//!
//! Eviction is by rename-then-delete for trees and by unlink for blobs,
//! both re-checking the last use first, so a crash mid-collection leaves
//! only `.tmp-` names that the next start removes.

use crate::config::{Config, GcPolicy};
use crate::index::{AttestationIndex, IndexError};
use crate::materialize::{InputTrees, MaterializeError};
use crate::store::{BlobStore, StoreError};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Why a collection failed.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("{state_dir} holds no content store")]
    NoContentStore { state_dir: PathBuf },
    /// The index's lock is the state dir's: a daemon holds it.
    #[error("cannot lock {index}; a running attestd collects by itself every --gc-interval, stop it to collect now")]
    StateDirInUse {
        index: PathBuf,
        #[source]
        source: IndexError,
    },
    #[error("the content store failed")]
    Store(#[from] StoreError),
    #[error("the materialized trees failed")]
    Materialize(#[from] MaterializeError),
}

/// What one collection found and did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GcReport {
    pub blobs_removed: u64,
    pub blob_bytes_removed: u64,
    pub blobs_kept: u64,
    pub blob_bytes_kept: u64,
    pub trees_removed: u64,
    pub tree_bytes_removed: u64,
    pub trees_kept: u64,
    pub tree_bytes_kept: u64,
    /// Trees kept because a run directory names them.
    pub trees_in_use: u64,
}

impl std::fmt::Display for GcReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let size = |b: u64| bytesize::ByteSize(b).to_string();
        write!(
            f,
            "content store: removed {} blob(s) ({}), kept {} ({}); materialized trees: removed {} ({}), kept {} ({}), {} in use by a running build",
            self.blobs_removed,
            size(self.blob_bytes_removed),
            self.blobs_kept,
            size(self.blob_bytes_kept),
            self.trees_removed,
            size(self.tree_bytes_removed),
            self.trees_kept,
            size(self.tree_bytes_kept),
            self.trees_in_use,
        )
    }
}

/// Materialized trees named by the `spec.json` of a run directory. A run
/// directory without a readable spec yet protects nothing by itself; the
/// minimum age covers that moment.
fn trees_in_use(runs_dir: &Path) -> HashSet<PathBuf> {
    let mut in_use = HashSet::new();
    let Ok(runs) = std::fs::read_dir(runs_dir) else {
        return in_use;
    };
    for run in runs.flatten() {
        let spec = std::fs::read(run.path().join("spec.json"))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<attest_sandbox::SandboxSpec>(&bytes).ok());
        if let Some(spec) = spec {
            in_use.insert(spec.input_dir);
        }
    }
    in_use
}

/// One collection pass. With `dry_run`, reports what it would remove and
/// removes nothing.
pub fn collect(
    store: &BlobStore,
    inputs: &InputTrees,
    runs_dir: &Path,
    policy: &GcPolicy,
    dry_run: bool,
) -> Result<GcReport, GcError> {
    let now = SystemTime::now();
    let old_enough = |last_used: SystemTime| {
        now.duration_since(last_used)
            .map(|age| age >= policy.min_age)
            .unwrap_or(false)
    };
    let mut report = GcReport::default();

    // Trees first: a tree no longer needed may be what keeps a build from
    // needing its blobs, but blobs never keep a tree.
    // Trees in memory and trees on disk each by LRU under their own cap:
    // the two hold different resources (RAM and disk).
    let (in_memory, on_disk): (Vec<_>, Vec<_>) =
        inputs.list()?.into_iter().partition(|t| t.in_memory);
    let in_use = trees_in_use(runs_dir);
    for (mut trees, cap) in [
        (in_memory, policy.inputs_memory_max_bytes),
        (on_disk, policy.inputs_max_bytes),
    ] {
        trees.sort_by_key(|t| t.last_used);
        let mut tree_total: u64 = trees.iter().map(|t| t.bytes).sum();
        for tree in &trees {
            let over = cap != 0 && tree_total > cap;
            if in_use.contains(&tree.path) {
                report.trees_in_use += 1;
            } else if over && old_enough(tree.last_used) {
                let removed = dry_run || inputs.evict_unused_since(tree, tree.last_used)?;
                if removed {
                    tracing::info!(tree = %tree.path.display(), bytes = tree.bytes, in_memory = tree.in_memory, dry_run, "evicting a materialized tree");
                    report.trees_removed += 1;
                    report.tree_bytes_removed += tree.bytes;
                    tree_total -= tree.bytes;
                    continue;
                }
            }
            report.trees_kept += 1;
            report.tree_bytes_kept += tree.bytes;
        }
    }

    let mut blobs = store.list()?;
    blobs.sort_by_key(|b| b.last_used);
    let mut blob_total: u64 = blobs.iter().map(|b| b.size).sum();
    for blob in &blobs {
        let over = policy.cas_max_bytes != 0 && blob_total > policy.cas_max_bytes;
        if over && old_enough(blob.last_used) {
            let removed = dry_run || store.remove_unused_since(blob, blob.last_used)?;
            if removed {
                tracing::debug!(blob = %blob.path.display(), bytes = blob.size, dry_run, "evicting a blob");
                report.blobs_removed += blob.blobs;
                report.blob_bytes_removed += blob.size;
                blob_total -= blob.size;
                continue;
            }
        }
        report.blobs_kept += blob.blobs;
        report.blob_bytes_kept += blob.size;
    }
    Ok(report)
}

/// `attestd gc`: one collection of a state dir no daemon is using. The
/// attestation index's file lock (redb refuses a second open) is the state
/// dir's lock: held for the whole collection, it also keeps a daemon from
/// starting meanwhile. Only the trees on disk: the memory trees lived in
/// the stopped daemon's private tmpfs and went with it (and a running
/// daemon's, which this process could not see, collect themselves).
pub fn collect_offline(config: &Config, dry_run: bool) -> Result<GcReport, GcError> {
    let state = &config.state_dir;
    let cas = state.join("cas");
    if !cas.is_dir() {
        return Err(GcError::NoContentStore {
            state_dir: state.clone(),
        });
    }
    let index = state.join("index.redb");
    let _lock = AttestationIndex::open(&index).map_err(|source| GcError::StateDirInUse {
        index: index.clone(),
        source,
    })?;
    let store = BlobStore::open(&cas)?;
    let inputs = InputTrees::open(&state.join("inputs"), None)?;
    collect(&store, &inputs, &state.join("runs"), &config.gc, dry_run)
}

#[cfg(test)]
mod tests {
    use super::*;
    use attest_tree::Digest;
    use std::fs::File;
    use std::time::Duration;

    struct State {
        _dir: tempfile::TempDir,
        root: PathBuf,
        store: BlobStore,
        inputs: InputTrees,
        runs: PathBuf,
    }

    fn state() -> State {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let runs = root.join("runs");
        std::fs::create_dir(&runs).unwrap();
        State {
            store: BlobStore::open(&root.join("cas")).unwrap(),
            inputs: InputTrees::open(&root.join("inputs"), None).unwrap(),
            root,
            runs,
            _dir: dir,
        }
    }

    /// A state whose trees go to a "memory" directory (a plain one: which
    /// filesystem holds it changes nothing here) when they fit.
    fn state_with_memory() -> State {
        let mut s = state();
        s.inputs = InputTrees::open(
            &s.root.join("inputs"),
            Some(crate::materialize::MemoryPlace::new(
                s.root.join("inputs-mem"),
                1 << 30,
            )),
        )
        .unwrap();
        s
    }

    /// A run directory as the executor leaves it while its step runs.
    fn running_build(s: &State, input_dir: &Path) -> PathBuf {
        let run = s.runs.join(format!("run-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir(&run).unwrap();
        let spec = attest_sandbox::SandboxSpec {
            run_id: "0000-run".into(),
            argv: vec!["true".into()],
            env: Vec::new(),
            input_dir: input_dir.to_path_buf(),
            cwd: String::new(),
            outputs: vec!["out".into()],
            out_dir: run.join("out"),
            scratch_dir: run.join("scratch"),
            rootfs: attest_sandbox::RootfsSpec::host_default(),
            limits: attest_sandbox::Limits {
                timeout_ms: 1000,
                memory_bytes: 1 << 30,
                pids: 64,
                cpu_time_ms: 1000,
                max_output_bytes: 1 << 20,
                tmp_bytes: 1 << 20,
                max_log_bytes: 1 << 20,
            },
            source_date_epoch: 0,
            hostname: "attestd".into(),
            work_layer: attest_sandbox::WorkLayer::Copy,
        };
        attest_sandbox::write_spec(&run.join("spec.json"), &spec).unwrap();
        run
    }

    #[test]
    fn memory_trees_are_evicted_by_lru_under_their_own_cap_never_one_in_use() {
        let s = state_with_memory();
        let (_, in_use) = tree(&s, "a", 1000);
        let (_, oldest) = tree(&s, "b", 1000);
        let (_, middle) = tree(&s, "c", 1000);
        let (_, newest) = tree(&s, "d", 1000);
        for dir in [&in_use, &oldest, &middle, &newest] {
            assert!(dir.starts_with(s.root.join("inputs-mem")), "{dir:?}");
        }
        // A disk tree, older than all of them: the memory cap is not its.
        let disk_only = InputTrees::open(&s.root.join("inputs"), None).unwrap();
        let src = s.root.join("src/e");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("f"), "e".repeat(1000)).unwrap();
        let e = attest_tree::build_tree(&src, None, &|_| {}).unwrap();
        for (_, bytes) in &e.directories {
            s.store.put_bytes(bytes).unwrap();
        }
        s.store.put_file(&e.files[0].path).unwrap();
        let on_disk = disk_only.materialize(&s.store, &e.root).unwrap();
        assert!(on_disk.starts_with(s.root.join("inputs")));
        age(&on_disk, 9000);
        age(&in_use, 5000);
        age(&oldest, 3000);
        age(&middle, 2000);
        age(&newest, 1000);
        let _run = running_build(&s, &in_use);
        let listed = s.inputs.list().unwrap();
        assert_eq!(listed.iter().filter(|t| t.in_memory).count(), 4);
        // Memory trees are copies: each holds its own file.
        let one = listed.iter().find(|t| t.path == newest).unwrap().bytes;
        assert!(one >= 1000);
        let mut p = policy(0, 0, 60);
        // Room for two: the running build's and the newest.
        p.inputs_memory_max_bytes = 2 * one + one / 2;
        let report = collect(&s.store, &s.inputs, &s.runs, &p, false).unwrap();
        assert_eq!(report.trees_in_use, 1);
        assert_eq!(report.trees_removed, 2);
        assert!(in_use.exists(), "a tree in use is never evicted");
        assert!(!oldest.exists() && !middle.exists());
        assert!(newest.exists());
        assert!(on_disk.exists(), "the disk has no cap here");
        // And the disk cap evicts disk trees only.
        let mut p = policy(0, 1, 60);
        p.inputs_memory_max_bytes = 0;
        let report = collect(&s.store, &s.inputs, &s.runs, &p, false).unwrap();
        assert_eq!(report.trees_removed, 1);
        assert!(!on_disk.exists());
        assert!(newest.exists() && in_use.exists());
    }

    fn age(path: &Path, seconds: u64) {
        File::open(path)
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(seconds))
            .unwrap();
    }

    /// A one-file tree of `size` bytes, uploaded and materialized.
    fn tree(state: &State, name: &str, size: usize) -> (Digest, PathBuf) {
        let src = state.root.join("src").join(name);
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("f"), name.repeat(size / name.len())).unwrap();
        let tree = attest_tree::build_tree(&src, None, &|_| {}).unwrap();
        for (_, bytes) in &tree.directories {
            state.store.put_bytes(bytes).unwrap();
        }
        for file in &tree.files {
            state.store.put_file(&file.path).unwrap();
        }
        let dir = state.inputs.materialize(&state.store, &tree.root).unwrap();
        (tree.root, dir)
    }

    fn policy(cas: u64, inputs: u64, min_age_s: u64) -> GcPolicy {
        GcPolicy {
            cas_max_bytes: cas,
            inputs_max_bytes: inputs,
            inputs_memory_max_bytes: 0,
            min_age: Duration::from_secs(min_age_s),
        }
    }

    #[test]
    fn under_the_caps_nothing_is_removed() {
        let s = state();
        tree(&s, "a", 1000);
        let report = collect(&s.store, &s.inputs, &s.runs, &policy(0, 0, 0), false).unwrap();
        assert_eq!(report.blobs_removed + report.trees_removed, 0);
        assert_eq!(report.trees_kept, 1);
        assert_eq!(report.blobs_kept, 2);
    }

    #[test]
    fn least_recently_used_trees_go_first_until_under_the_cap() {
        let s = state();
        let (_, oldest) = tree(&s, "a", 1000);
        let (_, middle) = tree(&s, "b", 1000);
        let (root_c, newest) = tree(&s, "c", 1000);
        age(&oldest, 3000);
        age(&middle, 2000);
        age(&newest, 1000);
        // Each tree holds the same bytes of its own (its file is the
        // store's blob): room for one and a half of them.
        let one = s.inputs.list().unwrap()[0].bytes;
        assert!(one > 0);
        let cap = one + one / 2;
        let report = collect(&s.store, &s.inputs, &s.runs, &policy(0, cap, 60), false).unwrap();
        assert_eq!(report.trees_removed, 2);
        assert!(!oldest.exists() && !middle.exists());
        assert!(newest.exists());
        // Reuse refreshes the last use.
        assert_eq!(s.inputs.materialize(&s.store, &root_c).unwrap(), newest);
        let listed = s.inputs.list().unwrap();
        assert!(listed[0].last_used > SystemTime::now() - Duration::from_secs(60));
        // No half-evicted leftovers: the kept tree and its file list.
        let mut names: Vec<_> = std::fs::read_dir(s.root.join("inputs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let kept = newest.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(names, [format!(".files-{kept}"), kept]);
    }

    #[test]
    fn a_tree_a_running_build_names_is_kept_whatever_its_age() {
        let s = state();
        let (_, used) = tree(&s, "a", 1000);
        let (_, unused) = tree(&s, "b", 1000);
        age(&used, 5000);
        age(&unused, 5000);
        let run = running_build(&s, &used);
        let report = collect(&s.store, &s.inputs, &s.runs, &policy(0, 1, 0), false).unwrap();
        assert_eq!(report.trees_in_use, 1);
        assert_eq!(report.trees_removed, 1);
        assert!(used.exists());
        assert!(!unused.exists());
        // Once the run is gone, the tree can go too.
        std::fs::remove_dir_all(&run).unwrap();
        let report = collect(&s.store, &s.inputs, &s.runs, &policy(0, 1, 0), false).unwrap();
        assert_eq!(report.trees_removed, 1);
        assert!(!used.exists());
    }

    #[test]
    fn blobs_used_within_the_minimum_age_survive_even_over_the_cap() {
        let s = state();
        let (root_a, _) = tree(&s, "a", 4000);
        let (root_b, _) = tree(&s, "b", 4000);
        let blobs = s.store.list().unwrap();
        assert_eq!(blobs.len(), 4);
        let report = collect(&s.store, &s.inputs, &s.runs, &policy(1, 0, 3600), false).unwrap();
        assert_eq!(report.blobs_removed, 0, "everything was just used");

        // Age tree a's blobs: they go, b's stay though still over the cap.
        for blob in &blobs {
            let name = blob.path.file_name().unwrap().to_string_lossy();
            let is_b_file = std::fs::read(&blob.path).unwrap().starts_with(b"bbbb");
            if !is_b_file && name != root_b.hex() {
                age(&blob.path, 7200);
            }
        }
        let dry = collect(&s.store, &s.inputs, &s.runs, &policy(1, 0, 3600), true).unwrap();
        assert_eq!(dry.blobs_removed, 2);
        assert_eq!(
            s.store.list().unwrap().len(),
            4,
            "a dry run removes nothing"
        );
        let report = collect(&s.store, &s.inputs, &s.runs, &policy(1, 0, 3600), false).unwrap();
        assert_eq!(report.blobs_removed, 2);
        assert_eq!(report.blobs_kept, 2);
        assert!(!s.store.contains(&root_a));
        assert!(s.store.contains(&root_b));
        // The materialized tree of a links its own copy of the bytes: it
        // still serves builds.
        let tree_a = s.inputs.materialize(&s.store, &root_a).unwrap();
        assert_eq!(std::fs::read(tree_a.join("f")).unwrap(), b"a".repeat(4000));
    }

    #[test]
    fn an_unused_pack_goes_whole_and_its_blobs_are_counted() {
        let s = state();
        let pack = |contents: &[&[u8]]| {
            let mut writer = s.store.pack_writer();
            for bytes in contents {
                writer.begin(attest_tree::hash_bytes(bytes)).unwrap();
                writer.write(bytes).unwrap();
                writer.end().unwrap();
            }
            writer.take_batch().commit().unwrap()
        };
        let old = pack(&[b"one", b"two", b"three"]);
        let recent = pack(&[b"four"]);
        let packs: Vec<_> = s.store.list().unwrap();
        assert_eq!(packs.len(), 2);
        let old_pack = packs.iter().find(|b| b.blobs == 3).unwrap();
        age(&old_pack.path, 7200);
        let report = collect(&s.store, &s.inputs, &s.runs, &policy(1, 0, 3600), false).unwrap();
        assert_eq!(report.blobs_removed, 3);
        assert_eq!(report.blob_bytes_removed, 11);
        assert_eq!(report.blobs_kept, 1);
        assert!(old.iter().all(|d| !s.store.contains(d)));
        assert!(s.store.contains(&recent[0]));
        assert!(!old_pack.path.exists());
    }

    #[test]
    fn hardlinked_bytes_are_counted_once_and_freed_with_the_last_name() {
        use std::os::unix::fs::MetadataExt;
        let s = state();
        let (root, dir) = tree(&s, "a", 4000);
        let file = std::fs::metadata(dir.join("f")).unwrap();
        assert_eq!(file.nlink(), 2, "the tree's file is the store's blob");
        // The tree's own bytes: its directory and its file list, not the
        // linked file, which is the store's.
        let own = s.inputs.list().unwrap()[0].bytes;
        let stored: u64 = s.store.list().unwrap().iter().map(|b| b.size).sum();
        assert!(stored >= 4000);

        // Evict every blob: the tree keeps the file, which now counts as
        // the tree's own bytes.
        for blob in s.store.list().unwrap() {
            age(&blob.path, 7200);
        }
        let report = collect(&s.store, &s.inputs, &s.runs, &policy(1, 0, 3600), false).unwrap();
        assert_eq!(report.blobs_removed, 2);
        assert_eq!(std::fs::metadata(dir.join("f")).unwrap().nlink(), 1);
        assert_eq!(std::fs::read(dir.join("f")).unwrap(), b"a".repeat(4000));
        assert_eq!(s.inputs.list().unwrap()[0].bytes, own + 4000);

        // Then the tree goes over the inputs cap and takes the bytes along.
        age(&dir, 7200);
        let report = collect(&s.store, &s.inputs, &s.runs, &policy(0, 1, 3600), false).unwrap();
        assert_eq!(report.trees_removed, 1);
        assert_eq!(report.tree_bytes_removed, own + 4000);
        assert!(!dir.exists());
        assert!(!s.store.contains(&root));
    }
}
