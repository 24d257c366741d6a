//! The verifier on arbitrary bytes: once as an envelope (steps fail early),
//! once as the payload of a validly signed envelope, so steps 2 to 4 see
//! arbitrary statements.
#![no_main]
use attest_provenance::dsse::{Envelope, INTOTO_PAYLOAD_TYPE};
use attest_provenance::keys::{KeyIdScheme, SigningKey};
use attest_provenance::verify::{verify_any, verify_envelope, Artifact, Expectations};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

/// securesystemslib's published Ed25519 test key (tests/data/securesystemslib).
const KEY: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIGiI3w9x2HZ9UKGi51USN5JN2wtppaYVCRIBTp8ESaj3
-----END PRIVATE KEY-----
";

fn key() -> &'static SigningKey {
    static K: OnceLock<SigningKey> = OnceLock::new();
    K.get_or_init(|| SigningKey::from_pkcs8_pem(KEY).expect("test key"))
}

fuzz_target!(|data: &[u8]| {
    let trusted = [key().public_key()];
    let artifacts = [Artifact {
        name: "artifact.txt".into(),
        sha256: "257a0c7bff90e1d706ad8da1709a0a27255550237b021b9bfd32edfe57f1fb75".into(),
        sha512: None,
    }];
    let expect = Expectations {
        builder_id: Some("https://example.com/foreign-builder".into()),
        build_type: Some("https://example.com/foreign-build/v1".into()),
        source_uri: Some("https://github.com/o/r".into()),
        source_digest: Some("gitCommit:abc".into()),
        max_age: Some(Duration::from_secs(3600)),
        require_hermetic: true,
        require_name: true,
        requester: None,
        min_signatures: 1,
    };
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000);
    if let Ok(env) = Envelope::from_json(data) {
        let _ = verify_any(&[env], &trusted, &artifacts, &expect, now);
    }
    let signed = Envelope::sign(
        INTOTO_PAYLOAD_TYPE,
        data.to_vec(),
        &[key()],
        KeyIdScheme::None,
    )
    .expect("ed25519 signing cannot fail");
    if let Err(e) = verify_envelope(&signed, &trusted, &artifacts, &expect, now) {
        // A valid signature never fails step 1, and every error maps to a step.
        assert!(e.step() >= 2, "{e}");
        let _ = e.to_string();
    }
});
