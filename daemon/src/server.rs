//! Serving the four attest.v1 services plus grpc.health.v1 and server
//! reflection on a Unix socket.

use crate::executor::Daemon;
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
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ServerError {
    let path = path.to_path_buf();
    move |source| ServerError::Io {
        action,
        path,
        source,
    }
}

/// Binds the socket (replacing a stale one), then serves until `shutdown`
/// completes. The socket is 0660: only the daemon's user and group may
/// request builds.
pub async fn serve(
    daemon: Arc<Daemon>,
    socket: &Path,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), ServerError> {
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
    tracing::info!(socket = %socket.display(), "attestd is serving");
    let result = tonic::transport::Server::builder()
        .add_service(health_service)
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
        .add_service(KeysServer::new(services))
        // Every connection through the :authority rewrite, so stock gRPC
        // clients work with their defaults (see uds_authority).
        .serve_with_incoming_shutdown(
            UnixListenerStream::new(listener).map(|s| s.map(UdsConnection::new)),
            shutdown,
        )
        .await;
    let _ = std::fs::remove_file(socket);
    result.map_err(ServerError::Transport)
}
