//! in-toto layout verification (in-toto spec v0.9 / v1.0 classic layouts,
//! as Python `in-toto` writes and `in-toto-verify` checks them), as
//! `attest verify --layout` runs it.
//!
//! Numbered checks, each failure its own [`LayoutError`] variant, all
//! failing closed:
//!
//! 1. the layout is a signed `{"signed": {"_type": "layout", ...},
//!    "signatures": [...]}` document; every layout key given verified a
//!    signature over the securesystemslib canonical JSON of `signed`;
//! 2. it has not expired (`expires`, RFC 3339, against `now`);
//! 3. it declares no inspections: running inspection commands is not
//!    supported, and a layout that relies on them is refused rather than
//!    verified without them; sublayouts (a link file that is a layout) are
//!    refused the same way;
//! 4. for every step, the links `<step>.<keyid:8>.link` of its
//!    functionaries (`pubkeys`, keys from the layout's `keys`) are read
//!    and each must verify with the key its file name names; at least
//!    `threshold` distinct functionaries must have a verified link, and
//!    their materials and products must agree;
//! 5. every step's `expected_materials` and `expected_products` rules
//!    (MATCH, ALLOW, DISALLOW, REQUIRE, CREATE, DELETE, MODIFY) hold,
//!    processed as in-toto does: each rule consumes from a queue of the
//!    artifacts it matches (fnmatch patterns, `*` crossing `/`), DISALLOW
//!    fails on any artifact still queued, REQUIRE on a missing one, and
//!    what is left at the end is allowed.
//!
//! `expected_command` is not compared, as in-toto only warns about it.

use crate::json::{parse_strict, JsonError};
use crate::keys::{KeyIdScheme, PublicKey};
use crate::link::{canonical_json, verify_link, HashDict, Link, LinkError};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

/// Exit code of `attest verify --layout` when the layout does not verify.
pub const EXIT_LAYOUT_FAILED: i32 = 32;

/// The largest layout file read.
pub const MAX_LAYOUT_BYTES: usize = 16 << 20;

/// Which artifacts of a link a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactKind {
    /// `expected_materials` over the link's materials.
    Materials,
    /// `expected_products` over the link's products.
    Products,
}

impl std::fmt::Display for ArtifactKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ArtifactKind::Materials => "materials",
            ArtifactKind::Products => "products",
        })
    }
}

