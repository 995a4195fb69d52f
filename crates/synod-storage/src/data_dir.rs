//! [`DataDir`]: the layout of a member's data directory.
//!
//! ```text
//! <data-dir>/member/raftlog.redb   the replicated log and the member's identity
//! <data-dir>/member/state.redb     the MVCC state and the applied index
//! ```
//! The directory is private to the member's user (0700), as etcd makes it.

use std::fs;
use std::path::{Path, PathBuf};

use crate::StorageError;

#[derive(Clone, Debug)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Opens `root`, creating it and its `member` directory if needed.
    pub fn open(root: &Path) -> Result<DataDir, StorageError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StorageError::Io { path, source }
        };
        let member = root.join("member");
        let fresh = !member.exists();
        fs::create_dir_all(&member).map_err(io(&member))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(root, fs::Permissions::from_mode(0o700)).map_err(io(root))?;
        }
        if fresh {
            // Make the new directories themselves durable, so that files created in them
            // cannot vanish with a crash.
            sync_dir(&member)?;
            sync_dir(root)?;
            if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
        Ok(DataDir { root: root.to_path_buf() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn log_path(&self) -> PathBuf {
        self.root.join("member").join("raftlog.redb")
    }

    pub fn state_path(&self) -> PathBuf {
        self.root.join("member").join("state.redb")
    }

    /// Makes the creation of files in the member directory durable.
    pub fn sync(&self) -> Result<(), StorageError> {
        sync_dir(&self.root.join("member"))
    }
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    let io = |source| StorageError::Io { path: dir.to_path_buf(), source };
    fs::File::open(dir).map_err(io)?.sync_all().map_err(io)
}
