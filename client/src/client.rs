//! A typed attest.v1 client over the daemon's Unix socket or a TCP
//! listener with mutual TLS.

use crate::error::ClientError;
use attest_proto::v1::{
    attestations_client::AttestationsClient, build_client::BuildClient,
    content_store_client::ContentStoreClient, keys_client::KeysClient, Attestation, BuildEvent,
    BuildRequest, CheckTreeRequest, DownloadBlobRequest, FindMissingBlobsRequest,
    GetByInvocationRequest, GetPublicKeysRequest, ListBySubjectRequest, PublicKey,
    UploadBlobsRequest,
};
use attest_tree::Digest;
use hyper_util::rt::TokioIo;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint, Uri};

/// Digests per FindMissingBlobs request (the daemon accepts up to 100000).
const FIND_MISSING_BATCH: usize = 10_000;
/// Bytes per upload chunk.
pub const UPLOAD_CHUNK: usize = 1 << 20;
/// Upload streams in flight at once: the daemon receives each on its own
/// task, so several let it store blobs on more than one core (on two
/// cores, 4 streams took a first upload of a 20,000-file tree from 13.5
/// and 10.1 s with 2 to 11.3 and 8.1 s, alternating under load 5 to 6).
pub const UPLOAD_STREAMS: usize = 4;
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

