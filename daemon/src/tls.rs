//! Mutual TLS on the `--listen` TCP listeners, with rustls (ring).
//!
//! Why not tonic's `ServerTlsConfig`: it verifies the client certificate
//! inside the handshake, and in TLS 1.3 the client has already finished
//! its side of the handshake and sent its first request when the server's
//! refusal (an alert) arrives; the server then closes a socket with that
//! request unread, the kernel answers with a reset, and the client usually
//! loses the alert: it sees "connection closed" or "broken pipe" for an
//! expired certificate, an unknown CA or none at all. So here:
//!
//! 1. the handshake offers client authentication (with `--client-ca`'s
//!    names as hints) and checks that the client holds the key of the
//!    certificate it presents (the CertificateVerify signature), but
//!    defers the certificate's own verification ([`DeferredVerifier`]);
//! 2. right after the handshake the certificate is verified against
//!    `--client-ca` by rustls's own WebPKI verifier (chain, validity
//!    period, client-auth usage), exactly the check the handshake would
//!    have made, and the verdict is stored with the connection
//!    ([`MtlsConnectInfo`]);
//! 3. every call on the connection passes `server::admit` first, which
//!    refuses a connection whose verdict is not a verified certificate with
//!    UNAUTHENTICATED and the reason, before any service sees the call.
//!
//! Nothing reaches a service on a TCP listener without the `admit` layer
//! (`server::serve_tcp` puts it in front of every route), so deferring the
//! check moves where it is reported, not whether it is made.

use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the TLS configuration could not be built from the PEM files.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {path} is not PEM")]
    Pem {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("{what} {path} holds no certificate")]
    NoCertificate { what: &'static str, path: PathBuf },
    #[error("the client CA {path} cannot be used")]
    ClientCa {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("the client CA {path} cannot verify client certificates")]
    Verifier {
        path: PathBuf,
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    #[error("the server certificate {cert} and key {key} cannot be used together")]
    ServerIdentity {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
}

/// What the handshake and the check after it found about the client.
#[derive(Debug, Clone)]
pub enum ClientVerdict {
    /// Verified against `--client-ca`: the end-entity certificate first.
    Verified(Arc<Vec<CertificateDer<'static>>>),
    NoCertificate,
    /// Presented, and refused by the verifier (expired, unknown issuer...).
    Refused(rustls::Error),
}

/// The connection info of an mTLS connection, for `Requester::observe`.
#[derive(Debug, Clone)]
pub struct MtlsConnectInfo {
    pub remote_addr: Option<SocketAddr>,
    pub verdict: ClientVerdict,
}

/// Offers client authentication and checks the client's signature in the
/// handshake, but defers the certificate's verification to
/// [`MtlsAcceptor::verdict`] (module docs: why).
#[derive(Debug)]
struct DeferredVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for DeferredVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    /// Not required in the handshake: a client without one is refused,
    /// with a status that says so, on its first call.
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Deferred, never skipped: MtlsAcceptor::verdict runs `inner` on
        // the same certificates once the handshake is done.
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The TLS side of the TCP listeners.
#[derive(Clone)]
pub struct MtlsAcceptor {
    acceptor: tokio_rustls::TlsAcceptor,
    /// rustls's WebPKI verifier over `--client-ca`.
    verifier: Arc<dyn ClientCertVerifier>,
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            what,
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

impl MtlsAcceptor {
    /// Reads the PEM files and builds the TLS configuration (TLS 1.2 and
    /// 1.3, ring, ALPN h2).
    pub fn new(cert: &Path, key: &Path, client_ca: &Path) -> Result<MtlsAcceptor, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for ca in certificates("client CA", client_ca)? {
            roots.add(ca).map_err(|source| TlsError::ClientCa {
                path: client_ca.to_path_buf(),
                source,
            })?;
        }
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|source| TlsError::Verifier {
                    path: client_ca.to_path_buf(),
                    source,
                })?;
        let chain = certificates("server certificate", cert)?;
        let key_der = PrivateKeyDer::from_pem_slice(&read("TLS key", key)?).map_err(|source| {
            TlsError::Pem {
                what: "TLS key",
                path: key.to_path_buf(),
                source,
            }
        })?;
        let identity_error = |source| TlsError::ServerIdentity {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            source,
        };
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(identity_error)?
            .with_client_cert_verifier(Arc::new(DeferredVerifier {
                inner: verifier.clone(),
            }))
            .with_single_cert(chain, key_der)
            .map_err(identity_error)?;
        // gRPC is HTTP/2 only.
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(MtlsAcceptor {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            verifier,
        })
    }

    /// The deferred check: the presented chain against `--client-ca`, now.
    fn verdict(&self, presented: Option<&[CertificateDer<'static>]>) -> ClientVerdict {
        let Some((leaf, intermediates)) = presented.and_then(|c| c.split_first()) else {
            return ClientVerdict::NoCertificate;
        };
        match self
            .verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
        {
            Ok(_) => ClientVerdict::Verified(Arc::new(presented.unwrap_or_default().to_vec())),
            Err(e) => ClientVerdict::Refused(e),
        }
    }

    /// Accepts on `listener` until the server stops taking connections:
    /// each handshake on its own task (a slow client holds up no other),
    /// each finished connection handed to the server with its verdict.
    pub fn incoming(
        self,
        listener: TcpListener,
    ) -> ReceiverStream<std::io::Result<MtlsConnection>> {
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    () = tx.closed() => return,
                };
                let (tcp, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // EMFILE and the like: wait rather than spin.
                        tracing::warn!(error = %e, "cannot accept a TCP connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                // gRPC's small frames would wait on Nagle's algorithm otherwise.
                let _ = tcp.set_nodelay(true);
                let this = self.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, this.acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let verdict = this.verdict(stream.get_ref().1.peer_certificates());
                            if let ClientVerdict::Refused(e) = &verdict {
                                tracing::warn!(%peer, error = %e, "TCP client certificate refused");
                            }
                            let info = MtlsConnectInfo {
                                remote_addr: Some(peer),
                                verdict,
                            };
                            let _ = tx.send(Ok(MtlsConnection { stream, info })).await;
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(%peer, error = %e, "TLS handshake failed")
                        }
                        Err(_) => tracing::warn!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        ReceiverStream::new(rx)
    }
}

/// One accepted mTLS connection.
pub struct MtlsConnection {
    stream: TlsStream<TcpStream>,
    info: MtlsConnectInfo,
}

impl Connected for MtlsConnection {
    type ConnectInfo = MtlsConnectInfo;

    fn connect_info(&self) -> MtlsConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for MtlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for MtlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