/// Why a layout did not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    /// The layout is larger than [`MAX_LAYOUT_BYTES`].
    #[error("expected a layout of at most {max} bytes, found {size}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The layout is not JSON (or repeats a key).
    #[error("the layout is not valid json")]
    Json(#[source] JsonError),
    /// A layout field is missing or malformed.
    #[error("the layout's {field} is missing or malformed")]
    Malformed {
        /// The field.
        field: String,
    },
    /// No layout key was given.
    #[error("expected at least one layout key, found none")]
    NoLayoutKeys,
    /// A layout key did not sign the layout.
    #[error("expected a signature on the layout by layout key {keyid}, found none that verifies")]
    LayoutSignature {
        /// The key's securesystemslib keyid.
        keyid: String,
    },
    /// The layout has expired.
    #[error("the layout expired at {expires} (now {now})")]
    Expired {
        /// Its `expires`.
        expires: String,
        /// The time of verification.
        now: String,
    },
    /// The layout declares inspections, which are not supported.
    #[error("the layout declares inspections ({}), which attest does not run; refusing rather than verifying without them", .names.join(", "))]
    InspectionsUnsupported {
        /// Their names.
        names: Vec<String>,
    },
    /// A functionary key is of a type we cannot verify with.
    #[error("functionary key {keyid}: unsupported key ({reason})")]
    UnsupportedKey {
        /// Its keyid.
        keyid: String,
        /// What is wrong.
        reason: String,
    },
    /// A step names a functionary the layout has no key for.
    #[error("step {step}: functionary {keyid} has no key in the layout")]
    UnknownFunctionary {
        /// The step.
        step: String,
        /// The keyid.
        keyid: String,
    },
    /// A rule cannot be parsed.
    #[error("step {step}: rule {rule:?} is invalid: {reason}")]
    BadRule {
        /// The step.
        step: String,
        /// The rule as written.
        rule: Vec<String>,
        /// What is wrong.
        reason: String,
    },
    /// A link file could not be read as a link.
    #[error("step {step}: link {file} is malformed")]
    LinkMalformed {
        /// The step.
        step: String,
        /// The file name.
        file: String,
        /// Why.
        #[source]
        source: LinkError,
    },
    /// A link named for an authorized functionary does not verify with
    /// that functionary's key (tampered, or signed by someone else).
    #[error("step {step}: link {file} does not verify with functionary key {keyid} (tampered or signed by another key)")]
    LinkSignature {
        /// The step.
        step: String,
        /// The file name.
        file: String,
        /// The functionary it should be from.
        keyid: String,
    },
    /// A link for the step is signed only by keys that are not its
    /// functionaries.
    #[error("step {step}: link {file} is signed by a key that is not a functionary of the step")]
    UnauthorizedFunctionary {
        /// The step.
        step: String,
        /// The file name.
        file: String,
    },
    /// A link's `name` is not its step's.
    #[error("step {step}: link {file} is for step {found:?}")]
    WrongStepName {
        /// The step.
        step: String,
        /// The file name.
        file: String,
        /// The link's name.
        found: String,
    },
    /// Fewer functionaries than the threshold have a verified link.
    #[error("step {step}: expected verified links from at least {required} functionaries, found {found}")]
    Threshold {
        /// The step.
        step: String,
        /// The threshold.
        required: usize,
        /// Verified links.
        found: usize,
    },
    /// The functionaries' links for one step record different artifacts.
    #[error("step {step}: the links of its functionaries record different materials or products")]
    LinksDisagree {
        /// The step.
        step: String,
    },
    /// A DISALLOW rule matched an artifact still in the queue.
    #[error("step {step}: {kind} {artifact:?} is disallowed by rule {rule:?}")]
    Disallowed {
        /// The step.
        step: String,
        /// Materials or products.
        kind: ArtifactKind,
        /// The artifact.
        artifact: String,
        /// The DISALLOW rule.
        rule: Vec<String>,
    },
    /// An artifact a MATCH rule covered but could not match (absent from,
    /// or different in, the other step) reached a DISALLOW rule.
    #[error("step {step}: {kind} {artifact:?} does not match rule {rule:?} (absent from or different in the other step), and is then disallowed")]
    MatchFailed {
        /// The step.
        step: String,
        /// Materials or products.
        kind: ArtifactKind,
        /// The artifact.
        artifact: String,
        /// The MATCH rule.
        rule: Vec<String>,
    },
    /// An artifact given to check is not a product of the last step.
    #[error("expected artifact {name:?} ({digest}) to be a product of the last step {step}, found no product with that sha256")]
    ArtifactNotProduct {
        /// The artifact's name.
        name: String,
        /// Its digest.
        digest: String,
        /// The last step.
        step: String,
    },
    /// The layout has no steps.
    #[error("expected the layout to have at least one step, found none")]
    NoSteps,
    /// A REQUIRE rule's artifact is missing.
    #[error("step {step}: {kind} must include {pattern:?} (rule {rule:?})")]
    RequireMissing {
        /// The step.
        step: String,
        /// Materials or products.
        kind: ArtifactKind,
        /// The required path.
        pattern: String,
        /// The rule.
        rule: Vec<String>,
    },
}

impl LayoutError {
    /// The exit code `attest verify --layout` ends with.
    pub fn exit_code(&self) -> i32 {
        EXIT_LAYOUT_FAILED
    }
}

/// A verified layout: for each step, the keyids whose links verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutVerified {
    /// (step name, functionary keyids), in layout order.
    pub steps: Vec<(String, Vec<String>)>,
    /// The layout's `expires`.
    pub expires: String,
    /// The last step's name and products: what the chain delivers.
    pub final_products: (String, BTreeMap<String, HashDict>),
}

