//! `attest rebuild`: run an attested build again from its provenance, say
//! what differs, and have the rebuilding daemon sign the verdict
//! (docs/reproducibility.md).
//!
//! In order, each failing closed before anything later happens:
//! 1. verify the provenance (signature by a trusted key, types), unless
//!    `--dangerously-skip-verify`, which the verdict then records;
//! 2. read the recorded request (argv, env, working directory, outputs,
//!    source, limits, SOURCE_DATE_EPOCH) from `externalParameters`;
//! 3. gather the input tree by digest: `--src DIR` hashed exactly as
//!    `attest run` hashes it and compared with the recorded input root, or
//!    the daemon's store; anything missing or different is named and
//!    nothing runs;
//! 4. with `--require-same-rootfs`, compare this host's rootfs digests
//!    with the recorded ones and refuse on any difference;
//! 5. run the step through the ordinary Build RPC (the daemon keeps no
//!    cache of results: every Execute runs the step in a fresh sandbox);
//! 6. ask the daemon to compare its own provenance of the rebuild with the
//!    original and sign the verdict; check that signature;
//! 7. report the rootfs bind by bind, then the products, sizes and, with
//!    `--diffoscope`, diffoscope's summary of each differing file.

use crate::client::{BlobSource, Client};
use crate::error::ClientError;
use attest_proto::v1::{
    attestations_client::AttestationsClient, build_event::Event,
    content_store_client::ContentStoreClient, BuildDone, BuildRequest, Directory,
    DownloadBlobRequest, EnvVar, GetHostRootfsRequest, Limits, SignReproducibilityRequest,
    SourceInfo,
};
use attest_provenance::dsse::Envelope;
use attest_provenance::keys::PublicKey;
use attest_provenance::reproducibility::{
    ProductResult, Reproducibility, RootfsResult, PREDICATE_TYPE, REBUILDABLE_BUILD_TYPE,
};
use attest_provenance::slsa::Provenance;
use attest_provenance::statement::Statement;
use attest_provenance::verify::{verify_envelope, Artifact, Expectations, VerifyError};
use attest_tree::Digest;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use tokio_stream::StreamExt;

/// Exit status: at least one product differs, is missing or is extra.
pub const EXIT_NOT_REPRODUCIBLE: i32 = 30;
/// Exit status: the materials could not be gathered (a `--src` that is not
/// the recorded tree, blobs the daemon's store lacks); nothing ran.
pub const EXIT_MATERIALS: i32 = 31;
/// Exit status: `--require-same-rootfs` and this host's rootfs differs (or
/// cannot be compared); nothing ran.
pub const EXIT_ROOTFS_DIFFERS: i32 = 32;
/// Exit status: the rebuild's step did not succeed, so there are no
/// products and no verdict.
pub const EXIT_REBUILD_FAILED: i32 = 33;
/// Exit status: the provenance cannot be rebuilt (another build type, or
/// parameters this client cannot turn back into a request).
pub const EXIT_NOT_REBUILDABLE: i32 = 34;

/// Exit status of `attest verify --require-reproduced-by` when an artifact
/// lacks enough matching verdicts (every other check having passed).
pub const EXIT_NOT_REPRODUCED_BY: i32 = 25;

