//! `attest inspect`: a readable summary of provenance, ours or another
//! builder's (SLSA v1 and v0.2, Statement v1 and v0.1), without verifying
//! it. Reading is lenient on purpose: inspect is how a person looks at a
//! document `attest verify` refused, so everything that parses is shown and
//! `--json` carries the whole statement, no field dropped.

use crate::error::ClientError;
use attest_provenance::dsse::{read_envelopes, Envelope};
use attest_provenance::slsa::{PREDICATE_TYPE_V02, PREDICATE_TYPE_V1};
use serde_json::{json, Map, Value};
use std::fmt::Write;

/// How many materials the text summary lists before it says "N more".
pub const MATERIALS_SHOWN: usize = 5;

/// The summary of one envelope as JSON (what `attest inspect --json` prints
/// one of per envelope). Keys absent from the document are absent here.
pub fn summarize(envelope: &Envelope) -> Value {
    let mut out = Map::new();
    out.insert("payloadType".into(), json!(envelope.payload_type));
    out.insert(
        "signerKeyids".into(),
        json!(envelope
            .signatures
            .iter()
            .map(|s| s.keyid.as_str())
            .collect::<Vec<_>>()),
    );
    out.insert("verified".into(), json!(false));
    let statement: Value = match serde_json::from_slice(&envelope.payload) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) | Err(_) => {
            out.insert(
                "payloadError".into(),
                json!(format!(
                    "the payload ({} bytes) is not a JSON object",
                    envelope.payload.len()
                )),
            );
            return Value::Object(out);
        }
    };
    let text = |v: &Value, ptr: &str| v.pointer(ptr).and_then(Value::as_str).map(str::to_string);
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            out.insert(key.into(), value);
        }
    };
    put("statementType", text(&statement, "/_type").map(Value::from));
    put(
        "predicateType",
        text(&statement, "/predicateType").map(Value::from),
    );
    put("subjects", statement.get("subject").cloned());
    let predicate = statement.get("predicate").cloned().unwrap_or(Value::Null);
    let predicate_type = text(&statement, "/predicateType").unwrap_or_default();
    // Where each field lives in SLSA v1 and in v0.2.
    let (builder, build_type, invocation, started, finished, materials, params, internal) =
        if predicate_type == PREDICATE_TYPE_V02 {
            (
                "/builder/id",
                "/buildType",
                "/metadata/buildInvocationId",
                "/metadata/buildStartedOn",
                "/metadata/buildFinishedOn",
                "/materials",
                "/invocation/parameters",
                "/invocation/environment",
            )
        } else {
            (
                "/runDetails/builder/id",
                "/buildDefinition/buildType",
                "/runDetails/metadata/invocationId",
                "/runDetails/metadata/startedOn",
                "/runDetails/metadata/finishedOn",
                "/buildDefinition/resolvedDependencies",
                "/buildDefinition/externalParameters",
                "/buildDefinition/internalParameters",
            )
        };
    let known = predicate_type == PREDICATE_TYPE_V1 || predicate_type == PREDICATE_TYPE_V02;
    if known {
        put("builderId", text(&predicate, builder).map(Value::from));
        put("buildType", text(&predicate, build_type).map(Value::from));
        put(
            "invocationId",
            text(&predicate, invocation).map(Value::from),
        );
        put("startedOn", text(&predicate, started).map(Value::from));
        put("finishedOn", text(&predicate, finished).map(Value::from));
        put("materials", predicate.pointer(materials).cloned());
        put("parameters", predicate.pointer(params).cloned());
        put("internalParameters", predicate.pointer(internal).cloned());
        // Who asked, as the daemon observed it (attestd provenance only),
        // with the identities `attest verify --requester` matches.
        let requester = predicate
            .pointer(internal)
            .and_then(|i| i.get(attest_provenance::requester::REQUESTER_FIELD))
            .cloned();
        if let Some(requester) = requester {
            put(
                "requesterIdentities",
                Some(json!(attest_provenance::requester::identities(&requester))),
            );
            put("requester", Some(requester));
        }
    }
    put("statement", Some(statement));
    Value::Object(out)
}

fn descriptor_line(d: &Value) -> String {
    let name = d
        .get("name")
        .or_else(|| d.get("uri"))
        .and_then(Value::as_str)
        .unwrap_or("(unnamed)");
    let digests: Vec<String> = d
        .get("digest")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(alg, hex)| format!("{alg}:{}", hex.as_str().unwrap_or("?")))
                .collect()
        })
        .unwrap_or_default();
    if digests.is_empty() {
        name.to_string()
    } else {
        format!("{name}  {}", digests.join(" "))
    }
}