impl LayoutVerified {
    /// Every artifact must be one of the last step's products, by sha256
    /// (its name is not compared: files get renamed).
    pub fn check_artifacts(
        &self,
        artifacts: &[crate::verify::Artifact],
    ) -> Result<(), LayoutError> {
        let (step, products) = &self.final_products;
        for a in artifacts {
            let found = products
                .values()
                .any(|d| !a.sha256.is_empty() && d.get("sha256") == Some(&a.sha256));
            if !found {
                return Err(LayoutError::ArtifactNotProduct {
                    name: a.name.clone(),
                    digest: a.digest_display(),
                    step: step.clone(),
                });
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    Match {
        pattern: String,
        source_prefix: Option<String>,
        dest_kind: ArtifactKind,
        dest_prefix: Option<String>,
        dest_step: String,
    },
    Allow(String),
    Disallow(String),
    Require(String),
    Create(String),
    Delete(String),
    Modify(String),
}

fn parse_rule(step: &str, words: &[String]) -> Result<Rule, LayoutError> {
    let bad = |reason: &str| LayoutError::BadRule {
        step: step.to_string(),
        rule: words.to_vec(),
        reason: reason.to_string(),
    };
    let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
    let simple = |make: fn(String) -> Rule| {
        if words.len() == 2 {
            Ok(make(words[1].clone()))
        } else {
            Err(bad("expected exactly one pattern"))
        }
    };
    match upper.first().map(String::as_str) {
        Some("ALLOW") => simple(Rule::Allow),
        Some("DISALLOW") => simple(Rule::Disallow),
        Some("REQUIRE") => simple(Rule::Require),
        Some("CREATE") => simple(Rule::Create),
        Some("DELETE") => simple(Rule::Delete),
        Some("MODIFY") => simple(Rule::Modify),
        Some("MATCH") => {
            // MATCH <pattern> [IN <src>] WITH (MATERIALS|PRODUCTS) [IN <dst>] FROM <step>
            let mut i = 2;
            let pattern = words.get(1).ok_or_else(|| bad("no pattern"))?.clone();
            let mut source_prefix = None;
            if upper.get(i).map(String::as_str) == Some("IN") {
                source_prefix = Some(
                    words
                        .get(i + 1)
                        .ok_or_else(|| bad("IN without a path"))?
                        .clone(),
                );
                i += 2;
            }
            if upper.get(i).map(String::as_str) != Some("WITH") {
                return Err(bad("expected WITH"));
            }
            let dest_kind = match upper.get(i + 1).map(String::as_str) {
                Some("MATERIALS") => ArtifactKind::Materials,
                Some("PRODUCTS") => ArtifactKind::Products,
                _ => return Err(bad("expected MATERIALS or PRODUCTS after WITH")),
            };
            i += 2;
            let mut dest_prefix = None;
            if upper.get(i).map(String::as_str) == Some("IN") {
                dest_prefix = Some(
                    words
                        .get(i + 1)
                        .ok_or_else(|| bad("IN without a path"))?
                        .clone(),
                );
                i += 2;
            }
            if upper.get(i).map(String::as_str) != Some("FROM") {
                return Err(bad("expected FROM"));
            }
            let dest_step = words
                .get(i + 1)
                .ok_or_else(|| bad("FROM without a step"))?
                .clone();
            if words.len() != i + 2 {
                return Err(bad("unexpected words after FROM <step>"));
            }
            Ok(Rule::Match {
                pattern,
                source_prefix,
                dest_kind,
                dest_prefix,
                dest_step,
            })
        }
        _ => Err(bad("unknown rule type")),
    }
}

/// Python's `fnmatch.fnmatchcase` on POSIX: `*` any run (including `/`),
/// `?` one character, `[seq]` / `[!seq]` a class with ranges.
pub fn fnmatch(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Iterative matcher with backtracking to the last `*`.
    let (mut pi, mut ni) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        let step = if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, ni));
                    pi += 1;
                    continue;
                }
                '?' => Some(pi + 1),
                '[' => match class(&p, pi, n[ni]) {
                    Some((true, next)) => Some(next),
                    Some((false, _)) => None,
                    // An unclosed `[` is a literal, as in Python.
                    None => (n[ni] == '[').then_some(pi + 1),
                },
                c => (c == n[ni]).then_some(pi + 1),
            }
        } else {
            None
        };
        match step {
            Some(next) => {
                pi = next;
                ni += 1;
            }
            None => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Matches `c` against the class starting at `p[start] == '['`; returns
/// (matched, index after `]`), or `None` when the class is not closed.
fn class(p: &[char], start: usize, c: char) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = matches!(p.get(i), Some('!'));
    if negate {
        i += 1;
    }
    let first = i;
    let mut matched = false;
    while i < p.len() {
        if p[i] == ']' && i > first {
            return Some((matched != negate, i + 1));
        }
        if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
            if p[i] <= c && c <= p[i + 2] {
                matched = true;
            }
            i += 3;
        } else {
            if p[i] == c {
                matched = true;
            }
            i += 1;
        }
    }
    None
}

