use std::path::PathBuf;

/// Everything that can go wrong while hashing files or building a tree.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// A file or directory could not be read.
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file changed size or modification time while it was being hashed,
    /// so the digest would not describe the bytes that get uploaded.
    #[error("{path} changed while it was being hashed; retry once the file is stable")]
    ChangedWhileHashing { path: PathBuf },
    /// A directory nested deeper than [`crate::MAX_TREE_DEPTH`]: the daemon
    /// would refuse the tree, so the client refuses it before uploading.
    #[error("{path} is nested deeper than {max} directories")]
    TooDeep { path: PathBuf, max: usize },
    /// A FIFO, socket or device node: not something a build input can be.
    #[error("{path} is a {kind}, which cannot be a build input")]
    UnsupportedFileType { path: PathBuf, kind: &'static str },
    /// A Directory message that breaks the canonical-form rules.
    #[error("malformed directory message: {0}")]
    MalformedDirectory(String),
    /// A digest string that is not 64 lowercase hex characters.
    #[error("malformed digest {0:?}: expected 64 lowercase hex characters")]
    MalformedDigest(String),
}
