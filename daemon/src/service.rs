//! The gRPC services: thin adapters from attest.v1 messages to the
//! daemon's store, executor, index and signer.

use crate::error::error_chain;
use crate::executor::{execute, validate, Daemon, RequestError};
use crate::index::IndexError;
use crate::materialize::MaterializeError;
use crate::reproducibility_verdict::VerdictError;
use crate::store::StoreError;
use attest_proto::v1::{
    attestations_server::Attestations, build_server::Build, content_store_server::ContentStore,
    keys_server::Keys, Attestation, BuildEvent, BuildRequest, CheckTreeRequest, CheckTreeResponse,
    DownloadBlobRequest, DownloadBlobResponse, FindMissingBlobsRequest, FindMissingBlobsResponse,
    GetByInvocationRequest, GetPublicKeysRequest, GetPublicKeysResponse, ListBySubjectRequest,
    ListBySubjectResponse, PublicKey, UploadBlobsRequest, UploadBlobsResponse,
};
use attest_proto::v1::{
    GetHostRootfsRequest, GetHostRootfsResponse, RootfsBind, SignReproducibilityRequest,
    SignReproducibilityResponse,
};
use attest_provenance::keys::KeyAlgorithm;
use attest_tree::Digest;
use futures::Stream;
use std::io::Read;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

/// Most digests one FindMissingBlobs may ask about.
const MAX_FIND_MISSING: usize = 100_000;
/// An upload's blobs are made durable together once this many are
/// pending...
const BATCH_BLOBS: usize = 2048;
/// ...or once they hold this many bytes (bounds the dirty data one
/// sync waits for, and lets the next batch arrive meanwhile; the last
/// batch's sync is the one the client waits for).
const BATCH_BYTES: u64 = 32 << 20;
/// Chunk size of blob downloads (under gRPC's 4 MiB default message cap).
const DOWNLOAD_CHUNK: usize = 1 << 20;

