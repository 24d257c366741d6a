//! When binds are walked: the first hash in the background at start, at
//! most one walk per bind at a time, and after each step the check that
//! says whether a bind's digest is what the step saw.

use super::feed::{self, Feed};
#[cfg(test)]
use super::walk::ListedHook;
use super::walk::{now_ns, Walker};
use super::{
    BindDigest, BindStatus, BindWalkResult, ChangeFeed, Measurement, RootfsFacts, StepWatch,
    CACHE_FILE, FIRST_HASH_GATE_ENV, RACY_WINDOW_NS,
};
use crate::error::error_chain;
use attest_tree::DigestCache;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// One bind's walks.
#[derive(Debug, Default)]
struct BindSlot {
    /// Held for the whole of a walk of the bind: walks of one bind queue.
    walking: Mutex<()>,
    /// The latest completed walk.
    latest: Mutex<Option<Arc<BindWalkResult>>>,
}

impl BindSlot {
    fn latest(&self) -> Option<Arc<BindWalkResult>> {
        lock(&self.latest).clone()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Clears the flag when dropped, a panic included.
struct ClearOnDrop<'a>(&'a AtomicBool);

impl Drop for ClearOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Hashes the rootfs binds, one walk per bind at a time, through a
/// persistent digest cache, and keeps watching them for changes.
pub struct RootfsHasher {
    binds: Vec<PathBuf>,
    cache: DigestCache,
    cache_path: PathBuf,
    /// None: inotify was not available or not asked for; every step walks.
    feed: Option<Feed>,
    slots: Vec<BindSlot>,
    /// A first walk of every bind was started in the background and has
    /// not finished: binds it has not reached yet are recorded
    /// [`BindStatus::FirstHashRunning`] instead of being walked by the build.
    first_hash_pending: AtomicBool,
    /// Entries stat'ed by every walk so far.
    entries_walked: AtomicU64,
    /// DigestCache::save writes one temporary file per process.
    saving: Mutex<()>,
    /// Called by a walk with each directory it has listed (tests provoke
    /// changes during a walk with it).
    #[cfg(test)]
    listed_hook: Option<Box<ListedHook>>,
}

impl RootfsHasher {
    /// A hasher of `binds` whose cache lives in `state_dir`, with an
    /// inotify change feed holding at most half of the user's watches.
    pub fn new(binds: Vec<PathBuf>, state_dir: &Path) -> RootfsHasher {
        let max_watches = Feed::default_budget();
        RootfsHasher::with_feed(binds, state_dir, ChangeFeed::Inotify { max_watches })
    }

    /// Same, with the change feed given.
    pub fn with_feed(binds: Vec<PathBuf>, state_dir: &Path, feed: ChangeFeed) -> RootfsHasher {
        let cache_path = state_dir.join(CACHE_FILE);
        let feed = match feed {
            ChangeFeed::Inotify { max_watches } => match Feed::new(binds.len(), max_watches) {
                Ok(feed) => Some(feed),
                Err(e) => {
                    // EMFILE at fs.inotify.max_user_instances: correct
                    // without it, only slower.
                    tracing::warn!(
                        error = %e,
                        "cannot start the rootfs change feed (inotify): every step walks the rootfs binds again"
                    );
                    None
                }
            },
            ChangeFeed::Off => None,
        };
        RootfsHasher {
            slots: binds.iter().map(|_| BindSlot::default()).collect(),
            binds,
            cache: DigestCache::open(&cache_path),
            cache_path,
            feed,
            first_hash_pending: AtomicBool::new(false),
            entries_walked: AtomicU64::new(0),
            saving: Mutex::new(()),
            #[cfg(test)]
            listed_hook: None,
        }
    }

    /// A hasher of the binds the executor gives every sandbox, which starts
    /// reading them into its cache on a thread of its own. Builds whose step
    /// ends before a bind's first walk is done record it without a digest
    /// ([`super::FIRST_HASH_RUNNING`]) rather than wait for it.
    pub fn start_for_host(state_dir: &Path) -> Arc<RootfsHasher> {
        let attest_sandbox::RootfsSpec::Host { ro_binds } =
            attest_sandbox::RootfsSpec::host_default();
        let hasher = Arc::new(RootfsHasher::new(ro_binds, state_dir));
        hasher.first_hash_pending.store(true, Ordering::Release);
        let warming = hasher.clone();
        let spawned = std::thread::Builder::new()
            .name("rootfs-hash".into())
            .spawn(move || {
                let _done = ClearOnDrop(&warming.first_hash_pending);
                if let Some(gate) = std::env::var_os(FIRST_HASH_GATE_ENV) {
                    tracing::info!(gate = %Path::new(&gate).display(), "the first rootfs hash waits for its test gate");
                    if let Err(e) = std::fs::File::open(&gate) {
                        tracing::warn!(error = %e, "cannot open the rootfs hash test gate");
                    }
                }
                let m = warming.measure_after(Instant::now());
                let watches = warming.feed.as_ref().map_or(0, |f| f.counts().0);
                tracing::info!(
                    entries = m.entries,
                    files_read = m.files_read,
                    bytes_read = m.bytes_read,
                    elapsed_ms = m.elapsed.as_millis() as u64,
                    watches,
                    "rootfs hashed"
                );
            });
        if let Err(e) = spawned {
            // Not fatal: builds walk the binds themselves.
            hasher.first_hash_pending.store(false, Ordering::Release);
            tracing::warn!(error = %e, "cannot start the rootfs hashing thread");
        }
        hasher
    }

