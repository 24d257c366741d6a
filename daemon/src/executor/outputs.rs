//! Output collection: hashing and storing the declared outputs the helper
//! copied out of the sandbox.

use super::ExecutorError;
use crate::store::BlobStore;
use attest_sandbox::{CollectedOutput, OutputState};
use attest_tree::Digest;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// One collected output file: its path (the names' bytes, which need not
/// be UTF-8 inside a declared directory), digest and executable bit.
pub(super) type Collected = (Vec<u8>, Digest, bool);

/// Hashes and stores every declared output. Returns Err(message) when an
/// output is missing or was refused by the helper.
pub(super) fn collect_outputs(
    store: &BlobStore,
    out_dir: &Path,
    declared: &[String],
    collected: &[CollectedOutput],
) -> Result<Result<Vec<Collected>, String>, ExecutorError> {
    let mut outputs = Vec::new();
    for path in declared {
        let Some(found) = collected.iter().find(|c| &c.path == path) else {
            return Ok(Err(format!(
                "declared output {path:?} was not reported by the sandbox"
            )));
        };
        match &found.state {
            OutputState::Missing => {
                return Ok(Err(format!(
                    "the step succeeded but did not produce the declared output {path:?}"
                )))
            }
            OutputState::Refused { reason } => {
                return Ok(Err(format!(
                    "declared output {path:?} was refused: {reason}"
                )))
            }
            OutputState::File { executable } => {
                let digest = store.put_file(&out_dir.join(path))?;
                outputs.push((path.as_bytes().to_vec(), digest, *executable));
            }
            OutputState::Directory => {
                if let Err(message) =
                    collect_directory(store, out_dir, Path::new(path), &mut outputs)?
                {
                    return Ok(Err(message));
                }
            }
        }
    }
    Ok(Ok(outputs))
}

/// Collects every file under a declared directory, by the entries' byte
/// names (UTF-8 or not), depth first in name order.
fn collect_directory(
    store: &BlobStore,
    out_dir: &Path,
    relative: &Path,
    outputs: &mut Vec<Collected>,
) -> Result<Result<(), String>, ExecutorError> {
    let dir = out_dir.join(relative);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .map_err(ExecutorError::io("list", &dir))?
        .collect::<Result<_, _>>()
        .map_err(ExecutorError::io("list", &dir))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let child = relative.join(entry.file_name());
        let meta = std::fs::symlink_metadata(entry.path())
            .map_err(ExecutorError::io("stat", entry.path()))?;
        if meta.is_dir() {
            if let Err(message) = collect_directory(store, out_dir, &child, outputs)? {
                return Ok(Err(message));
            }
        } else if meta.is_file() {
            let digest = store.put_file(&entry.path())?;
            outputs.push((
                child.as_os_str().as_bytes().to_vec(),
                digest,
                meta.permissions().mode() & 0o111 != 0,
            ));
        } else {
            return Ok(Err(format!(
                "output {child:?} is not a regular file or directory"
            )));
        }
    }
    Ok(Ok(()))
}
