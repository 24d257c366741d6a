//! DSSE v1 envelopes, exactly as the spec
//! (<https://github.com/secure-systems-lab/dsse/blob/master/protocol.md> and
//! envelope.md) writes them, and the files they travel in.

use crate::json::{self, JsonError};
use crate::keys::{KeyError, KeyIdScheme, PublicKey, SigningKey};
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, Engine as _};
use serde::Serialize;
use serde_json::{Map, Value};

/// The payloadType of an in-toto Statement.
pub const INTOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// The media type of a Sigstore bundle v0.3.
pub const SIGSTORE_BUNDLE_V03_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

/// Largest envelope (one JSON document, or one line of a `.intoto.jsonl`)
/// we parse: 32 MiB. Larger input is refused before any parsing.
pub const MAX_ENVELOPE_BYTES: usize = 32 << 20;

/// Largest file [`read_envelopes`] accepts: 128 MiB.
pub const MAX_FILE_BYTES: usize = 128 << 20;

const INDIFFERENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD_ANY_PAD: GeneralPurpose =
    GeneralPurpose::new(&base64::alphabet::STANDARD, INDIFFERENT);
const URL_SAFE_ANY_PAD: GeneralPurpose =
    GeneralPurpose::new(&base64::alphabet::URL_SAFE, INDIFFERENT);

/// Decode base64 as DSSE verifiers must: standard or URL-safe alphabet,
/// padded or not.
fn decode_b64(s: &str) -> Option<Vec<u8>> {
    STANDARD_ANY_PAD
        .decode(s)
        .or_else(|_| URL_SAFE_ANY_PAD.decode(s))
        .ok()
}

fn encode_b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Why an envelope could not be parsed, written or signed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DsseError {
    /// The input is larger than we are willing to parse.
    #[error("envelope of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Bytes given.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The input is empty (or only whitespace).
    #[error("no envelope: the input is empty")]
    Empty,
    /// The input is not well-formed JSON.
    #[error("envelope is not valid json: {reason}")]
    NotJson {
        /// serde_json's description.
        reason: String,
    },
    /// A JSON object in the envelope repeats a key.
    #[error("envelope repeats the key {key:?}")]
    DuplicateKey {
        /// The repeated key.
        key: String,
    },
    /// The envelope (or a signature in it) is not a JSON object.
    #[error("{what} is not a json object")]
    NotAnObject {
        /// `envelope` or `signatures[i]`.
        what: String,
    },
    /// A required field is absent.
    #[error("envelope has no {field:?} field")]
    MissingField {
        /// The field path, e.g. `payloadType` or `signatures[0].sig`.
        field: String,
    },
    /// A field has the wrong JSON type.
    #[error("envelope field {field:?} must be {expected}")]
    WrongType {
        /// The field path.
        field: String,
        /// The JSON type expected.
        expected: &'static str,
    },
    /// A base64 field is neither standard nor URL-safe base64.
    #[error("envelope field {field:?} is not valid base64")]
    BadBase64 {
        /// The field path.
        field: String,
    },
    /// The signature list is empty.
    #[error("envelope has an empty signature list")]
    NoSignatures,
    /// [`Envelope::sign`] was given no signing key.
    #[error("cannot sign an envelope without a signing key")]
    NoSigners,
    /// A signing key failed.
    #[error("signing the envelope failed")]
    Sign(#[source] KeyError),
    /// A Sigstore bundle with a media type we do not read.
    #[error("sigstore bundle media type {found:?} is not supported (expected {SIGSTORE_BUNDLE_V03_MEDIA_TYPE:?})")]
    BundleMediaType {
        /// The media type found.
        found: String,
    },
    /// A Sigstore bundle that carries no DSSE envelope (a message signature).
    #[error("sigstore bundle has no dsseEnvelope")]
    BundleWithoutEnvelope,
    /// One line of a `.intoto.jsonl` file is not an envelope.
    #[error("line {line} of the jsonl file: {source}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        source: Box<DsseError>,
    },
}

impl From<JsonError> for DsseError {
    fn from(e: JsonError) -> Self {
        match e {
            JsonError::Syntax { reason } => DsseError::NotJson { reason },
            JsonError::DuplicateKey { key } => DsseError::DuplicateKey { key },
        }
    }
}

