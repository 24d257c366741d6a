//! Serving the four attest.v1 services plus grpc.health.v1 and server
//! reflection on a Unix socket, and on the `--listen` TCP addresses with
//! mutual TLS.
//!
//! The Unix socket's connections go through the `:authority` rewrite
//! (`uds_authority`); TCP connections never do: over TCP a client names a
//! real host, and h2 checks it unchanged. Every TCP call first passes the
//! `--allow-client` check on its verified client certificate.

use crate::config::TcpConfig;
use crate::executor::Daemon;
use crate::requester::{AllowList, Requester};
use crate::service::Services;
use crate::uds_authority::UdsConnection;
use attest_proto::v1::{
    attestations_server::AttestationsServer, build_server::BuildServer,
    content_store_server::ContentStoreServer, keys_server::KeysServer,
};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_stream::StreamExt;
use tonic::transport::server::TcpIncoming;

/// Largest gRPC message accepted (uploads are chunked well below this).
const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A live daemon on this socket must not be displaced.
    #[error("another daemon is already listening on {socket}")]
    SocketInUse { socket: PathBuf },
    #[error("cannot build the reflection service")]
    Reflection(#[source] tonic_reflection::server::Error),
    #[error("the gRPC server failed")]
    Transport(#[source] tonic::transport::Error),
    #[error("cannot listen on tcp://{addr}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up the TCP listeners' TLS")]
    Tls(#[from] crate::tls::TlsError),
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ServerError {
    let path = path.to_path_buf();
    move |source| ServerError::Io {
        action,
        path,
        source,
    }
}

/// Binds the socket (replacing a stale one) and the TCP listeners, then
/// serves until `shutdown` completes. The socket is 0660: only the
/// daemon's user and group may request builds there.
pub async fn serve(
    daemon: Arc<Daemon>,
    socket: &Path,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    use futures::FutureExt;
    let shutdown = shutdown.shared();
    let tcp = daemon.config.tcp.clone();
    if let Some(parent) = socket.parent() {
        std::fs::create_dir_all(parent).map_err(io("create", parent))?;
    }
    if socket.exists() {
        // A live daemon on this socket must not be displaced.
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return Err(ServerError::SocketInUse {
                socket: socket.to_path_buf(),
            });
        }
        std::fs::remove_file(socket).map_err(io("remove stale socket", socket))?;
    }
    let listener = tokio::net::UnixListener::bind(socket).map_err(io("listen on", socket))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))
        .map_err(io("chmod", socket))?;

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<ContentStoreServer<Services>>()
        .await;
    health_reporter.set_serving::<BuildServer<Services>>().await;
    health_reporter
        .set_serving::<AttestationsServer<Services>>()
        .await;
    health_reporter.set_serving::<KeysServer<Services>>().await;
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(attest_proto::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection = reflection_builder()
        .build_v1()
        .map_err(ServerError::Reflection)?;
    // v1alpha too: Python's grpcio-reflection and other stock clients
    // speak only that version (grpcurl tries v1, then v1alpha).
    let reflection_v1alpha = reflection_builder()
        .build_v1alpha()
        .map_err(ServerError::Reflection)?;

    let services = Services { daemon };
    let routes = tonic::service::Routes::new(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(
            ContentStoreServer::new(services.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(BuildServer::new(services.clone()))
        // SignReproducibility receives a whole provenance, which for a tree
        // of tens of thousands of files passes gRPC's 4 MiB default.
        .add_service(
            AttestationsServer::new(services.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(KeysServer::new(services));

    // Read and bound before anything is served, so bad PEM files or a
    // busy port fail the start.
    let acceptor = match &tcp.tls {
        Some(files) => Some(crate::tls::MtlsAcceptor::new(
            &files.cert,
            &files.key,
            &files.client_ca,
        )?),
        None => None,
    };
    let mut tcp_servers = Vec::new();
    for addr in &tcp.listen {
        let bind_error = |source| ServerError::Bind {
            addr: *addr,
            source,
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(bind_error)?;
        let bound = listener.local_addr().map_err(bind_error)?;
        tcp_servers.push(serve_tcp(
            &tcp,
            acceptor.clone(),
            bound,
            listener,
            routes.clone(),
            shutdown.clone(),
        ));
    }

    tracing::info!(socket = %socket.display(), "attestd is serving");
    let unix = async {
        let result = tonic::transport::Server::builder()
            .add_routes(routes)
            // Every connection through the :authority rewrite, so stock gRPC
            // clients work with their defaults (see uds_authority).
            .serve_with_incoming_shutdown(
                UnixListenerStream::new(listener).map(|s| s.map(UdsConnection::new)),
                shutdown,
            )
            .await;
        let _ = std::fs::remove_file(socket);
        result.map_err(ServerError::Transport)
    };
    futures::future::try_join(unix, futures::future::try_join_all(tcp_servers)).await?;
    Ok(())
}

/// One TCP listener: mutual TLS (or plaintext when so configured), each
/// call admitted (a verified client certificate, then `--allow-client`)
/// before any service sees it.
fn serve_tcp(
    tcp: &TcpConfig,
    acceptor: Option<crate::tls::MtlsAcceptor>,
    bound: std::net::SocketAddr,
    listener: tokio::net::TcpListener,
    routes: tonic::service::Routes,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> futures::future::BoxFuture<'static, Result<(), ServerError>> {
    use futures::FutureExt;
    match &tcp.tls {
        Some(files) => {
            if tcp.allow.patterns.is_empty() {
                tracing::info!(listen = %bound, client_ca = %files.client_ca.display(), "serving TCP with mutual TLS; no --allow-client: every certificate the client CA signed may request builds");
            } else {
                tracing::info!(listen = %bound, client_ca = %files.client_ca.display(), allow_client = ?tcp.allow.patterns, "serving TCP with mutual TLS");
            }
        }
        None => tracing::warn!(
            listen = %bound,
            "serving PLAINTEXT TCP (--dangerously-allow-plaintext-tcp): anyone who reaches this port can request builds; every provenance records it"
        ),
    }
    let allow = Arc::new(tcp.allow.clone());
    let router = tonic::transport::Server::builder()
        .layer(tonic::service::InterceptorLayer::new(
            move |request: tonic::Request<()>| admit(&allow, request),
        ))
        .add_routes(routes);
    match acceptor {
        Some(acceptor) => async move {
            router
                .serve_with_incoming_shutdown(acceptor.incoming(listener), shutdown)
                .await
                .map_err(ServerError::Transport)
        }
        .boxed(),
        None => async move {
            router
                .serve_with_incoming_shutdown(
                    // gRPC's small frames would wait on Nagle's algorithm otherwise.
                    TcpIncoming::from(listener).with_nodelay(Some(true)),
                    shutdown,
                )
                .await
                .map_err(ServerError::Transport)
        }
        .boxed(),
    }
}

/// The `--allow-client` check of every TCP call, before any service sees it.
fn admit(
    allow: &AllowList,
    request: tonic::Request<()>,
) -> Result<tonic::Request<()>, tonic::Status> {
    let checked = Requester::observe(&request).and_then(|requester| {
        allow.admit(&requester).inspect_err(|_| {
            tracing::warn!(requester = %requester.describe(), "TCP client refused by --allow-client")
        })
    });
    match checked {
        Ok(()) => Ok(request),
        Err(e) => Err(crate::service::ServiceError::from(e).into()),
    }
}
