//! The whole `attest run` flow as one library call.

use crate::client::{BlobSource, Client};
use crate::error::ClientError;
use attest_proto::v1::{
    build_event::Event, BuildDone, BuildRequest, EnvVar, Limits, LogCut, SourceInfo,
};
use attest_tree::{build_tree, Digest, DigestCache};
use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_stream::StreamExt;

/// What to build.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The source tree; the step sees it as its working directory.
    pub src: PathBuf,
    /// Declared outputs, relative to the source root.
    pub outputs: Vec<String>,
    /// The command.
    pub argv: Vec<String>,
    /// Declared environment.
    pub env: Vec<(String, String)>,
    /// Where products are written locally (each at its relative path).
    pub out_dir: PathBuf,
    /// Where the attestation goes; default `<first output's file name>.intoto.jsonl`
    /// in the current directory.
    pub attestation: Option<PathBuf>,
    /// Requested limits (zero fields: the daemon's defaults).
    pub limits: Limits,
    /// Where the source came from, recorded in the provenance.
    pub source: Option<SourceInfo>,
    /// SOURCE_DATE_EPOCH for the step.
    pub source_date_epoch: u64,
    /// The persistent digest cache file, if any.
    pub digest_cache: Option<PathBuf>,
    /// Ask the daemon for the step's in-toto link under this step name
    /// (`BuildDone.link`); None: no link.
    pub link_name: Option<String>,
    /// Claims about who asked (a CI job URL...), recorded in the
    /// provenance as the client's word (`externalParameters.requesterClaims`).
    pub requester_claims: Vec<(String, String)>,
}

/// Which output stream a log chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// Progress and log sink, so a CLI can draw bars and a library user can
/// log however it likes.
pub trait Observer: Send + Sync {
    /// `bytes` more of the source tree were hashed.
    fn hashed(&self, _bytes: u64) {}
    /// The tree is known: this many blobs and bytes must be uploaded.
    fn uploading(&self, _blobs: usize, _bytes: u64) {}
    /// `bytes` more were sent.
    fn uploaded(&self, _bytes: u64) {}
    /// A build phase began ("queued", "staging", "started", "collecting", "signed").
    fn phase(&self, _phase: &str) {}
    /// The step wrote this.
    fn log(&self, _stream: LogStream, _data: &[u8]) {}
    /// A log was longer than its cap: what was passed on (and stored) is
    /// its head and its tail, `cut` says how much was dropped between them.
    fn log_cut(&self, _stream: LogStream, _cut: &LogCut) {}
}

impl LogStream {
    fn of(stream: i32) -> LogStream {
        if stream == attest_proto::v1::log_chunk::Stream::Stderr as i32 {
            LogStream::Stderr
        } else {
            LogStream::Stdout
        }
    }

    /// Its name, as the step knows it.
    pub fn name(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}

/// What to tell a user of a log cut to its cap.
pub fn describe_log_cut(cut: &LogCut) -> String {
    let kept = cut.step_bytes - cut.dropped_bytes.min(cut.step_bytes);
    format!(
        "{} cut to its cap of {} bytes: {} bytes of {} dropped (the first {} and the last {} kept)",
        LogStream::of(cut.stream).name(),
        cut.cap_bytes,
        cut.dropped_bytes,
        cut.step_bytes,
        cut.head_bytes,
        kept.saturating_sub(cut.head_bytes),
    )
}

/// An observer that ignores everything.
pub struct Silent;
impl Observer for Silent {}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// The daemon's verdict.
    pub done: BuildDone,
    /// Files in the source tree, and how many had to be read to hash them
    /// (the rest came from the digest cache).
    pub files_total: usize,
    pub files_read: usize,
    /// Blobs and bytes uploaded (the rest the daemon already had).
    pub uploaded_blobs: usize,
    pub uploaded_bytes: u64,
    /// Local paths of the downloaded products (empty unless success).
    pub products: Vec<PathBuf>,
    /// Where the attestation was written (None unless success).
    pub attestation: Option<PathBuf>,
}

/// The default attestation path for a set of outputs.
pub fn default_attestation_path(outputs: &[String]) -> Option<PathBuf> {
    let first = outputs.first()?;
    let name = Path::new(first).file_name()?.to_string_lossy().into_owned();
    Some(PathBuf::from(format!("{name}.intoto.jsonl")))
}