/// Why `attest verify --require-reproduced-by` refused.
#[derive(Debug, thiserror::Error)]
pub enum ReproducedByCheckError {
    #[error(transparent)]
    Input(#[from] ClientError),
    #[error("artifact {name}: only a sha512 is known; verdicts name products by sha256")]
    NoSha256 { name: String },
    #[error("artifact {name}")]
    NotReproduced {
        name: String,
        #[source]
        source: attest_provenance::reproducibility::ReproducedByError,
    },
}

impl ReproducedByCheckError {
    /// [`crate::verify::EXIT_BAD_INPUT`] for unreadable input, else
    /// [`EXIT_NOT_REPRODUCED_BY`].
    pub fn exit_code(&self) -> i32 {
        match self {
            ReproducedByCheckError::Input(_) => crate::verify::EXIT_BAD_INPUT,
            _ => EXIT_NOT_REPRODUCED_BY,
        }
    }
}

/// `attest verify --require-reproduced-by`: each artifact needs verdicts
/// from `min` distinct keys among `key_files`. Returns, per artifact, the
/// keyids that vouched.
pub fn check_reproduced_by(
    verdict_files: &[PathBuf],
    key_files: &[PathBuf],
    artifacts: &[Artifact],
    min: usize,
) -> Result<Vec<(String, Vec<String>)>, ReproducedByCheckError> {
    let keys = crate::verify::read_keys(key_files)?;
    let mut verdicts = Vec::new();
    for path in verdict_files {
        verdicts.extend(crate::verify::read_provenance(path)?);
    }
    let mut vouched = Vec::new();
    for artifact in artifacts {
        if artifact.sha256.is_empty() {
            return Err(ReproducedByCheckError::NoSha256 {
                name: artifact.name.clone(),
            });
        }
        let keyids = attest_provenance::reproducibility::reproduced_by(
            &verdicts,
            &keys,
            &artifact.sha256,
            min,
            attest_provenance::keys::KeyIdScheme::Securesystemslib,
        )
        .map_err(|source| ReproducedByCheckError::NotReproduced {
            name: artifact.name.clone(),
            source,
        })?;
        vouched.push((artifact.name.clone(), keyids));
    }
    Ok(vouched)
}

/// What to rebuild and how.
#[derive(Debug, Clone, Default)]
pub struct RebuildOptions {
    /// The provenance file (`.intoto.jsonl`, a DSSE envelope, a bundle).
    pub provenance: PathBuf,
    /// Trusted keys for the provenance (empty only with skip_verify).
    pub keys: Vec<PublicKey>,
    /// Distinct trusted signatures required, as `attest verify`.
    pub min_signatures: usize,
    /// Skip step 1; recorded in the verdict.
    pub dangerously_skip_verify: bool,
    /// The source tree; None: the daemon's store must hold the input root.
    pub src: Option<PathBuf>,
    /// Refuse to run on a host whose rootfs differs from the recorded one.
    pub require_same_rootfs: bool,
    /// Run diffoscope on each differing product.
    pub diffoscope: bool,
    /// Where the original products are, at their subject paths (for
    /// diffoscope and sizes); each used only if it matches its subject.
    pub original_dir: PathBuf,
    /// Where the rebuilt products are written.
    pub out_dir: PathBuf,
    /// Where the signed verdict is written.
    pub verdict: Option<PathBuf>,
}

/// Why a rebuild stopped before it had a verdict.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("the provenance does not verify (step {}, {})", .source.step(), .source.check())]
    NotVerified {
        #[source]
        source: VerifyError,
    },
    #[error("the provenance cannot be rebuilt: {reason}")]
    NotRebuildable { reason: String },
    #[error("the materials are not the recorded ones; nothing ran:\n{}", .problems.join("\n"))]
    Materials { problems: Vec<String> },
    #[error("--require-same-rootfs: this host's rootfs is not the recorded one; nothing ran:\n{}", .problems.join("\n"))]
    RootfsDiffers { problems: Vec<String> },
    #[error("the rebuild failed: {message} (invocation {invocation_id})")]
    RebuildFailed {
        invocation_id: String,
        message: String,
    },
    #[error("the daemon's verdict is not what it should be: {reason}")]
    BadVerdict { reason: String },
}

impl RebuildError {
    /// The exit status `attest rebuild` uses for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            RebuildError::Client(ClientError::Io { .. }) => crate::verify::EXIT_BAD_INPUT,
            RebuildError::Client(e) => e.run_exit_code(),
            RebuildError::NotVerified { source } => source.exit_code(),
            RebuildError::NotRebuildable { .. } => EXIT_NOT_REBUILDABLE,
            RebuildError::Materials { .. } => EXIT_MATERIALS,
            RebuildError::RootfsDiffers { .. } => EXIT_ROOTFS_DIFFERS,
            RebuildError::RebuildFailed { .. } => EXIT_REBUILD_FAILED,
            RebuildError::BadVerdict { .. } => crate::error::EXIT_DAEMON_FAILED,
        }
    }
}

/// The request a provenance records, ready to send again.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    pub request: BuildRequest,
    /// The recorded per-file materials: path -> sha256.
    pub files: BTreeMap<String, String>,
    /// The recorded `rootfs:` dependencies: name -> sha256 when hashed.
    pub rootfs: Vec<(String, Option<String>)>,
}

fn not_rebuildable(reason: impl Into<String>) -> RebuildError {
    RebuildError::NotRebuildable {
        reason: reason.into(),
    }
}

