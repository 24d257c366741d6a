//! Every fuzz target over its seed corpus (`fuzz/corpus/<target>/`) and
//! then over inputs the deterministic mutator derives from the seeds, as an
//! ordinary test on the stable toolchain (CI runs it with the workspace).
//! `ATTEST_FUZZ_ITERATIONS` sets the generated inputs per target (default
//! 5,000); longer runs belong to `cargo fuzz` (fuzz/cargo-fuzz/).
//!
//! A failing input is written to `target/fuzz-failures/<target>-<n>` and
//! the test fails naming it; add it to the corpus with the fix.

use attest_fuzz::mutator::{mutate, Rng};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("no seed corpus at {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("list the corpus").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).expect("read a seed"))
        })
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "the corpus {} is empty", dir.display());
    seeds
}

fn iterations() -> usize {
    std::env::var("ATTEST_FUZZ_ITERATIONS")
        .ok()
        .map(|n| n.parse().expect("ATTEST_FUZZ_ITERATIONS is a number"))
        .unwrap_or(5_000)
}

/// Runs `body` on `input`; on a panic, saves the input and fails naming it.
fn run_one(target: &str, what: &str, body: fn(&[u8]), input: &[u8]) {
    if catch_unwind(AssertUnwindSafe(|| body(input))).is_ok() {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fuzz-failures");
    std::fs::create_dir_all(&dir).expect("create target/fuzz-failures");
    let saved: PathBuf = dir.join(format!("{target}-{what}"));
    std::fs::write(&saved, input).expect("save the failing input");
    panic!(
        "fuzz target {target} failed on {what} (saved as {}; replay with \
         `cargo fuzz run {target} {}` in fuzz/cargo-fuzz)",
        saved.display(),
        saved.display()
    );
}

fn fuzz(target: &str) {
    let body = attest_fuzz::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, body)| *body)
        .expect("a known target");
    let seeds = corpus(target);
    for (name, seed) in &seeds {
        run_one(target, &format!("seed-{name}"), body, seed);
    }
    // The same inputs on every run: seeded by the target's name.
    let mut rng = Rng::new(
        target
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31) ^ b as u64),
    );
    let mut previous: Vec<u8> = seeds[0].1.clone();
    for n in 0..iterations() {
        // Half the time mutate the previous input again, to get further
        // from the seeds than one round of mutations goes.
        // (Back to a seed once an input has grown past 64 KiB.)
        let base = if rng.below(2) == 0 && previous.len() <= 1 << 16 {
            previous.clone()
        } else {
            seeds[rng.below(seeds.len())].1.clone()
        };
        let other = &seeds[rng.below(seeds.len())].1;
        let input = mutate(&base, other, &mut rng);
        run_one(target, &format!("input-{n}"), body, &input);
        previous = input;
    }
}

#[test]
fn every_target_has_a_test_here_and_a_cargo_fuzz_target() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("cargo-fuzz/fuzz_targets");
    for (target, _) in attest_fuzz::TARGETS {
        let file = dir.join(format!("{target}.rs"));
        assert!(file.is_file(), "no cargo fuzz target {}", file.display());
        let test = include_str!("corpus.rs");
        assert!(
            test.contains(&format!("fuzz(\"{target}\")")),
            "no test runs target {target}"
        );
    }
}

#[test]
fn directory_messages() {
    fuzz("directory");
}

#[test]
fn percent_bytes_names() {
    fuzz("percent_bytes");
}

#[test]
fn file_lists() {
    fuzz("file_list");
}

#[test]
fn helper_reports() {
    fuzz("report");
}

#[test]
fn client_certificates() {
    fuzz("client_certificate");
}

#[test]
fn original_envelopes() {
    fuzz("original_envelope");
}

#[test]
fn in_toto_layouts() {
    fuzz("layout");
}