/// Why a call failed, for every service: each layer's error, and the
/// service's own refusals. [`Status::from`] below is the one place where
/// errors become gRPC status codes:
///
/// - INVALID_ARGUMENT: the request itself is wrong (a malformed request,
///   bytes that do not match their digest, a malformed tree). The client's
///   `attest run` exits with 64 for it.
/// - FAILED_PRECONDITION: a blob the request needs is not in the store
///   (upload it and ask again).
/// - NOT_FOUND: what a lookup or download asked for does not exist.
/// - DATA_LOSS: a stored blob no longer matches its digest.
/// - INTERNAL: the daemon itself failed (disk, index, a task); `attest run`
///   exits with 71.
/// - UNAUTHENTICATED: the caller could not be identified (no client
///   certificate, or one whose names cannot be read).
/// - PERMISSION_DENIED: a verified TCP client no `--allow-client` pattern
///   matches; the message names its identity.
///
/// A build that has started reports its failures in its BuildDone event
/// instead (`executor::FailureClass`).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Materialize(#[from] MaterializeError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Requester(#[from] crate::requester::RequesterError),
    #[error(transparent)]
    Verdict(#[from] VerdictError),
    #[error("{field} is missing")]
    MissingDigest { field: &'static str },
    #[error("{field} is not a digest")]
    MalformedDigest {
        field: &'static str,
        #[source]
        source: attest_tree::TreeError,
    },
    #[error("{count} digests in one request; at most {max}")]
    TooManyDigests { count: usize, max: usize },
    #[error("the first chunk of an upload must carry the blob's digest")]
    UploadWithoutDigest,
    #[error("{sha256:?} is not a sha256 in hex")]
    MalformedSubject {
        sha256: String,
        #[source]
        source: attest_tree::TreeError,
    },
    #[error("attestation for invocation {invocation_id:?} not found")]
    AttestationNotFound { invocation_id: String },
    #[error("blob {digest} is not in the content store")]
    DownloadNotFound { digest: Digest },
    #[error("reading blob {digest} failed")]
    DownloadRead {
        digest: Digest,
        #[source]
        source: std::io::Error,
    },
    /// Found while streaming a download: the blob's bytes are not what its
    /// digest says (changed on disk since it was stored).
    #[error("stored blob {digest} {problem}")]
    DownloadCorrupt {
        digest: Digest,
        problem: &'static str,
    },
    #[error("the {task} task failed")]
    Task {
        task: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
}

impl From<ServiceError> for Status {
    fn from(error: ServiceError) -> Status {
        let message = error_chain(&error);
        let store_code = |e: &StoreError| match e {
            StoreError::DigestMismatch { .. } => tonic::Code::InvalidArgument,
            StoreError::NotFound { .. } => tonic::Code::FailedPrecondition,
            StoreError::Corrupt { .. } => tonic::Code::DataLoss,
            StoreError::Io { .. } | StoreError::PackIndex { .. } => tonic::Code::Internal,
        };
        let code = match &error {
            ServiceError::Request(_)
            | ServiceError::MissingDigest { .. }
            | ServiceError::MalformedDigest { .. }
            | ServiceError::TooManyDigests { .. }
            | ServiceError::UploadWithoutDigest
            | ServiceError::MalformedSubject { .. } => tonic::Code::InvalidArgument,
            ServiceError::Store(e) => store_code(e),
            ServiceError::Materialize(MaterializeError::BlobMissing { .. }) => {
                tonic::Code::FailedPrecondition
            }
            ServiceError::Materialize(e) if e.is_bad_tree() => tonic::Code::InvalidArgument,
            ServiceError::Materialize(MaterializeError::Store(e)) => store_code(e),
            ServiceError::Materialize(_) => tonic::Code::Internal,
            ServiceError::AttestationNotFound { .. } | ServiceError::DownloadNotFound { .. } => {
                tonic::Code::NotFound
            }
            ServiceError::DownloadCorrupt { .. } => tonic::Code::DataLoss,
            ServiceError::Requester(crate::requester::RequesterError::NotAllowed { .. }) => {
                tonic::Code::PermissionDenied
            }
            ServiceError::Requester(_) => tonic::Code::Unauthenticated,
            ServiceError::Verdict(VerdictError::RebuildNotFound { .. }) => tonic::Code::NotFound,
            ServiceError::Verdict(VerdictError::Compare { .. }) => tonic::Code::InvalidArgument,
            ServiceError::Verdict(VerdictError::Index(_) | VerdictError::Sign(_))
            | ServiceError::Index(_)
            | ServiceError::DownloadRead { .. }
            | ServiceError::Task { .. } => tonic::Code::Internal,
        };
        Status::new(code, message)
    }
}

/// All four services share the daemon state.
#[derive(Clone)]
pub struct Services {
    pub daemon: Arc<Daemon>,
}

fn digest_arg(
    digest: Option<&attest_proto::v1::Digest>,
    field: &'static str,
) -> Result<Digest, ServiceError> {
    let digest = digest.ok_or(ServiceError::MissingDigest { field })?;
    Digest::from_proto(digest).map_err(|source| ServiceError::MalformedDigest { field, source })
}

/// Blobs of one upload waiting to be made durable: large ones as files
/// ([`crate::store::BlobStore::commit`]), small ones in the upload's packs
/// (`store/packs.rs`).
struct Batch {
    files: Vec<crate::store::PendingBlob>,
    file_bytes: u64,
    packs: crate::store::packs::PackWriter,
}

/// The blob an upload is receiving.
enum Receiving {
    File(Box<crate::store::BlobWriter>),
    Packed,
}

impl Batch {
    fn push(&mut self, blob: crate::store::PendingBlob) {
        self.file_bytes += blob.size();
        self.files.push(blob);
    }

    fn is_full(&self) -> bool {
        let (packed, packed_bytes) = self.packs.pending();
        self.files.len() + packed >= BATCH_BLOBS || self.file_bytes + packed_bytes >= BATCH_BYTES
    }

    /// Takes everything pending, to commit on a blocking thread.
    fn take(
        &mut self,
        store: &crate::store::BlobStore,
    ) -> impl FnOnce() -> Result<Vec<Digest>, StoreError> {
        self.file_bytes = 0;
        let files = std::mem::take(&mut self.files);
        let packed = self.packs.take_batch();
        let store = store.clone();
        move || {
            let mut stored = packed.commit()?;
            stored.extend(store.commit(files)?);
            Ok(stored)
        }
    }
}

/// Checks the blob just received and queues it for its batch.
fn end_blob(batch: &mut Batch, receiving: Receiving) -> Result<(), ServiceError> {
    match receiving {
        Receiving::File(writer) => batch.push((*writer).close()?),
        Receiving::Packed => {
            batch.packs.end()?;
        }
    }
    Ok(())
}

fn joined_commit(
    joined: Result<Result<Vec<Digest>, StoreError>, tokio::task::JoinError>,
) -> Result<Vec<Digest>, ServiceError> {
    Ok(joined.map_err(|source| ServiceError::Task {
        task: "storing blobs",
        source,
    })??)
}

async fn blocking<T: Send + 'static, E: Into<ServiceError> + Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, ServiceError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|source| ServiceError::Task {
            task: "worker",
            source,
        })?
        .map_err(Into::into)
}

