//! The gRPC services: thin adapters from attest.v1 messages to the
//! daemon's store, executor, index and signer.

use crate::error::DaemonError;
use crate::executor::{execute, validate, Daemon};
use attest_proto::v1::{
    attestations_server::Attestations, build_server::Build, content_store_server::ContentStore,
    keys_server::Keys, Attestation, BuildEvent, BuildRequest, DownloadBlobRequest,
    DownloadBlobResponse, FindMissingBlobsRequest, FindMissingBlobsResponse,
    GetByInvocationRequest, GetPublicKeysRequest, GetPublicKeysResponse, ListBySubjectRequest,
    ListBySubjectResponse, PublicKey, UploadBlobsRequest, UploadBlobsResponse,
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
/// Blobs being made durable at once during one upload.
const MAX_CONCURRENT_FINISHES: usize = 64;
/// Chunk size of blob downloads (under gRPC's 4 MiB default message cap).
const DOWNLOAD_CHUNK: usize = 1 << 20;

/// All four services share the daemon state.
#[derive(Clone)]
pub struct Services {
    pub daemon: Arc<Daemon>,
}

fn digest_arg(digest: Option<&attest_proto::v1::Digest>, what: &str) -> Result<Digest, Status> {
    let digest = digest.ok_or_else(|| Status::invalid_argument(format!("{what} is missing")))?;
    Digest::from_proto(digest).map_err(|e| Status::invalid_argument(format!("{what}: {e}")))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DaemonError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("worker task failed: {e}")))?
        .map_err(Status::from)
}

#[tonic::async_trait]
impl ContentStore for Services {
    async fn find_missing_blobs(
        &self,
        request: Request<FindMissingBlobsRequest>,
    ) -> Result<Response<FindMissingBlobsResponse>, Status> {
        let request = request.into_inner();
        if request.digests.len() > MAX_FIND_MISSING {
            return Err(Status::invalid_argument(format!(
                "{} digests in one request; at most {MAX_FIND_MISSING}",
                request.digests.len()
            )));
        }
        let mut digests = Vec::with_capacity(request.digests.len());
        for d in &request.digests {
            digests.push(digest_arg(Some(d), "digest")?);
        }
        let daemon = self.daemon.clone();
        let missing = blocking(move || {
            let mut seen = std::collections::HashSet::new();
            Ok(digests
                .into_iter()
                .filter(|d| seen.insert(*d) && !daemon.store.contains(d))
                .map(|d| d.to_proto())
                .collect())
        })
        .await?;
        Ok(Response::new(FindMissingBlobsResponse { missing }))
    }

    async fn upload_blobs(
        &self,
        request: Request<Streaming<UploadBlobsRequest>>,
    ) -> Result<Response<UploadBlobsResponse>, Status> {
        let mut stream = request.into_inner();
        let store = self.daemon.store.clone();
        let mut current: Option<crate::store::BlobWriter> = None;
        let mut received: i64 = 0;
        // Each blob is fsynced before it is renamed into place. Done one
        // after another, 20,000 small files cost 20,000 journal commits;
        // done concurrently, the filesystem commits many in one, so finishes
        // run on blocking threads, a bounded number at a time.
        let mut finishing = tokio::task::JoinSet::new();
        let mut stored = Vec::new();
        let collect =
            |joined: Result<Result<attest_tree::Digest, DaemonError>, tokio::task::JoinError>,
             stored: &mut Vec<attest_proto::v1::Digest>|
             -> Result<(), Status> {
                let digest = joined
                    .map_err(|e| Status::internal(format!("storing a blob failed: {e}")))?
                    .map_err(Status::from)?;
                stored.push(digest.to_proto());
                Ok(())
            };
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            if let Some(digest) = chunk.digest.as_ref() {
                if let Some(writer) = current.take() {
                    if finishing.len() >= MAX_CONCURRENT_FINISHES {
                        if let Some(joined) = finishing.join_next().await {
                            collect(joined, &mut stored)?;
                        }
                    }
                    finishing.spawn_blocking(move || writer.finish());
                }
                let digest = digest_arg(Some(digest), "blob digest")?;
                current = Some(store.writer(digest).map_err(Status::from)?);
            }
            let Some(writer) = current.as_mut() else {
                return Err(Status::invalid_argument(
                    "the first chunk of an upload must carry the blob's digest",
                ));
            };
            received += chunk.data.len() as i64;
            tokio::task::block_in_place(|| writer.write(&chunk.data)).map_err(Status::from)?;
        }
        if let Some(writer) = current.take() {
            finishing.spawn_blocking(move || writer.finish());
        }
        while let Some(joined) = finishing.join_next().await {
            collect(joined, &mut stored)?;
        }
        Ok(Response::new(UploadBlobsResponse {
            stored,
            received_bytes: received,
        }))
    }

    type DownloadBlobStream =
        Pin<Box<dyn Stream<Item = Result<DownloadBlobResponse, Status>> + Send>>;

    async fn download_blob(
        &self,
        request: Request<DownloadBlobRequest>,
    ) -> Result<Response<Self::DownloadBlobStream>, Status> {
        let digest = digest_arg(request.get_ref().digest.as_ref(), "digest")?;
        let store = self.daemon.store.clone();
        let mut file = blocking(move || store.open_blob(&digest))
            .await
            .map_err(|s| {
                if s.code() == tonic::Code::FailedPrecondition {
                    Status::not_found(s.message())
                } else {
                    s
                }
            })?;
        let (tx, rx) = mpsc::channel(4);
        // The digest is re-checked while streaming: a blob corrupted on disk
        // ends the stream with DATA_LOSS rather than passing as whole.
        tokio::task::spawn_blocking(move || {
            let mut context = ring::digest::Context::new(&ring::digest::SHA256);
            let mut total = 0u64;
            loop {
                let mut buffer = vec![0u8; DOWNLOAD_CHUNK];
                let n = match file.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(Status::internal(format!(
                            "reading blob {digest} failed: {e}"
                        ))));
                        return;
                    }
                };
                buffer.truncate(n);
                context.update(&buffer);
                total += n as u64;
                if total == digest.size {
                    if context.clone().finish().as_ref() != digest.hash {
                        let _ = tx.blocking_send(Err(Status::data_loss(format!(
                            "stored blob {digest} no longer matches its digest"
                        ))));
                        return;
                    }
                } else if total > digest.size {
                    let _ = tx.blocking_send(Err(Status::data_loss(format!(
                        "stored blob {digest} is longer than its digest says"
                    ))));
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
                let _ = tx.blocking_send(Err(Status::data_loss(format!(
                    "stored blob {digest} is shorter than its digest says"
                ))));
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
        let request = validate(request.get_ref()).map_err(Status::from)?;
        // Everything the step needs must be in the store before the build is
        // accepted, so a missing blob is a clear error, not a failed build.
        let daemon = self.daemon.clone();
        let root = request.input_root;
        let stats = blocking(move || daemon.inputs.check_complete(&daemon.store, &root)).await?;
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
                .ok_or(DaemonError::AttestationNotFound(format!(
                    "for invocation {id:?}"
                )))
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
        Digest::from_hex(&sha, 0).map_err(|e| Status::invalid_argument(e.to_string()))?;
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
