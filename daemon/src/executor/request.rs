//! What is checked in a build request before anything runs: everything
//! that needs no store.

use crate::error::DaemonError;
use attest_proto::v1::{BuildRequest, SourceInfo};
use attest_tree::{validate_name, Digest};

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
}

/// Checks a relative path from a request: no "..", not absolute, no empty
/// or "." components, no NUL. Returns it unchanged.
pub fn validate_relative_path(
    what: &str,
    path: &str,
    allow_empty: bool,
) -> Result<String, DaemonError> {
    if path.is_empty() {
        return if allow_empty {
            Ok(String::new())
        } else {
            Err(DaemonError::InvalidRequest(format!("{what} is empty")))
        };
    }
    if path.starts_with('/') {
        return Err(DaemonError::InvalidRequest(format!(
            "{what} {path:?} is absolute; give it relative to the source root"
        )));
    }
    for component in path.split('/') {
        if component == ".." {
            return Err(DaemonError::InvalidRequest(format!(
                "{what} {path:?} contains \"..\", which could leave the build's tree"
            )));
        }
        if let Err(why) = validate_name(component) {
            return Err(DaemonError::InvalidRequest(format!(
                "{what} {path:?}: {why}"
            )));
        }
    }
    Ok(path.to_string())
}

/// Validates everything in a request that can be checked without the store.
pub fn validate(request: &BuildRequest) -> Result<ValidatedRequest, DaemonError> {
    let root = request
        .input_root
        .as_ref()
        .ok_or_else(|| DaemonError::InvalidRequest("input_root is missing".into()))?;
    let input_root = Digest::from_proto(root)
        .map_err(|e| DaemonError::InvalidRequest(format!("input_root: {e}")))?;
    if request.argv.is_empty() || request.argv[0].is_empty() {
        return Err(DaemonError::InvalidRequest(
            "argv is empty: name the command to run".into(),
        ));
    }
    if let Some(arg) = request.argv.iter().find(|a| a.contains('\0')) {
        return Err(DaemonError::InvalidRequest(format!(
            "argument {arg:?} contains NUL"
        )));
    }
    let mut env = Vec::with_capacity(request.env.len());
    for var in &request.env {
        if var.name.is_empty()
            || var.name.contains('=')
            || var.name.contains('\0')
            || var.value.contains('\0')
        {
            return Err(DaemonError::InvalidRequest(format!(
                "environment variable {:?} is malformed: names must be non-empty without '=' or NUL",
                var.name
            )));
        }
        env.push((var.name.clone(), var.value.clone()));
    }
    if request.output_paths.is_empty() {
        return Err(DaemonError::InvalidRequest(
            "no output paths: declare at least one product to attest".into(),
        ));
    }
    let mut outputs = Vec::new();
    for path in &request.output_paths {
        let path = validate_relative_path("output path", path, false)?;
        if outputs.contains(&path) {
            return Err(DaemonError::InvalidRequest(format!(
                "output path {path:?} is declared twice"
            )));
        }
        outputs.push(path);
    }
    Ok(ValidatedRequest {
        input_root,
        argv: request.argv.clone(),
        env,
        working_directory: validate_relative_path(
            "working directory",
            &request.working_directory,
            true,
        )?,
        outputs,
        limits: request.limits,
        source: request.source.clone(),
        source_date_epoch: request.source_date_epoch,
        link_name: validate_link_name(request)?,
    })
}

/// The link's step name when one was requested: the request's, or
/// [`crate::provenance_of_build::DEFAULT_LINK_NAME`]. The client turns it into a
/// file name, so it is checked here too.
fn validate_link_name(request: &BuildRequest) -> Result<Option<String>, DaemonError> {
    if !request.emit_link {
        return Ok(None);
    }
    let name = if request.link_name.is_empty() {
        crate::provenance_of_build::DEFAULT_LINK_NAME
    } else {
        &request.link_name
    };
    attest_provenance::link::validate_step_name(name)
        .map_err(|e| DaemonError::InvalidRequest(format!("link_name: {e}")))?;
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
    fn hostile_output_paths_are_refused_with_the_path_named() {
        for bad in [
            "../etc/passwd",
            "/etc/passwd",
            "a/../../b",
            "a//b",
            "./a",
            "a/",
            "nul\0",
        ] {
            match validate(&request(&[bad], &["true"])) {
                Err(DaemonError::InvalidRequest(message)) => {
                    assert!(message.contains("output path"), "{message}")
                }
                other => panic!("{bad:?} was not refused: {other:?}"),
            }
        }
        assert!(validate(&request(&["out/bin"], &["true"])).is_ok());
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
            match validate(&with_link(bad)) {
                Err(DaemonError::InvalidRequest(message)) => {
                    assert!(message.contains("link_name"), "{message}")
                }
                other => panic!("{bad:?} was not refused: {other:?}"),
            }
        }
    }

    #[test]
    fn empty_argv_and_missing_outputs_are_refused() {
        assert!(
            matches!(validate(&request(&["a"], &[])), Err(DaemonError::InvalidRequest(m)) if m.contains("argv"))
        );
        assert!(
            matches!(validate(&request(&[], &["true"])), Err(DaemonError::InvalidRequest(m)) if m.contains("output"))
        );
        assert!(
            matches!(validate(&request(&["a", "a"], &["true"])), Err(DaemonError::InvalidRequest(m)) if m.contains("twice"))
        );
    }

    #[test]
    fn malformed_root_digest_is_refused() {
        let mut bad = request(&["a"], &["true"]);
        bad.input_root = Some(attest_proto::v1::Digest {
            hash: "zz".into(),
            size_bytes: 0,
        });
        assert!(
            matches!(validate(&bad), Err(DaemonError::InvalidRequest(m)) if m.contains("input_root"))
        );
    }
}
