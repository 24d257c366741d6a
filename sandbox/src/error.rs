//! The sandbox's error type.

use std::path::PathBuf;

/// Everything that can go wrong in the sandbox crate.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A field of the spec is unusable.
    #[error("invalid sandbox spec: {field}: {reason}")]
    InvalidSpec {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done, e.g. "cannot read spec".
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A spec or report is not valid JSON of the expected shape.
    #[error("cannot parse {what} {}", path.display())]
    Json {
        /// "spec" or "report".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A system call of the sandbox setup failed.
    #[error("sandbox setup step {step} failed")]
    Syscall {
        /// The setup step, e.g. "pivot_root".
        step: &'static str,
        /// The cause.
        #[source]
        source: nix::Error,
    },
    /// A system call failed on a path.
    #[error("sandbox setup step {step} failed on {}", path.display())]
    SyscallAt {
        /// The setup step.
        step: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: nix::Error,
    },
    /// The seccomp filter could not be compiled.
    #[error("cannot compile the seccomp filter")]
    Seccomp {
        /// The cause.
        #[source]
        source: seccompiler::BackendError,
    },
    /// The command line of the helper is wrong.
    #[error("usage: {0}")]
    Usage(String),
}

impl SandboxError {
    /// The setup step this error belongs to, for `Outcome::SetupFailed`.
    pub fn step(&self) -> &'static str {
        match self {
            SandboxError::InvalidSpec { .. } => "spec",
            SandboxError::Io { .. } => "io",
            SandboxError::Json { .. } => "spec",
            SandboxError::Syscall { step, .. } | SandboxError::SyscallAt { step, .. } => step,
            SandboxError::Seccomp { .. } => "seccomp",
            SandboxError::Usage(_) => "usage",
        }
    }

    /// The message with all its causes, `a: b: c`.
    pub fn chain(&self) -> String {
        let mut s = self.to_string();
        let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(self);
        while let Some(e) = cur {
            s.push_str(": ");
            s.push_str(&e.to_string());
            cur = e.source();
        }
        s
    }
}