    /// The paths hashed, in order.
    pub fn binds(&self) -> &[PathBuf] {
        &self.binds
    }

    /// Entries stat'ed by all walks so far.
    pub fn entries_walked(&self) -> u64 {
        self.entries_walked.load(Ordering::Relaxed)
    }

    /// Every bind from a walk that began at or after `since`: the latest
    /// walk of a bind if it qualifies, else a new one. Blocks (walks are
    /// long).
    pub fn measure_after(&self, since: Instant) -> Measurement {
        let started = Instant::now();
        let walks: Vec<_> = (0..self.binds.len())
            .map(|i| self.walk_after(i, since))
            .collect();
        if walks.iter().any(|(w, fresh)| *fresh && w.files_read > 0) {
            self.save_cache();
        }
        Measurement {
            binds: self
                .binds
                .iter()
                .cloned()
                .zip(walks.iter().map(|(w, _)| w.result.clone()))
                .collect(),
            entries: walks.iter().map(|(w, _)| w.entries).sum(),
            files_read: walks.iter().map(|(w, _)| w.files_read).sum(),
            bytes_read: walks.iter().map(|(w, _)| w.bytes_read).sum(),
            elapsed: started.elapsed(),
        }
    }

    /// Bind `i` from a walk that began at or after `since`, and whether
    /// this call walked it.
    fn walk_after(&self, i: usize, since: Instant) -> (Arc<BindWalkResult>, bool) {
        let slot = &self.slots[i];
        let _walking = lock(&slot.walking);
        if let Some(w) = slot.latest().filter(|w| w.started >= since) {
            return (w, false);
        }
        let w = Arc::new(self.walk(i));
        *lock(&slot.latest) = Some(w.clone());
        (w, true)
    }

    fn save_cache(&self) {
        let _saving = lock(&self.saving);
        let saved = self.cache.save().and_then(|()| {
            // Digests of host files are not secret, but nothing else in the
            // state dir is readable by others either.
            std::fs::set_permissions(&self.cache_path, std::fs::Permissions::from_mode(0o600))
        });
        if let Err(e) = saved {
            tracing::warn!(error = %e, path = %self.cache_path.display(), "cannot save the rootfs digest cache");
        }
    }

    /// Walks bind `i` now.
    fn walk(&self, i: usize) -> BindWalkResult {
        let started = Instant::now();
        // Events queued before this point are about what the walk reads.
        let generation = self.feed.as_ref().map(|f| f.sync().generation);
        let mounts = self.mounts_under_binds();
        let path = &self.binds[i];
        let mut walker = Walker::new(&self.cache, self.feed.as_ref(), i);
        #[cfg(test)]
        {
            walker.listed_hook = self.listed_hook.as_deref();
        }
        walker.watch_ancestors(path);
        let result = walker.bind(path).map_err(|e| error_chain(&e));
        let ended = Instant::now();
        let mounts_steady = self.mounts_under_binds() == mounts;
        self.entries_walked
            .fetch_add(walker.entries, Ordering::Relaxed);
        if let (Some(feed), Some(error)) = (&self.feed, &walker.unwatched) {
            feed.note_failure(error);
        }
        BindWalkResult {
            started,
            ended,
            generation,
            unwatched: walker.unwatched.as_ref().map(|e| error_chain(e)),
            mounts,
            mounts_steady,
            result,
            entries: walker.entries,
            files_read: walker.files_read,
            bytes_read: walker.bytes_read,
        }
    }

    /// Called just before the step starts.
    pub fn step_starting(&self) -> StepWatch {
        StepWatch {
            started_ns: now_ns(),
            started: Instant::now(),
            generation: self.feed.as_ref().map(|f| f.sync().generation),
            mounts: self.mounts_under_binds(),
        }
    }

