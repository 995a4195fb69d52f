//! [`StorageError`]: what can go wrong with the files.

use std::path::PathBuf;

use synod_mvcc::BackendError;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is already in use by another process (is another synod running on this data dir?)")]
    InUse { path: PathBuf },
    /// The files are not where the configuration says they should be.
    #[error("{0}")]
    Layout(String),
    #[error("storage engine: {0}")]
    Engine(#[from] redb::Error),
    /// A log write failed earlier: where the log ends is unknown, so it takes no more.
    #[error("the log stopped taking writes after a failed write: {0}")]
    Failed(String),
    #[error("corrupt data in {what}: {detail}")]
    Corrupt { what: String, detail: String },
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl StorageError {
    pub(crate) fn corrupt(what: impl Into<String>, detail: impl Into<String>) -> StorageError {
        StorageError::Corrupt { what: what.into(), detail: detail.into() }
    }

    /// Whether this error means the files hold something they should not: the member must
    /// not serve from them.
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            StorageError::Corrupt { .. }
                | StorageError::Engine(redb::Error::Corrupted(_))
                | StorageError::Backend(BackendError::Corrupt { .. } | BackendError::Missing(_))
        )
    }
}

/// Converts any of redb's specific error types into a [`StorageError`].
pub(crate) fn engine(error: impl Into<redb::Error>) -> StorageError {
    StorageError::Engine(error.into())
}
