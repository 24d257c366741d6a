//! Verifications per second of a typical attestd envelope, Ed25519 and
//! ECDSA P-256, through the full `verify_envelope` (signature, types,
//! subject match, expectations). Driven by `bench/verify.sh`, which also
//! times the same envelopes in securesystemslib; see docs/BENCHMARKS.md.
//!
//! usage: verify_bench OUT_DIR [SECONDS]
//!
//! Writes into OUT_DIR the payload, one `.intoto.jsonl` and one public PEM
//! per algorithm and the artifact the statement names, then prints one
//! line per algorithm: `ALG verifications/s N (payload B bytes)`.

use attest_provenance::keys::{KeyAlgorithm, KeyIdScheme, SigningKey};
use attest_provenance::slsa::{
    BuildDefinition, BuildMetadata, Builder, Provenance, RunDetails, PREDICATE_TYPE_V1,
};
use attest_provenance::statement::{ResourceDescriptor, Statement, STATEMENT_TYPE_V1};
use attest_provenance::verify::{verify_envelope, Artifact, Expectations};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

/// A statement the shape and size of what attestd signs for examples/hello-c:
/// one subject, the input root, 14 rootfs binds and the source file as
/// resolved dependencies, the sandbox settings as internal parameters.
fn typical_statement(artifact: &Artifact) -> Statement {
    let digest =
        |seed: &str| attest_provenance::verify::Artifact::from_bytes("", seed.as_bytes()).sha256;
    let mut deps = vec![ResourceDescriptor {
        name: Some("input-root".into()),
        digest: BTreeMap::from([("sha256".into(), digest("root"))]),
        media_type: Some("application/vnd.attestd.directory.v1+protobuf".into()),
        ..Default::default()
    }];
    for bind in [
        "/usr",
        "/bin",
        "/lib",
        "/lib64",
        "/sbin",
        "/etc/alternatives",
        "/etc/ld.so.cache",
        "/etc/ssl",
        "/etc/passwd",
        "/etc/group",
        "/etc/nsswitch.conf",
        "/etc/hosts",
        "/etc/localtime",
        "/opt",
    ] {
        deps.push(ResourceDescriptor {
            name: Some(format!("rootfs:{bind}")),
            uri: Some(format!("file://{bind}")),
            annotations: json!({"hashed": false}).as_object().cloned(),
            ..Default::default()
        });
    }
    deps.push(ResourceDescriptor::file("hello.c", digest("hello.c")));
    let provenance = Provenance {
        build_definition: BuildDefinition {
            build_type: "https://attestd.dev/buildtypes/sandboxed-step/v1".into(),
            external_parameters: json!({
                "argv": ["cc", "-O2", "-o", "hello", "hello.c"], "env": {}, "workingDirectory": "",
                "outputs": ["hello"],
                "source": {"inputRoot": {"sha256": digest("root"), "sizeBytes": 80}, "digest": {"sha256": digest("root")}},
                "limits": {"timeoutMs": 0, "memoryBytes": 0, "pids": 0, "maxOutputBytes": 0, "cpuTimeMs": 0}
            }),
            internal_parameters: Some(json!({
                "sandbox": {"namespaces": ["user", "mount", "pid", "net", "uts", "ipc", "cgroup"], "network": "none",
                    "uidMap": "0 100000 65536", "gidMap": "0 100000 65536", "stepUid": 1000, "stepGid": 1000,
                    "hostname": "attestd", "seccompProfileSha256": digest("seccomp"), "cgroup": "v1",
                    "workLayer": "tmpfs-copy", "limits": {"timeoutMs": 900000, "memoryBytes": 2147483648u64,
                    "pids": 512, "maxOutputBytes": 1073741824u64, "cpuTimeMs": 0, "maxLogBytes": 67108864}},
                "sourceDateEpoch": 0, "hermetic": true, "dangerousOptions": []
            })),
            resolved_dependencies: deps,
            ..Default::default()
        },
        run_details: RunDetails {
            builder: Builder {
                id: "urn:attestd:host:bench".into(),
                ..Default::default()
            },
            metadata: Some(BuildMetadata {
                invocation_id: Some("6f1c1f9e-0000-4000-8000-000000000000".into()),
                started_on: Some("2026-01-01T00:00:00Z".into()),
                finished_on: Some("2026-01-01T00:00:01Z".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    Statement {
        type_: STATEMENT_TYPE_V1.into(),
        subject: vec![ResourceDescriptor::file(
            artifact.name.clone(),
            artifact.sha256.clone(),
        )],
        predicate_type: PREDICATE_TYPE_V1.into(),
        predicate: provenance.to_value(),
        extra: BTreeMap::new(),
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let out = std::path::PathBuf::from(args.next().expect("usage: verify_bench OUT_DIR [SECONDS]"));
    let seconds: f64 = args
        .next()
        .map(|s| s.parse().expect("SECONDS"))
        .unwrap_or(3.0);
    std::fs::create_dir_all(&out).expect("create OUT_DIR");
    let artifact_bytes = b"\x7fELF pretend binary for the verification benchmark\n";
    std::fs::write(out.join("hello"), artifact_bytes).expect("write artifact");
    let artifact = Artifact::from_bytes("hello", artifact_bytes);
    let statement = typical_statement(&artifact);
    let payload = serde_json::to_vec(&statement).expect("serialize");
    std::fs::write(out.join("payload.json"), &payload).expect("write payload");
    let expect = Expectations {
        builder_id: Some("urn:attestd:host:bench".into()),
        require_hermetic: true,
        min_signatures: 1,
        ..Default::default()
    };
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_700);
    for (name, alg) in [
        ("ed25519", KeyAlgorithm::Ed25519),
        ("ecdsa", KeyAlgorithm::EcdsaP256Sha256),
    ] {
        let key = SigningKey::generate(alg).expect("generate");
        let envelope =
            attest_provenance::sign_statement(&statement, &[&key], KeyIdScheme::Securesystemslib)
                .expect("sign");
        std::fs::write(
            out.join(format!("{name}.intoto.jsonl")),
            format!("{}\n", envelope.to_json()),
        )
        .expect("write envelope");
        std::fs::write(
            out.join(format!("{name}.pub.pem")),
            key.public_key().to_spki_pem(),
        )
        .expect("write key");
        let trusted = [key.public_key()];
        let artifacts = [artifact.clone()];
        verify_envelope(&envelope, &trusted, &artifacts, &expect, now)
            .expect("the envelope verifies");
        let (start, mut count) = (Instant::now(), 0u64);
        while start.elapsed().as_secs_f64() < seconds {
            for _ in 0..100 {
                std::hint::black_box(
                    verify_envelope(&envelope, &trusted, &artifacts, &expect, now).is_ok(),
                );
            }
            count += 100;
        }
        let rate = count as f64 / start.elapsed().as_secs_f64();
        println!(
            "{name} verifications/s {rate:.0} (payload {} bytes)",
            payload.len()
        );
    }
}
