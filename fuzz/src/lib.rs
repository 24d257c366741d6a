//! One function per parser of untrusted bytes in the daemon: each takes
//! arbitrary bytes, runs the parser, and panics when the parser panics or
//! accepts something it should not (each target states its oracle). Two
//! drivers call them:
//!
//! - `cargo test -p attest-fuzz` (CI, stable toolchain): every seed in
//!   `fuzz/corpus/<target>/` plus some thousands of inputs derived from
//!   them by the deterministic [`mutator`] (`tests/corpus.rs`);
//! - `cargo fuzz run <target>` in `fuzz/cargo-fuzz/` (nightly, libFuzzer)
//!   for longer local runs: its targets are one-line calls of these.
//!
//! | target | parser | where the bytes come from |
//! |---|---|---|
//! | [`directory`] | `Directory` decoding + `attest_tree::validate_directory` | a client's uploaded tree |
//! | [`percent_bytes`] | `attest_tree::percent_bytes_decode` | a provenance name read back by a verifier |
//! | [`file_list`] | `attestd::materialize::decode_file_list` | a tree's file list on disk, read back after a crash |
//! | [`report`] | `attest_sandbox::read_report` | `report.json`, written by the helper next to a hostile step |
//! | [`client_certificate`] | `attestd::requester::ClientCertificate::parse` | a TCP client's certificate (verified first, but parsed by a second parser) |
//! | [`original_envelope`] | `attest_provenance::reproducibility::compare` | the original provenance a client sends whole to `SignReproducibility` |
//! | [`layout`] | `attest_provenance::layout::verify_layout` | an in-toto layout handed to `attest verify --layout` |
#![forbid(unsafe_code)]

pub mod mutator;

use attest_proto::v1::Directory;
use attest_tree::{validate_directory, validate_name_bytes, Digest, EntryName};
use prost::Message;

/// A target's body: any bytes in, a panic on a finding.
pub type Target = fn(&[u8]);

/// The targets by name, as `fuzz/corpus/<name>/` names their seeds.
pub const TARGETS: &[(&str, Target)] = &[
    ("directory", directory),
    ("percent_bytes", percent_bytes),
    ("file_list", file_list),
    ("report", report),
    ("client_certificate", client_certificate),
    ("original_envelope", original_envelope),
    ("layout", layout),
];

/// The statement of an attestd build, with `invocation` as its id: the
/// rebuild [`original_envelope`] compares against, and (with another id)
/// the seed it starts from.
pub fn provenance_statement(invocation: &str) -> serde_json::Value {
    let root = "27466f53fd30b8943004f902a8ed9df56c531ddf06a56777f6124da89c70e897";
    let hello = "86046c498ea752e7536ff177c0b529e554d803f76a104d06447bd668bf4e6892";
    serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "hello", "digest": {"sha256": hello}}],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {
            "buildDefinition": {
                "buildType": "https://attestd.dev/buildtypes/sandboxed-step/v1",
                "externalParameters": {
                    "argv": ["cc", "-o", "hello", "hello.c"], "env": {}, "workingDirectory": "",
                    "outputs": ["hello"],
                    "source": {"inputRoot": {"sha256": root, "sizeBytes": 82}, "digest": {"sha256": root}},
                    "limits": {"timeoutMs": 0, "memoryBytes": 0, "pids": 0, "maxOutputBytes": 0, "cpuTimeMs": 0}
                },
                "internalParameters": {"sourceDateEpoch": 0},
                "resolvedDependencies": [
                    {"name": "input-root", "digest": {"sha256": root}},
                    {"name": "rootfs:/usr", "uri": "file:///usr", "digest": {"sha256": hello}}
                ]
            },
            "runDetails": {"builder": {"id": "urn:attestd:host:fuzz"}, "metadata": {"invocationId": invocation}}
        }
    })
}

/// `statement` signed into a DSSE envelope's JSON with a fresh key.
pub fn signed_envelope(statement: &serde_json::Value) -> Vec<u8> {
    use attest_provenance::keys::{KeyAlgorithm, KeyIdScheme, SigningKey};
    let key = SigningKey::generate(KeyAlgorithm::Ed25519).expect("generate a key");
    attest_provenance::dsse::Envelope::sign(
        attest_provenance::dsse::INTOTO_PAYLOAD_TYPE,
        serde_json::to_vec(statement).expect("a statement serializes"),
        &[&key],
        KeyIdScheme::Securesystemslib,
    )
    .expect("sign")
    .to_json()
    .into_bytes()
}

