//! The content store: every blob the daemon holds, named by its sha256.
//!
//! - [`blobs`]: the store itself, one file per blob (large blobs, the
//!   daemon's own products and logs), and every lookup, which sees packed
//!   blobs too;
//! - [`packs`]: the small blobs of uploads, back to back in pack files;
//! - [`gc`]: eviction under size caps, least recently used first, of blobs
//!   and of the materialized input trees built from them.

pub mod blobs;
pub mod gc;
pub mod packs;

pub use blobs::{BlobStore, BlobWriter, PendingBlob, Placed, StoredBlob, TOUCH_AFTER};

use attest_tree::Digest;
use std::path::PathBuf;

/// Why the content store could not store, find or read a blob.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The bytes sent for a blob are not the ones its digest names: the
    /// sender's fault, refused before anything is admitted.
    #[error("blob {digest} does not match its digest: received {received_size} bytes hashing to {received}")]
    DigestMismatch {
        digest: Digest,
        received: String,
        received_size: u64,
    },
    #[error("blob {digest} is not in the content store")]
    NotFound { digest: Digest },
    /// A stored blob's bytes no longer hash to its name.
    #[error("stored blob {digest} no longer matches its digest (disk corruption?)")]
    Corrupt { digest: Digest },
    #[error("the pack index failed")]
    PackIndex {
        #[source]
        source: redb::Error,
    },
}

impl StoreError {
    /// Wraps an I/O error with what was being done and to which path.
    pub fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io {
            action,
            path,
            source,
        }
    }
}
