//! Signing and public keys: Ed25519 (the default) and ECDSA P-256/SHA-256.
//!
//! Private keys are read and written as unencrypted PKCS#8 PEM, public keys
//! as SubjectPublicKeyInfo PEM, and keyids are computed the way
//! securesystemslib (and so in-toto and its tools) computes them.
//!
//! We use `ring` directly rather than the `in-toto` crate's key types: in
//! `in-toto` 0.4 the ECDSA keyid hashes the hex of the raw point (and adds
//! `keyid_hash_algorithms`), so it differs from securesystemslib 1.x, which
//! hashes the PEM; its Ed25519 loader accepts only PKCS#8 v2, so the v1 keys
//! `openssl genpkey` and securesystemslib write are refused; and its ECDSA
//! verifier takes only DER, while the DSSE spec's own vector is raw r||s.

use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};
use std::fmt;
use std::str::FromStr;

/// The signature algorithms we sign and verify with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KeyAlgorithm {
    /// Ed25519 (RFC 8032). The default.
    #[default]
    Ed25519,
    /// ECDSA over NIST P-256 with SHA-256; we emit ASN.1 DER signatures.
    EcdsaP256Sha256,
}

impl KeyAlgorithm {
    /// securesystemslib `keytype` of this algorithm (`ed25519`, `ecdsa`).
    pub fn sslib_keytype(self) -> &'static str {
        match self {
            KeyAlgorithm::Ed25519 => "ed25519",
            KeyAlgorithm::EcdsaP256Sha256 => "ecdsa",
        }
    }

    /// securesystemslib `scheme` of this algorithm (`ed25519`, `ecdsa-sha2-nistp256`).
    pub fn sslib_scheme(self) -> &'static str {
        match self {
            KeyAlgorithm::Ed25519 => "ed25519",
            KeyAlgorithm::EcdsaP256Sha256 => "ecdsa-sha2-nistp256",
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyAlgorithm::Ed25519 => "ed25519",
            KeyAlgorithm::EcdsaP256Sha256 => "ecdsa-p256",
        })
    }
}

impl FromStr for KeyAlgorithm {
    type Err = KeyError;
    /// Accepts `ed25519`, `ecdsa`, `ecdsa-p256`, `ecdsa-sha2-nistp256`, `p256`.
    fn from_str(s: &str) -> Result<Self, KeyError> {
        match s.to_ascii_lowercase().as_str() {
            "ed25519" => Ok(KeyAlgorithm::Ed25519),
            "ecdsa" | "ecdsa-p256" | "ecdsa-sha2-nistp256" | "p256" | "p-256" => {
                Ok(KeyAlgorithm::EcdsaP256Sha256)
            }
            _ => Err(KeyError::UnknownAlgorithm {
                name: s.to_string(),
            }),
        }
    }
}

/// How the `keyid` hint of a DSSE signature is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KeyIdScheme {
    /// Lowercase hex sha256 of the securesystemslib canonical JSON of
    /// `{keytype, scheme, keyval:{public}}` (Ed25519: `public` is the hex
    /// of the raw key; ECDSA: the SubjectPublicKeyInfo PEM with its
    /// trailing newline). What in-toto and securesystemslib tools expect.
    #[default]
    Securesystemslib,
    /// Lowercase hex sha256 of the DER SubjectPublicKeyInfo.
    Sha256Fingerprint,
    /// An empty keyid, as cosign and sigstore-go write it.
    None,
}

impl fmt::Display for KeyIdScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyIdScheme::Securesystemslib => "securesystemslib",
            KeyIdScheme::Sha256Fingerprint => "sha256-fingerprint",
            KeyIdScheme::None => "none",
        })
    }
}

impl FromStr for KeyIdScheme {
    type Err = KeyError;
    /// Accepts `securesystemslib`, `sha256-fingerprint`, `none`.
    fn from_str(s: &str) -> Result<Self, KeyError> {
        match s {
            "securesystemslib" => Ok(KeyIdScheme::Securesystemslib),
            "sha256-fingerprint" => Ok(KeyIdScheme::Sha256Fingerprint),
            "none" => Ok(KeyIdScheme::None),
            _ => Err(KeyError::UnknownKeyIdScheme {
                name: s.to_string(),
            }),
        }
    }
}

