//! What is checked in a build request before anything runs: everything
//! that needs no store. Each refusal is one [`RequestError`] variant; the
//! service answers every one of them with INVALID_ARGUMENT.

use attest_proto::v1::{BuildRequest, SourceInfo};
use attest_tree::{validate_name, Digest};

/// Why a build request was refused. All of them are the caller's to fix.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("input_root is missing")]
    MissingInputRoot,
    #[error("input_root {hash:?}/{size_bytes} is not a sha256 digest with a size")]
    MalformedInputRoot { hash: String, size_bytes: i64 },
    #[error("argv is empty: name the command to run")]
    EmptyArgv,
    #[error("argument {argument:?} contains NUL")]
    NulInArgument { argument: String },
    #[error("environment variable {name:?} is malformed: names must be non-empty without '=' or NUL, values without NUL")]
    MalformedEnvironment { name: String },
    #[error("no output paths: declare at least one product to attest")]
    NoOutputs,
    #[error("output path {path:?} is declared twice")]
    DuplicateOutput { path: String },
    /// One declared output inside another (`d` and `d/x`): the helper
    /// would collect the inner one twice, or refuse it only after the
    /// step ran.
    #[error("output paths {outer:?} and {inner:?} overlap: declare only {outer:?}, which holds the other")]
    OverlappingOutputs { outer: String, inner: String },
    #[error("{what} is empty")]
    EmptyPath { what: PathRole },
    #[error("{what} {path:?} is absolute; give it relative to the source root")]
    AbsolutePath { what: PathRole, path: String },
    #[error("{what} {path:?} contains \"..\", which could leave the build's tree")]
    ParentComponent { what: PathRole, path: String },
    #[error("{what} {path:?}: {reason}")]
    BadComponent {
        what: PathRole,
        path: String,
        reason: &'static str,
    },
    #[error("{count} requester claims; at most {max}")]
    TooManyRequesterClaims { count: usize, max: usize },
    #[error("requester claim {key:?} is malformed: keys are 1 to 64 of [A-Za-z0-9._-], values at most 1024 bytes without NUL")]
    MalformedRequesterClaim { key: String },
    #[error("link_name {name:?} is not a usable step name")]
    BadLinkName {
        name: String,
        #[source]
        source: attest_provenance::link::LinkError,
    },
}

/// Which path of a request a [`RequestError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathRole {
    OutputPath,
    WorkingDirectory,
}

impl std::fmt::Display for PathRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PathRole::OutputPath => "output path",
            PathRole::WorkingDirectory => "working directory",
        })
    }
}

/// A request that passed validation.
#[derive(Debug, Clone)]
pub struct ValidatedRequest {
    pub input_root: Digest,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_directory: String,
    pub outputs: Vec<String>,
    pub limits: Option<attest_proto::v1::Limits>,
    pub source: Option<SourceInfo>,
    pub source_date_epoch: u64,
    /// The in-toto step name when the request asked for a link.
    pub link_name: Option<String>,
    /// Who asked, as observed on the connection (`crate::requester`):
    /// `validate` sees only the message and leaves it None; the service
    /// sets it from the call.
    pub requester: Option<serde_json::Value>,
    /// What the client claims about who asked, sorted by key: recorded as
    /// claims (`externalParameters.requesterClaims`), never trusted.
    pub requester_claims: std::collections::BTreeMap<String, String>,
}

/// Most requester claims one request may carry.
pub const MAX_REQUESTER_CLAIMS: usize = 32;