#[tonic::async_trait]
impl ContentStore for Services {
    async fn find_missing_blobs(
        &self,
        request: Request<FindMissingBlobsRequest>,
    ) -> Result<Response<FindMissingBlobsResponse>, Status> {
        let request = request.into_inner();
        if request.digests.len() > MAX_FIND_MISSING {
            return Err(ServiceError::TooManyDigests {
                count: request.digests.len(),
                max: MAX_FIND_MISSING,
            }
            .into());
        }
        let mut digests = Vec::with_capacity(request.digests.len());
        for d in &request.digests {
            digests.push(digest_arg(Some(d), "digest")?);
        }
        let daemon = self.daemon.clone();
        let started = std::time::Instant::now();
        let asked = digests.len();
        let missing: Vec<_> = blocking(move || -> Result<_, StoreError> {
            Ok(daemon
                .store
                .missing(&digests)?
                .iter()
                .map(Digest::to_proto)
                .collect())
        })
        .await?;
        tracing::debug!(
            asked,
            missing = missing.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "FindMissingBlobs"
        );
        Ok(Response::new(FindMissingBlobsResponse { missing }))
    }

    async fn upload_blobs(
        &self,
        request: Request<Streaming<UploadBlobsRequest>>,
    ) -> Result<Response<UploadBlobsResponse>, Status> {
        let mut stream = request.into_inner();
        let started = std::time::Instant::now();
        let store = self.daemon.store.clone();
        let mut current: Option<Receiving> = None;
        let mut received: i64 = 0;
        // Blobs are made durable in batches (`store/blobs.rs`, `commit`): one
        // syncfs per batch rather than one fsync per blob, which for 20,000
        // small files was 20,000 journal commits. One batch is committed on
        // a blocking thread while the next one is received.
        let mut batch = Batch {
            files: Vec::new(),
            file_bytes: 0,
            packs: store.pack_writer(),
        };
        let mut committing: Option<tokio::task::JoinHandle<_>> = None;
        let mut stored = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            if let Some(digest) = chunk.digest.as_ref() {
                if let Some(receiving) = current.take() {
                    end_blob(&mut batch, receiving)?;
                    if batch.is_full() {
                        if let Some(previous) = committing.take() {
                            stored.extend(joined_commit(previous.await)?);
                        }
                        committing = Some(tokio::task::spawn_blocking(batch.take(&store)));
                    }
                }
                let digest = digest_arg(Some(digest), "blob digest")?;
                // Small blobs are packed (`store/packs.rs`); large ones stay files,
                // which a materialized tree can hardlink.
                current = Some(if digest.size <= crate::store::packs::PACKED_BLOB_MAX {
                    batch.packs.begin(digest).map_err(ServiceError::from)?;
                    Receiving::Packed
                } else {
                    Receiving::File(Box::new(store.writer(digest).map_err(ServiceError::from)?))
                });
            }
            let Some(receiving) = current.as_mut() else {
                return Err(ServiceError::UploadWithoutDigest.into());
            };
            received += chunk.data.len() as i64;
            tokio::task::block_in_place(|| match receiving {
                Receiving::File(writer) => writer.write(&chunk.data),
                Receiving::Packed => batch.packs.write(&chunk.data),
            })
            .map_err(ServiceError::from)?;
        }
        if let Some(receiving) = current.take() {
            end_blob(&mut batch, receiving)?;
        }
        let received_all = started.elapsed();
        if let Some(previous) = committing.take() {
            stored.extend(joined_commit(previous.await)?);
        }
        stored.extend(joined_commit(
            tokio::task::spawn_blocking(batch.take(&store)).await,
        )?);
        tracing::debug!(
            blobs = stored.len(),
            bytes = received,
            stream_ms = received_all.as_millis() as u64,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "UploadBlobs"
        );
        Ok(Response::new(UploadBlobsResponse {
            stored: stored.iter().map(Digest::to_proto).collect(),
            received_bytes: received,
        }))
    }

    async fn check_tree(
        &self,
        request: Request<CheckTreeRequest>,
    ) -> Result<Response<CheckTreeResponse>, Status> {
        let root = digest_arg(request.get_ref().root.as_ref(), "root")?;
        let daemon = self.daemon.clone();
        let started = std::time::Instant::now();
        // The very check Build makes, so the answer and a build's agree
        // (short of a tree evicted in between).
        let complete = blocking(
            move || match daemon.inputs.check_complete(&daemon.store, &root) {
                Ok(_) => Ok(true),
                Err(MaterializeError::BlobMissing { .. }) => Ok(false),
                Err(e) => Err(e),
            },
        )
        .await?;
        tracing::debug!(
            complete,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "CheckTree"
        );
        Ok(Response::new(CheckTreeResponse { complete }))
    }

    type DownloadBlobStream =
        Pin<Box<dyn Stream<Item = Result<DownloadBlobResponse, Status>> + Send>>;

    async fn download_blob(
        &self,
        request: Request<DownloadBlobRequest>,
    ) -> Result<Response<Self::DownloadBlobStream>, Status> {
        let digest = digest_arg(request.get_ref().digest.as_ref(), "digest")?;
        let store = self.daemon.store.clone();
        let mut file = blocking(move || match store.open_blob(&digest) {
            Err(StoreError::NotFound { digest }) => Err(ServiceError::DownloadNotFound { digest }),
            opened => Ok(opened?),
        })
        .await?;
        let (tx, rx) = mpsc::channel(4);
        // The digest is re-checked while streaming: a blob corrupted on disk
        // ends the stream with DATA_LOSS rather than passing as whole.
        tokio::task::spawn_blocking(move || {
            let corrupt = |problem| Status::from(ServiceError::DownloadCorrupt { digest, problem });
            let mut context = ring::digest::Context::new(&ring::digest::SHA256);
            let mut total = 0u64;
            loop {
                let mut buffer = vec![0u8; DOWNLOAD_CHUNK];
                let n = match file.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(source) => {
                        let _ =
                            tx.blocking_send(Err(
                                ServiceError::DownloadRead { digest, source }.into()
                            ));
                        return;
                    }
                };
                buffer.truncate(n);
                context.update(&buffer);
                total += n as u64;
                if total == digest.size {
                    if context.clone().finish().as_ref() != digest.hash {
                        let _ = tx.blocking_send(Err(corrupt("no longer matches its digest")));
                        return;
                    }
                } else if total > digest.size {
                    let _ = tx.blocking_send(Err(corrupt("is longer than its digest says")));
                    return;
                }
                if tx
                    .blocking_send(Ok(DownloadBlobResponse { data: buffer }))
                    .is_err()
                {
                    return;
                }
            }
            if total != digest.size {
                let _ = tx.blocking_send(Err(corrupt("is shorter than its digest says")));
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[tonic::async_trait]
impl Build for Services {
    type ExecuteStream = Pin<Box<dyn Stream<Item = Result<BuildEvent, Status>> + Send>>;

    async fn execute(
        &self,
        request: Request<BuildRequest>,
    ) -> Result<Response<Self::ExecuteStream>, Status> {
        // Observed before anything else: a build with no known requester
        // is not started.
        let requester =
            crate::requester::Requester::observe(&request).map_err(ServiceError::from)?;
        let mut request = validate(request.get_ref()).map_err(ServiceError::from)?;
        tracing::info!(requester = %requester.describe(), "build requested");
        request.requester = Some(requester.to_json());
        // Everything the step needs must be in the store before the build is
        // accepted, so a missing blob is a clear error, not a failed build.
        let daemon = self.daemon.clone();
        let root = request.input_root;
        let started = std::time::Instant::now();
        let stats = blocking(move || daemon.inputs.check_complete(&daemon.store, &root)).await?;
        tracing::debug!(
            files = stats.files,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "input tree checked complete"
        );
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(execute(self.daemon.clone(), request, stats, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[tonic::async_trait]
impl Attestations for Services {
    async fn get_by_invocation(
        &self,
        request: Request<GetByInvocationRequest>,
    ) -> Result<Response<Attestation>, Status> {
        let id = request.into_inner().invocation_id;
        let daemon = self.daemon.clone();
        let found = blocking(move || {
            daemon
                .index
                .get(&id)?
                .ok_or(ServiceError::AttestationNotFound { invocation_id: id })
        })
        .await?;
        Ok(Response::new(Attestation {
            invocation_id: found.invocation_id,
            envelope: found.envelope.into_bytes(),
            signed_on: found.signed_on,
        }))
    }

    async fn list_by_subject(
        &self,
        request: Request<ListBySubjectRequest>,
    ) -> Result<Response<ListBySubjectResponse>, Status> {
        let sha = request.into_inner().sha256;
        Digest::from_hex(&sha, 0).map_err(|source| ServiceError::MalformedSubject {
            sha256: sha.clone(),
            source,
        })?;
        let daemon = self.daemon.clone();
        let found = blocking(move || daemon.index.by_subject(&sha)).await?;
        Ok(Response::new(ListBySubjectResponse {
            attestations: found
                .into_iter()
                .map(|a| Attestation {
                    invocation_id: a.invocation_id,
                    envelope: a.envelope.into_bytes(),
                    signed_on: a.signed_on,
                })
                .collect(),
        }))
    }

    async fn sign_reproducibility(
        &self,
        request: Request<SignReproducibilityRequest>,
    ) -> Result<Response<SignReproducibilityResponse>, Status> {
        let request = request.into_inner();
        let daemon = self.daemon.clone();
        let envelope = blocking(move || {
            crate::reproducibility_verdict::sign_verdict(
                &daemon,
                &request.original_envelope,
                &request.rebuild_invocation_id,
                request.original_verified,
            )
        })
        .await?;
        Ok(Response::new(SignReproducibilityResponse {
            envelope: envelope.into_bytes(),
        }))
    }

    async fn get_host_rootfs(
        &self,
        _: Request<GetHostRootfsRequest>,
    ) -> Result<Response<GetHostRootfsResponse>, Status> {
        let daemon = self.daemon.clone();
        let binds = blocking(move || {
            Ok::<_, ServiceError>(crate::reproducibility_verdict::host_rootfs(&daemon))
        })
        .await?;
        Ok(Response::new(GetHostRootfsResponse {
            hashing_on: binds.is_some(),
            binds: binds
                .unwrap_or_default()
                .into_iter()
                .map(|b| {
                    let (sha256, reason) = match b.digest {
                        Ok(hex) => (hex, String::new()),
                        Err(reason) => (String::new(), reason),
                    };
                    RootfsBind {
                        name: b.name,
                        sha256,
                        reason,
                    }
                })
                .collect(),
        }))
    }
}

#[tonic::async_trait]
impl Keys for Services {
    async fn get_public_keys(
        &self,
        _: Request<GetPublicKeysRequest>,
    ) -> Result<Response<GetPublicKeysResponse>, Status> {
        let public = self.daemon.signer.public_key();
        let algorithm = match public.algorithm() {
            KeyAlgorithm::Ed25519 => "ed25519",
            KeyAlgorithm::EcdsaP256Sha256 => "ecdsa-sha2-nistp256",
        };
        Ok(Response::new(GetPublicKeysResponse {
            keys: vec![PublicKey {
                keyid: public.keyid(self.daemon.config.keyid_scheme),
                algorithm: algorithm.into(),
                pem: public.to_spki_pem(),
            }],
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn code_of(error: ServiceError) -> tonic::Code {
        Status::from(error).code()
    }

    fn io_error() -> std::io::Error {
        std::io::Error::from(std::io::ErrorKind::PermissionDenied)
    }

    #[test]
    fn a_request_error_is_invalid_argument_with_its_reason() {
        let status = Status::from(ServiceError::from(RequestError::ParentComponent {
            what: crate::executor::PathRole::OutputPath,
            path: "../x".into(),
        }));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "output path \"../x\" contains \"..\", which could leave the build's tree"
        );
        let digest = attest_tree::hash_bytes(b"d");
        for bad_tree in [
            MaterializeError::TooDeep {
                max: 256,
                at: PathBuf::from("a"),
            },
            MaterializeError::BadDirectory {
                digest,
                source: attest_tree::TreeError::MalformedDigest("x".into()),
            },
        ] {
            assert_eq!(code_of(bad_tree.into()), tonic::Code::InvalidArgument);
        }
        let mismatch = StoreError::DigestMismatch {
            digest,
            received: "00".into(),
            received_size: 1,
        };
        assert_eq!(code_of(mismatch.into()), tonic::Code::InvalidArgument);
    }

    #[test]
    fn a_daemon_fault_is_internal_with_its_cause_in_the_message() {
        let fault = MaterializeError::Io {
            action: "create",
            path: PathBuf::from("/state/inputs/x"),
            source: io_error(),
        };
        let status = Status::from(ServiceError::from(fault));
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(
            status
                .message()
                .starts_with("cannot create /state/inputs/x: "),
            "{}",
            status.message()
        );
        let store_fault = StoreError::Io {
            action: "read",
            path: PathBuf::from("/state/cas/x"),
            source: io_error(),
        };
        assert_eq!(
            code_of(ServiceError::Materialize(store_fault.into())),
            tonic::Code::Internal
        );
    }

    #[test]
    fn missing_lost_and_absent_data_have_their_own_codes() {
        let digest = attest_tree::hash_bytes(b"d");
        assert_eq!(
            code_of(StoreError::NotFound { digest }.into()),
            tonic::Code::FailedPrecondition
        );
        // The same missing blob seen while walking a tree.
        assert_eq!(
            code_of(MaterializeError::from(StoreError::NotFound { digest }).into()),
            tonic::Code::FailedPrecondition
        );
        assert_eq!(
            code_of(StoreError::Corrupt { digest }.into()),
            tonic::Code::DataLoss
        );
        assert_eq!(
            code_of(ServiceError::DownloadNotFound { digest }),
            tonic::Code::NotFound
        );
        assert_eq!(
            code_of(ServiceError::AttestationNotFound {
                invocation_id: "x".into()
            }),
            tonic::Code::NotFound
        );
    }

    #[test]
    fn a_verdict_for_an_unknown_rebuild_is_not_found_and_for_another_request_invalid() {
        assert_eq!(
            code_of(
                VerdictError::RebuildNotFound {
                    invocation_id: "x".into()
                }
                .into()
            ),
            tonic::Code::NotFound
        );
        assert_eq!(
            code_of(
                VerdictError::Compare {
                    invocation_id: "x".into(),
                    source: attest_provenance::reproducibility::CompareError::SameInvocation {
                        invocation_id: "x".into()
                    },
                }
                .into()
            ),
            tonic::Code::InvalidArgument
        );
    }
}
