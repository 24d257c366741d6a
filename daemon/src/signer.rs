//! The daemon's signing key: generated on first start (Ed25519, PKCS#8 PEM,
//! mode 0600, in a 0700 directory of the state dir that no sandbox path
//! reaches), loaded on every later start.

use attest_provenance::keys::{KeyAlgorithm, KeyIdScheme, PublicKey, SigningKey};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why the signing key could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("signing key {path} is readable by group or others (mode {mode:o}); chmod 600 it")]
    ReadableByOthers { path: PathBuf, mode: u32 },
    #[error("signing key {path} is not usable")]
    Key {
        path: PathBuf,
        #[source]
        source: attest_provenance::keys::KeyError,
    },
}

impl SignerError {
    fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> SignerError {
        let path = path.into();
        move |source| SignerError::Io {
            action,
            path,
            source,
        }
    }
}

/// The key that signs every attestation this daemon issues.
pub struct Signer {
    key: SigningKey,
    path: PathBuf,
}

impl Signer {
    /// Loads `keys/signing-key.pem` under the state dir, generating it the
    /// first time. Refuses a key file that others can read.
    pub fn load_or_generate(state_dir: &Path) -> Result<Signer, SignerError> {
        let dir = state_dir.join("keys");
        std::fs::create_dir_all(&dir).map_err(SignerError::io("create", &dir))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(SignerError::io("chmod", &dir))?;
        let path = dir.join("signing-key.pem");
        let key = match std::fs::metadata(&path) {
            Ok(meta) => {
                if meta.permissions().mode() & 0o077 != 0 {
                    return Err(SignerError::ReadableByOthers {
                        mode: meta.permissions().mode() & 0o777,
                        path,
                    });
                }
                let pem = std::fs::read_to_string(&path).map_err(SignerError::io("read", &path))?;
                SigningKey::from_pkcs8_pem(&pem).map_err(|source| SignerError::Key {
                    path: path.clone(),
                    source,
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = SigningKey::generate(KeyAlgorithm::Ed25519).map_err(|source| {
                    SignerError::Key {
                        path: path.clone(),
                        source,
                    }
                })?;
                write_private(&path, key.to_pkcs8_pem().as_bytes())?;
                let public = dir.join("signing-key.pub.pem");
                std::fs::write(&public, key.public_key().to_spki_pem())
                    .map_err(SignerError::io("write", &public))?;
                tracing::info!(path = %path.display(), "generated a new Ed25519 signing key");
                key
            }
            Err(e) => return Err(SignerError::io("stat", &path)(e)),
        };
        Ok(Signer { key, path })
    }

    /// The signing key.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// Its public half.
    pub fn public_key(&self) -> PublicKey {
        self.key.public_key()
    }

    /// The keyid signatures carry.
    pub fn keyid(&self) -> String {
        self.public_key().keyid(KeyIdScheme::Securesystemslib)
    }

    /// Where the private key is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Creates a file readable only by its owner, atomically (0600 from the
/// first byte: never briefly world-readable).
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), SignerError> {
    let tmp = path.with_extension("pem.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(SignerError::io("create", &tmp))?;
    file.write_all(bytes)
        .map_err(SignerError::io("write", &tmp))?;
    file.sync_all().map_err(SignerError::io("sync", &tmp))?;
    std::fs::rename(&tmp, path).map_err(SignerError::io("rename", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_with_private_mode_then_reloads_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let first = Signer::load_or_generate(dir.path()).unwrap();
        let mode = std::fs::metadata(first.path())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let second = Signer::load_or_generate(dir.path()).unwrap();
        assert_eq!(first.keyid(), second.keyid());
    }

    #[test]
    fn a_world_readable_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = Signer::load_or_generate(dir.path()).unwrap();
        std::fs::set_permissions(first.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
        match Signer::load_or_generate(dir.path()) {
            Err(SignerError::ReadableByOthers { path, mode }) => {
                assert_eq!((path, mode), (first.path().to_path_buf(), 0o644))
            }
            other => panic!(
                "expected ReadableByOthers, got {:?}",
                other.map(|s| s.keyid())
            ),
        }
    }
}