fn join(prefix: &str, path: &str) -> String {
    if prefix.ends_with('/') {
        format!("{prefix}{path}")
    } else {
        format!("{prefix}/{path}")
    }
}

/// One functionary key from the layout's `keys`.
fn layout_key(keyid: &str, key: &Value) -> Result<PublicKey, LayoutError> {
    let unsupported = |reason: String| LayoutError::UnsupportedKey {
        keyid: keyid.to_string(),
        reason,
    };
    let keytype = key.get("keytype").and_then(Value::as_str).unwrap_or("");
    let public = key
        .pointer("/keyval/public")
        .and_then(Value::as_str)
        .ok_or_else(|| unsupported("no keyval.public".into()))?;
    match keytype {
        "ed25519" => {
            let raw = if public.contains("BEGIN PUBLIC KEY") {
                return PublicKey::from_spki_pem(public).map_err(|e| unsupported(e.to_string()));
            } else {
                hex::decode(public)
                    .map_err(|e| unsupported(format!("keyval.public is not hex: {e}")))?
            };
            PublicKey::from_ed25519_bytes(&raw).map_err(|e| unsupported(e.to_string()))
        }
        "ecdsa" | "ecdsa-sha2-nistp256" => {
            PublicKey::from_spki_pem(public).map_err(|e| unsupported(e.to_string()))
        }
        other => Err(unsupported(format!(
            "key type {other:?} (ed25519 and ecdsa P-256 are supported)"
        ))),
    }
}

fn field<'a>(v: &'a Value, name: &str) -> Result<&'a Value, LayoutError> {
    v.get(name).ok_or_else(|| LayoutError::Malformed {
        field: name.to_string(),
    })
}

fn string_list(v: &Value, what: &str) -> Result<Vec<String>, LayoutError> {
    serde_json::from_value(v.clone()).map_err(|_| LayoutError::Malformed {
        field: what.to_string(),
    })
}

struct Step {
    name: String,
    pubkeys: Vec<String>,
    threshold: usize,
    materials: Vec<(Vec<String>, Rule)>,
    products: Vec<(Vec<String>, Rule)>,
}