/// The original envelope of a `SignReproducibility` request, compared with
/// a fixed rebuild. Oracle: a verdict names the sha256 of exactly the bytes
/// received; it is `reproducible` only if every row is identical with
/// equal digests on both sides; the rebuild's invocation is never the
/// original's.
pub fn original_envelope(data: &[u8]) {
    use attest_provenance::reproducibility::{
        compare, ProductResult, RebuildContext, REPRODUCIBLE,
    };
    static REBUILD: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let rebuild = REBUILD.get_or_init(|| signed_envelope(&provenance_statement("rebuild")));
    let Ok((_, verdict)) = compare(&RebuildContext {
        original_envelope_bytes: data.to_vec(),
        rebuild_envelope_bytes: rebuild.clone(),
        original_verified: true,
        verified_on: "2026-01-01T00:00:00Z".into(),
    }) else {
        return;
    };
    assert_eq!(
        verdict.original.envelope_sha256,
        attest_tree::hash_bytes(data).hex()
    );
    assert_ne!(
        verdict.original.invocation_id,
        verdict.rebuild.invocation_id
    );
    for row in &verdict.products {
        if row.result == ProductResult::Identical {
            assert!(row.original_sha256.is_some() && row.original_sha256 == row.rebuilt_sha256);
        }
    }
    if verdict.result == REPRODUCIBLE {
        assert!(verdict
            .products
            .iter()
            .all(|r| r.result == ProductResult::Identical));
    }
    serde_json::to_vec(&verdict).expect("a verdict serializes");
}

/// A `Directory` message as the daemon receives it from a client. Oracle:
/// a directory that validates has every name valid in its one field, each
/// list strictly sorted by name bytes, no name twice across the lists,
/// every digest present and well formed; and its re-encoding decodes to
/// the same message, which validates again.
pub fn directory(data: &[u8]) {
    let Ok(directory) = Directory::decode(data) else {
        return;
    };
    if validate_directory(&directory).is_err() {
        return;
    }
    let mut names: Vec<&[u8]> = Vec::new();
    let lists: [Vec<&dyn EntryName>; 3] = [
        directory.files.iter().map(|f| f as _).collect(),
        directory.directories.iter().map(|d| d as _).collect(),
        directory.symlinks.iter().map(|s| s as _).collect(),
    ];
    for list in &lists {
        for pair in list.windows(2) {
            assert!(
                pair[0].name_bytes() < pair[1].name_bytes(),
                "unsorted list accepted"
            );
        }
        for entry in list {
            let (name, raw) = entry.name_fields();
            assert!(
                name.is_empty() || raw.is_empty(),
                "two encodings of a name accepted"
            );
            assert!(
                raw.is_empty() || std::str::from_utf8(raw).is_err(),
                "a UTF-8 name in raw_name accepted"
            );
            assert!(validate_name_bytes(entry.name_bytes()).is_ok());
            names.push(entry.name_bytes());
        }
    }
    let count = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), count, "a name twice across the lists accepted");
    for digest in directory
        .files
        .iter()
        .map(|f| f.digest.as_ref())
        .chain(directory.directories.iter().map(|d| d.digest.as_ref()))
    {
        let digest = digest.expect("an entry without a digest accepted");
        Digest::from_proto(digest).expect("a malformed digest accepted");
    }
    for link in &directory.symlinks {
        let target = attest_tree::symlink_target(link);
        assert!(
            !target.is_empty() && !target.contains(&0),
            "a bad symlink target accepted"
        );
    }
    let again = Directory::decode(directory.encode_to_vec().as_slice())
        .expect("a re-encoded directory decodes");
    assert_eq!(again, directory);
    validate_directory(&again).expect("a re-encoded valid directory validates");
}

/// A `percent-bytes` name. Oracle: a string that decodes is exactly the
/// encoding of the bytes it decodes to, and those are not UTF-8; and any
/// bytes that are not UTF-8 encode to a string that decodes back to them.
pub fn percent_bytes(data: &[u8]) {
    if let Ok(name) = std::str::from_utf8(data) {
        if let Ok(path) = attest_tree::percent_bytes_decode(name) {
            assert!(std::str::from_utf8(&path).is_err(), "a UTF-8 path decoded");
            assert_eq!(attest_tree::percent_bytes_encode(&path), name);
        }
    }
    let encoded = attest_tree::percent_bytes_encode(data);
    match attest_tree::percent_bytes_decode(&encoded) {
        Ok(path) => assert_eq!(path, data),
        Err(e) => {
            assert_eq!(e, attest_tree::PercentBytesError::Utf8);
            assert!(std::str::from_utf8(data).is_ok());
        }
    }
}