/// Hashes the source, uploads what the daemon lacks, runs the build,
/// downloads the products and writes the attestation.
pub async fn run_build(
    client: &Client,
    options: &RunOptions,
    observer: Arc<dyn Observer>,
) -> Result<RunSummary, ClientError> {
    if options.outputs.is_empty() {
        return Err(ClientError::Invalid("declare at least one --out".into()));
    }
    let attestation_path = match &options.attestation {
        Some(p) => p.clone(),
        None => default_attestation_path(&options.outputs).ok_or_else(|| {
            ClientError::Invalid(format!(
                "cannot name an attestation after output {:?}; pass --attestation",
                options.outputs[0]
            ))
        })?,
    };
    // Refused before anything is built, so that the daemon never signs a
    // build whose attestation or products could not be written: a name the
    // kernel cannot hold (the default attestation name is the first
    // output's file name plus `.intoto.jsonl`, too long for an output
    // named with 243 bytes or more), and a product path with a symlink or
    // a file on its way beneath --out-dir (checked again as it is written).
    let attestation_name_len = attestation_path
        .file_name()
        .map_or(0, |n| n.as_bytes().len());
    if attestation_name_len > crate::products::NAME_MAX {
        return Err(ClientError::Invalid(format!(
            "the attestation's file name {} is {attestation_name_len} bytes, more than {} ({}); pass a shorter --attestation",
            attestation_path.display(),
            crate::products::NAME_MAX,
            if options.attestation.is_some() {
                "as given"
            } else {
                "named after the first output"
            },
        )));
    }
    for output in &options.outputs {
        crate::products::precheck(&options.out_dir, Path::new(output))?;
    }
    let src = options.src.clone();
    if !src.is_dir() {
        return Err(ClientError::Invalid(format!(
            "--src {} is not a directory",
            src.display()
        )));
    }

    // 1. Hash the tree (in parallel, through the digest cache).
    let cache_path = options.digest_cache.clone();
    let hash_observer = observer.clone();
    let tree = tokio::task::spawn_blocking(move || {
        let cache = cache_path.as_deref().map(DigestCache::open);
        let tree = build_tree(&src, cache.as_ref(), &|bytes| hash_observer.hashed(bytes))?;
        if let Some(cache) = &cache {
            if let Err(e) = cache.save() {
                tracing::warn!(error = %e, "could not save the digest cache");
            }
        }
        Ok::<_, ClientError>(tree)
    })
    .await
    .map_err(|e| ClientError::Protocol(format!("hashing task failed: {e}")))??;

    // 2. Upload only what the daemon lacks.
    // An unchanged tree the daemon already holds whole is one question,
    // not one per blob. An error here (an older daemon without CheckTree)
    // only means asking blob by blob.
    let complete = match client.tree_complete(&tree.root).await {
        Ok(complete) => complete,
        Err(e) => {
            tracing::debug!(error = %crate::error::chain(&e), "CheckTree failed; asking blob by blob");
            false
        }
    };
    let missing: HashSet<Digest> = if complete {
        HashSet::new()
    } else {
        client
            .find_missing(&tree.blob_digests())
            .await?
            .into_iter()
            .collect()
    };
    // Each missing blob once, directories first, files in tree order.
    let mut upload: Vec<(Digest, BlobSource)> = Vec::with_capacity(missing.len());
    let mut queued: HashSet<Digest> = HashSet::with_capacity(missing.len());
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
    let upload_bytes: u64 = upload.iter().map(|(d, _)| d.size).sum();
    observer.uploading(upload.len(), upload_bytes);
    let uploaded_blobs = upload.len();
    let upload_observer = observer.clone();
    let uploaded_bytes = client
        .upload(upload, move |n| upload_observer.uploaded(n))
        .await?;

    // 3. Build, streaming events.
    let request = BuildRequest {
        input_root: Some(tree.root.to_proto()),
        argv: options.argv.clone(),
        env: options
            .env
            .iter()
            .map(|(name, value)| EnvVar {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
        working_directory: String::new(),
        output_paths: options.outputs.clone(),
        limits: Some(options.limits),
        source: options.source.clone(),
        source_date_epoch: options.source_date_epoch,
        emit_link: options.link_name.is_some(),
        requester_claims: options.requester_claims.iter().cloned().collect(),
        link_name: options.link_name.clone().unwrap_or_default(),
    };
    let mut events = client.build(request).await?;
    let mut done = None;
    while let Some(event) = events.next().await {
        match event?.event {
            Some(Event::Queued(_)) => observer.phase("queued"),
            Some(Event::Staging(_)) => observer.phase("staging"),
            Some(Event::Started(_)) => observer.phase("started"),
            Some(Event::Log(chunk)) => observer.log(LogStream::of(chunk.stream), &chunk.data),
            Some(Event::LogCut(cut)) => observer.log_cut(LogStream::of(cut.stream), &cut),
            Some(Event::Collecting(_)) => observer.phase("collecting"),
            Some(Event::Signed(_)) => observer.phase("signed"),
            Some(Event::Done(result)) => done = Some(result),
            None => {}
        }
    }
    let done = done
        .ok_or_else(|| ClientError::Protocol("the build stream ended without a result".into()))?;
    let mut summary = RunSummary {
        files_total: tree.files.len(),
        files_read: tree.files_read,
        uploaded_blobs,
        uploaded_bytes,
        products: Vec::new(),
        attestation: None,
        done,
    };
    if !summary.done.success {
        return Ok(summary);
    }

    // 4. Download products, each checked against the attested digest.
    for output in &summary.done.outputs {
        let digest = output
            .digest
            .as_ref()
            .ok_or_else(|| ClientError::Protocol(format!("output {} has no digest", output.path)))
            .and_then(|d| {
                Digest::from_proto(d).map_err(|e| ClientError::Protocol(e.to_string()))
            })?;
        // A path that is not UTF-8 comes as raw bytes (`raw_path`).
        let path = attest_tree::joined(&output.path, &output.raw_path);
        let dest = client
            .download(
                &digest,
                &options.out_dir,
                Path::new(OsStr::from_bytes(path)),
                output.is_executable,
            )
            .await?;
        summary.products.push(dest);
    }

    // 5. The attestation, written whole or not at all.
    let mut line = summary.done.envelope.clone();
    line.push(b'\n');
    write_atomically(&attestation_path, &line)?;
    summary.attestation = Some(attestation_path);
    Ok(summary)
}

pub use crate::products::write_atomically;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attestation_is_named_after_the_first_outputs_file_name() {
        assert_eq!(
            default_attestation_path(&["build/bin/hello".into(), "x".into()]),
            Some(PathBuf::from("hello.intoto.jsonl"))
        );
    }
}
