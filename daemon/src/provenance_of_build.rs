//! The provenance the daemon issues for one build: an in-toto Statement v1
//! whose subjects are the products, with a SLSA Provenance v1 predicate of
//! build type [`BUILD_TYPE`] (documented in docs/buildtype-v1.md).

use crate::rootfs::{BindStatus, NodeKind, RootfsFacts, FIRST_HASH_RUNNING, TREE_MEDIA_TYPE};
use attest_provenance::slsa::{
    BuildDefinition, BuildMetadata, Builder, Provenance, RunDetails, PREDICATE_TYPE_V1,
};
use attest_provenance::statement::{ResourceDescriptor, Statement, STATEMENT_TYPE_V1};
use attest_sandbox::{LogCapture, Logs, Observed, Settings, Usage};
use attest_tree::{percent_bytes_encode, Digest, PERCENT_BYTES};
use serde_json::json;
use std::collections::BTreeMap;

/// The build type of every attestd provenance. Stable: a change to what
/// it means gets a new URI.
pub const BUILD_TYPE: &str = attest_provenance::slsa::ATTESTD_BUILD_TYPE;

/// Media type recorded for the input root: the digest is of a protobuf
/// `attest.v1.Directory` message, not of a file.
pub const DIRECTORY_MEDIA_TYPE: &str = "application/vnd.attestd.directory.v1+protobuf";

/// Everything about one finished, successful build that goes into its
/// provenance.
pub struct BuildFacts<'a> {
    pub invocation_id: &'a str,
    pub builder_id: &'a str,
    pub argv: &'a [String],
    pub env: &'a [(String, String)],
    pub working_directory: &'a str,
    pub output_paths: &'a [String],
    pub requested_limits: Option<&'a attest_proto::v1::Limits>,
    pub source: Option<&'a attest_proto::v1::SourceInfo>,
    pub input_root: Digest,
    /// Each input file's path (the names' bytes, UTF-8 or not) and digest.
    pub input_files: &'a [(Vec<u8>, Digest)],
    pub settings: &'a Settings,
    /// What the step's own process saw of itself right before its exec
    /// (None when it ended before it looked): the ground for `hermetic`.
    pub observed: Option<&'a Observed>,
    /// What the daemon measured of the host rootfs around the step.
    pub rootfs: &'a RootfsFacts,
    pub source_date_epoch: u64,
    /// Each collected output's path (bytes, UTF-8 or not) and digest.
    pub outputs: &'a [(Vec<u8>, Digest)],
    pub stdout: Digest,
    pub stderr: Digest,
    pub exit_code: i32,
    pub usage: &'a Usage,
    pub started_on: &'a str,
    pub finished_on: &'a str,
    /// What became of stdout and stderr: a log cut to its cap is
    /// annotated so in the byproducts.
    pub logs: Logs,
    /// Who asked, as the daemon observed it on the connection
    /// (`crate::requester::Requester::to_json`); None only for builds not
    /// requested over a connection (tests).
    pub requester: Option<&'a serde_json::Value>,
    /// `--dangerously-...` options in force in the daemon.
    pub dangerous_options: &'a [String],
    /// What the client claimed about who asked (not checked).
    pub requester_claims: &'a BTreeMap<String, String>,
}

/// `sandbox.observed` in docs/buildtype-v1.md's names; a value the
/// kernel did not give is left out.
fn observed_json(o: &Observed) -> serde_json::Value {
    let mut fields = serde_json::Map::new();
    let mut put = |name: &str, value: Option<serde_json::Value>| {
        if let Some(value) = value {
            fields.insert(name.to_string(), value);
        }
    };
    put("noNewPrivs", o.no_new_privs.map(|v| json!(v)));
    put("seccompMode", o.seccomp_mode.map(|v| json!(v)));
    put("seccompFilters", o.seccomp_filters.map(|v| json!(v)));
    put("capEff", o.cap_eff.map(|v| json!(v)));
    put("capPrm", o.cap_prm.map(|v| json!(v)));
    put("capInh", o.cap_inh.map(|v| json!(v)));
    put("capBnd", o.cap_bnd.map(|v| json!(v)));
    put("capAmb", o.cap_amb.map(|v| json!(v)));
    put("interfaces", o.interfaces.as_ref().map(|v| json!(v)));
    let namespaces: Vec<serde_json::Value> = o
        .namespaces
        .iter()
        .map(|n| {
            let mut entry = serde_json::Map::new();
            entry.insert("name".into(), json!(n.name));
            if let Some(inode) = n.step_inode {
                entry.insert("stepInode".into(), json!(inode));
            }
            if let Some(inode) = n.helper_inode {
                entry.insert("helperInode".into(), json!(inode));
            }
            serde_json::Value::Object(entry)
        })
        .collect();
    fields.insert("namespaces".into(), json!(namespaces));
    serde_json::Value::Object(fields)
}

fn sha256_descriptor(name: &str, digest: &Digest) -> ResourceDescriptor {
    ResourceDescriptor {
        name: Some(name.to_string()),
        digest: BTreeMap::from([("sha256".to_string(), digest.hex())]),
        ..Default::default()
    }
}