fn validate_requester_claims(
    request: &BuildRequest,
) -> Result<std::collections::BTreeMap<String, String>, RequestError> {
    let claims = &request.requester_claims;
    if claims.len() > MAX_REQUESTER_CLAIMS {
        return Err(RequestError::TooManyRequesterClaims {
            count: claims.len(),
            max: MAX_REQUESTER_CLAIMS,
        });
    }
    for (key, value) in claims {
        let key_ok = (1..=64).contains(&key.len())
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !key_ok || value.len() > 1024 || value.contains('\0') {
            return Err(RequestError::MalformedRequesterClaim { key: key.clone() });
        }
    }
    Ok(claims.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// Checks a relative path from a request: no "..", not absolute, no empty
/// or "." components, no NUL. Returns it unchanged.
pub fn validate_relative_path(
    what: PathRole,
    path: &str,
    allow_empty: bool,
) -> Result<String, RequestError> {
    if path.is_empty() {
        return if allow_empty {
            Ok(String::new())
        } else {
            Err(RequestError::EmptyPath { what })
        };
    }
    let path_owned = || path.to_string();
    if path.starts_with('/') {
        return Err(RequestError::AbsolutePath {
            what,
            path: path_owned(),
        });
    }
    for component in path.split('/') {
        if component == ".." {
            return Err(RequestError::ParentComponent {
                what,
                path: path_owned(),
            });
        }
        if let Err(reason) = validate_name(component) {
            return Err(RequestError::BadComponent {
                what,
                path: path_owned(),
                reason,
            });
        }
    }
    Ok(path.to_string())
}

/// Validates everything in a request that can be checked without the store.
pub fn validate(request: &BuildRequest) -> Result<ValidatedRequest, RequestError> {
    let root = request
        .input_root
        .as_ref()
        .ok_or(RequestError::MissingInputRoot)?;
    let input_root = Digest::from_proto(root).map_err(|_| RequestError::MalformedInputRoot {
        hash: root.hash.clone(),
        size_bytes: root.size_bytes,
    })?;
    if request.argv.is_empty() || request.argv[0].is_empty() {
        return Err(RequestError::EmptyArgv);
    }
    if let Some(arg) = request.argv.iter().find(|a| a.contains('\0')) {
        return Err(RequestError::NulInArgument {
            argument: arg.clone(),
        });
    }
    let mut env = Vec::with_capacity(request.env.len());
    for var in &request.env {
        if var.name.is_empty()
            || var.name.contains('=')
            || var.name.contains('\0')
            || var.value.contains('\0')
        {
            return Err(RequestError::MalformedEnvironment {
                name: var.name.clone(),
            });
        }
        env.push((var.name.clone(), var.value.clone()));
    }
    if request.output_paths.is_empty() {
        return Err(RequestError::NoOutputs);
    }
    let mut outputs = Vec::new();
    for path in &request.output_paths {
        let path = validate_relative_path(PathRole::OutputPath, path, false)?;
        if outputs.contains(&path) {
            return Err(RequestError::DuplicateOutput { path });
        }
        outputs.push(path);
    }
    if let Some((outer, inner)) = first_overlap(&outputs) {
        return Err(RequestError::OverlappingOutputs {
            outer: outer.to_string(),
            inner: inner.to_string(),
        });
    }
    Ok(ValidatedRequest {
        input_root,
        argv: request.argv.clone(),
        env,
        working_directory: validate_relative_path(
            PathRole::WorkingDirectory,
            &request.working_directory,
            true,
        )?,
        outputs,
        limits: request.limits,
        source: request.source.clone(),
        source_date_epoch: request.source_date_epoch,
        link_name: validate_link_name(request)?,
        requester: None,
        requester_claims: validate_requester_claims(request)?,
    })
}

/// The first pair of outputs of which one is a directory holding the
/// other, outer first. The paths are validated: no `.`, `..` or empty
/// components, so a component-wise prefix is the whole test.
fn first_overlap(outputs: &[String]) -> Option<(&str, &str)> {
    let holds = |outer: &str, inner: &str| {
        inner
            .strip_prefix(outer)
            .is_some_and(|rest| rest.starts_with('/'))
    };
    outputs.iter().find_map(|a| {
        outputs
            .iter()
            .find(|b| holds(a, b))
            .map(|b| (a.as_str(), b.as_str()))
    })
}

/// The link's step name when one was requested: the request's, or
/// [`crate::provenance_of_build::DEFAULT_LINK_NAME`]. The client turns it
/// into a file name, so it is checked here too.
fn validate_link_name(request: &BuildRequest) -> Result<Option<String>, RequestError> {
    if !request.emit_link {
        return Ok(None);
    }
    let name = if request.link_name.is_empty() {
        crate::provenance_of_build::DEFAULT_LINK_NAME
    } else {
        &request.link_name
    };
    attest_provenance::link::validate_step_name(name).map_err(|source| {
        RequestError::BadLinkName {
            name: name.to_string(),
            source,
        }
    })?;
    Ok(Some(name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(outputs: &[&str], argv: &[&str]) -> BuildRequest {
        BuildRequest {
            input_root: Some(attest_tree::hash_bytes(b"").to_proto()),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            output_paths: outputs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn requester_claims_are_kept_sorted_and_bounded() {
        let mut ok = request(&["out"], &["true"]);
        ok.requester_claims.insert("pipeline".into(), "77".into());
        ok.requester_claims
            .insert("ciJobUrl".into(), "https://ci.example.org/j/1".into());
        let claims = validate(&ok).unwrap().requester_claims;
        assert_eq!(claims.keys().collect::<Vec<_>>(), ["ciJobUrl", "pipeline"]);
        for (key, value) in [
            ("", "x"),
            ("has space", "x"),
            ("k", "nul\0inside"),
            (&"k".repeat(65)[..], "x"),
            ("k", &"v".repeat(1025)[..]),
        ] {
            let mut bad = request(&["out"], &["true"]);
            bad.requester_claims.insert(key.into(), value.into());
            assert!(
                matches!(validate(&bad), Err(RequestError::MalformedRequesterClaim { key: k }) if k == key),
                "{key:?}"
            );
        }
        let mut many = request(&["out"], &["true"]);
        for n in 0..=MAX_REQUESTER_CLAIMS {
            many.requester_claims.insert(format!("k{n}"), "v".into());
        }
        assert!(matches!(
            validate(&many),
            Err(RequestError::TooManyRequesterClaims { count: 33, max: 32 })
        ));
    }

    fn refusal(request: &BuildRequest) -> RequestError {
        match validate(request) {
            Err(error) => error,
            Ok(accepted) => panic!("accepted: {accepted:?}"),
        }
    }

    #[test]
    fn hostile_output_paths_are_refused_with_the_path_named() {
        let what = PathRole::OutputPath;
        let owned = |p: &str| p.to_string();
        for (bad, expected) in [
            (
                "../etc/passwd",
                RequestError::ParentComponent {
                    what,
                    path: owned("../etc/passwd"),
                },
            ),
            (
                "/etc/passwd",
                RequestError::AbsolutePath {
                    what,
                    path: owned("/etc/passwd"),
                },
            ),
            (
                "a/../../b",
                RequestError::ParentComponent {
                    what,
                    path: owned("a/../../b"),
                },
            ),
            (
                "a//b",
                RequestError::BadComponent {
                    what,
                    path: owned("a//b"),
                    reason: validate_name("").unwrap_err(),
                },
            ),
            (
                "./a",
                RequestError::BadComponent {
                    what,
                    path: owned("./a"),
                    reason: validate_name(".").unwrap_err(),
                },
            ),
            (
                "a/",
                RequestError::BadComponent {
                    what,
                    path: owned("a/"),
                    reason: validate_name("").unwrap_err(),
                },
            ),
            (
                "nul\0",
                RequestError::BadComponent {
                    what,
                    path: owned("nul\0"),
                    reason: validate_name("nul\0").unwrap_err(),
                },
            ),
            ("", RequestError::EmptyPath { what }),
        ] {
            assert_eq!(refusal(&request(&[bad], &["true"])), expected, "{bad:?}");
        }
        assert!(validate(&request(&["out/bin"], &["true"])).is_ok());
    }

    #[test]
    fn hostile_working_directories_are_refused() {
        let mut escaping = request(&["out"], &["true"]);
        escaping.working_directory = "../..".into();
        assert_eq!(
            refusal(&escaping),
            RequestError::ParentComponent {
                what: PathRole::WorkingDirectory,
                path: "../..".into()
            }
        );
    }

    #[test]
    fn link_names_default_to_build_and_hostile_ones_are_refused() {
        let with_link = |name: &str| BuildRequest {
            emit_link: true,
            link_name: name.to_string(),
            ..request(&["out"], &["true"])
        };
        assert_eq!(
            validate(&request(&["out"], &["true"])).unwrap().link_name,
            None
        );
        assert_eq!(
            validate(&with_link("")).unwrap().link_name.as_deref(),
            Some("build")
        );
        assert_eq!(
            validate(&with_link("compile"))
                .unwrap()
                .link_name
                .as_deref(),
            Some("compile")
        );
        for bad in ["../../etc/cron.d/x", "a/b", ".link", "-x", "a b"] {
            assert_eq!(
                refusal(&with_link(bad)),
                RequestError::BadLinkName {
                    name: bad.into(),
                    source: attest_provenance::link::validate_step_name(bad).unwrap_err(),
                }
            );
        }
    }

    #[test]
    fn empty_argv_and_missing_outputs_are_refused() {
        assert_eq!(refusal(&request(&["a"], &[])), RequestError::EmptyArgv);
        assert_eq!(refusal(&request(&["a"], &[""])), RequestError::EmptyArgv);
        assert_eq!(refusal(&request(&[], &["true"])), RequestError::NoOutputs);
        assert_eq!(
            refusal(&request(&["a", "a"], &["true"])),
            RequestError::DuplicateOutput { path: "a".into() }
        );
    }

    #[test]
    fn overlapping_outputs_are_refused_before_anything_runs_in_either_order() {
        let expected = RequestError::OverlappingOutputs {
            outer: "d".into(),
            inner: "d/x".into(),
        };
        assert_eq!(refusal(&request(&["d", "d/x"], &["true"])), expected);
        assert_eq!(refusal(&request(&["d/x", "d"], &["true"])), expected);
        assert_eq!(
            refusal(&request(&["out", "a/b", "a/b/c/d"], &["true"])),
            RequestError::OverlappingOutputs {
                outer: "a/b".into(),
                inner: "a/b/c/d".into(),
            }
        );
        // Siblings sharing a name prefix do not overlap.
        assert!(validate(&request(&["d", "dx", "d2/x", "e/d"], &["true"])).is_ok());
    }

    #[test]
    fn nul_in_argv_and_malformed_environment_are_refused() {
        assert_eq!(
            refusal(&request(&["a"], &["sh", "-c\0x"])),
            RequestError::NulInArgument {
                argument: "-c\0x".into()
            }
        );
        for name in ["", "A=B", "A\0"] {
            let mut bad = request(&["a"], &["true"]);
            bad.env = vec![attest_proto::v1::EnvVar {
                name: name.into(),
                value: "v".into(),
            }];
            assert_eq!(
                refusal(&bad),
                RequestError::MalformedEnvironment { name: name.into() }
            );
        }
    }

    #[test]
    fn missing_or_malformed_root_digest_is_refused() {
        let mut bad = request(&["a"], &["true"]);
        bad.input_root = None;
        assert_eq!(refusal(&bad), RequestError::MissingInputRoot);
        bad.input_root = Some(attest_proto::v1::Digest {
            hash: "zz".into(),
            size_bytes: 0,
        });
        assert_eq!(
            refusal(&bad),
            RequestError::MalformedInputRoot {
                hash: "zz".into(),
                size_bytes: 0
            }
        );
    }
}