/// Why a key could not be loaded, generated or used.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// The text holds no PEM block at all.
    #[error("no pem block found (expected -----BEGIN {expected}-----)")]
    NoPemBlock {
        /// The label we looked for.
        expected: &'static str,
    },
    /// A PEM block is cut off, has mismatched BEGIN/END lines or headers.
    #[error("malformed pem: {reason}")]
    MalformedPem {
        /// What is wrong.
        reason: String,
    },
    /// A PEM block's body is not base64.
    #[error("pem block {label:?} is not valid base64")]
    PemBase64 {
        /// The block's label.
        label: String,
    },
    /// A PEM block has a label we do not read here.
    #[error("expected a pem block labelled {expected:?}, found {found:?}{hint}")]
    UnexpectedPemLabel {
        /// The label we read.
        expected: &'static str,
        /// The label found.
        found: String,
        /// How to convert the key, when we know.
        hint: &'static str,
    },
    /// The private key is well-formed DER but not an Ed25519 or P-256 PKCS#8 key.
    #[error("unsupported private key: {reason}")]
    UnsupportedPrivateKey {
        /// What we found instead.
        reason: String,
    },
    /// The public key is not an Ed25519 or P-256 SubjectPublicKeyInfo.
    #[error("unsupported public key: {reason}")]
    UnsupportedPublicKey {
        /// What we found instead.
        reason: String,
    },
    /// The cryptography library refused the key material.
    #[error("{algorithm} key rejected: {reason}")]
    Rejected {
        /// The key's algorithm.
        algorithm: KeyAlgorithm,
        /// ring's description.
        reason: String,
    },
    /// The system random number generator failed.
    #[error("cannot generate a {algorithm} key: the system random number generator failed")]
    Generate {
        /// The requested algorithm.
        algorithm: KeyAlgorithm,
    },
    /// Signing failed (ECDSA needs randomness).
    #[error("{algorithm} signing failed")]
    Sign {
        /// The key's algorithm.
        algorithm: KeyAlgorithm,
    },
    /// The signature does not verify with this key over this message.
    #[error("{algorithm} signature does not verify with key {keyid}")]
    BadSignature {
        /// The key's algorithm.
        algorithm: KeyAlgorithm,
        /// The key's securesystemslib keyid.
        keyid: String,
    },
    /// An algorithm name that we do not know.
    #[error("unknown key algorithm {name:?} (expected ed25519 or ecdsa-p256)")]
    UnknownAlgorithm {
        /// The name given.
        name: String,
    },
    /// A keyid scheme name that we do not know.
    #[error(
        "unknown keyid scheme {name:?} (expected securesystemslib, sha256-fingerprint or none)"
    )]
    UnknownKeyIdScheme {
        /// The name given.
        name: String,
    },
}

// ---------------------------------------------------------------------------
// DER: only as much as PKCS#8 and SubjectPublicKeyInfo need.

const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// DER SubjectPublicKeyInfo prefix of an Ed25519 key (RFC 8410); the 32 key bytes follow.
const SPKI_ED25519_PREFIX: &[u8] = &[
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// DER SubjectPublicKeyInfo prefix of a P-256 key; the 65-byte uncompressed point follows.
const SPKI_P256_PREFIX: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
/// DER PKCS#8 v1 prefix of an Ed25519 private key (RFC 8410); the 32-byte seed follows.
const PKCS8_ED25519_PREFIX: &[u8] = &[
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// One DER element: tag and contents; `rest` is what follows it.
struct Tlv<'a> {
    tag: u8,
    value: &'a [u8],
    rest: &'a [u8],
}

fn der_read(input: &[u8]) -> Option<Tlv<'_>> {
    let (&tag, input) = input.split_first()?;
    let (&first, mut input) = input.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || input.len() < n {
            return None;
        }
        let mut len = 0usize;
        for &b in &input[..n] {
            len = (len << 8) | usize::from(b);
        }
        input = &input[n..];
        len
    };
    if input.len() < len {
        return None;
    }
    Some(Tlv {
        tag,
        value: &input[..len],
        rest: &input[len..],
    })
}

