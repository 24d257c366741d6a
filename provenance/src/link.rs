//! in-toto link metadata: the evidence of one step (its materials, products,
//! command and byproducts) that an in-toto layout chains with other steps.
//!
//! Written in the classic in-toto metadata form, which `in-toto-verify`
//! (Python in-toto 3.x), in-toto-golang and witness all read:
//!
//! ```json
//! {"signatures": [{"keyid": "<hex>", "sig": "<hex>"}], "signed": {"_type": "link", ...}}
//! ```
//!
//! Each signature is over the securesystemslib canonical JSON of `signed`
//! ([`canonical_json`]): Ed25519 over those bytes, ECDSA P-256 over their
//! SHA-256 (ASN.1 DER), exactly as securesystemslib's `ed25519` and
//! `ecdsa-sha2-nistp256` schemes sign. Keyids are securesystemslib's, so a
//! layout that lists our key finds our link under `<step>.<keyid:8>.link`.
//!
//! Not built on the `in-toto` crate's `LinkMetadata`/`Metablock`: those sign
//! only with that crate's own key types, whose keyids and key formats differ
//! from securesystemslib's (see [`crate::keys`]), so in-toto-verify would not
//! match the signature to the layout's key. The interop tests check this
//! module's canonical JSON byte for byte against securesystemslib's.

use crate::json::{parse_strict, JsonError};
use crate::keys::{KeyIdScheme, PublicKey, SigningKey};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// The `_type` of a link.
pub const LINK_TYPE: &str = "link";

/// The largest link file [`verify_link`] reads.
pub const MAX_LINK_BYTES: usize = 64 << 20;

/// Why a link could not be written or verified.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LinkError {
    /// A step name that cannot be a file name component or an in-toto step name.
    #[error("step name {name:?} is invalid: {why}")]
    StepName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A value canonical JSON cannot encode (securesystemslib refuses floats).
    #[error("canonical json cannot encode {what}")]
    NotCanonical {
        /// What was found.
        what: String,
    },
    /// A key could not sign.
    #[error("cannot sign the link")]
    Sign(#[source] crate::keys::KeyError),
    /// The bytes are not JSON, or hold a duplicate key.
    #[error("the link is not valid json")]
    Json(#[source] JsonError),
    /// The file is larger than [`MAX_LINK_BYTES`].
    #[error("the link is {size} bytes, more than the {max} bytes accepted")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A field is missing or has the wrong type.
    #[error("the link's {field} is missing or malformed")]
    Malformed {
        /// The field.
        field: &'static str,
    },
    /// No signature verified with a trusted key.
    #[error(
        "no signature on link {name:?} verifies with a trusted key (signed by keyids {keyids:?})"
    )]
    Unverified {
        /// The step name.
        name: String,
        /// The keyids the signatures claim.
        keyids: Vec<String>,
    },
}

/// Digests by algorithm name (`sha256` -> hex), in-toto's HASHDICT.
pub type HashDict = BTreeMap<String, String>;

/// The `signed` part of an in-toto link (in-toto spec v0.9 / v1.0 link
/// format: exactly these fields, which is all in-toto python accepts).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Link {
    /// The step name, matched against the layout's step.
    pub name: String,
    /// The command the step ran.
    pub command: Vec<String>,
    /// Files the step used, path -> digests.
    pub materials: BTreeMap<String, HashDict>,
    /// Files the step produced, path -> digests.
    pub products: BTreeMap<String, HashDict>,
    /// Opaque: by convention `stdout`, `stderr`, `return-value`.
    pub byproducts: Map<String, Value>,
    /// Opaque: where the step ran.
    pub environment: Map<String, Value>,
}