/// DSSE v1 Pre-Authentication Encoding:
/// `"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, where LEN is the
/// ASCII decimal byte length (of the UTF-8 type, not its character count).
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let type_len = payload_type.len().to_string();
    let body_len = payload.len().to_string();
    let mut out = Vec::with_capacity(
        10 + type_len.len() + payload_type.len() + body_len.len() + payload.len(),
    );
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(type_len.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(body_len.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload);
    out
}

/// One signature of an envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// Unauthenticated hint naming the key; may be empty.
    pub keyid: String,
    /// The signature bytes over [`pae`].
    pub sig: Vec<u8>,
}

/// A DSSE envelope: payload, its type, and one or more signatures over
/// `pae(payload_type, payload)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The payload's type (`application/vnd.in-toto+json` for in-toto).
    pub payload_type: String,
    /// The payload bytes (decoded).
    pub payload: Vec<u8>,
    /// The signatures.
    pub signatures: Vec<Signature>,
}

fn field_str<'a>(
    obj: &'a Map<String, Value>,
    name: &str,
    path: &str,
) -> Result<&'a str, DsseError> {
    match obj.get(name) {
        None => Err(DsseError::MissingField {
            field: path.to_string(),
        }),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(DsseError::WrongType {
            field: path.to_string(),
            expected: "a string",
        }),
    }
}

impl Envelope {
    /// Sign `payload` with every key in `signers`, in order, each signature
    /// carrying the signer's keyid under `keyid_scheme`.
    pub fn sign(
        payload_type: &str,
        payload: Vec<u8>,
        signers: &[&SigningKey],
        keyid_scheme: KeyIdScheme,
    ) -> Result<Envelope, DsseError> {
        if signers.is_empty() {
            return Err(DsseError::NoSigners);
        }
        let message = pae(payload_type, &payload);
        let signatures = signers
            .iter()
            .map(|key| {
                Ok(Signature {
                    keyid: key.public_key().keyid(keyid_scheme),
                    sig: key.sign(&message).map_err(DsseError::Sign)?,
                })
            })
            .collect::<Result<Vec<_>, DsseError>>()?;
        Ok(Envelope {
            payload_type: payload_type.to_string(),
            payload,
            signatures,
        })
    }

    /// Parse the spec's JSON form: `payloadType`, `payload` (base64, standard
    /// or URL-safe, padded or not), `signatures` (a non-empty list of
    /// `{keyid (optional, may be empty or null), sig}`). Duplicate keys,
    /// input over [`MAX_ENVELOPE_BYTES`] and every malformation are distinct
    /// errors. Fields the spec does not define are ignored: they are not
    /// covered by any signature.
    pub fn from_json(bytes: &[u8]) -> Result<Envelope, DsseError> {
        if bytes.len() > MAX_ENVELOPE_BYTES {
            return Err(DsseError::TooLarge {
                size: bytes.len(),
                limit: MAX_ENVELOPE_BYTES,
            });
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(DsseError::Empty);
        }
        Self::from_value(&json::parse_strict(bytes)?)
    }

