//! A typed attest.v1 client over the daemon's Unix socket.

use crate::error::ClientError;
use attest_proto::v1::{
    attestations_client::AttestationsClient, build_client::BuildClient,
    content_store_client::ContentStoreClient, keys_client::KeysClient, Attestation, BuildEvent,
    BuildRequest, DownloadBlobRequest, FindMissingBlobsRequest, GetByInvocationRequest,
    GetPublicKeysRequest, ListBySubjectRequest, PublicKey, UploadBlobsRequest,
};
use attest_tree::Digest;
use hyper_util::rt::TokioIo;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint, Uri};

/// Digests per FindMissingBlobs request (the daemon accepts up to 100000).
const FIND_MISSING_BATCH: usize = 10_000;
/// Bytes per upload chunk.
pub const UPLOAD_CHUNK: usize = 1 << 20;
/// Largest message accepted from the daemon.
const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// Where an upload's bytes come from.
#[derive(Debug, Clone)]
pub enum BlobSource {
    /// Bytes already in memory (directory messages).
    Bytes(Vec<u8>),
    /// A file on disk, read as it is sent.
    File(PathBuf),
}

/// A connection to one daemon.
#[derive(Clone)]
pub struct Client {
    channel: Channel,
}

impl Client {
    /// Connects to the daemon listening on `socket`.
    pub async fn connect(socket: &Path) -> Result<Client, ClientError> {
        let path = socket.to_path_buf();
        // The URI is required by the API but unused: the connector dials the socket.
        let channel = Endpoint::from_static("http://attestd.local")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await
            .map_err(|source| ClientError::Connect {
                socket: socket.to_path_buf(),
                source,
            })?;
        Ok(Client { channel })
    }

    /// The underlying channel, for services this type does not wrap (such
    /// as grpc.health.v1).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    fn cas(&self) -> ContentStoreClient<Channel> {
        ContentStoreClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Which of these blobs the daemon does not have.
    pub async fn find_missing(&self, digests: &[Digest]) -> Result<Vec<Digest>, ClientError> {
        let mut missing = Vec::new();
        for batch in digests.chunks(FIND_MISSING_BATCH) {
            let response = self
                .cas()
                .find_missing_blobs(FindMissingBlobsRequest {
                    digests: batch.iter().map(Digest::to_proto).collect(),
                })
                .await?
                .into_inner();
            for d in &response.missing {
                missing
                    .push(Digest::from_proto(d).map_err(|e| ClientError::Protocol(e.to_string()))?);
            }
        }
        Ok(missing)
    }

