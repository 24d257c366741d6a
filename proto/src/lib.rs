//! The attestd gRPC contract, `attest.v1`, compiled from `proto/attest/v1`.
//!
//! Both the daemon and the client depend on this crate; it also owns the
//! defaults that both sides must agree on, such as where the daemon's
//! socket lives when nobody says otherwise.
#![forbid(unsafe_code)]

use std::path::PathBuf;

/// Generated messages and services of package `attest.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("attest.v1");

    /// The encoded `FileDescriptorSet` of every `attest.v1` file, for gRPC
    /// server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/attest_v1_descriptor.bin"));
}

/// Environment variable that names the daemon's socket for every client.
pub const SOCKET_ENV: &str = "ATTEST_SOCKET";

/// The socket path the daemon listens on and the client dials when neither
/// is told otherwise: `/run/attestd/attestd.sock` for root,
/// `$XDG_RUNTIME_DIR/attestd/attestd.sock` for other users that have one,
/// and `/tmp/attestd-<uid>/attestd.sock` otherwise.
pub fn default_socket_path() -> PathBuf {
    let uid = current_uid();
    if uid == 0 {
        return PathBuf::from("/run/attestd/attestd.sock");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("attestd/attestd.sock"),
        _ => PathBuf::from(format!("/tmp/attestd-{uid}/attestd.sock")),
    }
}

/// The socket a client dials when not told: the per-user default when a
/// daemon listens there, else the system daemon's socket when one exists
/// (a non-root CI runner talking to the host's root daemon), else the
/// per-user default (so the error names the path a user would expect).
pub fn client_socket_path() -> PathBuf {
    let own = default_socket_path();
    let system = PathBuf::from("/run/attestd/attestd.sock");
    if own.exists() || !system.exists() {
        own
    } else {
        system
    }
}

/// Parses a size as users write it for limits on both sides of the
/// contract (`attest run --memory 512M`, `attestd --max-memory 16G`, the
/// config file): `512M`, `2G` and `2GiB` are binary units, plain digits
/// are bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let normalized = match trimmed.chars().last() {
        Some('K' | 'M' | 'G' | 'T') => format!("{trimmed}iB"),
        _ => trimmed.to_string(),
    };
    normalized
        .parse::<bytesize::ByteSize>()
        .map(|s| s.as_u64())
        .map_err(|e| format!("{text:?} is not a size like 512M or 2GiB: {e}"))
}

/// The real uid of this process, read from `/proc/self/status` so that this
/// crate needs no unsafe code and no libc.
pub fn current_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().next())
                .and_then(|uid| uid.parse().ok())
        })
        .unwrap_or(u32::MAX)
}