    /// Build an envelope from an already parsed JSON value (see [`Envelope::from_json`]).
    fn from_value(value: &Value) -> Result<Envelope, DsseError> {
        let obj = value.as_object().ok_or_else(|| DsseError::NotAnObject {
            what: "envelope".into(),
        })?;
        let payload_type = field_str(obj, "payloadType", "payloadType")?.to_string();
        let payload =
            decode_b64(field_str(obj, "payload", "payload")?).ok_or(DsseError::BadBase64 {
                field: "payload".into(),
            })?;
        let sigs = match obj.get("signatures") {
            None => {
                return Err(DsseError::MissingField {
                    field: "signatures".into(),
                })
            }
            Some(Value::Array(a)) => a,
            Some(_) => {
                return Err(DsseError::WrongType {
                    field: "signatures".into(),
                    expected: "a list",
                })
            }
        };
        if sigs.is_empty() {
            return Err(DsseError::NoSignatures);
        }
        let mut signatures = Vec::with_capacity(sigs.len());
        for (i, s) in sigs.iter().enumerate() {
            let obj = s.as_object().ok_or_else(|| DsseError::NotAnObject {
                what: format!("signatures[{i}]"),
            })?;
            let path = format!("signatures[{i}].sig");
            let sig = decode_b64(field_str(obj, "sig", &path)?)
                .ok_or(DsseError::BadBase64 { field: path })?;
            let keyid = match obj.get("keyid") {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(k)) => k.clone(),
                Some(_) => {
                    return Err(DsseError::WrongType {
                        field: format!("signatures[{i}].keyid"),
                        expected: "a string",
                    })
                }
            };
            signatures.push(Signature { keyid, sig });
        }
        Ok(Envelope {
            payload_type,
            payload,
            signatures,
        })
    }

    fn wire(&self) -> WireEnvelope<'_> {
        WireEnvelope {
            payload_type: &self.payload_type,
            payload: encode_b64(&self.payload),
            signatures: self
                .signatures
                .iter()
                .map(|s| WireSignature {
                    keyid: &s.keyid,
                    sig: encode_b64(&s.sig),
                })
                .collect(),
        }
    }

    /// The spec's JSON form on one line (no trailing newline), fields in the
    /// spec's order, standard padded base64. `keyid` is always written,
    /// empty when unknown, because securesystemslib cannot read a signature
    /// without one.
    pub fn to_json(&self) -> String {
        // Strings and lists of strings always serialize.
        serde_json::to_string(&self.wire()).unwrap_or_default()
    }

    /// This envelope wrapped in a Sigstore bundle v0.3
    /// ([`SIGSTORE_BUNDLE_V03_MEDIA_TYPE`]): `verificationMaterial.publicKey.hint`
    /// names the key (use the keyid), and no transparency log entry is included.
    pub fn to_sigstore_bundle_json(&self, public_key_hint: &str) -> String {
        let bundle = WireBundle {
            media_type: SIGSTORE_BUNDLE_V03_MEDIA_TYPE,
            verification_material: WireMaterial {
                public_key: WireHint {
                    hint: public_key_hint,
                },
                tlog_entries: [],
            },
            dsse_envelope: self.wire(),
        };
        serde_json::to_string(&bundle).unwrap_or_default()
    }

    /// The bytes every signature is over: `pae(payload_type, payload)`.
    pub fn pae(&self) -> Vec<u8> {
        pae(&self.payload_type, &self.payload)
    }

    /// Indices into `trusted` of the distinct keys that produced at least one
    /// valid signature on this envelope, in signature order. For each signature the keys whose
    /// keyids ([`PublicKey::keyid_hints`]) equal its `keyid` are tried first,
    /// then every other key: the keyid is only a hint and never makes an
    /// otherwise valid signature fail or an invalid one pass.
    pub fn verified_signers(&self, trusted: &[PublicKey]) -> Vec<usize> {
        let message = self.pae();
        let hints: Vec<Vec<String>> = trusted.iter().map(PublicKey::keyid_hints).collect();
        let mut found: Vec<usize> = Vec::new();
        for sig in &self.signatures {
            let hinted = |i: &usize| !sig.keyid.is_empty() && hints[*i].contains(&sig.keyid);
            let order = (0..trusted.len())
                .filter(hinted)
                .chain((0..trusted.len()).filter(|i| !hinted(i)));
            for i in order {
                if trusted[i].verify(&message, &sig.sig).is_ok() {
                    // The same key listed twice in `trusted` counts once.
                    if !found.iter().any(|&j| trusted[j] == trusted[i]) {
                        found.push(i);
                    }
                    break;
                }
            }
        }
        found
    }
}

/// The envelope as written: field order as in the DSSE spec.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireEnvelope<'a> {
    payload_type: &'a str,
    payload: String,
    signatures: Vec<WireSignature<'a>>,
}

#[derive(Serialize)]
struct WireSignature<'a> {
    keyid: &'a str,
    sig: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireBundle<'a> {
    media_type: &'static str,
    verification_material: WireMaterial<'a>,
    dsse_envelope: WireEnvelope<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireMaterial<'a> {
    public_key: WireHint<'a>,
    tlog_entries: [(); 0],
}

