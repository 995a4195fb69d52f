//! How synodctl fails: etcdctl's exit codes, and an error that carries one.
//!
//! Scripts branch on etcdctl's exit status (1 for a failed request, 128 for bad arguments,
//! 3 for malformed txn input...), so every failure here names the code etcdctl would use.
//! The message is printed as `Error: <message>` on stderr, as etcdctl's
//! `cobrautl.ExitWithError` does.

use std::fmt;

/// etcdctl's exit codes (`pkg/cobrautl/error.go`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitCode {
    /// A request failed, or the server said no.
    Error = 1,
    /// Malformed txn input on stdin.
    InvalidInput = 3,
    /// A valid flag with a value etcdctl does not support (an output format, a sort order).
    BadFeature = 4,
    /// Missing or conflicting arguments.
    BadArgs = 128,
    /// A watch the server ended (etcdctl's `ExitInterrupted`).
    Interrupted = 130,
}

/// A failure that ends the command with an etcdctl exit code.
#[derive(Debug)]
pub struct CtlError {
    pub code: ExitCode,
    /// The text after `Error: `; `None` exits silently (etcdctl's `os.Exit` paths, where the
    /// reason was already printed).
    pub message: Option<String>,
}

impl CtlError {
    pub fn new(code: ExitCode, message: impl Into<String>) -> CtlError {
        CtlError { code, message: Some(message.into()) }
    }

    /// A failed request (exit status 1).
    pub fn request(message: impl Into<String>) -> CtlError {
        CtlError::new(ExitCode::Error, message)
    }

    pub fn bad_args(message: impl Into<String>) -> CtlError {
        CtlError::new(ExitCode::BadArgs, message)
    }

    pub fn bad_feature(message: impl Into<String>) -> CtlError {
        CtlError::new(ExitCode::BadFeature, message)
    }

    pub fn invalid_input(message: impl Into<String>) -> CtlError {
        CtlError::new(ExitCode::InvalidInput, message)
    }

    /// Exit with `code` without printing anything more.
    pub fn silent(code: ExitCode) -> CtlError {
        CtlError { code, message: None }
    }
}

impl fmt::Display for CtlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.message {
            Some(message) => write!(f, "{message}"),
            None => write!(f, "exit status {}", self.code as i32),
        }
    }
}

impl std::error::Error for CtlError {}

/// The result of a command: the etcdctl exit code on failure.
pub type CtlResult<T = ()> = Result<T, CtlError>;