/// Verifies `layout` (the file's bytes) signed by every one of
/// `layout_keys`, over `links` (file name -> bytes, e.g. every `*.link` of
/// a directory), at `now`. See the module docs for the checks.
pub fn verify_layout(
    layout: &[u8],
    layout_keys: &[PublicKey],
    links: &BTreeMap<String, Vec<u8>>,
    now: SystemTime,
) -> Result<LayoutVerified, LayoutError> {
    // Step 1: a signed layout, signed by every layout key.
    if layout.len() > MAX_LAYOUT_BYTES {
        return Err(LayoutError::TooLarge {
            size: layout.len(),
            max: MAX_LAYOUT_BYTES,
        });
    }
    if layout_keys.is_empty() {
        return Err(LayoutError::NoLayoutKeys);
    }
    let doc = parse_strict(layout).map_err(LayoutError::Json)?;
    let signed = field(&doc, "signed")?;
    if signed.get("_type").and_then(Value::as_str) != Some("layout") {
        return Err(LayoutError::Malformed {
            field: "signed._type".into(),
        });
    }
    let message = canonical_json(signed).map_err(|_| LayoutError::Malformed {
        field: "signed (not canonical json)".into(),
    })?;
    let signatures: Vec<Vec<u8>> = field(&doc, "signatures")?
        .as_array()
        .ok_or_else(|| LayoutError::Malformed {
            field: "signatures".into(),
        })?
        .iter()
        .filter_map(|s| s.get("sig").and_then(Value::as_str))
        .filter_map(|h| hex::decode(h).ok())
        .collect();
    for key in layout_keys {
        if !signatures.iter().any(|s| key.verify(&message, s).is_ok()) {
            return Err(LayoutError::LayoutSignature {
                keyid: key.keyid(KeyIdScheme::Securesystemslib),
            });
        }
    }

    // Step 2: expiry.
    let expires = field(signed, "expires")?
        .as_str()
        .ok_or_else(|| LayoutError::Malformed {
            field: "expires".into(),
        })?
        .to_string();
    let expiry =
        time::OffsetDateTime::parse(&expires, &time::format_description::well_known::Rfc3339)
            .map_err(|_| LayoutError::Malformed {
                field: "expires".into(),
            })?;
    if time::OffsetDateTime::from(now) >= expiry {
        return Err(LayoutError::Expired {
            expires,
            now: crate::policy::rfc3339(now),
        });
    }

    // Step 3: inspections are refused, not skipped.
    if let Some(inspect) = signed.get("inspect") {
        let list = inspect.as_array().ok_or_else(|| LayoutError::Malformed {
            field: "inspect".into(),
        })?;
        if !list.is_empty() {
            return Err(LayoutError::InspectionsUnsupported {
                names: list
                    .iter()
                    .map(|i| {
                        i.get("name")
                            .and_then(Value::as_str)
                            .unwrap_or("?")
                            .to_string()
                    })
                    .collect(),
            });
        }
    }

    // Parse keys and steps.
    let keys_value = field(signed, "keys")?
        .as_object()
        .ok_or_else(|| LayoutError::Malformed {
            field: "keys".into(),
        })?;
    let mut keys = BTreeMap::new();
    for (keyid, key) in keys_value {
        keys.insert(keyid.clone(), layout_key(keyid, key)?);
    }
    let mut steps = Vec::new();
    for s in field(signed, "steps")?
        .as_array()
        .ok_or_else(|| LayoutError::Malformed {
            field: "steps".into(),
        })?
    {
        let name = field(s, "name")?
            .as_str()
            .ok_or_else(|| LayoutError::Malformed {
                field: "steps[].name".into(),
            })?
            .to_string();
        let pubkeys = string_list(field(s, "pubkeys")?, "steps[].pubkeys")?;
        let threshold = s
            .get("threshold")
            .map_or(Some(1), Value::as_u64)
            .ok_or_else(|| LayoutError::Malformed {
                field: format!("steps[{name}].threshold"),
            })? as usize;
        let rules = |what: &str| -> Result<Vec<(Vec<String>, Rule)>, LayoutError> {
            let list: Vec<Vec<String>> = match s.get(what) {
                None => Vec::new(),
                Some(v) => {
                    serde_json::from_value(v.clone()).map_err(|_| LayoutError::Malformed {
                        field: format!("steps[{name}].{what}"),
                    })?
                }
            };
            list.into_iter()
                .map(|words| parse_rule(&name, &words).map(|r| (words, r)))
                .collect()
        };
        let materials = rules("expected_materials")?;
        let products = rules("expected_products")?;
        for keyid in &pubkeys {
            if !keys.contains_key(keyid) {
                return Err(LayoutError::UnknownFunctionary {
                    step: name.clone(),
                    keyid: keyid.clone(),
                });
            }
        }
        steps.push(Step {
            name,
            pubkeys,
            threshold: threshold.max(1),
            materials,
            products,
        });
    }
    let step_names: BTreeSet<&str> = steps.iter().map(|s| s.name.as_str()).collect();
    for step in &steps {
        for (words, rule) in step.materials.iter().chain(&step.products) {
            if let Rule::Match { dest_step, .. } = rule {
                if !step_names.contains(dest_step.as_str()) {
                    return Err(LayoutError::BadRule {
                        step: step.name.clone(),
                        rule: words.clone(),
                        reason: format!("no step {dest_step:?} in the layout"),
                    });
                }
            }
        }
    }

    // Step 4: links, signatures, thresholds.
    let mut chosen: BTreeMap<String, Link> = BTreeMap::new();
    let mut verified_steps = Vec::new();
    for step in &steps {
        let mut good: Vec<(String, Link)> = Vec::new();
        let mut tampered: Option<(String, String)> = None;
        let mut unauthorized: Option<String> = None;
        let prefix = format!("{}.", step.name);
        for (file, bytes) in links.range(prefix.clone()..) {
            let Some(rest) = file.strip_prefix(&prefix) else {
                break;
            };
            let Some(id8) = rest.strip_suffix(".link") else {
                continue;
            };
            if id8.contains('.') {
                // A longer step name sharing this prefix.
                continue;
            }
            let authorized = step
                .pubkeys
                .iter()
                .find(|k| k.starts_with(id8) && id8.len() == 8);
            match authorized {
                Some(keyid) => {
                    let key = &keys[keyid];
                    match verify_link(bytes, std::slice::from_ref(key)) {
                        Ok((link, _)) => {
                            if link.name != step.name {
                                return Err(LayoutError::WrongStepName {
                                    step: step.name.clone(),
                                    file: file.clone(),
                                    found: link.name,
                                });
                            }
                            good.push((keyid.clone(), link));
                        }
                        Err(LinkError::Unverified { .. }) => {
                            tampered.get_or_insert((file.clone(), keyid.clone()));
                        }
                        Err(source) => {
                            return Err(LayoutError::LinkMalformed {
                                step: step.name.clone(),
                                file: file.clone(),
                                source,
                            })
                        }
                    }
                }
                None => {
                    unauthorized.get_or_insert(file.clone());
                }
            }
        }
        if good.len() < step.threshold {
            if let Some((file, keyid)) = tampered {
                return Err(LayoutError::LinkSignature {
                    step: step.name.clone(),
                    file,
                    keyid,
                });
            }
            if let Some(file) = unauthorized {
                return Err(LayoutError::UnauthorizedFunctionary {
                    step: step.name.clone(),
                    file,
                });
            }
            return Err(LayoutError::Threshold {
                step: step.name.clone(),
                required: step.threshold,
                found: good.len(),
            });
        }
        let first = &good[0].1;
        if good
            .iter()
            .any(|(_, l)| l.materials != first.materials || l.products != first.products)
        {
            return Err(LayoutError::LinksDisagree {
                step: step.name.clone(),
            });
        }
        verified_steps.push((
            step.name.clone(),
            good.iter().map(|(k, _)| k.clone()).collect(),
        ));
        chosen.insert(step.name.clone(), first.clone());
    }

    // Step 5: artifact rules.
    for step in &steps {
        let link = &chosen[&step.name];
        for (kind, rules) in [
            (ArtifactKind::Materials, &step.materials),
            (ArtifactKind::Products, &step.products),
        ] {
            verify_rules(&step.name, kind, rules, link, &chosen)?;
        }
    }
    let last = steps.last().ok_or(LayoutError::NoSteps)?;
    Ok(LayoutVerified {
        steps: verified_steps,
        expires,
        final_products: (last.name.clone(), chosen[&last.name].products.clone()),
    })
}

