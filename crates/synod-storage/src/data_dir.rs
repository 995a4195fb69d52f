//! [`DataDir`]: the layout of a member's data directory.
//!
//! ```text
//! <data-dir>/member/log/           the replicated log and the member's identity (segments)
//! <data-dir>/member/state.redb     the MVCC state and the applied index
//! ```
//!
//! With a dedicated log directory (etcd's `--wal-dir`, for a log on its own disk), the
//! log's segments are in `<wal-dir>` instead, and the data dir must not hold a log of its
//! own. synod before the segmented log kept it in `raftlog.redb` where the segments now
//! are; [`crate::LogStore::open_in`] moves such a log over once.
//! The directory is private to the member's user (0700), as etcd makes it.

use std::fs;
use std::path::{Path, PathBuf};

use crate::StorageError;

#[derive(Clone, Debug)]
pub struct DataDir {
    root: PathBuf,
    /// Where the log lives when not in `root/member`.
    wal_dir: Option<PathBuf>,
}

impl DataDir {
    /// Opens `root`, creating it and its `member` directory if needed.
    pub fn open(root: &Path) -> Result<DataDir, StorageError> {
        DataDir::open_with_log_in(root, None)
    }

    /// Opens `root` with the log in `wal_dir` if given, creating the directories if needed.
    /// A data dir that already holds a log of its own is refused with a `wal_dir`
    /// elsewhere: the member would start on a new, empty log beside its old state.
    pub fn open_with_log_in(root: &Path, wal_dir: Option<&Path>) -> Result<DataDir, StorageError> {
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
        // The same directory spelled another way (`./data/member`, a symlink) is no dedicated one.
        let same = |dir: &Path| match (fs::canonicalize(dir), fs::canonicalize(&member)) {
            (Ok(a), Ok(b)) => a == b,
            _ => dir == member,
        };
        let wal_dir = wal_dir.filter(|dir| !same(dir)).map(Path::to_path_buf);
        if let Some(dir) = &wal_dir {
            let own_log = [member.join(LOG_DIR), member.join(crate::legacy_log::FILE)]
                .into_iter()
                .find(|path| path.exists() && fs::read_dir(path).map_or(true, |mut d| d.next().is_some()));
            if let Some(own_log) = own_log {
                return Err(StorageError::Layout(format!(
                    "the data dir holds a log at {}, but --wal-dir is {}: move the log there, or start \
                     without --wal-dir",
                    own_log.display(),
                    dir.display()
                )));
            }
            let fresh = !dir.exists();
            fs::create_dir_all(dir).map_err(io(dir))?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
            }
            if fresh {
                sync_dir(dir)?;
                if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                    sync_dir(parent)?;
                }
            }
        }
        Ok(DataDir { root: root.to_path_buf(), wal_dir })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of the log's segments.
    pub fn log_path(&self) -> PathBuf {
        self.wal_dir.clone().unwrap_or_else(|| self.root.join("member").join(LOG_DIR))
    }

    /// Whether a log is where this data dir's log should be: segment files (or the file of
    /// an earlier synod), not just the directory, which opening the data dir creates.
    pub fn has_log(&self) -> bool {
        let segments = fs::read_dir(self.log_path()).is_ok_and(|mut entries| {
            entries.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".log")))
        });
        segments || self.legacy_log_path().exists()
    }

    /// Where synod before the segmented log kept the log.
    pub fn legacy_log_path(&self) -> PathBuf {
        self.wal_dir.clone().unwrap_or_else(|| self.root.join("member")).join(crate::legacy_log::FILE)
    }

    pub fn state_path(&self) -> PathBuf {
        self.root.join("member").join("state.redb")
    }

    /// Makes the creation of files in the member directory and the log's directory durable.
    pub fn sync(&self) -> Result<(), StorageError> {
        sync_dir(&self.root.join("member"))?;
        match &self.wal_dir {
            Some(dir) => sync_dir(dir),
            None => Ok(()),
        }
    }
}

const LOG_DIR: &str = "log";

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    let io = |source| StorageError::Io { path: dir.to_path_buf(), source };
    fs::File::open(dir).map_err(io)?.sync_all().map_err(io)
}
