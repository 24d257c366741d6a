//! Times walks of the host rootfs binds with and without the change feed's
//! watches, and a step judged with no event, outside a daemon (the figures
//! of the rootfs part of docs/BENCHMARKS.md).
//!
//! usage: cargo run --release -p attestd --example rootfs_walk -- STATE_DIR [ROUNDS]
//!
//! STATE_DIR keeps the digest cache: the first run reads the whole rootfs,
//! later runs only stat.

use attestd::rootfs::{ChangeFeed, Feed, RootfsHasher};
use std::path::PathBuf;
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let state = PathBuf::from(args.next().expect("usage: rootfs_walk STATE_DIR [ROUNDS]"));
    let rounds: usize = args.next().map_or(5, |n| n.parse().expect("ROUNDS"));
    std::fs::create_dir_all(&state).expect("state dir");
    let attest_sandbox::RootfsSpec::Host { ro_binds } = attest_sandbox::RootfsSpec::host_default();

    let feeds = [
        ("no feed", ChangeFeed::Off),
        (
            "inotify feed",
            ChangeFeed::Inotify {
                max_watches: Feed::default_budget(),
            },
        ),
    ];
    for round in 0..rounds {
        for (name, feed) in feeds {
            // A new hasher each time: its first walk adds every watch, as
            // after a daemon start.
            let hasher = RootfsHasher::with_feed(ro_binds.clone(), &state, feed);
            let t = Instant::now();
            let first = hasher.measure_after(Instant::now());
            let first_ms = t.elapsed().as_secs_f64() * 1e3;
            // Watches in place: what a build pays for a bind it must walk.
            let t = Instant::now();
            let again = hasher.measure_after(Instant::now());
            let again_ms = t.elapsed().as_secs_f64() * 1e3;
            // A step with no event in between: reused, or walked without a
            // feed.
            let watch = hasher.step_starting();
            let t = Instant::now();
            let before = hasher.entries_walked();
            hasher.step_ended(&watch);
            let step_ms = t.elapsed().as_secs_f64() * 1e3;
            println!(
                "round {round} {name}: first walk {first_ms:.0} ms ({} entries, {} files read), \
                 second walk {again_ms:.0} ms ({} entries), step end {step_ms:.1} ms ({} entries stat'ed)",
                first.entries,
                first.files_read,
                again.entries,
                hasher.entries_walked() - before,
            );
        }
    }
}