    /// The facts of a step that has ended: per bind, the digest of its
    /// latest walk when the change feed proves nothing changed since
    /// ([`Self::reusable`]), else from a walk begun after the step's end.
    /// Blocks while it walks; never waits for the first hash.
    pub fn step_ended(&self, watch: &StepWatch) -> RootfsFacts {
        let asked = Instant::now();
        // The kernel queues an event before the system call that made the
        // change returns: every change made before the step ended is read
        // here.
        let snapshot = self.feed.as_ref().map(Feed::sync);
        let mounts_at_end = self.mounts_under_binds();
        let mut statuses: Vec<Option<BindStatus>> = vec![None; self.binds.len()];
        let mut walked = Vec::new();
        for (i, status) in statuses.iter_mut().enumerate() {
            let latest = self.slots[i].latest();
            if let (Some(w), Some(now)) = (&latest, &snapshot) {
                if let Some(b) = self.reusable(i, w, watch, now, &mounts_at_end) {
                    *status = Some(b.status());
                    continue;
                }
            }
            if latest.is_none() && self.first_hash_pending.load(Ordering::Acquire) {
                *status = Some(BindStatus::FirstHashRunning);
                continue;
            }
            walked.push((i, self.walk_after(i, asked)));
        }
        let mut entries = 0;
        let mut files_read = 0;
        let mut walk_ms = 0;
        if !walked.is_empty() {
            let mounts_now = self.mounts_under_binds();
            for (i, (w, fresh)) in &walked {
                statuses[*i] = Some(self.judge_walk(watch, w, &mounts_now));
                if *fresh {
                    entries += w.entries;
                    files_read += w.files_read;
                    walk_ms = walk_ms.max(w.ended.duration_since(w.started).as_millis() as u64);
                }
            }
            if files_read > 0 {
                self.save_cache();
            }
        }
        let first_hash_running = statuses
            .iter()
            .filter(|s| matches!(s, Some(BindStatus::FirstHashRunning)))
            .count();
        tracing::debug!(
            reused = self.binds.len() - walked.len() - first_hash_running,
            walked = walked.len(),
            first_hash_running,
            entries,
            files_read,
            walk_ms,
            waited_ms = asked.elapsed().as_millis() as u64,
            events_during_step = match (watch.generation, &snapshot) {
                (Some(start), Some(end)) => end.generation - start,
                _ => 0,
            },
            "rootfs re-validated after the step"
        );
        RootfsFacts::from_binds(
            self.binds
                .iter()
                .cloned()
                .zip(statuses.into_iter().map(|s| s.expect("every bind judged")))
                .collect(),
        )
    }

    /// The digest of `w`, bind `i`'s latest walk, if it is what a step begun
    /// at `watch` and ended at `now` saw, with no walk:
    ///
    /// - the walk added a watch to every directory before reading it (and
    ///   to the directories on the way to the bind), so a change after an
    ///   entry was read raises an event;
    /// - no event under the bind from the walk's start to the step's end;
    /// - the mounts under the binds were the same all along;
    /// - the walk ended before the step began, or (a walk that overlapped
    ///   the step's start) no entry's ctime is in the racy window before the
    ///   step's start or later: an entry read after the step began did not
    ///   change between the step's start and its watch.
    fn reusable<'w>(
        &self,
        i: usize,
        w: &'w BindWalkResult,
        watch: &StepWatch,
        now: &feed::Snapshot,
        mounts_at_end: &[String],
    ) -> Option<&'w BindDigest> {
        let digest = w.result.as_ref().ok()?;
        let quiet = w.generation.is_some_and(|g| now.changed_at[i] <= g);
        let watched = w.unwatched.is_none();
        let mounts_same =
            w.mounts_steady && w.mounts == watch.mounts && watch.mounts == mounts_at_end;
        let before_step =
            w.ended <= watch.started || digest.newest_change.0 < watch.started_ns - RACY_WINDOW_NS;
        (quiet && watched && mounts_same && before_step).then_some(digest)
    }

    /// A walk begun after the step ended: its digest if no entry under the
    /// bind has a ctime from the step's start on (less the racy window) and
    /// the mounts under the binds are as they were when the step started.
    fn judge_walk(
        &self,
        watch: &StepWatch,
        w: &BindWalkResult,
        mounts_now: &[String],
    ) -> BindStatus {
        match &w.result {
            Err(reason) => BindStatus::NotHashed {
                reason: format!("hashing failed: {reason}"),
            },
            Ok(_) if watch.mounts != mounts_now || !w.mounts_steady => {
                BindStatus::ChangedDuringBuild {
                    reason: "mounts under the rootfs binds changed while the step ran".into(),
                }
            }
            Ok(b) if b.newest_change.0 >= watch.started_ns - RACY_WINDOW_NS => {
                BindStatus::ChangedDuringBuild {
                    reason: format!(
                        "{} changed at or after the step's start (ctime {} ms after it)",
                        b.newest_change.1.display(),
                        (b.newest_change.0 - watch.started_ns) / 1_000_000
                    ),
                }
            }
            Ok(b) => b.status(),
        }
    }

    /// Lines of /proc/self/mountinfo whose mount point is a bind or below
    /// one; unreadable mountinfo gives none (and so no difference).
    fn mounts_under_binds(&self) -> Vec<String> {
        let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
            return Vec::new();
        };
        text.lines()
            .filter(|line| {
                // Fields: id parent major:minor root mount-point options...
                let Some(point) = line.split(' ').nth(4) else {
                    return false;
                };
                self.binds.iter().any(|bind| {
                    let bind = bind.to_string_lossy();
                    point == bind
                        || point
                            .strip_prefix(bind.as_ref())
                            .is_some_and(|rest| rest.starts_with('/'))
                })
            })
            .map(str::to_string)
            .collect()
    }
}