/// Reads the request back from a statement of our build type.
pub fn recorded_request(statement: &Statement) -> Result<RecordedRequest, RebuildError> {
    let p = Provenance::from_value(&statement.predicate)
        .map_err(|e| not_rebuildable(format!("the predicate: {e}")))?;
    let def = &p.build_definition;
    if def.build_type != REBUILDABLE_BUILD_TYPE {
        return Err(not_rebuildable(format!(
            "build type {:?}, not {REBUILDABLE_BUILD_TYPE}",
            def.build_type
        )));
    }
    let ext = &def.external_parameters;
    let field = |name: &str| {
        ext.get(name)
            .ok_or_else(|| not_rebuildable(format!("externalParameters.{name} is missing")))
    };
    let strings = |v: &Value, name: &str| -> Result<Vec<String>, RebuildError> {
        v.as_array()
            .and_then(|a| {
                a.iter()
                    .map(|s| s.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| {
                not_rebuildable(format!(
                    "externalParameters.{name} is not a list of strings"
                ))
            })
    };
    let argv = strings(field("argv")?, "argv")?;
    let outputs = strings(field("outputs")?, "outputs")?;
    let env = field("env")?
        .as_object()
        .ok_or_else(|| not_rebuildable("externalParameters.env is not an object"))?
        .iter()
        .map(|(k, v)| {
            v.as_str()
                .map(|v| EnvVar {
                    name: k.clone(),
                    value: v.to_string(),
                })
                .ok_or_else(|| not_rebuildable(format!("env {k:?} is not a string")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let working_directory = field("workingDirectory")?
        .as_str()
        .ok_or_else(|| not_rebuildable("externalParameters.workingDirectory is not a string"))?
        .to_string();
    let source = field("source")?;
    let root_hex = source
        .pointer("/inputRoot/sha256")
        .and_then(Value::as_str)
        .ok_or_else(|| not_rebuildable("source.inputRoot.sha256 is missing"))?;
    let root_size = source
        .pointer("/inputRoot/sizeBytes")
        .and_then(Value::as_u64)
        .ok_or_else(|| not_rebuildable("source.inputRoot.sizeBytes is missing"))?;
    let input_root = Digest::from_hex(root_hex, root_size)
        .map_err(|e| not_rebuildable(format!("source.inputRoot: {e}")))?;
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
    let info = SourceInfo {
        repository_uri: text(source.get("uri")),
        commit: text(source.pointer("/digest/gitCommit")),
        r#ref: text(source.get("ref")),
    };
    let limits = field("limits")?;
    let limit = |name: &str| {
        limits
            .get(name)
            .and_then(Value::as_u64)
            .ok_or_else(|| not_rebuildable(format!("limits.{name} is missing")))
    };
    let limits = Limits {
        timeout_ms: limit("timeoutMs")?,
        memory_bytes: limit("memoryBytes")?,
        pids: limit("pids")?,
        max_output_bytes: limit("maxOutputBytes")?,
        cpu_time_ms: limit("cpuTimeMs")?,
        // Recorded since the log cap exists; absent means the default.
        max_log_bytes: limits
            .get("maxLogBytes")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    };
    let source_date_epoch = def
        .internal_parameters
        .as_ref()
        .and_then(|i| i.get("sourceDateEpoch"))
        .and_then(Value::as_u64)
        .ok_or_else(|| not_rebuildable("internalParameters.sourceDateEpoch is missing"))?;
    let mut files = BTreeMap::new();
    let mut rootfs = Vec::new();
    for d in &def.resolved_dependencies {
        let Some(name) = &d.name else { continue };
        if name.starts_with("rootfs:") {
            rootfs.push((name.clone(), d.sha256().map(str::to_string)));
        } else if name != "input-root" {
            if let Some(sha) = d.sha256() {
                files.insert(name.clone(), sha.to_string());
            }
        }
    }
    let has_source =
        !info.repository_uri.is_empty() || !info.commit.is_empty() || !info.r#ref.is_empty();
    Ok(RecordedRequest {
        request: BuildRequest {
            input_root: Some(input_root.to_proto()),
            argv,
            env,
            working_directory,
            output_paths: outputs,
            limits: Some(limits),
            source: has_source.then_some(info),
            source_date_epoch,
            emit_link: false,
            link_name: String::new(),
            // Claims are the client's word about who asked, not part of
            // the build; the rebuild makes none.
            requester_claims: Default::default(),
        },
        files,
        rootfs,
    })
}

/// Step 1: the first envelope that verifies, checked against its own
/// subjects (so the artifact step passes exactly when the subjects are
/// well-formed) and every other check of `attest verify`.
pub fn verified_envelope(
    envelopes: &[Envelope],
    keys: &[PublicKey],
    min_signatures: usize,
) -> Result<(Envelope, Statement), RebuildError> {
    let expect = Expectations {
        min_signatures,
        ..Expectations::default()
    };
    let mut last = VerifyError::NoEnvelopes;
    for envelope in envelopes {
        let artifacts: Vec<Artifact> = Statement::from_json(&envelope.payload)
            .map(|s| {
                s.subject
                    .iter()
                    .filter_map(|d| d.sha256())
                    .map(|sha| Artifact {
                        name: format!("sha256:{sha}"),
                        sha256: sha.to_string(),
                        sha512: None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        match verify_envelope(
            envelope,
            keys,
            &artifacts,
            &expect,
            std::time::SystemTime::now(),
        ) {
            Ok(v) => return Ok((envelope.clone(), v.statement)),
            Err(e) => last = e,
        }
    }
    Err(RebuildError::NotVerified { source: last })
}

/// The per-file differences between the recorded materials and a tree.
pub fn material_differences(
    recorded: &BTreeMap<String, String>,
    found: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (path, sha) in recorded {
        match found.get(path) {
            None => problems.push(format!("missing: {path} (recorded sha256:{sha})")),
            Some(here) if here != sha => problems.push(format!(
                "differs: {path} (recorded sha256:{sha}, found sha256:{here})"
            )),
            Some(_) => {}
        }
    }
    for (path, sha) in found {
        if !recorded.contains_key(path) {
            problems.push(format!(
                "extra: {path} (sha256:{sha}, not in the recorded tree)"
            ));
        }
    }
    problems
}

fn tree_name(relative: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let bytes = relative.as_os_str().as_bytes();
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => attest_tree::percent_bytes_encode(bytes),
    }
}

/// Step 3 with `--src`: hash the tree (no digest cache: a stale entry must
/// not hide an edit), compare with the recorded root, upload what the
/// daemon lacks.
async fn gather_from_src(
    client: &Client,
    src: &Path,
    recorded: &RecordedRequest,
    root: &Digest,
) -> Result<(), RebuildError> {
    if !src.is_dir() {
        return Err(
            ClientError::Invalid(format!("--src {} is not a directory", src.display())).into(),
        );
    }
    let dir = src.to_path_buf();
    let tree = tokio::task::spawn_blocking(move || attest_tree::build_tree(&dir, None, &|_| {}))
        .await
        .map_err(|e| ClientError::Protocol(format!("hashing task failed: {e}")))?
        .map_err(ClientError::from)?;
    if tree.root != *root {
        let found: BTreeMap<String, String> = tree
            .files
            .iter()
            .map(|f| (tree_name(&f.relative), f.digest.hex()))
            .collect();
        let mut problems = material_differences(&recorded.files, &found);
        problems.insert(
            0,
            format!(
                "--src {} hashes to input root {}, the provenance records {}",
                src.display(),
                tree.root,
                root
            ),
        );
        if problems.len() == 1 {
            problems.push(
                "every file's contents match: an executable bit, a symlink or an empty directory differs"
                    .into(),
            );
        }
        return Err(RebuildError::Materials { problems });
    }
    let missing: HashSet<Digest> = client
        .find_missing(&tree.blob_digests())
        .await?
        .into_iter()
        .collect();
    let mut upload: Vec<(Digest, BlobSource)> = Vec::new();
    let mut queued = HashSet::new();
    for (digest, bytes) in &tree.directories {
        if missing.contains(digest) && queued.insert(*digest) {
            upload.push((*digest, BlobSource::Bytes(bytes.clone())));
        }
    }
    for file in &tree.files {
        if missing.contains(&file.digest) && queued.insert(file.digest) {
            upload.push((file.digest, BlobSource::File(file.path.clone())));
        }
    }
    client.upload(upload, |_| {}).await?;
    Ok(())
}

/// Reads one blob whole (Directory messages only: small).
async fn read_blob(client: &Client, digest: &Digest) -> Result<Vec<u8>, ClientError> {
    let mut stream = ContentStoreClient::new(client.channel())
        .download_blob(DownloadBlobRequest {
            digest: Some(digest.to_proto()),
        })
        .await?
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk?.data);
        if bytes.len() as u64 > digest.size {
            break;
        }
    }
    if attest_tree::hash_bytes(&bytes) != *digest {
        return Err(ClientError::Protocol(format!(
            "blob {digest} does not match its digest"
        )));
    }
    Ok(bytes)
}

/// Step 3 from the daemon's store: complete, or the list of what is not
/// there (directories that cannot be read, files whose blobs are missing).
async fn gather_from_store(client: &Client, root: &Digest) -> Result<(), RebuildError> {
    if client.tree_complete(root).await? {
        return Ok(());
    }
    let mut problems = vec![format!(
        "the daemon's store does not hold the whole input root {root}; pass --src DIR with the sources"
    )];
    // Walk what is there to name what is not.
    let mut dirs = vec![(String::new(), *root)];
    let mut files: Vec<(String, Digest)> = Vec::new();
    while let Some((path, digest)) = dirs.pop() {
        if !client.find_missing(&[digest]).await?.is_empty() {
            problems.push(format!(
                "missing: directory {} ({digest}), and everything under it",
                if path.is_empty() { "/" } else { &path }
            ));
            continue;
        }
        let bytes = read_blob(client, &digest).await?;
        let directory: Directory = prost::Message::decode(bytes.as_slice())
            .map_err(|e| ClientError::Protocol(format!("directory {digest}: {e}")))?;
        let join = |name: &str, raw: &[u8]| {
            let name = if raw.is_empty() {
                name.to_string()
            } else {
                attest_tree::percent_bytes_encode(raw)
            };
            if path.is_empty() {
                name
            } else {
                format!("{path}/{name}")
            }
        };
        for f in &directory.files {
            if let Some(d) = &f.digest {
                let d = Digest::from_proto(d).map_err(|e| ClientError::Protocol(e.to_string()))?;
                files.push((join(&f.name, &f.raw_name), d));
            }
        }
        for d in &directory.directories {
            if let Some(digest) = &d.digest {
                let digest =
                    Digest::from_proto(digest).map_err(|e| ClientError::Protocol(e.to_string()))?;
                dirs.push((join(&d.name, &d.raw_name), digest));
            }
        }
    }
    let digests: Vec<Digest> = files.iter().map(|(_, d)| *d).collect();
    let missing: HashSet<Digest> = client.find_missing(&digests).await?.into_iter().collect();
    for (path, d) in &files {
        if missing.contains(d) {
            problems.push(format!("missing: {path} ({d})"));
        }
    }
    Err(RebuildError::Materials { problems })
}

/// Step 4: this host's rootfs against the recorded one, bind by bind.
/// Empty when they are the same.
async fn host_rootfs_differences(
    client: &Client,
    recorded: &[(String, Option<String>)],
) -> Result<Vec<String>, RebuildError> {
    let host = AttestationsClient::new(client.channel())
        .get_host_rootfs(GetHostRootfsRequest {})
        .await
        .map_err(ClientError::from)?
        .into_inner();
    if !host.hashing_on {
        return Ok(vec![
            "this daemon runs with --rootfs-hashing off: its rootfs cannot be compared".into(),
        ]);
    }
    let here: BTreeMap<&str, &attest_proto::v1::RootfsBind> =
        host.binds.iter().map(|b| (b.name.as_str(), b)).collect();
    let mut problems = Vec::new();
    if recorded.is_empty() {
        problems.push("the provenance records no rootfs".into());
    }
    for (name, digest) in recorded {
        match (digest, here.get(name.as_str())) {
            (_, None) => problems.push(format!("{name}: not bound on this host")),
            (None, _) => problems.push(format!("{name}: the provenance records no digest")),
            (Some(_), Some(b)) if b.sha256.is_empty() => {
                problems.push(format!("{name}: not hashed here ({})", b.reason))
            }
            (Some(a), Some(b)) if *a != b.sha256 => problems.push(format!(
                "{name}: differs (recorded sha256:{a}, here sha256:{})",
                b.sha256
            )),
            _ => {}
        }
    }
    let names: BTreeSet<&str> = recorded.iter().map(|(n, _)| n.as_str()).collect();
    for b in &host.binds {
        if !names.contains(b.name.as_str()) {
            problems.push(format!("{}: bound here, not in the provenance", b.name));
        }
    }
    Ok(problems)
}

/// One product in the report: the verdict's row, plus what the client
/// found locally.
#[derive(Debug, Clone, PartialEq)]
pub struct ProductReport {
    pub name: String,
    pub result: ProductResult,
    pub original_sha256: Option<String>,
    pub rebuilt_sha256: Option<String>,
    /// The original's size, when its bytes were found (`original_dir`).
    pub original_size: Option<u64>,
    pub rebuilt_size: Option<u64>,
    /// diffoscope's output, or why it did not run.
    pub diffoscope: Option<String>,
}

/// What `attest rebuild` found.
#[derive(Debug, Clone, PartialEq)]
pub struct RebuildReport {
    pub verdict: Reproducibility,
    pub verdict_path: PathBuf,
    pub products: Vec<ProductReport>,
    pub step_output: Vec<u8>,
}

impl RebuildReport {
    /// Exit 0 only when every product is bit-identical.
    pub fn exit_code(&self) -> i32 {
        if self.verdict.result == attest_provenance::reproducibility::REPRODUCIBLE {
            0
        } else {
            EXIT_NOT_REPRODUCIBLE
        }
    }

    /// The machine-readable report.
    pub fn to_json(&self) -> Value {
        let v = &self.verdict;
        json!({
            "reproducible": self.exit_code() == 0,
            "exitCode": self.exit_code(),
            "result": v.result,
            "original": v.original,
            "rebuild": v.rebuild,
            "originalVerified": v.original_verified,
            "dangerousOptions": v.dangerous_options,
            "rootfsMatched": v.rootfs_matched,
            "rootfs": v.rootfs,
            "products": self.products.iter().map(|p| json!({
                "name": p.name,
                "result": p.result,
                "originalSha256": p.original_sha256,
                "rebuiltSha256": p.rebuilt_sha256,
                "originalSize": p.original_size,
                "rebuiltSize": p.rebuilt_size,
                "diffoscope": p.diffoscope,
            })).collect::<Vec<_>>(),
            "verdict": self.verdict_path.display().to_string(),
        })
    }

    /// The readable report: rootfs first (the first explanation of a
    /// difference), then the products.
    pub fn render(&self) -> String {
        let v = &self.verdict;
        let mut out = String::new();
        let size = |s: Option<u64>| s.map_or("size unknown".to_string(), |s| format!("{s} bytes"));
        out.push_str(&format!(
            "original: builder {} invocation {} (envelope sha256:{})\n",
            v.original.builder_id, v.original.invocation_id, v.original.envelope_sha256
        ));
        out.push_str(&format!(
            "rebuild:  builder {} invocation {}\n",
            v.rebuild.builder_id, v.rebuild.invocation_id
        ));
        if !v.original_verified {
            out.push_str("WARNING: the original provenance was NOT verified (--dangerously-skip-verify); the verdict says so\n");
        }
        let differing = v
            .rootfs
            .iter()
            .filter(|r| r.result != RootfsResult::Same && r.result != RootfsResult::Unknown)
            .count();
        let unknown = v
            .rootfs
            .iter()
            .filter(|r| r.result == RootfsResult::Unknown)
            .count();
        out.push_str(&if v.rootfs_matched {
            "rootfs: the same as the original's, bind by bind\n".to_string()
        } else if differing > 0 {
            format!("rootfs: {differing} bind(s) DIFFER from the original's (the first explanation of a difference)\n")
        } else {
            format!("rootfs: not compared for {unknown} bind(s): no digest on one side (rootfs hashing off, or not finished)\n")
        });
        for r in &v.rootfs {
            let word = match r.result {
                RootfsResult::Same => "same",
                RootfsResult::Different => "DIFFERENT",
                RootfsResult::Unknown => "unknown (no digest recorded on one side)",
                RootfsResult::MissingHere => "MISSING here",
                RootfsResult::ExtraHere => "EXTRA here",
            };
            out.push_str(&format!("  {:<24} {word}", r.name));
            if r.result == RootfsResult::Different {
                out.push_str(&format!(
                    " (original sha256:{}, here sha256:{})",
                    r.original_sha256.as_deref().unwrap_or("-"),
                    r.rebuilt_sha256.as_deref().unwrap_or("-")
                ));
            }
            out.push('\n');
        }
        out.push_str("products:\n");
        for p in &self.products {
            match p.result {
                ProductResult::Identical => out.push_str(&format!(
                    "  identical  {} sha256:{}\n",
                    p.name,
                    p.rebuilt_sha256.as_deref().unwrap_or("")
                )),
                ProductResult::Different => {
                    out.push_str(&format!(
                        "  DIFFERENT  {} original sha256:{} ({}), rebuilt sha256:{} ({})\n",
                        p.name,
                        p.original_sha256.as_deref().unwrap_or(""),
                        size(p.original_size),
                        p.rebuilt_sha256.as_deref().unwrap_or(""),
                        size(p.rebuilt_size)
                    ));
                    if let Some(d) = &p.diffoscope {
                        for line in d.lines() {
                            out.push_str(&format!("    | {line}\n"));
                        }
                    }
                }
                ProductResult::Missing => out.push_str(&format!(
                    "  MISSING    {} (original sha256:{}): the rebuild did not produce it\n",
                    p.name,
                    p.original_sha256.as_deref().unwrap_or("")
                )),
                ProductResult::Extra => out.push_str(&format!(
                    "  EXTRA      {} sha256:{}: the original does not name it\n",
                    p.name,
                    p.rebuilt_sha256.as_deref().unwrap_or("")
                )),
            }
        }
        out.push_str(&format!(
            "verdict: {} (signed by the rebuilding daemon), written to {}\n",
            v.result,
            self.verdict_path.display()
        ));
        out
    }
}

/// The command that installs diffoscope, for a host without it.
pub const DIFFOSCOPE_INSTALL: &str =
    "apt-get install -y diffoscope (Debian, Ubuntu); dnf install diffoscope (Fedora); pipx install diffoscope";

/// Lines of diffoscope output kept per file.
const DIFFOSCOPE_LINES: usize = 60;

/// diffoscope's summary of two files, or why there is none.
fn run_diffoscope(original: &Path, rebuilt: &Path) -> String {
    let output = std::process::Command::new("diffoscope")
        .arg("--text")
        .arg("-")
        .arg("--no-progress")
        .arg(original)
        .arg(rebuilt)
        .stdin(std::process::Stdio::null())
        .output();
    match output {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            format!("diffoscope is not installed; install it with: {DIFFOSCOPE_INSTALL}")
        }
        Err(e) => format!("diffoscope could not be started: {e}"),
        // 1: the files differ, its report follows; 0 would mean identical.
        Ok(out) if out.status.code() == Some(1) || out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            let lines: Vec<&str> = text.lines().collect();
            let mut kept = lines
                .iter()
                .take(DIFFOSCOPE_LINES)
                .copied()
                .collect::<Vec<_>>()
                .join("\n");
            if lines.len() > DIFFOSCOPE_LINES {
                kept.push_str(&format!(
                    "\n... {} more line(s) of diffoscope output",
                    lines.len() - DIFFOSCOPE_LINES
                ));
            }
            kept
        }
        Ok(out) => format!(
            "diffoscope failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    }
}

/// The original product at its subject path under `dir`, if its bytes
/// are the subject's: (path, size).
fn original_product(dir: &Path, name: &str, sha256: &str) -> Option<(PathBuf, u64)> {
    // A subject name is the path itself when it is UTF-8; a name in the
    // percent-bytes encoding (a path that is not UTF-8) is looked up as
    // written and so not found: diffoscope then says so.
    let relative = Path::new(name);
    if relative.is_absolute()
        || relative
            .components()
            .any(|c| c == std::path::Component::ParentDir)
    {
        return None;
    }
    let path = dir.join(relative);
    let digest = attest_tree::hash_file(&path).ok()?;
    (digest.hex() == sha256).then_some((path, digest.size))
}

/// Runs the whole rebuild. `log` receives the step's output.
pub async fn rebuild(
    client: &Client,
    options: &RebuildOptions,
    log: &(dyn Fn(&[u8]) + Send + Sync),
) -> Result<RebuildReport, RebuildError> {
    // 1. The provenance, verified.
    let envelopes = crate::verify::read_provenance(&options.provenance)?;
    let (envelope, statement) = if options.dangerously_skip_verify {
        let envelope = envelopes
            .first()
            .cloned()
            .ok_or(RebuildError::NotVerified {
                source: VerifyError::NoEnvelopes,
            })?;
        let statement = Statement::from_json(&envelope.payload)
            .map_err(|e| not_rebuildable(format!("the statement: {e}")))?;
        (envelope, statement)
    } else {
        verified_envelope(&envelopes, &options.keys, options.min_signatures)?
    };

    // 2. The recorded request.
    let recorded = recorded_request(&statement)?;
    let root = recorded
        .request
        .input_root
        .as_ref()
        .map(Digest::from_proto)
        .transpose()
        .map_err(|e| not_rebuildable(e.to_string()))?
        .ok_or_else(|| not_rebuildable("no input root"))?;

    // 3. The materials.
    match &options.src {
        Some(src) => gather_from_src(client, src, &recorded, &root).await?,
        None => gather_from_store(client, &root).await?,
    }

    // 4. The rootfs, when it must be the same.
    if options.require_same_rootfs {
        let problems = host_rootfs_differences(client, &recorded.rootfs).await?;
        if !problems.is_empty() {
            return Err(RebuildError::RootfsDiffers { problems });
        }
    }

    // 5. The step, run again.
    let mut events = client.build(recorded.request.clone()).await?;
    let mut done: Option<BuildDone> = None;
    let mut step_output = Vec::new();
    while let Some(event) = events.next().await {
        match event.map_err(ClientError::from)?.event {
            Some(Event::Log(chunk)) => {
                log(&chunk.data);
                step_output.extend_from_slice(&chunk.data);
            }
            Some(Event::Done(d)) => done = Some(d),
            _ => {}
        }
    }
    let done = done
        .ok_or_else(|| ClientError::Protocol("the build stream ended without a result".into()))?;
    if !done.success {
        return Err(RebuildError::RebuildFailed {
            invocation_id: done.invocation_id,
            message: done.message,
        });
    }

    // 6. The verdict, compared and signed by the daemon.
    let original_json = envelope.to_json();
    let verdict_bytes = AttestationsClient::new(client.channel())
        .sign_reproducibility(SignReproducibilityRequest {
            original_envelope: original_json.into_bytes(),
            rebuild_invocation_id: done.invocation_id.clone(),
            original_verified: !options.dangerously_skip_verify,
        })
        .await
        .map_err(ClientError::from)?
        .into_inner()
        .envelope;
    let daemon_keys: Vec<PublicKey> = client
        .public_keys()
        .await?
        .iter()
        .map(|k| attest_provenance::keys::read_public_keys_pem(&k.pem))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| RebuildError::BadVerdict {
            reason: format!("the daemon's key: {e}"),
        })?
        .into_iter()
        .flatten()
        .collect();
    let bad = |reason: String| RebuildError::BadVerdict { reason };
    let verdict_env =
        Envelope::from_json(&verdict_bytes).map_err(|e| bad(format!("envelope: {e}")))?;
    if verdict_env.verified_signers(&daemon_keys).is_empty() {
        return Err(bad("not signed by the daemon's key".into()));
    }
    let verdict_statement =
        Statement::from_json(&verdict_env.payload).map_err(|e| bad(e.to_string()))?;
    if verdict_statement.predicate_type != PREDICATE_TYPE {
        return Err(bad(format!(
            "predicate type {:?}",
            verdict_statement.predicate_type
        )));
    }
    let verdict: Reproducibility = serde_json::from_value(verdict_statement.predicate)
        .map_err(|e| bad(format!("predicate: {e}")))?;
    if verdict.rebuild.invocation_id != done.invocation_id {
        return Err(bad(format!(
            "it is about invocation {}, not {}",
            verdict.rebuild.invocation_id, done.invocation_id
        )));
    }
    let verdict_path = options.verdict.clone().unwrap_or_else(|| {
        let first = recorded
            .request
            .output_paths
            .first()
            .and_then(|o| Path::new(o).file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "rebuild".into());
        PathBuf::from(format!("{first}.reproducibility.intoto.jsonl"))
    });
    let mut line = verdict_bytes.clone();
    line.push(b'\n');
    crate::products::write_atomically(&verdict_path, &line)?;

    // 7. The rebuilt products, downloaded, and the report.
    let mut rebuilt: BTreeMap<String, (Digest, PathBuf)> = BTreeMap::new();
    for output in &done.outputs {
        let digest = output
            .digest
            .as_ref()
            .ok_or_else(|| ClientError::Protocol(format!("output {} has no digest", output.path)))
            .and_then(|d| {
                Digest::from_proto(d).map_err(|e| ClientError::Protocol(e.to_string()))
            })?;
        let raw = attest_tree::joined(&output.path, &output.raw_path);
        let relative =
            Path::new(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(raw));
        let dest = client
            .download(&digest, &options.out_dir, relative, output.is_executable)
            .await?;
        let name = if output.raw_path.is_empty() {
            output.path.clone()
        } else {
            attest_tree::percent_bytes_encode(&output.raw_path)
        };
        rebuilt.insert(name, (digest, dest));
    }
    let mut products = Vec::new();
    for row in &verdict.products {
        let here = rebuilt.get(&row.name);
        let original = row
            .original_sha256
            .as_deref()
            .and_then(|sha| original_product(&options.original_dir, &row.name, sha));
        let diffoscope = match (row.result, options.diffoscope, &original, here) {
            (ProductResult::Different, true, Some((o, _)), Some((_, r))) => {
                Some(run_diffoscope(o, r))
            }
            (ProductResult::Different, true, None, _) => Some(format!(
                "the original bytes were not found at {} (pass --original DIR with the original products)",
                options.original_dir.join(&row.name).display()
            )),
            _ => None,
        };
        products.push(ProductReport {
            name: row.name.clone(),
            result: row.result,
            original_sha256: row.original_sha256.clone(),
            rebuilt_sha256: row.rebuilt_sha256.clone(),
            original_size: original.as_ref().map(|(_, s)| *s),
            rebuilt_size: here.map(|(d, _)| d.size),
            diffoscope,
        });
    }
    Ok(RebuildReport {
        verdict,
        verdict_path,
        products,
        step_output,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_edited_missing_and_extra_file_is_named() {
        let recorded = BTreeMap::from([
            ("a.c".to_string(), "11".to_string()),
            ("b.c".to_string(), "22".to_string()),
            ("c.c".to_string(), "33".to_string()),
        ]);
        let found = BTreeMap::from([
            ("a.c".to_string(), "11".to_string()),
            ("b.c".to_string(), "99".to_string()),
            ("d.c".to_string(), "44".to_string()),
        ]);
        assert_eq!(
            material_differences(&recorded, &found),
            vec![
                "differs: b.c (recorded sha256:22, found sha256:99)".to_string(),
                "missing: c.c (recorded sha256:33)".to_string(),
                "extra: d.c (sha256:44, not in the recorded tree)".to_string(),
            ]
        );
    }

    #[test]
    fn a_failure_before_the_step_exits_with_its_own_code() {
        assert_eq!(
            RebuildError::Materials { problems: vec![] }.exit_code(),
            EXIT_MATERIALS
        );
        assert_eq!(
            RebuildError::RootfsDiffers { problems: vec![] }.exit_code(),
            EXIT_ROOTFS_DIFFERS
        );
        assert_eq!(
            RebuildError::NotVerified {
                source: VerifyError::NoEnvelopes
            }
            .exit_code(),
            VerifyError::NoEnvelopes.exit_code()
        );
    }
}