    /// Uploads blobs in one stream; `on_sent` is told each chunk's size.
    /// Returns the number of bytes the daemon received and hashed.
    pub async fn upload(
        &self,
        blobs: Vec<(Digest, BlobSource)>,
        on_sent: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<u64, ClientError> {
        if blobs.is_empty() {
            return Ok(0);
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<UploadBlobsRequest>(8);
        let (err_tx, mut err_rx) = tokio::sync::oneshot::channel::<ClientError>();
        // Files are read on a blocking thread while the stream sends.
        let reader = tokio::task::spawn_blocking(move || {
            use std::io::Read;
            for (digest, source) in blobs {
                match source {
                    BlobSource::Bytes(bytes) => {
                        on_sent(bytes.len() as u64);
                        let chunk = UploadBlobsRequest {
                            digest: Some(digest.to_proto()),
                            data: bytes,
                        };
                        if tx.blocking_send(chunk).is_err() {
                            return;
                        }
                    }
                    BlobSource::File(path) => {
                        let mut file = match std::fs::File::open(&path) {
                            Ok(f) => f,
                            Err(e) => {
                                let _ = err_tx.send(ClientError::io("open", &path)(e));
                                return;
                            }
                        };
                        let mut first = true;
                        loop {
                            let mut buffer = vec![0u8; UPLOAD_CHUNK];
                            let n = match file.read(&mut buffer) {
                                Ok(n) => n,
                                Err(e) => {
                                    let _ = err_tx.send(ClientError::io("read", &path)(e));
                                    return;
                                }
                            };
                            if n == 0 && !first {
                                break;
                            }
                            buffer.truncate(n);
                            on_sent(n as u64);
                            let chunk = UploadBlobsRequest {
                                digest: first.then(|| digest.to_proto()),
                                data: buffer,
                            };
                            first = false;
                            if tx.blocking_send(chunk).is_err() {
                                return;
                            }
                            if n == 0 {
                                break;
                            }
                        }
                    }
                }
            }
        });
        let result = self
            .cas()
            .upload_blobs(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await;
        let _ = reader.await;
        if let Ok(error) = err_rx.try_recv() {
            return Err(error);
        }
        Ok(result?.into_inner().received_bytes as u64)
    }

    /// Starts a build; the stream ends with a BuildDone event.
    pub async fn build(
        &self,
        request: BuildRequest,
    ) -> Result<tonic::Streaming<BuildEvent>, ClientError> {
        Ok(BuildClient::new(self.channel.clone())
            .execute(request)
            .await?
            .into_inner())
    }

    /// Downloads a blob to `dest`, checking its digest as it arrives. The
    /// bytes go to a temporary file beside `dest` that is renamed into place
    /// only when complete and matching: never a partial product.
    pub async fn download(
        &self,
        digest: &Digest,
        dest: &Path,
        executable: bool,
    ) -> Result<(), ClientError> {
        let parent = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(ClientError::io("create", parent))?;
        let tmp = parent.join(format!(
            ".{}.attest-partial-{}",
            dest.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            std::process::id()
        ));
        let result = async {
            let mut stream = self
                .cas()
                .download_blob(DownloadBlobRequest {
                    digest: Some(digest.to_proto()),
                })
                .await?
                .into_inner();
            let mut file = tokio::fs::File::create(&tmp)
                .await
                .map_err(ClientError::io("create", &tmp))?;
            let mut context = ring::digest::Context::new(&ring::digest::SHA256);
            let mut size = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                context.update(&chunk.data);
                size += chunk.data.len() as u64;
                file.write_all(&chunk.data)
                    .await
                    .map_err(ClientError::io("write", &tmp))?;
            }
            file.sync_all()
                .await
                .map_err(ClientError::io("sync", &tmp))?;
            if size != digest.size || context.finish().as_ref() != digest.hash {
                return Err(ClientError::DownloadMismatch {
                    path: dest.to_path_buf(),
                    expected: digest.to_string(),
                });
            }
            use std::os::unix::fs::PermissionsExt;
            let mode = if executable { 0o755 } else { 0o644 };
            tokio::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
                .await
                .map_err(ClientError::io("chmod", &tmp))?;
            tokio::fs::rename(&tmp, dest)
                .await
                .map_err(ClientError::io("write", dest))
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }

    /// The daemon's public verification keys.
    pub async fn public_keys(&self) -> Result<Vec<PublicKey>, ClientError> {
        Ok(KeysClient::new(self.channel.clone())
            .get_public_keys(GetPublicKeysRequest {})
            .await?
            .into_inner()
            .keys)
    }

    /// The attestation of one build.
    pub async fn attestation(&self, invocation_id: &str) -> Result<Attestation, ClientError> {
        Ok(AttestationsClient::new(self.channel.clone())
            .get_by_invocation(GetByInvocationRequest {
                invocation_id: invocation_id.into(),
            })
            .await?
            .into_inner())
    }

    /// Every attestation naming this sha256 as a subject, newest first.
    pub async fn attestations_for(&self, sha256: &str) -> Result<Vec<Attestation>, ClientError> {
        Ok(AttestationsClient::new(self.channel.clone())
            .list_by_subject(ListBySubjectRequest {
                sha256: sha256.into(),
            })
            .await?
            .into_inner()
            .attestations)
    }
}
