//! `attest keygen`: a fresh signing key pair for layouts, functionaries or
//! a daemon, written as a 0600 PKCS#8 PEM private key and a
//! SubjectPublicKeyInfo PEM public key. Existing files are never replaced.

use crate::error::ClientError;
use attest_provenance::keys::{KeyAlgorithm, KeyIdScheme, SigningKey};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The two files `keygen` writes for a prefix: `PREFIX.key.pem` (private)
/// and `PREFIX.pub.pem` (public).
pub fn key_paths(prefix: &Path) -> (PathBuf, PathBuf) {
    let with = |suffix: &str| {
        let mut name = prefix.as_os_str().to_os_string();
        name.push(suffix);
        PathBuf::from(name)
    };
    (with(".key.pem"), with(".pub.pem"))
}

/// What `keygen` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// The private key file (mode 0600).
    pub private: PathBuf,
    /// The public key file.
    pub public: PathBuf,
    /// The key's securesystemslib keyid (the one attestd and in-toto write
    /// into signatures).
    pub keyid: String,
}

/// Creates `path` with `mode`, failing if anything (a file, a dangling
/// symlink) is already there.
fn create_new(path: &Path, mode: u32, bytes: &[u8]) -> Result<(), ClientError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                ClientError::Invalid(format!(
                    "{} already exists; refusing to overwrite a key",
                    path.display()
                ))
            } else {
                ClientError::io("create", path)(e)
            }
        })?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(ClientError::io("write", path))
}

/// Generates a key with `algorithm` and writes it next to `prefix`.
/// Neither file is written if either already exists.
pub fn keygen(prefix: &Path, algorithm: KeyAlgorithm) -> Result<Generated, ClientError> {
    let (private, public) = key_paths(prefix);
    for path in [&private, &public] {
        // symlink_metadata: a dangling symlink counts as existing too.
        if path.symlink_metadata().is_ok() {
            return Err(ClientError::Invalid(format!(
                "{} already exists; refusing to overwrite a key",
                path.display()
            )));
        }
    }
    let key = SigningKey::generate(algorithm)
        .map_err(|e| ClientError::Invalid(format!("cannot generate a {algorithm} key: {e}")))?;
    create_new(&private, 0o600, key.to_pkcs8_pem().as_bytes())?;
    if let Err(e) = create_new(&public, 0o644, key.public_key().to_spki_pem().as_bytes()) {
        // Do not leave half a pair behind.
        let _ = std::fs::remove_file(&private);
        return Err(e);
    }
    Ok(Generated {
        private,
        public,
        keyid: key.public_key().keyid(KeyIdScheme::Securesystemslib),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use attest_provenance::keys::read_public_keys_pem;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_a_0600_private_key_whose_public_half_is_the_public_file() {
        let dir = tempfile::tempdir().unwrap();
        for algorithm in [KeyAlgorithm::Ed25519, KeyAlgorithm::EcdsaP256Sha256] {
            let prefix = dir.path().join(algorithm.to_string());
            let generated = keygen(&prefix, algorithm).unwrap();
            let mode = std::fs::metadata(&generated.private)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
            let private =
                SigningKey::from_pkcs8_pem(&std::fs::read_to_string(&generated.private).unwrap())
                    .unwrap();
            assert_eq!(private.algorithm(), algorithm);
            let public =
                read_public_keys_pem(&std::fs::read_to_string(&generated.public).unwrap()).unwrap();
            assert_eq!(public, vec![private.public_key()]);
            assert_eq!(
                generated.keyid,
                public[0].keyid(KeyIdScheme::Securesystemslib)
            );
        }
    }

    #[test]
    fn refuses_to_overwrite_either_file_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("k");
        let (private, public) = key_paths(&prefix);
        std::fs::write(&public, "keep me").unwrap();
        let err = keygen(&prefix, KeyAlgorithm::Ed25519).unwrap_err();
        assert!(err.to_string().contains("refusing to overwrite"), "{err}");
        assert!(!private.exists());
        assert_eq!(std::fs::read_to_string(&public).unwrap(), "keep me");

        std::fs::remove_file(&public).unwrap();
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &private).unwrap();
        let err = keygen(&prefix, KeyAlgorithm::Ed25519).unwrap_err();
        assert!(err.to_string().contains("refusing to overwrite"), "{err}");
        assert!(!dir.path().join("nowhere").exists());
        assert!(!public.exists());
    }
}