/// The name a path has in the provenance and the link: the path itself
/// when it is UTF-8, its `percent-bytes` encoding otherwise (see
/// docs/buildtype-v1.md, "Paths that are not UTF-8"). The flag says which.
pub fn path_name(path: &[u8]) -> (String, bool) {
    match std::str::from_utf8(path) {
        Ok(name) => (name.to_string(), false),
        Err(_) => (percent_bytes_encode(path), true),
    }
}

/// One of the step's logs as a byproduct. The digest is of the bytes
/// stored; a log cut to its cap says so, so that nobody takes the stored
/// bytes for all the step wrote: `truncated`, the bytes the step wrote,
/// those dropped, and where the gap is (the bytes kept before it).
fn log_descriptor(name: &str, digest: &Digest, capture: &LogCapture) -> ResourceDescriptor {
    let mut descriptor = sha256_descriptor(name, digest);
    descriptor.media_type = Some("text/plain".into());
    if capture.truncated() {
        let mut annotations = serde_json::Map::new();
        annotations.insert("truncated".into(), json!(true));
        annotations.insert("stepBytes".into(), json!(capture.step_bytes));
        annotations.insert("droppedBytes".into(), json!(capture.dropped_bytes));
        annotations.insert("headBytes".into(), json!(capture.head_bytes));
        descriptor.annotations = Some(annotations);
    }
    descriptor
}

/// A file named by its path: a path that is not UTF-8 gets the encoded
/// name and the `pathEncoding` annotation that says so.
fn path_descriptor(path: &[u8], digest: &Digest) -> ResourceDescriptor {
    let (name, encoded) = path_name(path);
    let mut descriptor = sha256_descriptor(&name, digest);
    if encoded {
        let mut annotations = serde_json::Map::new();
        annotations.insert("pathEncoding".into(), json!(PERCENT_BYTES));
        descriptor.annotations = Some(annotations);
    }
    descriptor
}

/// The `rootfs:<path>` dependency of one bind as the sandbox reported it
/// (`"/usr"`, or `"/bin -> usr/bin"` for a host symlink recreated as such),
/// with the digest the daemon measured when it describes what the step saw.
fn rootfs_descriptor(bind: &str, rootfs: &RootfsFacts) -> ResourceDescriptor {
    let (path, link_target) = match bind.split_once(" -> ") {
        Some((path, target)) => (path, Some(target)),
        None => (bind, None),
    };
    let mut annotations = serde_json::Map::new();
    if let Some(target) = link_target {
        annotations.insert("symlinkTarget".into(), json!(target));
    }
    let mut descriptor = ResourceDescriptor {
        name: Some(format!("rootfs:{path}")),
        uri: Some(format!("file://{path}")),
        ..Default::default()
    };
    let mut status = rootfs.status(std::path::Path::new(path));
    // The helper resolved the bind itself when it set the sandbox up; a
    // measurement of something else (a symlink retargeted, a directory
    // replaced by a link) does not describe what the step saw.
    if let BindStatus::Hashed {
        kind,
        symlink_target,
        ..
    } = &status
    {
        let measured_target = symlink_target.as_ref().map(|t| t.display().to_string());
        if (*kind == NodeKind::Symlink) != link_target.is_some()
            || measured_target.as_deref() != link_target
        {
            status = BindStatus::ChangedDuringBuild {
                reason: format!(
                    "the sandbox bound {bind:?} but the daemon measured a {} afterwards",
                    match measured_target {
                        Some(t) => format!("symlink to {t:?}"),
                        None => kind.name().to_string(),
                    }
                ),
            };
        }
    }
    match status {
        BindStatus::Hashed {
            kind,
            digest,
            special_files,
            ..
        } => {
            annotations.insert("hashed".into(), json!(true));
            annotations.insert("kind".into(), json!(kind.name()));
            if special_files > 0 {
                annotations.insert("specialFiles".into(), json!(special_files));
            }
            if kind == NodeKind::Directory {
                descriptor.media_type = Some(TREE_MEDIA_TYPE.to_string());
            }
            descriptor.digest = BTreeMap::from([("sha256".to_string(), hex::encode(digest))]);
        }
        BindStatus::ChangedDuringBuild { reason } => {
            annotations.insert("hashed".into(), json!(false));
            annotations.insert("changedDuringBuild".into(), json!(true));
            annotations.insert("reason".into(), json!(reason));
        }
        BindStatus::NotHashed { reason } => {
            annotations.insert("hashed".into(), json!(false));
            annotations.insert("reason".into(), json!(reason));
        }
        BindStatus::FirstHashRunning => {
            annotations.insert("hashed".into(), json!(false));
            annotations.insert("reason".into(), json!(FIRST_HASH_RUNNING));
        }
    }
    descriptor.annotations = Some(annotations);
    descriptor
}

/// Builds the statement; signing is the caller's.
pub fn build_statement(facts: &BuildFacts<'_>) -> Statement {
    let (subject, provenance) = build_provenance(facts);
    Statement {
        type_: STATEMENT_TYPE_V1.to_string(),
        subject,
        predicate_type: PREDICATE_TYPE_V1.to_string(),
        predicate: provenance.to_value(),
        extra: BTreeMap::new(),
    }
}