fn der_expect(input: &[u8], tag: u8) -> Option<Tlv<'_>> {
    der_read(input).filter(|t| t.tag == tag)
}

/// The algorithm OID and its parameter (if it is an OID) of an AlgorithmIdentifier.
fn algorithm_identifier(seq: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    let oid = der_expect(seq, 0x06)?;
    let param = der_read(oid.rest)
        .filter(|t| t.tag == 0x06)
        .map(|t| t.value);
    Some((oid.value, param))
}

// ---------------------------------------------------------------------------
// PEM

/// One PEM block: its label and decoded body.
struct PemBlock {
    label: String,
    der: Vec<u8>,
}

/// Every PEM block in `text`, in order. Text between blocks is ignored (as
/// OpenSSL does); a block without its END line, with an END line of another
/// label, or with RFC 1421 headers (encrypted keys) is an error.
fn pem_blocks(text: &str) -> Result<Vec<PemBlock>, KeyError> {
    let mut blocks = Vec::new();
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        let mut body = String::new();
        let mut ended = false;
        for line in lines.by_ref() {
            if let Some(end) = line
                .strip_prefix("-----END ")
                .and_then(|l| l.strip_suffix("-----"))
            {
                if end != label {
                    return Err(KeyError::MalformedPem {
                        reason: format!("-----BEGIN {label}----- closed by -----END {end}-----"),
                    });
                }
                ended = true;
                break;
            }
            if line.contains(':') {
                return Err(KeyError::MalformedPem {
                    reason: format!("block {label:?} has headers (an encrypted key?)"),
                });
            }
            body.push_str(line);
        }
        if !ended {
            return Err(KeyError::MalformedPem {
                reason: format!("no -----END {label}----- line"),
            });
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(body.as_bytes())
            .map_err(|_| KeyError::PemBase64 {
                label: label.to_string(),
            })?;
        blocks.push(PemBlock {
            label: label.to_string(),
            der,
        });
    }
    Ok(blocks)
}

/// PEM-encode `der` with 64-character lines and a trailing newline, exactly
/// as OpenSSL and pyca/cryptography write it (the securesystemslib ECDSA
/// keyid hashes this text, so the layout matters).
fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

// ---------------------------------------------------------------------------
// Public keys

/// A public key we can verify with. Compares equal when the algorithm and
/// key bytes are equal.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PublicKey {
    algorithm: KeyAlgorithm,
    /// Ed25519: the 32 raw bytes; P-256: the 65-byte uncompressed point.
    raw: Vec<u8>,
}

impl PublicKey {
    /// Read a SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`) holding
    /// an Ed25519 or P-256 key. The first PEM block is used.
    pub fn from_spki_pem(pem: &str) -> Result<PublicKey, KeyError> {
        let block = pem_blocks(pem)?
            .into_iter()
            .next()
            .ok_or(KeyError::NoPemBlock {
                expected: "PUBLIC KEY",
            })?;
        Self::from_pem_block(block)
    }

    fn from_pem_block(block: PemBlock) -> Result<PublicKey, KeyError> {
        if block.label != "PUBLIC KEY" {
            let hint = match block.label.as_str() {
                "PRIVATE KEY" | "EC PRIVATE KEY" | "ENCRYPTED PRIVATE KEY" => {
                    " (a private key where a public key belongs; export it with `openssl pkey -pubout`)"
                }
                "EC PUBLIC KEY" | "RSA PUBLIC KEY" => {
                    " (convert it with `openssl pkey -pubin -pubout`)"
                }
                _ => "",
            };
            return Err(KeyError::UnexpectedPemLabel {
                expected: "PUBLIC KEY",
                found: block.label,
                hint,
            });
        }
        Self::from_spki_der(&block.der)
    }

