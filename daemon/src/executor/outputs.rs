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

/// Why the output set is refused when it holds more than `max_files`
/// files; checked before each file is stored, so collection stops at the
/// first file past the limit.
fn over_limit(outputs: &[Collected], max_files: usize) -> Option<String> {
    (outputs.len() >= max_files).then(|| {
        format!(
            "the step left more than {max_files} output files, the most one build may hand back \
             (--max-output-files); nothing was attested"
        )
    })
}

/// Hashes and stores every declared output, at most `max_files` files in
/// all. Returns Err(message) when an output is missing, was refused by the
/// helper, or there are more files than that.
pub(super) fn collect_outputs(
    store: &BlobStore,
    out_dir: &Path,
    declared: &[String],
    collected: &[CollectedOutput],
    max_files: usize,
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
                if let Some(message) = over_limit(&outputs, max_files) {
                    return Ok(Err(message));
                }
                let digest = store.put_file(&out_dir.join(path))?;
                outputs.push((path.as_bytes().to_vec(), digest, *executable));
            }
            OutputState::Directory => {
                if let Err(message) =
                    collect_directory(store, out_dir, Path::new(path), &mut outputs, max_files)?
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
    max_files: usize,
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
            if let Err(message) = collect_directory(store, out_dir, &child, outputs, max_files)? {
                return Ok(Err(message));
            }
        } else if meta.is_file() {
            if let Some(message) = over_limit(outputs, max_files) {
                return Ok(Err(message));
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An out_dir with a declared file `f` and a declared directory `d`
    /// holding `count` files.
    fn outputs_with(count: usize) -> (tempfile::TempDir, BlobStore, Vec<CollectedOutput>) {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir_all(out.join("d/sub")).unwrap();
        std::fs::write(out.join("f"), b"f").unwrap();
        for i in 0..count {
            std::fs::write(out.join(format!("d/sub/{i}")), i.to_string()).unwrap();
        }
        let store = BlobStore::open(&dir.path().join("cas")).unwrap();
        let reported = vec![
            CollectedOutput {
                path: "f".into(),
                state: OutputState::File { executable: false },
            },
            CollectedOutput {
                path: "d".into(),
                state: OutputState::Directory,
            },
        ];
        (dir, store, reported)
    }

    #[test]
    fn a_step_leaving_more_files_than_max_output_files_is_refused_naming_the_limit() {
        let (dir, store, reported) = outputs_with(10);
        let declared = ["f".to_string(), "d".to_string()];
        let out = dir.path().join("out");
        // 11 files: exactly the limit is attested...
        let all = collect_outputs(&store, &out, &declared, &reported, 11)
            .unwrap()
            .unwrap();
        assert_eq!(all.len(), 11);
        // ...one fewer is refused, and collection stops there: the file
        // past the limit is never stored.
        let refused = collect_outputs(&store, &out, &declared, &reported, 10)
            .unwrap()
            .unwrap_err();
        assert_eq!(
            refused,
            "the step left more than 10 output files, the most one build may hand back \
             (--max-output-files); nothing was attested"
        );
        let fresh = BlobStore::open(&dir.path().join("cas2")).unwrap();
        collect_outputs(&fresh, &out, &declared, &reported, 3)
            .unwrap()
            .unwrap_err();
        let stored = fresh.list().unwrap().len();
        assert_eq!(stored, 3, "stored {stored} blobs past a limit of 3");
    }
}