/// The statement's subject and its SLSA provenance predicate, as types:
/// [`sign_provenance`] serializes them without a JSON value tree.
pub fn build_provenance(facts: &BuildFacts<'_>) -> (Vec<ResourceDescriptor>, Provenance) {
    let subject = facts
        .outputs
        .iter()
        .map(|(path, d)| path_descriptor(path, d))
        .collect();

    let env: serde_json::Map<String, serde_json::Value> = facts
        .env
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let requested = facts.requested_limits.cloned().unwrap_or_default();
    // `uri` and `digest` are the names slsa-verifier style checks (and our
    // verifier's --source-uri / --source-digest) read.
    let mut source_digest = serde_json::Map::new();
    let mut source = json!({
        "inputRoot": { "sha256": facts.input_root.hex(), "sizeBytes": facts.input_root.size },
    });
    if let Some(info) = facts.source {
        if !info.repository_uri.is_empty() {
            source["uri"] = json!(info.repository_uri);
        }
        if !info.commit.is_empty() {
            source_digest.insert("gitCommit".into(), json!(info.commit));
        }
        if !info.r#ref.is_empty() {
            source["ref"] = json!(info.r#ref);
        }
    }
    source_digest.insert("sha256".into(), json!(facts.input_root.hex()));
    source["digest"] = serde_json::Value::Object(source_digest);
    let mut external_parameters = json!({
        "argv": facts.argv,
        "env": env,
        "workingDirectory": facts.working_directory,
        "outputs": facts.output_paths,
        "source": source,
        "limits": {
            "timeoutMs": requested.timeout_ms,
            "memoryBytes": requested.memory_bytes,
            "pids": requested.pids,
            "maxOutputBytes": requested.max_output_bytes,
            "cpuTimeMs": requested.cpu_time_ms,
            "maxLogBytes": requested.max_log_bytes,
        },
    });
    // The client's word, under a name that says so; only when it sent
    // any, so the provenance of a client that sends none is unchanged.
    if !facts.requester_claims.is_empty() {
        external_parameters["requesterClaims"] = json!(facts.requester_claims);
    }
    let s = facts.settings;
    // Hermetic means what the step observed of itself before its exec
    // (its own netns with nothing but loopback, a seccomp filter, no
    // no_new_privs escape, no capabilities), not what the helper meant to
    // set up: `settings` is the intent, `observed` the kernel's account.
    let hermetic = facts.observed.is_some_and(Observed::hermetic);
    let mut internal_parameters = json!({
        "sandbox": {
            "namespaces": s.namespaces,
            "network": s.network,
            "uidMap": s.uid_map,
            "gidMap": s.gid_map,
            "stepUid": s.step_uid,
            "stepGid": s.step_gid,
            "noNewPrivs": s.no_new_privs,
            "hostname": s.hostname,
            "seccompProfileSha256": s.seccomp_profile_sha256,
            "cgroup": s.cgroup,
            "workLayer": s.work_layer,
            "rootfsBinds": s.rootfs_binds,
            "observed": facts.observed.map(observed_json),
            "limits": {
                "timeoutMs": s.limits.timeout_ms,
                "memoryBytes": s.limits.memory_bytes,
                "pids": s.limits.pids,
                // /tmp has no size of its own: it shares maxOutputBytes
                // with what the step adds to /build, so the sandbox's
                // tmp_bytes is not recorded.
                "maxOutputBytes": s.limits.max_output_bytes,
                "cpuTimeMs": s.limits.cpu_time_ms,
                "maxLogBytes": s.limits.max_log_bytes,
            },
        },
        "sourceDateEpoch": facts.source_date_epoch,
        // `hermetic` is about the sandbox alone. Options that weaken what
        // the provenance can be trusted for in other ways (a plaintext TCP
        // listener, through which anyone could have asked) are listed in
        // `dangerousOptions`, which `attest verify --require-hermetic`
        // requires to be empty.
        "hermetic": hermetic,
        "dangerousOptions": facts.dangerous_options,
    });
    if facts.observed.is_none() {
        // Absent as a whole, as docs/buildtype-v1.md says, not null.
        if let Some(sandbox) = internal_parameters["sandbox"].as_object_mut() {
            sandbox.remove("observed");
        }
    }
    // An internal parameter: the build platform observed it, the client
    // cannot set it (docs/buildtype-v1.md, "Requester").
    if let Some(requester) = facts.requester {
        internal_parameters[attest_provenance::requester::REQUESTER_FIELD] = requester.clone();
    }

    let mut resolved = Vec::with_capacity(facts.input_files.len() + 2);
    let mut root = sha256_descriptor("input-root", &facts.input_root);
    root.media_type = Some(DIRECTORY_MEDIA_TYPE.to_string());
    resolved.push(root);
    for bind in &s.rootfs_binds {
        resolved.push(rootfs_descriptor(bind, facts.rootfs));
    }
    for (path, digest) in facts.input_files {
        resolved.push(path_descriptor(path, digest));
    }

    let execution = json!({
        "exitCode": facts.exit_code,
        "wallMs": facts.usage.wall_ms,
        "userCpuMs": facts.usage.user_cpu_ms,
        "sysCpuMs": facts.usage.sys_cpu_ms,
        "maxRssKib": facts.usage.max_rss_kib,
    });
    let exec_rd = ResourceDescriptor {
        name: Some("execution".into()),
        media_type: Some("application/json".into()),
        annotations: execution.as_object().cloned(),
        digest: BTreeMap::from([(
            "sha256".to_string(),
            attest_tree::hash_bytes(execution.to_string().as_bytes()).hex(),
        )]),
        ..Default::default()
    };
    let stdout = log_descriptor("stdout", &facts.stdout, &facts.logs.stdout);
    let stderr = log_descriptor("stderr", &facts.stderr, &facts.logs.stderr);

    let provenance = Provenance {
        build_definition: BuildDefinition {
            build_type: BUILD_TYPE.to_string(),
            external_parameters,
            internal_parameters: Some(internal_parameters),
            resolved_dependencies: resolved,
            ..Default::default()
        },
        run_details: RunDetails {
            builder: Builder {
                id: facts.builder_id.to_string(),
                version: BTreeMap::from([(
                    "attestd".to_string(),
                    env!("CARGO_PKG_VERSION").to_string(),
                )]),
                ..Default::default()
            },
            metadata: Some(BuildMetadata {
                invocation_id: Some(facts.invocation_id.to_string()),
                started_on: Some(facts.started_on.to_string()),
                finished_on: Some(facts.finished_on.to_string()),
                ..Default::default()
            }),
            byproducts: vec![stdout, stderr, exec_rd],
            ..Default::default()
        },
        ..Default::default()
    };
    (subject, provenance)
}

