//! Hashing throughput of the tree crate, for `bench/hashing.sh` and
//! docs/BENCHMARKS.md. Not a test: it prints figures and asserts nothing.
//!
//!     hash_bench engines FILE          ring vs sha2 (SHA-NI) on one file, per read size
//!     hash_bench file FILE THREADS     attest_tree::hash_file on THREADS copies at once
//!     hash_bench tree DIR THREADS      attest_tree::build_tree (no cache) on THREADS threads
//!
//! Run with `cargo run --release -p attest-tree --example hash_bench -- ...`;
//! the file and tree should be in the page cache (run once to warm it).

use sha2::Digest as _;
use std::io::Read;
use std::path::Path;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: hash_bench engines FILE | file FILE THREADS | tree DIR THREADS";
    match args.get(1).map(String::as_str) {
        Some("engines") => engines(Path::new(args.get(2).expect(usage))),
        Some("file") => file(
            Path::new(args.get(2).expect(usage)),
            args.get(3).and_then(|n| n.parse().ok()).expect(usage),
        ),
        Some("tree") => tree(
            Path::new(args.get(2).expect(usage)),
            args.get(3).and_then(|n| n.parse().ok()).expect(usage),
        ),
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
}

fn gbps(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / seconds / 1e9
}

/// Best of three runs of `f`, which returns the bytes it hashed.
fn best_of_three(mut f: impl FnMut() -> u64) -> (u64, f64) {
    let mut best = f64::MAX;
    let mut bytes = 0;
    for _ in 0..3 {
        let start = Instant::now();
        bytes = f();
        best = best.min(start.elapsed().as_secs_f64());
    }
    (bytes, best)
}

fn read_all(path: &Path, buffer_size: usize, mut update: impl FnMut(&[u8])) -> u64 {
    let mut file = std::fs::File::open(path).expect("open");
    let mut buffer = vec![0u8; buffer_size];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buffer).expect("read");
        if n == 0 {
            return total;
        }
        update(&buffer[..n]);
        total += n as u64;
    }
}

fn engines(path: &Path) {
    println!(
        "sha_ni={}",
        std::arch::is_x86_feature_detected!("sha") as u8
    );
    for buffer in [64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20] {
        let (bytes, secs) = best_of_three(|| {
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
            let n = read_all(path, buffer, |b| ctx.update(b));
            std::hint::black_box(ctx.finish());
            n
        });
        println!(
            "engine=ring buffer={}KiB GB/s={:.2}",
            buffer >> 10,
            gbps(bytes, secs)
        );
        let (bytes, secs) = best_of_three(|| {
            let mut ctx = sha2::Sha256::new();
            let n = read_all(path, buffer, |b| ctx.update(b));
            std::hint::black_box(ctx.finalize());
            n
        });
        println!(
            "engine=sha2 buffer={}KiB GB/s={:.2}",
            buffer >> 10,
            gbps(bytes, secs)
        );
    }
    // Hashing alone, without read(2): the ceiling for either engine.
    let data = vec![0x5au8; 256 << 20];
    let (bytes, secs) = best_of_three(|| {
        std::hint::black_box(ring::digest::digest(&ring::digest::SHA256, &data));
        data.len() as u64
    });
    println!("engine=ring in-memory GB/s={:.2}", gbps(bytes, secs));
    let (bytes, secs) = best_of_three(|| {
        std::hint::black_box(sha2::Sha256::digest(&data));
        data.len() as u64
    });
    println!("engine=sha2 in-memory GB/s={:.2}", gbps(bytes, secs));
}

fn file(path: &Path, threads: usize) {
    let (bytes, secs) = best_of_three(|| {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|_| s.spawn(|| attest_tree::hash_file(path).expect("hash").size))
                .collect();
            handles.into_iter().map(|h| h.join().expect("join")).sum()
        })
    });
    println!(
        "hash_file threads={threads} bytes={bytes} seconds={secs:.3} GB/s={:.2}",
        gbps(bytes, secs)
    );
}

fn tree(dir: &Path, threads: usize) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool");
    let (bytes, secs) = best_of_three(|| {
        pool.install(|| {
            attest_tree::build_tree(dir, None, &|_| {})
                .expect("build tree")
                .file_bytes()
        })
    });
    println!(
        "build_tree threads={threads} bytes={bytes} seconds={secs:.3} GB/s={:.2}",
        gbps(bytes, secs)
    );
}