    /// Read a DER SubjectPublicKeyInfo holding an Ed25519 or P-256 key.
    pub fn from_spki_der(der: &[u8]) -> Result<PublicKey, KeyError> {
        let unsupported = |reason: &str| KeyError::UnsupportedPublicKey {
            reason: reason.to_string(),
        };
        let spki = der_expect(der, 0x30)
            .filter(|t| t.rest.is_empty())
            .ok_or_else(|| unsupported("not a der subjectpublickeyinfo"))?;
        let alg =
            der_expect(spki.value, 0x30).ok_or_else(|| unsupported("no algorithm identifier"))?;
        let bits = der_expect(alg.rest, 0x03)
            .filter(|t| t.rest.is_empty())
            .ok_or_else(|| unsupported("no public key bit string"))?;
        let (oid, param) =
            algorithm_identifier(alg.value).ok_or_else(|| unsupported("no algorithm oid"))?;
        let key = match bits.value.split_first() {
            Some((0, key)) => key,
            _ => return Err(unsupported("public key bit string has unused bits")),
        };
        if oid == OID_ED25519 {
            if key.len() != 32 {
                return Err(unsupported("ed25519 public key is not 32 bytes"));
            }
            Ok(PublicKey {
                algorithm: KeyAlgorithm::Ed25519,
                raw: key.to_vec(),
            })
        } else if oid == OID_EC_PUBLIC_KEY {
            if param != Some(OID_P256) {
                return Err(unsupported("ecdsa key on a curve other than p-256"));
            }
            if key.len() != 65 || key[0] != 0x04 {
                return Err(unsupported(
                    "p-256 public key is not an uncompressed point (65 bytes, 0x04 first)",
                ));
            }
            Ok(PublicKey {
                algorithm: KeyAlgorithm::EcdsaP256Sha256,
                raw: key.to_vec(),
            })
        } else {
            Err(unsupported(
                "algorithm is neither ed25519 nor ecdsa (rsa is not supported)",
            ))
        }
    }

    /// Build an Ed25519 key from its 32 raw bytes.
    pub fn from_ed25519_bytes(raw: &[u8]) -> Result<PublicKey, KeyError> {
        if raw.len() != 32 {
            return Err(KeyError::UnsupportedPublicKey {
                reason: format!("ed25519 public key of {} bytes, expected 32", raw.len()),
            });
        }
        Ok(PublicKey {
            algorithm: KeyAlgorithm::Ed25519,
            raw: raw.to_vec(),
        })
    }