/// Why the provenance or the link of a build could not be made.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BuildProvenanceError {
    #[error("signing the provenance failed")]
    SignStatement(#[source] attest_provenance::SignStatementError),
    #[error("signing the link failed")]
    SignLink(#[source] attest_provenance::link::LinkError),
    /// Two files whose link keys coincide: one named literally like the
    /// `percent-bytes` encoding of the other's non-UTF-8 name. The link has
    /// no way to tell them apart, so the build is refused.
    #[error("the {files} hold two files named {key:?} in the link: one literally, one whose path is not UTF-8 and encodes to it")]
    AmbiguousLinkKey { files: &'static str, key: String },
}

/// Builds the statement and signs it into a DSSE envelope: the same
/// statement as [`build_statement`], serialized straight from its types.
pub fn sign_provenance(
    facts: &BuildFacts<'_>,
    signers: &[&attest_provenance::keys::SigningKey],
    keyid_scheme: attest_provenance::keys::KeyIdScheme,
) -> Result<attest_provenance::dsse::Envelope, BuildProvenanceError> {
    let (subject, provenance) = build_provenance(facts);
    attest_provenance::sign_statement_of(
        &attest_provenance::StatementOf {
            type_: STATEMENT_TYPE_V1,
            subject: &subject,
            predicate_type: PREDICATE_TYPE_V1,
            predicate: &provenance,
        },
        signers,
        keyid_scheme,
    )
    .map_err(BuildProvenanceError::SignStatement)
}

/// The step name of a link when the request names none.
pub const DEFAULT_LINK_NAME: &str = "build";

/// What goes into the in-toto link of one successful step.
pub struct LinkFacts<'a> {
    pub name: &'a str,
    pub invocation_id: &'a str,
    pub argv: &'a [String],
    pub working_directory: &'a str,
    /// Each input file's path (the names' bytes, UTF-8 or not) and digest.
    pub input_files: &'a [(Vec<u8>, Digest)],
    /// Each collected output's path (bytes, UTF-8 or not) and digest.
    pub outputs: &'a [(Vec<u8>, Digest)],
    pub stdout: Digest,
    pub stderr: Digest,
    pub exit_code: i32,
}

/// The step's in-toto link: materials are every file of the input tree and
/// products every output, by path relative to the input root (the paths
/// the provenance names), with sha256. Byproducts carry the exit status and
/// the digests of the logs (their bytes are in the content store), not the
/// logs themselves. Signing is the caller's.
///
/// A material or product whose path is not UTF-8 is keyed by its
/// `percent-bytes` encoding, as in the provenance; the link has no place to
/// mark it, so a tree that also holds a file literally named that encoding
/// would give two files one key. Such a build is refused (`AmbiguousLinkKey`
/// naming the key) rather than one file silently left out.
pub fn build_link(
    facts: &LinkFacts<'_>,
) -> Result<attest_provenance::link::Link, BuildProvenanceError> {
    let hashes = |files: &[(Vec<u8>, Digest)], what: &'static str| {
        let mut hashes = BTreeMap::new();
        for (path, digest) in files {
            let (key, _) = path_name(path);
            let hash = BTreeMap::from([("sha256".to_string(), digest.hex())]);
            if hashes.insert(key.clone(), hash).is_some() {
                return Err(BuildProvenanceError::AmbiguousLinkKey { files: what, key });
            }
        }
        Ok(hashes)
    };
    let materials = hashes(facts.input_files, "inputs")?;
    let products = hashes(facts.outputs, "outputs")?;
    let object = |value: serde_json::Value| value.as_object().cloned().unwrap_or_default();
    Ok(attest_provenance::link::Link {
        name: facts.name.to_string(),
        command: facts.argv.to_vec(),
        materials,
        products,
        byproducts: object(json!({
            "return-value": facts.exit_code,
            "stdout-sha256": facts.stdout.hex(),
            "stderr-sha256": facts.stderr.hex(),
        })),
        environment: object(json!({
            "builder": "attestd",
            "invocationId": facts.invocation_id,
            "workdir": facts.working_directory,
        })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use attest_provenance::keys::{KeyAlgorithm, SigningKey};
    use attest_tree::hash_bytes;

    #[test]
    fn the_link_names_inputs_as_materials_outputs_as_products_and_verifies() {
        let input_files = vec![(b"src/hello.c".to_vec(), hash_bytes(b"int main;"))];
        let outputs = vec![(b"hello".to_vec(), hash_bytes(b"\x7fELF"))];
        let argv = vec!["cc".to_string(), "-o".into(), "hello".into()];
        let link = build_link(&LinkFacts {
            name: "compile",
            invocation_id: "inv-1",
            argv: &argv,
            working_directory: "",
            input_files: &input_files,
            outputs: &outputs,
            stdout: hash_bytes(b""),
            stderr: hash_bytes(b"warning"),
            exit_code: 0,
        })
        .unwrap();
        assert_eq!(link.name, "compile");
        assert_eq!(link.command, argv);
        assert_eq!(
            link.materials["src/hello.c"]["sha256"],
            hash_bytes(b"int main;").hex()
        );
        assert_eq!(
            link.products["hello"]["sha256"],
            hash_bytes(b"\x7fELF").hex()
        );
        assert_eq!(link.byproducts["return-value"], 0);
        assert_eq!(
            link.byproducts["stderr-sha256"],
            hash_bytes(b"warning").hex()
        );
        let key = SigningKey::generate(KeyAlgorithm::Ed25519).unwrap();
        let bytes = link.sign(&[&key]).unwrap();
        let (verified, _) =
            attest_provenance::link::verify_link(&bytes, &[key.public_key()]).unwrap();
        assert_eq!(verified, link);
    }

    #[test]
    fn a_path_that_is_not_utf8_is_named_by_its_marked_encoding_and_decodes_back() {
        let digest = hash_bytes(b"x");
        let input_files = vec![
            (b"100%.txt".to_vec(), digest),
            (b"src/caf\xe9.txt".to_vec(), digest),
        ];
        let st = statement_with_inputs(&settings(), &RootfsFacts::off(), &input_files);
        // A UTF-8 name, "%" and all, is as it was: no annotation.
        let plain = deps_named(&st, "100%.txt");
        assert!(plain.get("annotations").is_none(), "{plain}");
        let encoded = deps_named(&st, "src/caf%E9.txt");
        assert_eq!(encoded["annotations"]["pathEncoding"], "percent-bytes");
        assert_eq!(encoded["digest"]["sha256"], digest.hex());
        assert_eq!(
            attest_tree::percent_bytes_decode(encoded["name"].as_str().unwrap()).unwrap(),
            b"src/caf\xe9.txt"
        );
        attest_provenance::statement::Statement::from_json(st.to_string().as_bytes())
            .unwrap()
            .validate()
            .unwrap();

        let link_facts = |input_files| LinkFacts {
            name: "step",
            invocation_id: "inv",
            argv: &[],
            working_directory: "",
            input_files,
            outputs: &[],
            stdout: digest,
            stderr: digest,
            exit_code: 0,
        };
        let link = build_link(&link_facts(&input_files)).unwrap();
        assert_eq!(
            link.materials.keys().collect::<Vec<_>>(),
            ["100%.txt", "src/caf%E9.txt"]
        );
        // A literal "caf%E9.txt" next to the Latin-1 one would share its
        // key: refused, not one of them dropped.
        let clash = vec![
            (b"caf%E9.txt".to_vec(), digest),
            (b"caf\xe9.txt".to_vec(), hash_bytes(b"y")),
        ];
        match build_link(&link_facts(&clash)) {
            Err(error) => assert_eq!(
                error,
                BuildProvenanceError::AmbiguousLinkKey {
                    files: "inputs",
                    key: "caf%E9.txt".into()
                }
            ),
            Ok(_) => panic!("two files with one link key were not refused"),
        }
    }

    fn settings() -> Settings {
        Settings {
            namespaces: ["user", "mount", "pid", "net", "uts", "ipc", "cgroup"]
                .map(String::from)
                .to_vec(),
            uid_map: "0 100000 65536".into(),
            gid_map: "0 100000 65536".into(),
            step_uid: 1000,
            step_gid: 1000,
            seccomp_profile_sha256: "0".repeat(64),
            cgroup: "v1 (memory, pids)".into(),
            limits: attest_sandbox::Limits {
                timeout_ms: 1,
                memory_bytes: 1,
                pids: 1,
                cpu_time_ms: 1,
                max_output_bytes: 1,
                tmp_bytes: 1,
                max_log_bytes: 1,
            },
            network: "none (loopback only)".into(),
            hostname: "attestd".into(),
            rootfs_binds: vec!["/usr".into(), "/bin -> usr/bin".into()],
            work_layer: "copy on tmpfs".into(),
            no_new_privs: true,
        }
    }

    #[test]
    fn the_signed_payload_is_the_statement_built_as_a_value() {
        let settings = settings();
        let rootfs = RootfsFacts::default();
        let digest = hash_bytes(b"x");
        let inputs = [(b"a.c".to_vec(), digest), (b"caf\xe9.c".to_vec(), digest)];
        let argv = ["cc".to_string()];
        let output_paths = ["out".to_string()];
        let outputs = [(b"out".to_vec(), digest)];
        let usage = Usage::default();
        let requester =
            json!({"transport": "unix", "uid": 1000, "gid": 1000, "pid": 7, "user": null});
        let dangerous = ["--dangerously-allow-plaintext-tcp".to_string()];
        let claims = BTreeMap::from([(
            "ciJobUrl".to_string(),
            "https://ci.example.org/j/1".to_string(),
        )]);
        let facts = BuildFacts {
            invocation_id: "inv",
            builder_id: "urn:attestd:host:test",
            argv: &argv,
            env: &[],
            working_directory: "",
            output_paths: &output_paths,
            requested_limits: None,
            source: None,
            input_root: digest,
            input_files: &inputs,
            settings: &settings,
            observed: None,
            rootfs: &rootfs,
            source_date_epoch: 0,
            outputs: &outputs,
            stdout: digest,
            stderr: digest,
            exit_code: 0,
            usage: &usage,
            started_on: "2026-01-01T00:00:00Z",
            finished_on: "2026-01-01T00:00:01Z",
            logs: Logs::default(),
            requester: Some(&requester),
            dangerous_options: &dangerous,
            requester_claims: &claims,
        };
        let key = attest_provenance::keys::SigningKey::generate(
            attest_provenance::keys::KeyAlgorithm::Ed25519,
        )
        .unwrap();
        let envelope = sign_provenance(
            &facts,
            &[&key],
            attest_provenance::keys::KeyIdScheme::default(),
        )
        .unwrap();
        let signed: serde_json::Value = serde_json::from_slice(&envelope.payload).unwrap();
        assert_eq!(
            signed,
            serde_json::to_value(build_statement(&facts)).unwrap()
        );
        let internal = &signed["predicate"]["buildDefinition"]["internalParameters"];
        assert_eq!(internal["requester"], requester);
        assert_eq!(internal["dangerousOptions"], json!(dangerous));
        assert_eq!(
            signed["predicate"]["buildDefinition"]["externalParameters"]["requesterClaims"],
            json!({"ciJobUrl": "https://ci.example.org/j/1"})
        );
        assert!(internal.get("requesterClaims").is_none());
        let names: Vec<&str> = signed["predicate"]["buildDefinition"]["resolvedDependencies"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|d| d["name"].as_str())
            .collect();
        assert!(
            names.contains(&"a.c") && names.contains(&"caf%E9.c"),
            "{names:?}"
        );
    }

    fn statement_with(settings: &Settings) -> serde_json::Value {
        statement_with_rootfs(settings, &RootfsFacts::off())
    }

    fn statement_with_rootfs(settings: &Settings, rootfs: &RootfsFacts) -> serde_json::Value {
        let digest = attest_tree::hash_bytes(b"x");
        statement_with_inputs(settings, rootfs, &[(b"a.c".to_vec(), digest)])
    }

    fn statement_with_inputs(
        settings: &Settings,
        rootfs: &RootfsFacts,
        input_files: &[(Vec<u8>, Digest)],
    ) -> serde_json::Value {
        statement_observing(settings, rootfs, input_files, Some(&sealed()))
    }

    /// What a sealed step sees of itself.
    fn sealed() -> Observed {
        Observed {
            no_new_privs: Some(1),
            seccomp_mode: Some(2),
            seccomp_filters: Some(3),
            cap_eff: Some(0),
            cap_prm: Some(0),
            cap_inh: Some(0),
            cap_bnd: Some(0),
            cap_amb: Some(0),
            interfaces: Some(vec!["lo".into()]),
            namespaces: vec![attest_sandbox::ObservedNamespace {
                name: "net".into(),
                step_inode: Some(4026532000),
                helper_inode: Some(4026531992),
            }],
        }
    }

    fn hermetic_of(observed: Option<&Observed>) -> serde_json::Value {
        let digest = attest_tree::hash_bytes(b"x");
        statement_observing(
            &settings(),
            &RootfsFacts::off(),
            &[(b"a.c".to_vec(), digest)],
            observed,
        )["predicate"]["buildDefinition"]["internalParameters"]["hermetic"]
            .clone()
    }

    fn statement_observing(
        settings: &Settings,
        rootfs: &RootfsFacts,
        input_files: &[(Vec<u8>, Digest)],
        observed: Option<&Observed>,
    ) -> serde_json::Value {
        let digest = attest_tree::hash_bytes(b"x");
        let statement = build_statement(&BuildFacts {
            invocation_id: "inv",
            builder_id: "urn:attestd:host:test",
            argv: &["true".into()],
            env: &[],
            working_directory: "",
            output_paths: &["out".into()],
            requested_limits: None,
            source: None,
            input_root: digest,
            input_files,
            settings,
            observed,
            rootfs,
            source_date_epoch: 0,
            outputs: &[(b"out".to_vec(), digest)],
            stdout: digest,
            stderr: digest,
            exit_code: 0,
            usage: &Usage::default(),
            started_on: "2026-01-01T00:00:00Z",
            finished_on: "2026-01-01T00:00:01Z",
            logs: Logs::default(),
            requester: None,
            dangerous_options: &[],
            requester_claims: &BTreeMap::new(),
        });
        serde_json::to_value(&statement).unwrap()
    }

    #[test]
    fn a_log_cut_to_its_cap_is_annotated_and_both_limits_record_the_cap() {
        let digest = hash_bytes(b"x");
        let mut settings = settings();
        settings.limits.max_log_bytes = 1 << 20;
        let asked = attest_proto::v1::Limits {
            max_log_bytes: 1 << 20,
            ..Default::default()
        };
        let usage = Usage::default();
        let rootfs = RootfsFacts::off();
        let outputs = [(b"out".to_vec(), digest)];
        let statement = build_statement(&BuildFacts {
            invocation_id: "inv",
            builder_id: "urn:attestd:host:test",
            argv: &["true".into()],
            env: &[],
            working_directory: "",
            output_paths: &["out".into()],
            requested_limits: Some(&asked),
            source: None,
            input_root: digest,
            input_files: &[],
            settings: &settings,
            observed: None,
            rootfs: &rootfs,
            source_date_epoch: 0,
            outputs: &outputs,
            stdout: digest,
            stderr: digest,
            exit_code: 0,
            usage: &usage,
            started_on: "2026-01-01T00:00:00Z",
            finished_on: "2026-01-01T00:00:01Z",
            logs: Logs {
                stdout: LogCapture {
                    step_bytes: 20 << 20,
                    dropped_bytes: (20 << 20) - (1 << 20),
                    head_bytes: 1 << 19,
                },
                stderr: LogCapture {
                    step_bytes: 10,
                    dropped_bytes: 0,
                    head_bytes: 10,
                },
            },
            requester: None,
            dangerous_options: &[],
            requester_claims: &BTreeMap::new(),
        });
        let st = serde_json::to_value(&statement).unwrap();
        let definition = &st["predicate"]["buildDefinition"];
        assert_eq!(
            definition["externalParameters"]["limits"]["maxLogBytes"],
            1 << 20
        );
        let in_force = &definition["internalParameters"]["sandbox"]["limits"];
        assert_eq!(in_force["maxLogBytes"], 1 << 20);
        assert!(in_force.get("tmpBytes").is_none(), "{in_force}");
        let byproducts = st["predicate"]["runDetails"]["byproducts"]
            .as_array()
            .unwrap();
        assert_eq!(byproducts[0]["name"], "stdout");
        assert_eq!(
            byproducts[0]["annotations"],
            json!({
                "truncated": true,
                "stepBytes": 20 << 20,
                "droppedBytes": (20 << 20) - (1 << 20),
                "headBytes": 1 << 19,
            })
        );
        // A log handed on whole carries no annotation at all.
        assert_eq!(byproducts[1]["name"], "stderr");
        assert!(
            byproducts[1].get("annotations").is_none(),
            "{}",
            byproducts[1]
        );
    }

    #[test]
    fn hermetic_follows_what_the_step_observed_not_the_settings() {
        assert_eq!(hermetic_of(Some(&sealed())), true);
        // The helper's intent alone proves nothing: no observation, no
        // hermetic, whatever the settings say.
        assert_eq!(hermetic_of(None), false);
        type Break = fn(&mut Observed);
        let breaks: [(&str, Break); 6] = [
            ("an interface besides lo", |o| {
                o.interfaces = Some(vec!["lo".into(), "eth0".into()])
            }),
            ("no seccomp filter", |o| o.seccomp_mode = Some(0)),
            ("no_new_privs unset", |o| o.no_new_privs = Some(0)),
            ("an effective capability", |o| o.cap_eff = Some(1 << 21)),
            ("the helper's own netns", |o| {
                o.namespaces[0].step_inode = o.namespaces[0].helper_inode
            }),
            ("interfaces unread", |o| o.interfaces = None),
        ];
        for (what, brk) in breaks {
            let mut observed = sealed();
            brk(&mut observed);
            assert_eq!(hermetic_of(Some(&observed)), false, "{what}");
        }
    }

    #[test]
    fn what_the_step_observed_is_recorded_and_absent_when_it_did_not_look() {
        let digest = attest_tree::hash_bytes(b"x");
        let inputs = [(b"a.c".to_vec(), digest)];
        let with = statement_observing(&settings(), &RootfsFacts::off(), &inputs, Some(&sealed()));
        let observed =
            &with["predicate"]["buildDefinition"]["internalParameters"]["sandbox"]["observed"];
        assert_eq!(observed["seccompMode"], 2);
        assert_eq!(observed["noNewPrivs"], 1);
        assert_eq!(observed["interfaces"], json!(["lo"]));
        assert_eq!(observed["namespaces"][0]["stepInode"], 4026532000u64);
        let without = statement_observing(&settings(), &RootfsFacts::off(), &inputs, None);
        assert!(
            without["predicate"]["buildDefinition"]["internalParameters"]["sandbox"]
                .get("observed")
                .is_none()
        );
    }

    #[test]
    fn rootfs_links_become_uris_with_their_target_annotated() {
        let st = statement_with(&settings());
        let deps = st["predicate"]["buildDefinition"]["resolvedDependencies"]
            .as_array()
            .unwrap();
        let bin = deps.iter().find(|d| d["name"] == "rootfs:/bin").unwrap();
        assert_eq!(bin["uri"], "file:///bin");
        assert_eq!(bin["annotations"]["symlinkTarget"], "usr/bin");
        assert_eq!(bin["annotations"]["hashed"], false);
        let statement =
            attest_provenance::statement::Statement::from_json(st.to_string().as_bytes()).unwrap();
        statement.validate().unwrap();
        assert!(bin["annotations"]["reason"]
            .as_str()
            .unwrap()
            .contains("--rootfs-hashing off"));
    }

    fn deps_named(st: &serde_json::Value, name: &str) -> serde_json::Value {
        st["predicate"]["buildDefinition"]["resolvedDependencies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == name)
            .unwrap_or_else(|| panic!("no {name}"))
            .clone()
    }

    #[test]
    fn measured_rootfs_binds_carry_their_digest_and_changes_withhold_it() {
        let usr = [1u8; 32];
        let facts = RootfsFacts::from_binds(vec![
            (
                "/usr".into(),
                BindStatus::Hashed {
                    kind: NodeKind::Directory,
                    digest: usr,
                    symlink_target: None,
                    special_files: 0,
                },
            ),
            (
                "/bin".into(),
                BindStatus::Hashed {
                    kind: NodeKind::Symlink,
                    digest: hash_bytes(b"usr/bin").hash,
                    symlink_target: Some("usr/bin".into()),
                    special_files: 0,
                },
            ),
        ]);
        let st = statement_with_rootfs(&settings(), &facts);
        let usr_dep = deps_named(&st, "rootfs:/usr");
        assert_eq!(usr_dep["digest"]["sha256"], hex::encode(usr));
        assert_eq!(usr_dep["mediaType"], TREE_MEDIA_TYPE);
        assert_eq!(usr_dep["annotations"]["hashed"], true);
        assert_eq!(usr_dep["annotations"]["kind"], "directory");
        let bin = deps_named(&st, "rootfs:/bin");
        assert_eq!(bin["digest"]["sha256"], hash_bytes(b"usr/bin").hex());
        assert_eq!(bin["annotations"]["symlinkTarget"], "usr/bin");
        assert!(bin.get("mediaType").is_none());
        attest_provenance::statement::Statement::from_json(st.to_string().as_bytes())
            .unwrap()
            .validate()
            .unwrap();

        // The sandbox bound /bin -> usr/bin, the daemon then found another
        // target: no digest.
        let retargeted = RootfsFacts::from_binds(vec![(
            "/bin".into(),
            BindStatus::Hashed {
                kind: NodeKind::Symlink,
                digest: hash_bytes(b"elsewhere").hash,
                symlink_target: Some("elsewhere".into()),
                special_files: 0,
            },
        )]);
        let bin = deps_named(
            &statement_with_rootfs(&settings(), &retargeted),
            "rootfs:/bin",
        );
        assert!(bin.get("digest").is_none() || bin["digest"].as_object().unwrap().is_empty());
        assert_eq!(bin["annotations"]["hashed"], false);
        assert_eq!(bin["annotations"]["changedDuringBuild"], true);

        let changed = RootfsFacts::from_binds(vec![(
            "/usr".into(),
            BindStatus::ChangedDuringBuild {
                reason: "/usr/bin/cc changed".into(),
            },
        )]);
        let usr_dep = deps_named(&statement_with_rootfs(&settings(), &changed), "rootfs:/usr");
        assert_eq!(usr_dep["annotations"]["hashed"], false);
        assert_eq!(usr_dep["annotations"]["changedDuringBuild"], true);
        assert_eq!(usr_dep["annotations"]["reason"], "/usr/bin/cc changed");
        // A bind the daemon did not measure is named, unhashed.
        let bin = deps_named(&statement_with_rootfs(&settings(), &changed), "rootfs:/bin");
        assert_eq!(bin["annotations"]["hashed"], false);

        // A build that ended before the daemon's first hash: no digest, and
        // why, but nothing changed either.
        let early = RootfsFacts::from_binds(vec![("/usr".into(), BindStatus::FirstHashRunning)]);
        let usr_dep = deps_named(&statement_with_rootfs(&settings(), &early), "rootfs:/usr");
        assert_eq!(usr_dep["annotations"]["hashed"], false);
        assert_eq!(usr_dep["annotations"]["reason"], FIRST_HASH_RUNNING);
        assert!(usr_dep["annotations"].get("changedDuringBuild").is_none());
        assert!(usr_dep
            .get("digest")
            .is_none_or(|d| d.as_object().unwrap().is_empty()));
    }
}