/// One line for the recorded requester: its transport and what the daemon
/// observed (`mtls: spiffe://..., CN=... (certificate sha256:...)`, `unix:
/// uid 1000 (user ci), gid 1000, pid 42`).
fn requester_line(requester: &Value) -> String {
    let transport = requester
        .get("transport")
        .and_then(Value::as_str)
        .unwrap_or("(unknown transport)");
    let number = |key: &str| {
        requester
            .get(key)
            .and_then(Value::as_i64)
            .map_or("?".to_string(), |n| n.to_string())
    };
    match transport {
        "unix" => {
            let user = requester
                .get("user")
                .and_then(Value::as_str)
                .map_or(String::new(), |u| format!(" (user {u})"));
            format!(
                "unix: uid {}{user}, gid {}, pid {}",
                number("uid"),
                number("gid"),
                number("pid")
            )
        }
        "mtls" => format!(
            "mtls: {} (certificate sha256:{}){}",
            attest_provenance::requester::identities(requester).join(", "),
            requester
                .pointer("/certificate/sha256")
                .and_then(Value::as_str)
                .unwrap_or("?"),
            requester
                .get("peerAddress")
                .and_then(Value::as_str)
                .map_or(String::new(), |a| format!(" from {a}"))
        ),
        other => format!("{other}: {requester}"),
    }
}

fn indented_json(out: &mut String, value: &Value) {
    let pretty = serde_json::to_string_pretty(value).unwrap_or_default();
    for line in pretty.lines() {
        let _ = writeln!(out, "    {line}");
    }
}