    /// Build a P-256 key from its affine coordinates (32 bytes each, big endian).
    pub fn from_p256_coordinates(x: &[u8], y: &[u8]) -> Result<PublicKey, KeyError> {
        if x.len() != 32 || y.len() != 32 {
            return Err(KeyError::UnsupportedPublicKey {
                reason: "p-256 coordinates must be 32 bytes each".into(),
            });
        }
        let mut raw = Vec::with_capacity(65);
        raw.push(0x04);
        raw.extend_from_slice(x);
        raw.extend_from_slice(y);
        Ok(PublicKey {
            algorithm: KeyAlgorithm::EcdsaP256Sha256,
            raw,
        })
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn to_spki_der(&self) -> Vec<u8> {
        let prefix = match self.algorithm {
            KeyAlgorithm::Ed25519 => SPKI_ED25519_PREFIX,
            KeyAlgorithm::EcdsaP256Sha256 => SPKI_P256_PREFIX,
        };
        [prefix, &self.raw].concat()
    }

    /// The SubjectPublicKeyInfo PEM, 64-character lines, trailing newline.
    pub fn to_spki_pem(&self) -> String {
        pem_encode("PUBLIC KEY", &self.to_spki_der())
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// The raw key bytes (Ed25519: 32 bytes; P-256: 65-byte uncompressed point).
    pub fn raw_bytes(&self) -> &[u8] {
        &self.raw
    }

    /// The securesystemslib canonical JSON of this key's
    /// `{keytype, scheme, keyval:{public}}` dict, with `keytype` given.
    fn sslib_canonical_json(&self, keytype: &str) -> String {
        let public = match self.algorithm {
            KeyAlgorithm::Ed25519 => hex::encode(&self.raw),
            KeyAlgorithm::EcdsaP256Sha256 => self.to_spki_pem(),
        };
        // OLPC canonical JSON: sorted keys, no whitespace, only `"` and `\`
        // escaped. Neither hex nor PEM contains those, and the PEM's line
        // feeds stay raw 0x0a bytes, as securesystemslib hashes them.
        format!(
            r#"{{"keytype":"{keytype}","keyval":{{"public":"{public}"}},"scheme":"{}"}}"#,
            self.algorithm.sslib_scheme()
        )
    }

    /// This key's id under `scheme` (lowercase hex, or empty for [`KeyIdScheme::None`]).
    pub fn keyid(&self, scheme: KeyIdScheme) -> String {
        match scheme {
            KeyIdScheme::Securesystemslib => sha256_hex(
                self.sslib_canonical_json(self.algorithm.sslib_keytype())
                    .as_bytes(),
            ),
            KeyIdScheme::Sha256Fingerprint => sha256_hex(&self.to_spki_der()),
            KeyIdScheme::None => String::new(),
        }
    }

    /// Every non-empty keyid another producer may have written for this key:
    /// securesystemslib, the SPKI fingerprint, and for ECDSA the legacy
    /// securesystemslib keytype `ecdsa-sha2-nistp256`. Used only to try a
    /// hinted key first; a keyid never decides whether a signature is valid.
    pub fn keyid_hints(&self) -> Vec<String> {
        let mut ids = vec![
            self.keyid(KeyIdScheme::Securesystemslib),
            self.keyid(KeyIdScheme::Sha256Fingerprint),
        ];
        if self.algorithm == KeyAlgorithm::EcdsaP256Sha256 {
            ids.push(sha256_hex(
                self.sslib_canonical_json("ecdsa-sha2-nistp256").as_bytes(),
            ));
        }
        ids
    }

    /// Verify `sig` over `msg`. ECDSA signatures may be ASN.1 DER or raw
    /// r||s (64 bytes; the DSSE spec's own vector is raw).
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> Result<(), KeyError> {
        let ok = match self.algorithm {
            KeyAlgorithm::Ed25519 => {
                signature::UnparsedPublicKey::new(&signature::ED25519, &self.raw)
                    .verify(msg, sig)
                    .is_ok()
            }
            KeyAlgorithm::EcdsaP256Sha256 => {
                let der = || {
                    signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, &self.raw)
                        .verify(msg, sig)
                        .is_ok()
                };
                if sig.len() == 64 {
                    signature::UnparsedPublicKey::new(
                        &signature::ECDSA_P256_SHA256_FIXED,
                        &self.raw,
                    )
                    .verify(msg, sig)
                    .is_ok()
                        || der()
                } else {
                    der()
                }
            }
        };
        if ok {
            Ok(())
        } else {
            Err(KeyError::BadSignature {
                algorithm: self.algorithm,
                keyid: self.keyid(KeyIdScheme::Securesystemslib),
            })
        }
    }
}

/// Read every `PUBLIC KEY` PEM block in `text` (one or more concatenated
/// blocks, as a trust bundle holds them). Any other block is an error, so a
/// private key passed by mistake is refused rather than skipped.
pub fn read_public_keys_pem(text: &str) -> Result<Vec<PublicKey>, KeyError> {
    let blocks = pem_blocks(text)?;
    if blocks.is_empty() {
        return Err(KeyError::NoPemBlock {
            expected: "PUBLIC KEY",
        });
    }
    blocks.into_iter().map(PublicKey::from_pem_block).collect()
}

// ---------------------------------------------------------------------------
// Signing keys

enum Inner {
    /// The 32-byte seed is kept to write the key back as PKCS#8 v1.
    Ed25519 {
        pair: Ed25519KeyPair,
        seed: [u8; 32],
    },
    /// The PKCS#8 document is kept to write the key back unchanged.
    Ecdsa { pair: EcdsaKeyPair, pkcs8: Vec<u8> },
}

/// A private key that signs. Its `Debug` output names the algorithm and
/// keyid, never the secret.
pub struct SigningKey {
    inner: Inner,
    public: PublicKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("algorithm", &self.public.algorithm)
            .field("keyid", &self.public.keyid(KeyIdScheme::Securesystemslib))
            .finish_non_exhaustive()
    }
}

