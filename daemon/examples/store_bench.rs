//! Store durability, one fsync per blob vs one batch commit (docs/BENCHMARKS.md,
//! "`attest run` over the tree"): N random blobs of 1..29 kB (mean 15 kB)
//! written into a fresh store under DIR, either finished one by one with 64
//! at a time in flight (what UploadBlobs did before batches) or closed and
//! committed in batches of 2,048 (what it does now). Timed figures only.
//!
//! Usage: cargo run --release -p attestd --example store_bench -- DIR N per-blob|batch

use attestd::store::BlobStore;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, count, mode] = args.as_slice() else {
        anyhow::bail!("usage: store_bench DIR N per-blob|batch");
    };
    let count: usize = count.parse()?;
    let mut seed = 5u64;
    let blobs: Vec<Vec<u8>> = (0..count)
        .map(|i| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let size = 1000 + (seed >> 33) as usize % 28_000;
            let mut bytes = format!("blob {i} ").into_bytes();
            bytes.resize(size, (seed >> 24) as u8);
            bytes
        })
        .collect();
    let store = BlobStore::open(std::path::Path::new(dir))?;
    let started = Instant::now();
    match mode.as_str() {
        "per-blob" => {
            let mut in_flight = std::collections::VecDeque::new();
            for bytes in &blobs {
                let mut writer = store.writer(attest_tree::hash_bytes(bytes))?;
                writer.write(bytes)?;
                if in_flight.len() >= 64 {
                    let handle: std::thread::JoinHandle<_> =
                        in_flight.pop_front().expect("not empty");
                    handle.join().expect("no panic")?;
                }
                in_flight.push_back(std::thread::spawn(move || writer.finish()));
            }
            for handle in in_flight {
                handle.join().expect("no panic")?;
            }
        }
        "batch" => {
            // As UploadBlobs does: one batch commits on another thread
            // while the next one is written.
            let mut batch = Vec::new();
            let mut committing: Option<std::thread::JoinHandle<_>> = None;
            for bytes in &blobs {
                let mut writer = store.writer(attest_tree::hash_bytes(bytes))?;
                writer.write(bytes)?;
                batch.push(writer.close()?);
                if batch.len() == 2048 {
                    if let Some(previous) = committing.take() {
                        previous.join().expect("no panic")?;
                    }
                    let store = store.clone();
                    let blobs = std::mem::take(&mut batch);
                    committing = Some(std::thread::spawn(move || store.commit(blobs)));
                }
            }
            if let Some(previous) = committing.take() {
                previous.join().expect("no panic")?;
            }
            store.commit(batch)?;
        }
        other => anyhow::bail!("unknown mode {other:?}"),
    }
    let total: usize = blobs.iter().map(Vec::len).sum();
    println!(
        "{mode} blobs={count} bytes={total} seconds={:.3}",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
