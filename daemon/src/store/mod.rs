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