#[derive(Serialize)]
struct WireHint<'a> {
    hint: &'a str,
}

/// Is this parsed document a Sigstore bundle rather than a bare envelope?
fn looks_like_bundle(obj: &Map<String, Value>) -> bool {
    obj.contains_key("dsseEnvelope")
        || obj.contains_key("verificationMaterial")
        || obj
            .get("mediaType")
            .and_then(Value::as_str)
            .is_some_and(|m| m.starts_with("application/vnd.dev.sigstore.bundle"))
}

fn envelope_from_bundle(obj: &Map<String, Value>) -> Result<Envelope, DsseError> {
    let media = obj.get("mediaType").and_then(Value::as_str).unwrap_or("");
    // v0.3 is what we write; v0.1/v0.2 bundles carry the same dsseEnvelope.
    let known = [
        SIGSTORE_BUNDLE_V03_MEDIA_TYPE,
        "application/vnd.dev.sigstore.bundle+json;version=0.1",
        "application/vnd.dev.sigstore.bundle+json;version=0.2",
        "application/vnd.dev.sigstore.bundle+json;version=0.3",
    ];
    if !known.contains(&media) {
        return Err(DsseError::BundleMediaType {
            found: media.to_string(),
        });
    }
    let env = obj
        .get("dsseEnvelope")
        .ok_or(DsseError::BundleWithoutEnvelope)?;
    Envelope::from_value(env)
}

/// Read the envelopes in a provenance file: a `.intoto.jsonl` (one envelope
/// per line, blank lines ignored), a bare envelope JSON (on one line or
/// pretty-printed), or a Sigstore bundle (its `dsseEnvelope`). The result
/// is never empty.
pub fn read_envelopes(bytes: &[u8]) -> Result<Vec<Envelope>, DsseError> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(DsseError::TooLarge {
            size: bytes.len(),
            limit: MAX_FILE_BYTES,
        });
    }
    let lines: Vec<(usize, &[u8])> = bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
        .map(|(i, l)| (i + 1, l))
        .collect();
    if lines.is_empty() {
        return Err(DsseError::Empty);
    }
    // One document, possibly spanning several lines (a pretty-printed envelope or bundle)?
    let whole = if bytes.len() <= MAX_ENVELOPE_BYTES {
        match json::parse_strict(bytes) {
            Ok(v) => Some(v),
            // Well-formed JSON with a repeated key: say so, rather than
            // reporting each line of it as not JSON.
            Err(e @ JsonError::DuplicateKey { .. }) => return Err(e.into()),
            Err(JsonError::Syntax { .. }) => None,
        }
    } else {
        None
    };
    if let Some(value) = whole {
        return match value.as_object() {
            Some(obj) if looks_like_bundle(obj) => Ok(vec![envelope_from_bundle(obj)?]),
            _ => Ok(vec![Envelope::from_value(&value)?]),
        };
    }
    if lines.len() == 1 {
        return Ok(vec![Envelope::from_json(lines[0].1)?]);
    }
    lines
        .into_iter()
        .map(|(line, text)| {
            Envelope::from_json(text).map_err(|e| DsseError::Line {
                line,
                source: Box::new(e),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_of_the_spec_example() {
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
        );
    }

    #[test]
    fn base64_in_every_dsse_spelling() {
        for s in ["+/+/", "-_-_", "+/8", "-_8", "+/8="] {
            assert!(decode_b64(s).is_some(), "{s}");
        }
        assert_eq!(decode_b64("+_+/"), None, "mixed alphabets");
        assert_eq!(decode_b64("a b"), None);
    }

    #[test]
    fn empty_or_null_keyid_reads_as_empty() {
        for doc in [
            r#"{"payloadType":"t","payload":"","signatures":[{"sig":"AA=="}]}"#,
            r#"{"payloadType":"t","payload":"","signatures":[{"keyid":null,"sig":"AA=="}]}"#,
            r#"{"payloadType":"t","payload":"","signatures":[{"keyid":"","sig":"AA=="}]}"#,
        ] {
            let env = Envelope::from_json(doc.as_bytes()).unwrap();
            assert_eq!(env.signatures[0].keyid, "");
            assert_eq!(env.signatures[0].sig, vec![0]);
        }
    }
}