fn artifacts_of(link: &Link, kind: ArtifactKind) -> &BTreeMap<String, HashDict> {
    match kind {
        ArtifactKind::Materials => &link.materials,
        ArtifactKind::Products => &link.products,
    }
}

fn verify_rules(
    step: &str,
    kind: ArtifactKind,
    rules: &[(Vec<String>, Rule)],
    link: &Link,
    links: &BTreeMap<String, Link>,
) -> Result<(), LayoutError> {
    let artifacts = artifacts_of(link, kind);
    let mut queue: BTreeSet<String> = artifacts.keys().cloned().collect();
    // Artifacts a MATCH rule covered but could not consume, with the rule:
    // named in the error if a DISALLOW then catches them.
    let mut unmatched: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let filter = |queue: &BTreeSet<String>, pattern: &str| -> BTreeSet<String> {
        queue
            .iter()
            .filter(|a| fnmatch(pattern, a))
            .cloned()
            .collect()
    };
    for (words, rule) in rules {
        let consumed: BTreeSet<String> = match rule {
            Rule::Allow(p) => filter(&queue, p),
            Rule::Disallow(p) => {
                if let Some(artifact) = filter(&queue, p).into_iter().next() {
                    if let Some(match_rule) = unmatched.get(&artifact) {
                        return Err(LayoutError::MatchFailed {
                            step: step.to_string(),
                            kind,
                            artifact,
                            rule: match_rule.clone(),
                        });
                    }
                    return Err(LayoutError::Disallowed {
                        step: step.to_string(),
                        kind,
                        artifact,
                        rule: words.clone(),
                    });
                }
                BTreeSet::new()
            }
            Rule::Require(path) => {
                if !queue.contains(path) {
                    return Err(LayoutError::RequireMissing {
                        step: step.to_string(),
                        kind,
                        pattern: path.clone(),
                        rule: words.clone(),
                    });
                }
                BTreeSet::new()
            }
            Rule::Create(p) => filter(&queue, p)
                .into_iter()
                .filter(|a| !link.materials.contains_key(a) && link.products.contains_key(a))
                .collect(),
            Rule::Delete(p) => filter(&queue, p)
                .into_iter()
                .filter(|a| link.materials.contains_key(a) && !link.products.contains_key(a))
                .collect(),
            Rule::Modify(p) => filter(&queue, p)
                .into_iter()
                .filter(|a| {
                    matches!((link.materials.get(a), link.products.get(a)), (Some(m), Some(p)) if m != p)
                })
                .collect(),
            Rule::Match {
                pattern,
                source_prefix,
                dest_kind,
                dest_prefix,
                dest_step,
            } => {
                let dest = links.get(dest_step).map(|l| artifacts_of(l, *dest_kind));
                let mut consumed = BTreeSet::new();
                for path in &queue {
                    let relative = match source_prefix {
                        Some(prefix) => {
                            let normalized = join(prefix, "");
                            match path.strip_prefix(&normalized) {
                                Some(r) => r.to_string(),
                                None => continue,
                            }
                        }
                        None => path.clone(),
                    };
                    if !fnmatch(pattern, &relative) {
                        continue;
                    }
                    let dest_path = match dest_prefix {
                        Some(prefix) => join(prefix, &relative),
                        None => relative,
                    };
                    let same = dest
                        .and_then(|d| d.get(&dest_path))
                        .is_some_and(|d| Some(d) == artifacts.get(path));
                    if same {
                        consumed.insert(path.clone());
                    } else {
                        unmatched.entry(path.clone()).or_insert_with(|| words.clone());
                    }
                }
                consumed
            }
        };
        for a in consumed {
            queue.remove(&a);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnmatch_behaves_like_pythons() {
        assert!(fnmatch("*", "a/b/c"));
        assert!(fnmatch("*.c", "src/x.c"));
        assert!(fnmatch("hello", "hello"));
        assert!(!fnmatch("hello", "hello2"));
        assert!(fnmatch("h?llo", "hallo"));
        assert!(fnmatch("[ab]x", "bx"));
        assert!(!fnmatch("[!ab]x", "bx"));
        assert!(fnmatch("[a-c]x", "cx"));
        assert!(fnmatch("[x", "[x"));
        assert!(fnmatch("a*b*c", "aXXbYYc"));
        assert!(!fnmatch("a*b*c", "aXXbYY"));
    }

    #[test]
    fn rules_parse_as_in_toto_writes_them() {
        let w = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        assert_eq!(
            parse_rule(
                "s",
                &w("MATCH *.c IN src WITH PRODUCTS IN out FROM checkout")
            )
            .unwrap(),
            Rule::Match {
                pattern: "*.c".into(),
                source_prefix: Some("src".into()),
                dest_kind: ArtifactKind::Products,
                dest_prefix: Some("out".into()),
                dest_step: "checkout".into()
            }
        );
        assert_eq!(
            parse_rule("s", &w("CREATE app")).unwrap(),
            Rule::Create("app".into())
        );
        for bad in [
            "MATCH x WITH THINGS FROM a",
            "ALLOW",
            "FROB x",
            "MATCH x WITH PRODUCTS FROM",
        ] {
            assert!(
                matches!(parse_rule("s", &w(bad)), Err(LayoutError::BadRule { .. })),
                "{bad} parsed"
            );
        }
    }
}