/// The text `attest inspect` prints for one summary.
pub fn render(summary: &Value) -> String {
    let mut out = String::new();
    let field = |key: &str| summary.get(key).and_then(Value::as_str);
    let line = |out: &mut String, label: &str, value: &str| {
        let _ = writeln!(out, "{label:<16}{value}");
    };
    line(
        &mut out,
        "payload type:",
        field("payloadType").unwrap_or(""),
    );
    let keyids: Vec<&str> = summary["signerKeyids"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    line(
        &mut out,
        "signatures:",
        &format!(
            "{} (not verified: inspect only reads; use `attest verify`)",
            keyids.len()
        ),
    );
    for keyid in keyids {
        let shown = if keyid.is_empty() {
            "(no keyid)"
        } else {
            keyid
        };
        let _ = writeln!(out, "    keyid {shown}");
    }
    if let Some(error) = field("payloadError") {
        line(&mut out, "payload:", error);
        return out;
    }
    line(
        &mut out,
        "statement:",
        field("statementType").unwrap_or("(none)"),
    );
    line(
        &mut out,
        "predicate:",
        field("predicateType").unwrap_or("(none)"),
    );
    let subjects = summary["subjects"].as_array().cloned().unwrap_or_default();
    line(&mut out, "subjects:", &subjects.len().to_string());
    for subject in &subjects {
        let _ = writeln!(out, "    {}", descriptor_line(subject));
    }
    for (key, label) in [
        ("builderId", "builder id:"),
        ("buildType", "build type:"),
        ("invocationId", "invocation id:"),
        ("startedOn", "started on:"),
        ("finishedOn", "finished on:"),
    ] {
        if let Some(value) = field(key) {
            line(&mut out, label, value);
        }
    }
    if let Some(requester) = summary.get("requester") {
        line(&mut out, "requested by:", &requester_line(requester));
    }
    if let Some(materials) = summary.get("materials").and_then(Value::as_array) {
        line(&mut out, "materials:", &materials.len().to_string());
        for material in materials.iter().take(MATERIALS_SHOWN) {
            let _ = writeln!(out, "    {}", descriptor_line(material));
        }
        if materials.len() > MATERIALS_SHOWN {
            let _ = writeln!(out, "    ... {} more", materials.len() - MATERIALS_SHOWN);
        }
    }
    for (key, label) in [
        ("parameters", "parameters:"),
        ("internalParameters", "internal:"),
    ] {
        if let Some(value) = summary.get(key) {
            let _ = writeln!(out, "{label}");
            indented_json(&mut out, value);
        }
    }
    let predicate_type = field("predicateType").unwrap_or("");
    if predicate_type != PREDICATE_TYPE_V1 && predicate_type != PREDICATE_TYPE_V02 {
        if let Some(predicate) = summary.pointer("/statement/predicate") {
            let _ = writeln!(out, "predicate body:");
            indented_json(&mut out, predicate);
        }
    }
    out
}

/// Reads every envelope in `bytes` (`.intoto.jsonl`, a bare DSSE envelope or
/// a Sigstore bundle) and summarizes each.
pub fn inspect_bytes(bytes: &[u8], source: &str) -> Result<Vec<Value>, ClientError> {
    let envelopes =
        read_envelopes(bytes).map_err(|e| ClientError::Invalid(format!("{source}: {e}")))?;
    Ok(envelopes.iter().map(summarize).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use attest_provenance::dsse::INTOTO_PAYLOAD_TYPE;
    use attest_provenance::keys::{KeyAlgorithm, KeyIdScheme, SigningKey};

    fn signed(payload: &[u8]) -> Envelope {
        let key = SigningKey::generate(KeyAlgorithm::Ed25519).unwrap();
        Envelope::sign(
            INTOTO_PAYLOAD_TYPE,
            payload.to_vec(),
            &[&key],
            KeyIdScheme::Securesystemslib,
        )
        .unwrap()
    }

    #[test]
    fn slsa_v02_fields_are_read_from_their_v02_places() {
        let statement = json!({
            "_type": "https://in-toto.io/Statement/v0.1",
            "predicateType": PREDICATE_TYPE_V02,
            "subject": [{"name": "pkg.tgz", "digest": {"sha512": "ab"}}],
            "predicate": {
                "builder": {"id": "https://github.com/slsa-framework/slsa-github-generator"},
                "buildType": "https://github.com/slsa-framework/slsa-github-generator/generic@v1",
                "invocation": {"parameters": {"ref": "main"}},
                "metadata": {"buildInvocationId": "42", "buildStartedOn": "2024-01-01T00:00:00Z"},
                "materials": [{"uri": "git+https://x/y", "digest": {"sha1": "cd"}}],
                "futureField": 1
            }
        });
        let summary = summarize(&signed(statement.to_string().as_bytes()));
        assert_eq!(
            summary["builderId"],
            "https://github.com/slsa-framework/slsa-github-generator"
        );
        assert_eq!(summary["invocationId"], "42");
        assert_eq!(summary["startedOn"], "2024-01-01T00:00:00Z");
        assert_eq!(summary["parameters"], json!({"ref": "main"}));
        assert_eq!(summary["materials"][0]["uri"], "git+https://x/y");
        // Nothing is dropped: the statement rides along whole.
        assert_eq!(summary["statement"], statement);
        let text = render(&summary);
        assert!(text.contains("pkg.tgz  sha512:ab"), "{text}");
        assert!(text.contains("git+https://x/y  sha1:cd"), "{text}");
        assert!(text.contains("not verified"), "{text}");
    }

    #[test]
    fn long_material_lists_are_cut_with_a_count() {
        let materials: Vec<Value> = (0..8)
            .map(|i| json!({"name": format!("m{i}"), "digest": {"sha256": "00"}}))
            .collect();
        let statement = json!({
            "_type": "https://in-toto.io/Statement/v1",
            "predicateType": PREDICATE_TYPE_V1,
            "subject": [],
            "predicate": {"buildDefinition": {"buildType": "t", "externalParameters": {},
                "resolvedDependencies": materials}, "runDetails": {"builder": {"id": "b"}}}
        });
        let text = render(&summarize(&signed(statement.to_string().as_bytes())));
        assert!(text.contains("materials:      8"), "{text}");
        assert!(text.contains("m4  sha256:00"), "{text}");
        assert!(!text.contains("m5 "), "{text}");
        assert!(text.contains("... 3 more"), "{text}");
    }

    #[test]
    fn the_requester_is_shown_with_the_identities_verify_matches() {
        let statement = json!({
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [],
            "predicateType": PREDICATE_TYPE_V1,
            "predicate": {"buildDefinition": {"buildType": "t", "externalParameters": {},
                "internalParameters": {"requester": {"transport": "mtls", "peerAddress": "10.0.0.7:4000",
                    "certificate": {"sha256": "ab12", "subject": "CN=r", "commonName": "r",
                        "uris": ["spiffe://example.org/runner/7"], "dnsNames": []}}}},
                "runDetails": {"builder": {"id": "b"}}},
        });
        let summary = summarize(&signed(statement.to_string().as_bytes()));
        assert_eq!(
            summary["requesterIdentities"],
            json!(["spiffe://example.org/runner/7", "CN=r"])
        );
        assert!(render(&summary).contains(
            "requested by:   mtls: spiffe://example.org/runner/7, CN=r (certificate sha256:ab12) from 10.0.0.7:4000"
        ));
        let unix = json!({"transport": "unix", "uid": 1000, "gid": 100, "pid": 42, "user": "ci"});
        assert_eq!(
            requester_line(&unix),
            "unix: uid 1000 (user ci), gid 100, pid 42"
        );
    }

    #[test]
    fn a_payload_that_is_not_json_is_reported_not_fatal() {
        let summary = summarize(&signed(b"\xffnot json"));
        assert!(summary["payloadError"]
            .as_str()
            .unwrap()
            .contains("9 bytes"));
        assert!(render(&summary).contains("not a JSON object"));
    }

    #[test]
    fn an_unknown_predicate_is_printed_whole() {
        let statement = json!({
            "_type": "https://in-toto.io/Statement/v1",
            "predicateType": "https://cyclonedx.org/bom",
            "subject": [{"name": "a", "digest": {"sha256": "11"}}],
            "predicate": {"bomFormat": "CycloneDX"}
        });
        let summary = summarize(&signed(statement.to_string().as_bytes()));
        assert!(summary.get("builderId").is_none());
        assert!(render(&summary).contains("\"bomFormat\": \"CycloneDX\""));
    }
}