fn rejected(algorithm: KeyAlgorithm) -> impl Fn(ring::error::KeyRejected) -> KeyError {
    move |e| KeyError::Rejected {
        algorithm,
        reason: e.to_string(),
    }
}

impl SigningKey {
    /// Generate a fresh key from the system random number generator.
    pub fn generate(alg: KeyAlgorithm) -> Result<SigningKey, KeyError> {
        let rng = SystemRandom::new();
        match alg {
            KeyAlgorithm::Ed25519 => {
                let mut seed = [0u8; 32];
                rng.fill(&mut seed)
                    .map_err(|_| KeyError::Generate { algorithm: alg })?;
                Self::ed25519_from_seed(seed, None)
            }
            KeyAlgorithm::EcdsaP256Sha256 => {
                let doc =
                    EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
                        .map_err(|_| KeyError::Generate { algorithm: alg })?;
                Self::ecdsa_from_pkcs8(doc.as_ref())
            }
        }
    }

    fn ed25519_from_seed(seed: [u8; 32], public: Option<&[u8]>) -> Result<SigningKey, KeyError> {
        let alg = KeyAlgorithm::Ed25519;
        let pair = match public {
            Some(public) => Ed25519KeyPair::from_seed_and_public_key(&seed, public),
            None => Ed25519KeyPair::from_seed_unchecked(&seed),
        }
        .map_err(rejected(alg))?;
        let public = PublicKey::from_ed25519_bytes(pair.public_key().as_ref())?;
        Ok(SigningKey {
            inner: Inner::Ed25519 { pair, seed },
            public,
        })
    }