/// A tree's file list. The list carries a sha256 of its records, which
/// random bytes never match, so the target parses the input as it is and
/// also with that checksum recomputed (as a well-meaning but damaged
/// writer would leave it). Oracle: a list that parses has as many records
/// as its header says, no NUL in a path, and encodes to bytes that parse
/// back to it.
pub fn file_list(data: &[u8]) {
    check_file_list(data);
    if let Some(newline) = data.iter().position(|&b| b == b'\n') {
        let (header, records) = (&data[..newline], &data[newline + 1..]);
        let checksum = attest_tree::hash_bytes(records).hex();
        let mut fixed = match header.iter().rposition(|&b| b == b' ') {
            Some(space) => header[..=space].to_vec(),
            None => header.to_vec(),
        };
        fixed.extend_from_slice(checksum.as_bytes());
        fixed.push(b'\n');
        fixed.extend_from_slice(records);
        check_file_list(&fixed);
    }
}

fn check_file_list(data: &[u8]) {
    let Some(files) = attestd::materialize::decode_file_list(data) else {
        return;
    };
    for (path, _) in &files {
        assert!(!path.contains(&0), "a path with NUL accepted");
    }
    let encoded = attestd::materialize::encode_file_list(&files);
    assert_eq!(
        attestd::materialize::decode_file_list(&encoded).as_ref(),
        Some(&files),
        "a list does not survive its own encoding"
    );
}

/// `report.json` as the helper leaves it. The helper runs next to a
/// hostile step, so the daemon must survive any bytes there, and the exit
/// status and sentence it derives from any report. Oracle: a report that
/// parses is serialized as the helper writes it and read
/// back equal.
pub fn report(data: &[u8]) {
    thread_local! {
        // One directory per thread, not per input: creating thousands
        // took most of the target's time.
        static DIR: tempfile::TempDir = tempfile::tempdir().expect("temporary directory");
    }
    DIR.with(|dir| report_in(dir.path(), data));
}

fn report_in(dir: &std::path::Path, data: &[u8]) {
    let path = dir.join("report.json");
    std::fs::write(&path, data).expect("write the report");
    let Ok(report) = attest_sandbox::read_report(&path) else {
        return;
    };
    // What the daemon derives from a report for the client.
    let _ = report.outcome.exit_code();
    let _ = report.outcome.describe();
    // What `write_report` writes (its path is not re-exported).
    let again = dir.join("again.json");
    let json = serde_json::to_vec_pretty(&report).expect("a parsed report serializes");
    std::fs::write(&again, json).expect("write the report back");
    assert_eq!(
        attest_sandbox::read_report(&again).expect("a written report reads back"),
        report
    );
}

/// The names of a client certificate, as the daemon reads them for
/// `--allow-client` and the requester. The certificate was verified by
/// rustls's WebPKI first, but x509-parser is a second parser of the same
/// bytes. Oracle: no panic; a parsed certificate's fingerprint is the
/// sha256 of exactly these bytes, hex.
pub fn client_certificate(data: &[u8]) {
    let Ok(cert) = attestd::requester::ClientCertificate::parse(data) else {
        return;
    };
    assert_eq!(cert.sha256, attest_tree::hash_bytes(data).hex());
}

/// An in-toto layout as `attest verify --layout` reads it, checked with the
/// key that signed the seeds (so signed seeds get past the signature to
/// the expiry, keys, steps and rules) at a time before they expire, over no
/// links. Oracle: never a panic, and never a pass: with no links no step
/// can meet its threshold.
pub fn layout(data: &[u8]) {
    use std::sync::OnceLock;
    static KEY: OnceLock<Vec<attest_provenance::keys::PublicKey>> = OnceLock::new();
    let keys = KEY.get_or_init(|| {
        attest_provenance::keys::read_public_keys_pem(include_str!("layout-owner.pub.pem"))
            .expect("the seeds' layout key")
    });
    // 2026-01-01T00:00:00Z: before the seeds expire.
    let now = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_767_225_600);
    let result = attest_provenance::layout::verify_layout(
        data,
        keys,
        &std::collections::BTreeMap::new(),
        now,
    );
    assert!(result.is_err(), "a layout verified over no links");
}