/// Checks that `name` is usable as an in-toto step name and as the first
/// component of `<name>.<keyid>.link`: 1 to 64 of `[A-Za-z0-9._-]`, not
/// starting with `.` or `-`.
pub fn validate_step_name(name: &str) -> Result<(), LinkError> {
    let bad = |why| {
        Err(LinkError::StepName {
            name: name.to_string(),
            why,
        })
    };
    if name.is_empty() || name.len() > 64 {
        return bad("it must be 1 to 64 characters");
    }
    if name.starts_with('.') || name.starts_with('-') {
        return bad("it must not start with '.' or '-'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return bad("only letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

/// The file name in-toto looks a link up by: `<step>.<first 8 of keyid>.link`.
pub fn link_file_name(step: &str, keyid: &str) -> String {
    let short: String = keyid.chars().take(8).collect();
    format!("{step}.{short}.link")
}

fn canonical_into(value: &Value, out: &mut Vec<u8>) -> Result<(), LinkError> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => {
            if n.is_f64() {
                return Err(LinkError::NotCanonical {
                    what: format!("the float {n}"),
                });
            }
            out.extend_from_slice(n.to_string().as_bytes());
        }
        Value::String(s) => {
            // securesystemslib escapes only backslash and double quote.
            out.push(b'"');
            for byte in s.bytes() {
                if byte == b'\\' || byte == b'"' {
                    out.push(b'\\');
                }
                out.push(byte);
            }
            out.push(b'"');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical_into(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            // Sorted by code point: UTF-8 byte order is code point order.
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical_into(&Value::String(key.clone()), out)?;
                out.push(b':');
                canonical_into(&map[key], out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

/// securesystemslib's `encode_canonical` (OLPC canonical JSON): keys
/// sorted, no whitespace, strings escaping only `\` and `"`, integers only.
pub fn canonical_json(value: &Value) -> Result<Vec<u8>, LinkError> {
    let mut out = Vec::new();
    canonical_into(value, &mut out)?;
    Ok(out)
}

impl Link {
    /// The `signed` object.
    pub fn to_value(&self) -> Value {
        json!({
            "_type": LINK_TYPE,
            "name": self.name,
            "command": self.command,
            "materials": self.materials,
            "products": self.products,
            "byproducts": self.byproducts,
            "environment": self.environment,
        })
    }

    fn from_value(signed: &Value) -> Result<Link, LinkError> {
        let malformed = |field| LinkError::Malformed { field };
        if signed.get("_type").and_then(Value::as_str) != Some(LINK_TYPE) {
            return Err(malformed("_type"));
        }
        let hashes = |field: &'static str| -> Result<BTreeMap<String, HashDict>, LinkError> {
            serde_json::from_value(signed.get(field).cloned().ok_or(malformed(field))?)
                .map_err(|_| malformed(field))
        };
        let object = |field: &'static str| {
            signed
                .get(field)
                .and_then(Value::as_object)
                .cloned()
                .ok_or(malformed(field))
        };
        Ok(Link {
            name: signed
                .get("name")
                .and_then(Value::as_str)
                .ok_or(malformed("name"))?
                .to_string(),
            command: serde_json::from_value(
                signed.get("command").cloned().ok_or(malformed("command"))?,
            )
            .map_err(|_| malformed("command"))?,
            materials: hashes("materials")?,
            products: hashes("products")?,
            byproducts: object("byproducts")?,
            environment: object("environment")?,
        })
    }

    /// Signs the link with every signer; returns the metadata file's bytes
    /// (canonical JSON, so the file is also byte-stable).
    pub fn sign(&self, signers: &[&SigningKey]) -> Result<Vec<u8>, LinkError> {
        validate_step_name(&self.name)?;
        let signed = self.to_value();
        let bytes = canonical_json(&signed)?;
        let mut signatures = Vec::with_capacity(signers.len());
        for key in signers {
            let sig = key.sign(&bytes).map_err(LinkError::Sign)?;
            signatures.push(json!({
                "keyid": key.public_key().keyid(KeyIdScheme::Securesystemslib),
                "sig": hex::encode(sig),
            }));
        }
        canonical_json(&json!({"signatures": signatures, "signed": signed}))
    }
}

/// Parses a link metadata file and checks that at least one of its
/// signatures verifies with a `trusted` key over the canonical JSON of
/// `signed`. Returns the link and the keyids (securesystemslib) of the
/// trusted keys that signed it. Keyids are hints: every trusted key is tried.
pub fn verify_link(bytes: &[u8], trusted: &[PublicKey]) -> Result<(Link, Vec<String>), LinkError> {
    if bytes.len() > MAX_LINK_BYTES {
        return Err(LinkError::TooLarge {
            size: bytes.len(),
            max: MAX_LINK_BYTES,
        });
    }
    let doc = parse_strict(bytes).map_err(LinkError::Json)?;
    let signed = doc
        .get("signed")
        .ok_or(LinkError::Malformed { field: "signed" })?;
    let link = Link::from_value(signed)?;
    let message = canonical_json(signed)?;
    let signatures =
        doc.get("signatures")
            .and_then(Value::as_array)
            .ok_or(LinkError::Malformed {
                field: "signatures",
            })?;
    let mut claimed = Vec::new();
    let mut signers = Vec::new();
    for signature in signatures {
        let keyid = signature.get("keyid").and_then(Value::as_str).unwrap_or("");
        claimed.push(keyid.to_string());
        let Some(sig) = signature
            .get("sig")
            .and_then(Value::as_str)
            .and_then(|h| hex::decode(h).ok())
        else {
            continue;
        };
        for key in trusted {
            let id = key.keyid(KeyIdScheme::Securesystemslib);
            if !signers.contains(&id) && key.verify(&message, &sig).is_ok() {
                signers.push(id);
            }
        }
    }
    if signers.is_empty() {
        return Err(LinkError::Unverified {
            name: link.name,
            keyids: claimed,
        });
    }
    Ok((link, signers))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyAlgorithm;

    fn sample() -> Link {
        Link {
            name: "compile".into(),
            command: vec!["cc".into(), "-o".into(), "hello".into(), "hello.c".into()],
            materials: BTreeMap::from([(
                "hello.c".into(),
                HashDict::from([("sha256".into(), "aa".repeat(32))]),
            )]),
            products: BTreeMap::from([(
                "hello".into(),
                HashDict::from([("sha256".into(), "bb".repeat(32))]),
            )]),
            byproducts: json!({"return-value": 0}).as_object().cloned().unwrap(),
            environment: Map::new(),
        }
    }

    #[test]
    fn canonical_json_matches_securesystemslib_encode_canonical() {
        // securesystemslib.formats.encode_canonical of the same object gives
        // exactly these bytes (keys sorted, no spaces, only \ and " escaped,
        // non-ASCII and control characters raw).
        let value = json!({"b": [1, -2, true, null], "a": "q\"\\\u{e9}\n", "A": {}});
        assert_eq!(
            canonical_json(&value).unwrap(),
            "{\"A\":{},\"a\":\"q\\\"\\\\\u{e9}\n\",\"b\":[1,-2,true,null]}".as_bytes()
        );
        assert_eq!(
            canonical_json(&json!({"x": 1.5})),
            Err(LinkError::NotCanonical {
                what: "the float 1.5".into()
            })
        );
    }

    #[test]
    fn signed_links_verify_with_the_signing_key_only() {
        for alg in [KeyAlgorithm::Ed25519, KeyAlgorithm::EcdsaP256Sha256] {
            let key = SigningKey::generate(alg).unwrap();
            let other = SigningKey::generate(alg).unwrap();
            let bytes = sample().sign(&[&key]).unwrap();
            let (link, signers) =
                verify_link(&bytes, &[other.public_key(), key.public_key()]).unwrap();
            assert_eq!(link, sample());
            assert_eq!(
                signers,
                vec![key.public_key().keyid(KeyIdScheme::Securesystemslib)]
            );
            assert!(matches!(
                verify_link(&bytes, &[other.public_key()]),
                Err(LinkError::Unverified { .. })
            ));
        }
    }

    #[test]
    fn a_tampered_product_digest_breaks_the_signature() {
        let key = SigningKey::generate(KeyAlgorithm::Ed25519).unwrap();
        let bytes = String::from_utf8(sample().sign(&[&key]).unwrap()).unwrap();
        let tampered = bytes.replace(&"bb".repeat(32), &"cc".repeat(32));
        assert_ne!(tampered, bytes);
        assert!(matches!(
            verify_link(tampered.as_bytes(), &[key.public_key()]),
            Err(LinkError::Unverified { .. })
        ));
    }

    #[test]
    fn hostile_step_names_are_refused_before_signing() {
        let key = SigningKey::generate(KeyAlgorithm::Ed25519).unwrap();
        for name in [
            "",
            "../etc",
            "a/b",
            ".hidden",
            "-rf",
            "x y",
            &"n".repeat(65),
        ] {
            let link = Link {
                name: name.to_string(),
                ..sample()
            };
            assert!(
                matches!(link.sign(&[&key]), Err(LinkError::StepName { .. })),
                "{name:?} was accepted"
            );
        }
        assert_eq!(validate_step_name("step-1.compile_x"), Ok(()));
    }

    #[test]
    fn malformed_links_are_errors_not_panics() {
        let key = SigningKey::generate(KeyAlgorithm::Ed25519)
            .unwrap()
            .public_key();
        for (input, field) in [
            (&b"{\"signed\":{\"_type\":\"layout\"},\"signatures\":[]}"[..], "_type"),
            (b"{\"signatures\":[]}", "signed"),
            (
                b"{\"signed\":{\"_type\":\"link\",\"name\":\"a\",\"command\":[],\"materials\":{\"f\":1},\"products\":{},\"byproducts\":{},\"environment\":{}},\"signatures\":[]}",
                "materials",
            ),
        ] {
            assert_eq!(
                verify_link(input, std::slice::from_ref(&key)).unwrap_err(),
                LinkError::Malformed { field }
            );
        }
        assert!(matches!(
            verify_link(b"{\"signed\":1,\"signed\":2}", std::slice::from_ref(&key)),
            Err(LinkError::Json(_))
        ));
        assert_eq!(
            link_file_name("compile", "0123456789abcdef"),
            "compile.01234567.link"
        );
    }
}