    fn ecdsa_from_pkcs8(der: &[u8]) -> Result<SigningKey, KeyError> {
        let alg = KeyAlgorithm::EcdsaP256Sha256;
        let pair = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            der,
            &SystemRandom::new(),
        )
        .map_err(rejected(alg))?;
        let point = pair.public_key().as_ref();
        let public = PublicKey::from_p256_coordinates(&point[1..33], &point[33..65])?;
        Ok(SigningKey {
            inner: Inner::Ecdsa {
                pair,
                pkcs8: der.to_vec(),
            },
            public,
        })
    }

    /// Read an unencrypted PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`) holding
    /// an Ed25519 key (PKCS#8 v1 as OpenSSL and securesystemslib write it, or
    /// v2 with the public key, which is then checked) or a P-256 key.
    pub fn from_pkcs8_pem(pem: &str) -> Result<SigningKey, KeyError> {
        let block = pem_blocks(pem)?
            .into_iter()
            .next()
            .ok_or(KeyError::NoPemBlock {
                expected: "PRIVATE KEY",
            })?;
        if block.label != "PRIVATE KEY" {
            let hint = match block.label.as_str() {
                "EC PRIVATE KEY" => " (convert it with `openssl pkcs8 -topk8 -nocrypt`)",
                "ENCRYPTED PRIVATE KEY" => " (decrypt it with `openssl pkcs8 -topk8 -nocrypt`)",
                "OPENSSH PRIVATE KEY" => " (convert it with `ssh-keygen -p -m PKCS8`)",
                "PUBLIC KEY" => " (a public key where the private key belongs)",
                _ => "",
            };
            return Err(KeyError::UnexpectedPemLabel {
                expected: "PRIVATE KEY",
                found: block.label,
                hint,
            });
        }
        Self::from_pkcs8_der(&block.der)
    }

    /// Read an unencrypted DER PKCS#8 Ed25519 or P-256 private key.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<SigningKey, KeyError> {
        let unsupported = |reason: &str| KeyError::UnsupportedPrivateKey {
            reason: reason.to_string(),
        };
        // OneAsymmetricKey ::= SEQUENCE { version, AlgorithmIdentifier,
        //   OCTET STRING privateKey, [0] attributes OPTIONAL, [1] publicKey OPTIONAL }
        let outer = der_expect(der, 0x30)
            .filter(|t| t.rest.is_empty())
            .ok_or_else(|| unsupported("not a der pkcs#8 document"))?;
        let version =
            der_expect(outer.value, 0x02).ok_or_else(|| unsupported("pkcs#8 without a version"))?;
        let alg = der_expect(version.rest, 0x30)
            .ok_or_else(|| unsupported("pkcs#8 without an algorithm identifier"))?;
        let (oid, param) =
            algorithm_identifier(alg.value).ok_or_else(|| unsupported("no algorithm oid"))?;
        if oid == OID_ED25519 {
            let private = der_expect(alg.rest, 0x04)
                .ok_or_else(|| unsupported("ed25519 pkcs#8 without a private key"))?;
            let seed = der_expect(private.value, 0x04)
                .filter(|t| t.rest.is_empty())
                .and_then(|t| <[u8; 32]>::try_from(t.value).ok())
                .ok_or_else(|| unsupported("ed25519 private key is not a 32-byte seed"))?;
            // v2: an optional [0] attributes, then [1] the public key as a
            // BIT STRING: implicitly tagged (0x81, RFC 5958; what ring
            // writes) or, from some encoders, explicitly (0xa1).
            let mut rest = private.rest;
            let mut public = None;
            while let Some(t) = der_read(rest) {
                let bits = match t.tag {
                    0x81 => Some(t.value),
                    0xa1 => der_expect(t.value, 0x03).map(|b| b.value),
                    _ => None,
                };
                if let Some(bits) = bits {
                    match bits.split_first() {
                        Some((0, key)) => public = Some(key),
                        _ => return Err(unsupported("ed25519 pkcs#8 public key is malformed")),
                    }
                }
                rest = t.rest;
            }
            if !rest.is_empty() {
                return Err(unsupported("trailing bytes in ed25519 pkcs#8"));
            }
            Self::ed25519_from_seed(seed, public)
        } else if oid == OID_EC_PUBLIC_KEY {
            if param != Some(OID_P256) {
                return Err(unsupported("ecdsa key on a curve other than p-256"));
            }
            Self::ecdsa_from_pkcs8(der)
        } else {
            Err(unsupported(
                "algorithm is neither ed25519 nor ecdsa (rsa is not supported)",
            ))
        }
    }

    /// The key as unencrypted PKCS#8 PEM: v1 (RFC 8410) for Ed25519, which
    /// every OpenSSL-based tool reads; the document as loaded or generated for ECDSA.
    pub fn to_pkcs8_pem(&self) -> String {
        match &self.inner {
            Inner::Ed25519 { seed, .. } => {
                pem_encode("PRIVATE KEY", &[PKCS8_ED25519_PREFIX, seed].concat())
            }
            Inner::Ecdsa { pkcs8, .. } => pem_encode("PRIVATE KEY", pkcs8),
        }
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        self.public.clone()
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.public.algorithm
    }

    /// Sign `msg`. Ed25519 signatures are 64 bytes; ECDSA signatures are
    /// ASN.1 DER (what securesystemslib and cosign emit), with a random nonce.
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, KeyError> {
        match &self.inner {
            Inner::Ed25519 { pair, .. } => Ok(pair.sign(msg).as_ref().to_vec()),
            Inner::Ecdsa { pair, .. } => pair
                .sign(&SystemRandom::new(), msg)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| KeyError::Sign {
                    algorithm: self.public.algorithm,
                }),
        }
    }
}
