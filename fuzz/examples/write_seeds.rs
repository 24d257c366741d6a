//! Writes the seed corpus of every fuzz target into `fuzz/corpus/<target>/`
//! (`cargo run -p attest-fuzz --example write_seeds`): small inputs that
//! each reach a different part of their parser, valid ones first. Seeds
//! added later by hand (failing inputs, once fixed) sit beside these.

use attest_proto::v1::{Digest as WireDigest, Directory, DirectoryNode, FileNode, SymlinkNode};
use attest_tree::hash_bytes;
use prost::Message;
use std::path::Path;

fn digest(content: &[u8]) -> Option<WireDigest> {
    Some(hash_bytes(content).to_proto())
}

fn file(name: &str, raw: &[u8], content: &[u8], executable: bool) -> FileNode {
    FileNode {
        name: name.into(),
        raw_name: raw.to_vec(),
        digest: digest(content),
        is_executable: executable,
    }
}

fn directories() -> Vec<(&'static str, Vec<u8>)> {
    let full = Directory {
        files: vec![
            file("Makefile", b"", b"all:\n", false),
            file("", b"caf\xE9.c", b"int main;\n", false),
            file("run.sh", b"", b"#!/bin/sh\n", true),
        ],
        directories: vec![DirectoryNode {
            name: "src".into(),
            raw_name: Vec::new(),
            digest: Some(attest_tree::directory_digest(&Directory::default()).to_proto()),
        }],
        symlinks: vec![
            SymlinkNode {
                name: "latest".into(),
                target: "src".into(),
                ..Default::default()
            },
            SymlinkNode {
                name: "odd".into(),
                raw_target: b"\xFF/target".to_vec(),
                ..Default::default()
            },
        ],
    };
    // Refused ones, each for one reason, so mutations start near the edges.
    let unsorted = Directory {
        files: vec![file("b", b"", b"", false), file("a", b"", b"", false)],
        ..Default::default()
    };
    let dot_dot = Directory {
        directories: vec![DirectoryNode {
            name: "..".into(),
            raw_name: Vec::new(),
            digest: digest(b""),
        }],
        ..Default::default()
    };
    let twice = Directory {
        files: vec![file("x", b"", b"", false)],
        symlinks: vec![SymlinkNode {
            name: "x".into(),
            target: "y".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    vec![
        ("empty", Directory::default().encode_to_vec()),
        ("full", full.encode_to_vec()),
        ("unsorted", unsorted.encode_to_vec()),
        ("dot-dot", dot_dot.encode_to_vec()),
        ("name-twice", twice.encode_to_vec()),
    ]
}

fn percent_bytes() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("latin1-name", b"dist/caf%E9 100%25.txt".to_vec()),
        ("raw-bytes", b"caf\xE9 100%.txt".to_vec()),
        ("utf8-escaped", b"%C3%A9".to_vec()),
        ("lowercase-hex", b"caf%e9".to_vec()),
        ("cut-escape", b"caf%E".to_vec()),
    ]
}

fn file_lists() -> Vec<(&'static str, Vec<u8>)> {
    let list = vec![
        (b"Makefile".to_vec(), hash_bytes(b"all:\n")),
        (b"src/caf\xE9.c".to_vec(), hash_bytes(b"int main;\n")),
        (b"src/with space".to_vec(), hash_bytes(b"")),
    ];
    vec![
        ("empty", attestd::materialize::encode_file_list(&[])),
        ("three", attestd::materialize::encode_file_list(&list)),
        // Found by this target: a list whose checksum matches but whose
        // count is absurd made the daemon reserve for it, and abort.
        ("count-huge", {
            let records = b"";
            format!(
                "attestd-file-list v1 99999999999999999 {}\n",
                hash_bytes(records).hex()
            )
            .into_bytes()
        }),
    ]
}

fn reports() -> Vec<(&'static str, Vec<u8>)> {
    let settings = r#"{"namespaces":["user","mount","pid","net","uts","ipc","cgroup"],
"uid_map":"1000 101000 1","gid_map":"1000 101000 1","step_uid":1000,"step_gid":1000,
"seccomp_profile_sha256":"0f0e","cgroup":"v2","limits":{"timeout_ms":30000,
"memory_bytes":268435456,"pids":64,"cpu_time_ms":60000,"max_output_bytes":1048576,
"tmp_bytes":1048576},"network":"none (loopback only)","hostname":"attestd",
"rootfs_binds":["/usr","/bin -> usr/bin"],"work_layer":"overlay","no_new_privs":true}"#;
    let usage = r#"{"wall_ms":12,"user_cpu_ms":3,"sys_cpu_ms":4,"max_rss_kib":2048}"#;
    let report = |outcome: &str, outputs: &str| {
        format!(
            r#"{{"outcome":{outcome},"usage":{usage},"settings":{settings},"outputs":{outputs}}}"#
        )
        .into_bytes()
    };
    vec![
        (
            "exited",
            report(
                r#"{"kind":"exited","code":0}"#,
                r#"[{"path":"hello","state":{"kind":"file","executable":true}},
{"path":"dist","state":{"kind":"directory"}},{"path":"gone","state":{"kind":"missing"}},
{"path":"link","state":{"kind":"refused","reason":"link is a symlink"}}]"#,
            ),
        ),
        (
            "signaled",
            report(r#"{"kind":"signaled","signal":9}"#, "[]"),
        ),
        (
            "timed-out",
            report(r#"{"kind":"timed_out","limit_ms":1500}"#, "[]"),
        ),
        (
            "out-of-memory",
            report(r#"{"kind":"out_of_memory","limit_bytes":1048576}"#, "[]"),
        ),
        ("pids", report(r#"{"kind":"pids_limit","limit":64}"#, "[]")),
        (
            "cpu",
            report(r#"{"kind":"cpu_time_limit","limit_ms":60000}"#, "[]"),
        ),
        (
            "output",
            report(r#"{"kind":"output_limit","limit_bytes":1572864}"#, "[]"),
        ),
        ("cancelled", report(r#"{"kind":"cancelled"}"#, "[]")),
        // Found by this target: 128 + signal overflowed in exit_code.
        (
            "signal-max",
            report(r#"{"kind":"signaled","signal":2147483647}"#, "[]"),
        ),
        (
            "setup-failed",
            report(
                r#"{"kind":"setup_failed","step":"exec","message":"no such file"}"#,
                "[]",
            ),
        ),
    ]
}

/// Original provenance a client could send: one a rebuild matches, one of
/// another command, one whose product differs, and bytes that are no
/// envelope.
fn original_envelopes() -> Vec<(&'static str, Vec<u8>)> {
    use attest_fuzz::{provenance_statement, signed_envelope};
    let same = provenance_statement("original");
    let mut other_argv = same.clone();
    other_argv["predicate"]["buildDefinition"]["externalParameters"]["argv"] =
        serde_json::json!(["true"]);
    let mut other_product = same.clone();
    other_product["subject"][0]["digest"]["sha256"] = serde_json::json!("0".repeat(64));
    vec![
        ("same-request", signed_envelope(&same)),
        ("other-argv", signed_envelope(&other_argv)),
        ("other-product", signed_envelope(&other_product)),
        ("not-an-envelope", b"{\"payloadType\": 1}".to_vec()),
    ]
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (target, seeds) in [
        ("directory", directories()),
        ("percent_bytes", percent_bytes()),
        ("file_list", file_lists()),
        ("report", reports()),
        ("original_envelope", original_envelopes()),
    ] {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).expect("create the corpus directory");
        for (name, bytes) in seeds {
            std::fs::write(dir.join(name), bytes).expect("write a seed");
        }
        println!("{}", dir.display());
    }
}