/// The rootfs check of one build, begun when its step ended and run on a
/// blocking thread while the outputs are collected.
pub struct RootfsCheck(Option<tokio::task::JoinHandle<RootfsFacts>>);

impl RootfsCheck {
    /// Starts the check; `None` hasher or watch: hashing is off.
    pub fn spawn(hasher: Option<Arc<RootfsHasher>>, watch: Option<StepWatch>) -> RootfsCheck {
        match (hasher, watch) {
            (Some(hasher), Some(watch)) => {
                RootfsCheck(Some(tokio::task::spawn_blocking(move || {
                    hasher.step_ended(&watch)
                })))
            }
            _ => RootfsCheck(None),
        }
    }

    /// The facts for the provenance.
    pub async fn facts(self) -> RootfsFacts {
        let Some(task) = self.0 else {
            return RootfsFacts::off();
        };
        match task.await {
            Ok(facts) => facts,
            Err(e) => {
                tracing::error!(error = %e, "the rootfs check failed");
                RootfsFacts::from_binds(Vec::new())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::digest_format::device_number;
    use super::super::*;
    use super::*;
    use attest_tree::hash_bytes;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::symlink;
    use std::sync::atomic::AtomicBool;

    /// A small stand-in for a rootfs: a directory tree, a file bind and a
    /// symlink bind, under `root`.
    fn make_rootfs(root: &Path) -> Vec<PathBuf> {
        let usr = root.join("usr");
        std::fs::create_dir_all(usr.join("bin")).unwrap();
        std::fs::create_dir_all(usr.join("lib/empty")).unwrap();
        std::fs::write(usr.join("bin/cc"), b"#!/bin/sh\necho cc\n").unwrap();
        std::fs::set_permissions(usr.join("bin/cc"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::fs::write(usr.join("lib/libc.so"), vec![7u8; 100_000]).unwrap();
        symlink("libc.so", usr.join("lib/libc.so.6")).unwrap();
        std::fs::write(root.join("ld.so.cache"), b"cache").unwrap();
        symlink("usr/bin", root.join("bin")).unwrap();
        vec![usr, root.join("ld.so.cache"), root.join("bin")]
    }

    fn digests(m: &Measurement) -> Vec<[u8; 32]> {
        m.binds
            .iter()
            .map(|(p, r)| {
                r.as_ref()
                    .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
                    .digest
            })
            .collect()
    }

    fn sha(bytes: &[u8]) -> String {
        hash_bytes(bytes).hex()
    }

    fn sha256_of(bytes: &[u8]) -> [u8; 32] {
        hash_bytes(bytes).hash
    }

    #[test]
    fn digests_follow_the_documented_format() {
        let dir = tempfile::tempdir().unwrap();
        let binds = make_rootfs(dir.path());
        let state = tempfile::tempdir().unwrap();
        let m = RootfsHasher::new(binds, state.path()).measure_after(Instant::now());
        // Written out by hand from docs/buildtype-v1.md: one line per
        // entry, sorted by name, `TYPE MODE VALUE NAME\0`.
        let bin = format!("f 0755 {} cc\0", sha(b"#!/bin/sh\necho cc\n"));
        let empty = sha(b"");
        let lib = format!(
            "d 0755 {empty} empty\0f 0644 {} libc.so\0l 0777 {} libc.so.6\0",
            sha(&[7u8; 100_000]),
            sha(b"libc.so")
        );
        let usr = format!(
            "d 0755 {} bin\0d 0755 {} lib\0",
            sha(bin.as_bytes()),
            sha(lib.as_bytes())
        );
        let got = digests(&m);
        assert_eq!(hex::encode(got[0]), sha(usr.as_bytes()));
        assert_eq!(hex::encode(got[1]), sha(b"cache"));
        assert_eq!(hex::encode(got[2]), sha(b"usr/bin"));
        let (_, bin_bind) = &m.binds[2];
        let bin_bind = bin_bind.as_ref().unwrap();
        assert_eq!(bin_bind.kind, NodeKind::Symlink);
        assert_eq!(bin_bind.symlink_target, Some(PathBuf::from("usr/bin")));
    }

    #[test]
    fn the_digest_is_stable_and_changes_with_content_mode_and_names() {
        let dir = tempfile::tempdir().unwrap();
        let binds = make_rootfs(dir.path());
        let state = tempfile::tempdir().unwrap();
        let hasher = RootfsHasher::new(binds.clone(), state.path());
        let first = digests(&hasher.measure_after(Instant::now()));
        assert_eq!(first, digests(&hasher.measure_after(Instant::now())));
        // A second tree with the same content has the same digests: nothing
        // host-specific (inode, times, owner) goes in.
        let other = tempfile::tempdir().unwrap();
        let other_binds = make_rootfs(other.path());
        let other_state = tempfile::tempdir().unwrap();
        assert_eq!(
            first,
            digests(
                &RootfsHasher::new(other_binds, other_state.path()).measure_after(Instant::now())
            )
        );

        let usr = &binds[0];
        let mut seen = vec![first[0]];
        let mut expect_new = |what: &str| {
            let d = digests(&hasher.measure_after(Instant::now()))[0];
            assert!(!seen.contains(&d), "{what} did not change the digest");
            seen.push(d);
        };
        std::fs::write(usr.join("bin/cc"), b"#!/bin/sh\necho other\n").unwrap();
        expect_new("new content");
        std::fs::set_permissions(usr.join("bin/cc"), std::fs::Permissions::from_mode(0o4755))
            .unwrap();
        expect_new("a setuid bit");
        std::fs::remove_file(usr.join("lib/libc.so.6")).unwrap();
        symlink("elsewhere", usr.join("lib/libc.so.6")).unwrap();
        expect_new("a new symlink target");
        std::fs::rename(usr.join("lib/empty"), usr.join("lib/empty2")).unwrap();
        expect_new("a rename");
        std::fs::write(usr.join("lib/new"), b"").unwrap();
        expect_new("a new file");
    }

    #[test]
    fn the_cache_spares_reading_unchanged_files_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let binds = make_rootfs(dir.path());
        // ctime cannot be set back: wait out the racy window so the files
        // may be cached.
        std::thread::sleep(Duration::from_millis(2100));
        let state = tempfile::tempdir().unwrap();
        let hasher = RootfsHasher::new(binds.clone(), state.path());
        let first = hasher.measure_after(Instant::now());
        assert_eq!(first.files_read, 3, "cc, libc.so and ld.so.cache");
        assert!(state.path().join(CACHE_FILE).exists());

        // A new daemon on the same state dir: stat only.
        let restarted = RootfsHasher::new(binds.clone(), state.path());
        let second = restarted.measure_after(Instant::now());
        assert_eq!(second.files_read, 0);
        assert_eq!(second.entries, first.entries);
        assert_eq!(digests(&first), digests(&second));

        std::fs::write(binds[0].join("lib/libc.so"), vec![8u8; 100_000]).unwrap();
        let third = restarted.measure_after(Instant::now());
        assert_eq!(third.files_read, 1, "only the changed file is read");
        assert_ne!(digests(&first)[0], digests(&third)[0]);
    }

    #[test]
    fn a_walk_begun_after_the_instant_asked_for_is_shared() {
        let dir = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let hasher = RootfsHasher::new(make_rootfs(dir.path()), state.path());
        let before = Instant::now();
        let (first, walked) = hasher.walk_after(0, before);
        assert!(walked);
        let (again, walked) = hasher.walk_after(0, before);
        assert!(Arc::ptr_eq(&first, &again) && !walked);
        let (newer, walked) = hasher.walk_after(0, Instant::now());
        assert!(!Arc::ptr_eq(&first, &newer) && walked);
    }

    #[test]
    fn special_files_and_non_utf8_names_are_recorded_not_refused() {
        let dir = tempfile::tempdir().unwrap();
        let usr = dir.path().join("usr");
        std::fs::create_dir(&usr).unwrap();
        let status = std::process::Command::new("mkfifo")
            .arg(usr.join("pipe"))
            .status()
            .unwrap();
        assert!(status.success());
        let odd = std::ffi::OsStr::from_bytes(b"caf\xe9");
        std::fs::write(usr.join(odd), b"x").unwrap();
        std::fs::set_permissions(usr.join("pipe"), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(usr.join(odd), std::fs::Permissions::from_mode(0o644)).unwrap();
        let state = tempfile::tempdir().unwrap();
        let m = RootfsHasher::new(vec![usr], state.path()).measure_after(Instant::now());
        let bind = m.binds[0].1.as_ref().unwrap();
        assert_eq!(bind.special_files, 1);
        let mut listing = format!("f 0644 {} caf", sha(b"x")).into_bytes();
        listing.extend_from_slice(b"\xe9\0p 0600 - pipe\0");
        assert_eq!(hex::encode(bind.digest), sha(&listing));
    }

    #[test]
    fn device_numbers_split_as_glibc_does() {
        // /dev/null is 1,3; a large minor uses the high bits.
        assert_eq!(device_number(0x103), "1,3");
        assert_eq!(
            device_number((259 << 8) | 0x12 | (0x345 << 20)),
            "259,214290"
        );
    }

    #[test]
    fn a_change_after_the_step_started_withholds_the_digest() {
        let dir = tempfile::tempdir().unwrap();
        let binds = make_rootfs(dir.path());
        std::thread::sleep(Duration::from_millis(2100));
        let state = tempfile::tempdir().unwrap();
        let hasher = RootfsHasher::new(binds.clone(), state.path());

        let watch = hasher.step_starting();
        let facts = hasher.step_ended(&watch);
        for bind in &binds {
            assert!(
                matches!(facts.status(bind), BindStatus::Hashed { .. }),
                "{}: {:?}",
                bind.display(),
                facts.status(bind)
            );
        }

        let watch = hasher.step_starting();
        // What a package upgrade does while the step runs.
        std::fs::write(binds[0].join("bin/cc.new"), b"new cc").unwrap();
        std::fs::rename(binds[0].join("bin/cc.new"), binds[0].join("bin/cc")).unwrap();
        let facts = hasher.step_ended(&watch);
        match facts.status(&binds[0]) {
            BindStatus::ChangedDuringBuild { reason } => {
                assert!(reason.contains("bin"), "{reason}")
            }
            other => panic!("expected changedDuringBuild, got {other:?}"),
        }
        // The other binds did not change and keep their digests.
        assert!(matches!(facts.status(&binds[1]), BindStatus::Hashed { .. }));

        // A changed mount table withholds the digest.
        let (w, _) = hasher.walk_after(1, Instant::now());
        let status = hasher.judge_walk(
            &StepWatch {
                started_ns: now_ns() + 10 * RACY_WINDOW_NS,
                started: Instant::now(),
                generation: None,
                mounts: vec![],
            },
            &w,
            &["1 0 8:1 / /x".into()],
        );
        assert!(matches!(status, BindStatus::ChangedDuringBuild { .. }));
    }

    /// The step's facts, and how many entries its walks stat'ed.
    fn step(hasher: &RootfsHasher, during: impl FnOnce()) -> (RootfsFacts, u64) {
        let watch = hasher.step_starting();
        during();
        let before = hasher.entries_walked();
        let facts = hasher.step_ended(&watch);
        (facts, hasher.entries_walked() - before)
    }

    fn hashed(status: BindStatus) -> [u8; 32] {
        match status {
            BindStatus::Hashed { digest, .. } => digest,
            other => panic!("expected a digest, got {other:?}"),
        }
    }

    /// The digests of `binds` computed from scratch, by a hasher with no
    /// cache and no feed.
    fn fresh_digests(binds: &[PathBuf]) -> Vec<[u8; 32]> {
        let state = tempfile::tempdir().unwrap();
        digests(
            &RootfsHasher::with_feed(binds.to_vec(), state.path(), ChangeFeed::Off)
                .measure_after(Instant::now()),
        )
    }

    /// Entries of bind `i` in its latest walk.
    fn entries_of(hasher: &RootfsHasher, i: usize) -> u64 {
        hasher.slots[i].latest().unwrap().entries
    }

    #[test]
    fn with_no_event_a_step_reuses_the_latest_walk_without_walking() {
        let dir = tempfile::tempdir().unwrap();
        let binds = make_rootfs(dir.path());
        let state = tempfile::tempdir().unwrap();
        let hasher = RootfsHasher::new(binds.clone(), state.path());
        let first = digests(&hasher.measure_after(Instant::now()));
        // Reading the rootfs, as a step does, is no change. The files are
        // brand new (ctime within the racy window): the feed, not their
        // ctime, says they did not change after the walk.
        let (facts, walked) = step(&hasher, || {
            std::fs::read(binds[0].join("bin/cc")).unwrap();
            std::fs::read_dir(binds[0].join("lib")).unwrap().count();
        });
        assert_eq!(walked, 0, "nothing changed: no entry is stat'ed");
        for (i, bind) in binds.iter().enumerate() {
            assert_eq!(hashed(facts.status(bind)), first[i], "{}", bind.display());
        }
        // Without a feed the same step walks every bind.
        let no_feed = RootfsHasher::with_feed(binds.clone(), state.path(), ChangeFeed::Off);
        no_feed.measure_after(Instant::now());
        let (_, walked) = step(&no_feed, || {});
        assert_eq!(walked, (0..3).map(|i| entries_of(&no_feed, i)).sum::<u64>());
    }

    #[test]
    fn a_change_makes_the_next_step_walk_that_bind_and_the_one_after_reuse_it() {
        let dir = tempfile::tempdir().unwrap();
        let binds = make_rootfs(dir.path());
        let state = tempfile::tempdir().unwrap();
        let hasher = RootfsHasher::new(binds.clone(), state.path());
        let mut seen = vec![digests(&hasher.measure_after(Instant::now()))[0]];
        let usr = binds[0].clone();
        type Change<'a> = (&'a str, Box<dyn Fn() + 'a>);
        let changes: Vec<Change> = vec![
            (
                "new content",
                Box::new(|| std::fs::write(usr.join("bin/cc"), b"#!/bin/sh\necho 2\n").unwrap()),
            ),
            (
                "a file in a new directory",
                Box::new(|| {
                    std::fs::create_dir(usr.join("lib/new")).unwrap();
                    std::fs::write(usr.join("lib/new/f"), b"1").unwrap();
                }),
            ),
            // Seen only if the walk after the last change watched lib/new.
            (
                "a change in that new directory",
                Box::new(|| std::fs::write(usr.join("lib/new/f"), b"2").unwrap()),
            ),
            (
                "a rename",
                Box::new(|| {
                    std::fs::rename(usr.join("lib/libc.so"), usr.join("lib/libc.so.7")).unwrap()
                }),
            ),
            (
                "a mode",
                Box::new(|| {
                    std::fs::set_permissions(
                        usr.join("bin/cc"),
                        std::fs::Permissions::from_mode(0o700),
                    )
                    .unwrap()
                }),
            ),
        ];
        for (what, change) in changes {
            change();
            let (facts, walked) = step(&hasher, || {});
            assert_eq!(
                walked,
                entries_of(&hasher, 0),
                "{what}: /usr (only) is walked again"
            );
            let now = fresh_digests(&binds);
            // Changed a moment before the step started: within the racy
            // window, so withheld, unless the walk began 2 s after it.
            match facts.status(&usr) {
                BindStatus::ChangedDuringBuild { .. } => {}
                status => assert_eq!(hashed(status), now[0], "{what}"),
            }
            let (facts, walked) = step(&hasher, || {});
            assert_eq!(walked, 0, "{what}: nothing changed since the last walk");
            let digest = hashed(facts.status(&usr));
            assert_eq!(digest, now[0], "{what}");
            assert!(!seen.contains(&digest), "{what} did not change the digest");
            seen.push(digest);
            assert_eq!(hashed(facts.status(&binds[1])), now[1]);
        }
    }

    #[test]
    fn a_write_through_a_link_outside_the_binds_and_a_retargeted_symlink_bind_are_seen() {
        let dir = tempfile::tempdir().unwrap();
        let binds = make_rootfs(dir.path());
        // A second name for usr/lib/libc.so outside every bind: writes
        // through it are reported to the file's own watch only.
        let outside = dir.path().join("outside-libc.so");
        std::fs::hard_link(binds[0].join("lib/libc.so"), &outside).unwrap();
        let state = tempfile::tempdir().unwrap();
        let hasher = RootfsHasher::new(binds.clone(), state.path());
        let before = digests(&hasher.measure_after(Instant::now()));

        std::fs::write(&outside, vec![3u8; 10]).unwrap();
        let (_, walked) = step(&hasher, || {});
        assert_eq!(walked, entries_of(&hasher, 0), "/usr is walked again");
        let (facts, walked) = step(&hasher, || {});
        assert_eq!(walked, 0);
        let now = fresh_digests(&binds);
        assert_ne!(now[0], before[0]);
        assert_eq!(hashed(facts.status(&binds[0])), now[0]);

        // The symlink bind `bin -> usr/bin`, pointed elsewhere: an entry of
        // the bind's parent, which is watched for that name.
        std::fs::remove_file(&binds[2]).unwrap();
        symlink("usr/lib", &binds[2]).unwrap();
        let (_, walked) = step(&hasher, || {});
        assert_eq!(walked, 1, "only the symlink bind is walked");
        let (facts, walked) = step(&hasher, || {});
        assert_eq!(walked, 0);
        assert_eq!(hashed(facts.status(&binds[2])), sha256_of(b"usr/lib"));
    }

    #[test]
    fn a_walk_that_overlaps_the_steps_start_is_reused_only_if_its_ctimes_are_older() {
        let dir = tempfile::tempdir().unwrap();
        let binds = make_rootfs(dir.path());
        let state = tempfile::tempdir().unwrap();
        let hasher = RootfsHasher::new(binds.clone(), state.path());
        // The first walk runs while the step does (as the first hash may):
        // an entry it read after the step began may have changed between
        // the step's start and its watch, which only its ctime can tell.
        // These files are brand new, so every bind is walked again.
        let (_, walked) = step(&hasher, || {
            hasher.measure_after(Instant::now());
        });
        let all: u64 = (0..3).map(|i| entries_of(&hasher, i)).sum();
        assert_eq!(walked, all);

        // Old enough: the overlapping walk is reused.
        std::thread::sleep(Duration::from_millis(2100));
        let (facts, walked) = step(&hasher, || {
            hasher.measure_after(Instant::now());
        });
        assert_eq!(walked, 0);
        for (bind, digest) in binds.iter().zip(fresh_digests(&binds)) {
            assert_eq!(hashed(facts.status(bind)), digest);
        }
    }

    #[test]
    fn a_change_during_a_walk_makes_that_walk_unusable() {
        let dir = tempfile::tempdir().unwrap();
        let binds = make_rootfs(dir.path());
        // Old enough for the digest cache: the walk below takes libc.so's
        // digest from it by its stat, taken before the change.
        std::thread::sleep(Duration::from_millis(2100));
        let state = tempfile::tempdir().unwrap();
        let mut hasher = RootfsHasher::new(binds.clone(), state.path());
        let before = digests(&hasher.measure_after(Instant::now()));
        let lib = binds[0].join("lib");
        let armed = AtomicBool::new(true);
        hasher.listed_hook = Some(Box::new(move |listed| {
            // lib is listed and its entries stat'ed: its watch is in place.
            if listed == lib && armed.swap(false, Ordering::SeqCst) {
                std::fs::write(lib.join("libc.so"), vec![9u8; 100_000]).unwrap();
            }
        }));
        let during = digests(&hasher.measure_after(Instant::now()));
        assert_eq!(
            during[0], before[0],
            "the walk read libc.so before it changed"
        );
        let (facts, walked) = step(&hasher, || {});
        assert_eq!(
            walked,
            entries_of(&hasher, 0),
            "the walk that saw the change is not reused"
        );
        let now = fresh_digests(&binds);
        assert_ne!(now[0], before[0]);
        match facts.status(&binds[0]) {
            BindStatus::ChangedDuringBuild { .. } => {}
            status => assert_eq!(hashed(status), now[0]),
        }
        let (facts, _) = step(&hasher, || {});
        assert_eq!(hashed(facts.status(&binds[0])), now[0]);
    }

    #[test]
    fn a_bind_the_feed_cannot_fully_watch_is_walked_after_every_step() {
        let dir = tempfile::tempdir().unwrap();
        let binds = make_rootfs(dir.path());
        std::thread::sleep(Duration::from_millis(2100));
        let state = tempfile::tempdir().unwrap();
        // Room for the directories on the way to the binds, /usr and one
        // more: /usr has four directories.
        let on_the_way = binds[0].ancestors().count() - 1;
        let limit = on_the_way + 2;
        let hasher = RootfsHasher::with_feed(
            binds.clone(),
            state.path(),
            ChangeFeed::Inotify { max_watches: limit },
        );
        let first = digests(&hasher.measure_after(Instant::now()));
        assert_eq!(hasher.feed.as_ref().unwrap().counts().0, limit);
        for _ in 0..2 {
            let (facts, walked) = step(&hasher, || {});
            assert_eq!(
                walked,
                entries_of(&hasher, 0),
                "/usr is walked, the others are not"
            );
            for (i, bind) in binds.iter().enumerate() {
                assert_eq!(hashed(facts.status(bind)), first[i]);
            }
        }
    }

    #[test]
    fn a_step_that_ends_before_the_first_hash_does_not_wait_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let binds = make_rootfs(dir.path());
        let state = tempfile::tempdir().unwrap();
        let hasher = RootfsHasher::new(binds.clone(), state.path());
        // What start_for_host sets while its thread hashes.
        hasher.first_hash_pending.store(true, Ordering::Release);
        let (facts, walked) = step(&hasher, || {});
        assert_eq!(walked, 0);
        for bind in &binds {
            assert_eq!(facts.status(bind), BindStatus::FirstHashRunning);
        }
        // The first hash reaches the first bind only.
        hasher.walk_after(0, Instant::now());
        let (facts, walked) = step(&hasher, || {});
        assert_eq!(walked, 0);
        assert!(matches!(facts.status(&binds[0]), BindStatus::Hashed { .. }));
        assert_eq!(facts.status(&binds[1]), BindStatus::FirstHashRunning);
        // Done.
        hasher.measure_after(Instant::now());
        hasher.first_hash_pending.store(false, Ordering::Release);
        let (facts, walked) = step(&hasher, || {});
        assert_eq!(walked, 0);
        for (bind, digest) in binds.iter().zip(fresh_digests(&binds)) {
            assert_eq!(hashed(facts.status(bind)), digest);
        }
    }

    #[test]
    fn an_unreadable_bind_is_not_hashed_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let hasher = RootfsHasher::new(vec![missing.clone()], state.path());
        let facts = hasher.step_ended(&hasher.step_starting());
        match facts.status(&missing) {
            BindStatus::NotHashed { reason } => assert!(reason.contains("cannot stat"), "{reason}"),
            other => panic!("{other:?}"),
        }
        match RootfsFacts::off().status(&missing) {
            BindStatus::NotHashed { reason } => assert!(reason.contains("off"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }
}
