//! The Python interop harness: the interpreter that has the pinned packages
//! of `tests/interop/requirements.txt`, and the scripts beside it, run by
//! `provenance/tests/interop.rs` (library output) and
//! `tests/tests/interop_e2e.rs` (what a real attestd emits).
//!
//! `scripts/test.sh` installs the packages into a virtual environment under
//! `target/` and exports its interpreter as `ATTEST_PYTHON`. Without that
//! variable the harness tries `python3` from `PATH`; when the packages are
//! missing every caller fails with the one install hint below, never passes
//! vacuously.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The interpreter to use, as set by `scripts/test.sh`.
pub const PYTHON_VAR: &str = "ATTEST_PYTHON";

/// What to do when the packages are missing.
pub const INSTALL_HINT: &str =
    "run `bash scripts/test.sh` (it installs tests/interop/requirements.txt \
     into a virtual environment under target/ and exports ATTEST_PYTHON), or set ATTEST_PYTHON \
     to an interpreter that has those packages";

/// Every module the scripts import: one check for all the callers.
const IMPORTS: &str = "import cryptography, google.protobuf, securesystemslib.dsse, \
     securesystemslib.signer, in_toto.verifylib, in_toto_attestation.v1.statement, \
     in_toto_attestation.predicates.provenance.v1.provenance_pb2, \
     sigstore_protobuf_specs.dev.sigstore.bundle.v1";

/// `tests/interop/` at the workspace root.
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../interop")
}

/// The interpreter named by `ATTEST_PYTHON`, else `python3`.
fn interpreter() -> PathBuf {
    std::env::var_os(PYTHON_VAR)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("python3"))
}

/// A command running the interpreter, once it is known to import every
/// package; panics with [`INSTALL_HINT`] otherwise.
pub fn python() -> Command {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    let python = interpreter();
    let checked = CHECKED.get_or_init(|| {
        let how = match std::env::var_os(PYTHON_VAR) {
            Some(_) => format!("{PYTHON_VAR}={}", python.display()),
            None => format!("{} ({PYTHON_VAR} is not set)", python.display()),
        };
        match Command::new(&python).args(["-c", IMPORTS]).output() {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(format!(
                "the python interop packages are not importable by {how}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => Err(format!("cannot run {how}: {e}")),
        }
    });
    if let Err(why) = checked {
        panic!("{why}\n{INSTALL_HINT}");
    }
    Command::new(python)
}

/// Runs `tests/interop/<name> ARGS...`, printing what it did (shown when
/// the test fails).
pub fn script(name: &str, args: &[&Path]) -> Output {
    let mut command = python();
    command.arg(scripts_dir().join(name)).args(args);
    run(&mut command)
}

/// [`script`], which must succeed; its stdout parsed as JSON.
pub fn script_json(name: &str, args: &[&Path]) -> Value {
    let out = script(name, args);
    assert!(out.status.success(), "{name} failed ({})", out.status);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{name} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Runs `command`, printing the command and its output.
pub fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    eprintln!(
        "$ {command:?}\nstatus: {}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}