/// The PEM files of a mutual-TLS connection to a daemon's TCP listener.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// The CA that signed the daemon's server certificate.
    pub ca: PathBuf,
    /// This client's certificate, which the daemon's --client-ca signed.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
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

    /// Connects to a daemon's TCP listener: `https://HOST:PORT` with
    /// mutual TLS (`tls` required), or `http://HOST:PORT` for a daemon
    /// that serves plaintext TCP (`--dangerously-allow-plaintext-tcp`).
    pub async fn connect_endpoint(
        endpoint: &str,
        tls: Option<&ClientTls>,
    ) -> Result<Client, ClientError> {
        let connect_error = |source| ClientError::ConnectEndpoint {
            endpoint: endpoint.to_string(),
            source,
        };
        let mut target = Endpoint::from_shared(endpoint.to_string()).map_err(connect_error)?;
        match (endpoint.starts_with("https://"), tls) {
            (true, Some(tls)) => {
                let read = |path: &PathBuf| {
                    std::fs::read(path).map_err(ClientError::io("read", path.clone()))
                };
                let config = tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(read(&tls.ca)?))
                    .identity(tonic::transport::Identity::from_pem(
                        read(&tls.cert)?,
                        read(&tls.key)?,
                    ));
                target = target.tls_config(config).map_err(connect_error)?;
            }
            (true, None) => {
                return Err(ClientError::Invalid(format!(
                    "{endpoint} is https: give --tls-ca, --tls-cert and --tls-key"
                )))
            }
            (false, Some(_)) => {
                return Err(ClientError::Invalid(format!(
                    "{endpoint} is not https://, so --tls-ca, --tls-cert and --tls-key would not be used"
                )))
            }
            (false, None) if endpoint.starts_with("http://") => {}
            (false, None) => {
                return Err(ClientError::Invalid(format!(
                    "{endpoint} is neither https://HOST:PORT nor http://HOST:PORT"
                )))
            }
        }
        let channel = target.connect().await.map_err(connect_error)?;
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

    /// Whether the daemon holds the whole tree named by `root`, so that a
    /// build of it needs no upload (CheckTree). A hint only: the build
    /// checks its input again.
    pub async fn tree_complete(&self, root: &Digest) -> Result<bool, ClientError> {
        Ok(self
            .cas()
            .check_tree(CheckTreeRequest {
                root: Some(root.to_proto()),
            })
            .await?
            .into_inner()
            .complete)
    }

    /// Which of these blobs the daemon does not have. The batches are
    /// asked at once, so the daemon answers them on all its cores.
    pub async fn find_missing(&self, digests: &[Digest]) -> Result<Vec<Digest>, ClientError> {
        let answers =
            futures::future::try_join_all(digests.chunks(FIND_MISSING_BATCH).map(|batch| {
                let mut cas = self.cas();
                let request = FindMissingBlobsRequest {
                    digests: batch.iter().map(Digest::to_proto).collect(),
                };
                async move { cas.find_missing_blobs(request).await }
            }))
            .await?;
        let mut missing = Vec::new();
        for response in answers {
            for d in &response.into_inner().missing {
                missing
                    .push(Digest::from_proto(d).map_err(|e| ClientError::Protocol(e.to_string()))?);
            }
        }
        Ok(missing)
    }

    /// Uploads blobs over [`UPLOAD_STREAMS`] concurrent streams; `on_sent`
    /// is told each chunk's size. Returns the number of bytes the daemon
    /// received and hashed.
    ///
    /// A file is read as it is sent, in chunks of at most [`UPLOAD_CHUNK`]
    /// and exactly as many bytes as its digest says (a file that grew is
    /// cut at that size and the daemon judges the bytes; one that shrank is
    /// an error). Each chunk is read into a buffer of its own size, never
    /// zeroed first: for a tree of small files that is about the files'
    /// size in allocations, where a fresh zeroed 1 MiB per read cost more
    /// than the upload itself. At most a few chunks per stream are held at
    /// once (the channel's depth), so memory stays bounded whatever the
    /// files' sizes.
    pub async fn upload(
        &self,
        blobs: Vec<(Digest, BlobSource)>,
        on_sent: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<u64, ClientError> {
        if blobs.is_empty() {
            return Ok(0);
        }
        let on_sent: Arc<dyn Fn(u64) + Send + Sync> = Arc::new(on_sent);
        // Dealt out in turn: trees mix sizes, so each stream gets about the
        // same bytes without sorting.
        let streams = UPLOAD_STREAMS.min(blobs.len());
        let mut shares: Vec<Vec<(Digest, BlobSource)>> = (0..streams)
            .map(|_| Vec::with_capacity(blobs.len() / streams + 1))
            .collect();
        for (i, blob) in blobs.into_iter().enumerate() {
            shares[i % streams].push(blob);
        }
        let received = futures::future::try_join_all(
            shares
                .into_iter()
                .map(|share| self.upload_stream(share, on_sent.clone())),
        )
        .await?;
        Ok(received.into_iter().sum())
    }

    /// Uploads blobs in one stream, read on a blocking thread while the
    /// stream sends.
    async fn upload_stream(
        &self,
        blobs: Vec<(Digest, BlobSource)>,
        on_sent: Arc<dyn Fn(u64) + Send + Sync>,
    ) -> Result<u64, ClientError> {
        let (tx, rx) = tokio::sync::mpsc::channel::<UploadBlobsRequest>(8);
        let reader = tokio::task::spawn_blocking(move || {
            for (digest, source) in blobs {
                let sent = match source {
                    BlobSource::Bytes(bytes) => {
                        on_sent(bytes.len() as u64);
                        tx.blocking_send(UploadBlobsRequest {
                            digest: Some(digest.to_proto()),
                            data: bytes,
                        })
                        .is_ok()
                    }
                    BlobSource::File(path) => send_file(&tx, &digest, &path, &*on_sent)?,
                };
                // The stream was closed: the call failed, and says why.
                if !sent {
                    break;
                }
            }
            Ok::<(), ClientError>(())
        });
        let result = self
            .cas()
            .upload_blobs(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await;
        // A reader's error comes first: it ended the stream early, so the
        // call's own answer is only a consequence.
        reader
            .await
            .map_err(|e| ClientError::Protocol(format!("upload reader failed: {e}")))??;
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

    /// Downloads a blob to `relative` beneath `out_dir`, checking its
    /// digest as it arrives, and returns where it landed. The path is
    /// resolved without following any symlink (`products::Destination`);
    /// the bytes go to a short temporary name in the final directory that
    /// is synced and renamed into place only when complete and matching,
    /// and removed on any failure: never a partial product.
    pub async fn download(
        &self,
        digest: &Digest,
        out_dir: &Path,
        relative: &Path,
        executable: bool,
    ) -> Result<PathBuf, ClientError> {
        let destination = crate::products::Destination::open(out_dir, relative)?;
        let dest = destination.path().to_path_buf();
        let (temp, file) = destination.create_temp()?;
        let tmp = temp.path();
        let mut file = tokio::fs::File::from_std(file);
        let mut stream = self
            .cas()
            .download_blob(DownloadBlobRequest {
                digest: Some(digest.to_proto()),
            })
            .await?
            .into_inner();
        let mut context = ring::digest::Context::new(&ring::digest::SHA256);
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            context.update(&chunk.data);
            size += chunk.data.len() as u64;
            if size > digest.size {
                // More than the attested size: stop before writing it.
                break;
            }
            file.write_all(&chunk.data)
                .await
                .map_err(ClientError::io("write", &tmp))?;
        }
        if size != digest.size || context.finish().as_ref() != digest.hash {
            return Err(ClientError::DownloadMismatch {
                path: dest,
                expected: digest.to_string(),
            });
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = if executable { 0o755 } else { 0o644 };
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .await
            .map_err(ClientError::io("chmod", &tmp))?;
        file.sync_all()
            .await
            .map_err(ClientError::io("sync", &tmp))?;
        drop(file);
        // Dropping `temp` on any error above removed the temporary file.
        temp.commit()?;
        Ok(dest)
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

/// Sends one file as chunks of the blob `digest`: exactly `digest.size`
/// bytes. Returns false if the stream was closed under it.
fn send_file(
    tx: &tokio::sync::mpsc::Sender<UploadBlobsRequest>,
    digest: &Digest,
    path: &Path,
    on_sent: &(dyn Fn(u64) + Send + Sync),
) -> Result<bool, ClientError> {
    let mut file = std::fs::File::open(path).map_err(ClientError::io("open", path))?;
    let mut remaining = digest.size;
    let mut first = true;
    loop {
        let want = remaining.min(UPLOAD_CHUNK as u64);
        // read_to_end fills the spare capacity without zeroing it.
        let mut data = Vec::with_capacity(want as usize);
        (&mut file)
            .take(want)
            .read_to_end(&mut data)
            .map_err(ClientError::io("read", path))?;
        if (data.len() as u64) < want {
            return Err(ClientError::ChangedSinceHashed {
                path: path.to_path_buf(),
            });
        }
        remaining -= want;
        on_sent(want);
        let chunk = UploadBlobsRequest {
            digest: first.then(|| digest.to_proto()),
            data,
        };
        first = false;
        if tx.blocking_send(chunk).is_err() {
            return Ok(false);
        }
        if remaining == 0 {
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    /// Every chunk `send_file` sends for `digest`, or its error.
    fn chunks_of(
        path: &Path,
        digest: Digest,
    ) -> Result<(bool, Vec<UploadBlobsRequest>), ClientError> {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let complete = send_file(&tx, &digest, path, &|_| {})?;
        drop(tx);
        let mut chunks = Vec::new();
        while let Ok(chunk) = rx.try_recv() {
            chunks.push(chunk);
        }
        Ok((complete, chunks))
    }

    #[test]
    fn a_file_is_sent_as_exactly_its_digests_bytes_in_bounded_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let bytes: Vec<u8> = (0..2 * UPLOAD_CHUNK + 5).map(|i| i as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let digest = attest_tree::hash_bytes(&bytes);
        // Bytes appended after hashing are not sent: the blob is what was hashed.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"appended")
            .unwrap();
        let (complete, chunks) = chunks_of(&path, digest).unwrap();
        assert!(complete);
        let sizes: Vec<usize> = chunks.iter().map(|c| c.data.len()).collect();
        assert_eq!(sizes, [UPLOAD_CHUNK, UPLOAD_CHUNK, 5]);
        assert_eq!(chunks[0].digest, Some(digest.to_proto()));
        assert!(chunks[1..].iter().all(|c| c.digest.is_none()));
        let sent: Vec<u8> = chunks.into_iter().flat_map(|c| c.data).collect();
        assert_eq!(sent, bytes);
    }

    #[test]
    fn an_empty_file_is_one_chunk_with_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty");
        std::fs::write(&path, b"").unwrap();
        let digest = attest_tree::hash_bytes(b"");
        let (_, chunks) = chunks_of(&path, digest).unwrap();
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].digest, Some(digest.to_proto()));
        assert!(chunks[0].data.is_empty());
    }

    #[test]
    fn a_file_that_shrank_since_it_was_hashed_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let digest = attest_tree::hash_bytes(b"the longer content");
        std::fs::write(&path, b"shorter").unwrap();
        match chunks_of(&path, digest) {
            Err(ClientError::ChangedSinceHashed { path: named }) => assert_eq!(named, path),
            other => panic!(
                "expected ChangedSinceHashed, got {:?}",
                other.map(|r| r.1.len())
            ),
        }
    }
}
