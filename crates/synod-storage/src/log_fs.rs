//! The directory and files the log's segments live in: [`LogDir`] and [`LogFile`], real
//! ([`FsDir`]) or simulated ([`crate::sim_disk::SimDir`], which loses what was not synced
//! when the power is cut).

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::StorageError;

/// A directory of log files, used by one process at a time.
pub trait LogDir: Send + Sync + 'static {
    /// Where `name` is, for messages.
    fn path_of(&self, name: &str) -> PathBuf;
    /// The names of the files in it.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Creates an empty file `name`, replacing any file of that name.
    fn create(&self, name: &str) -> io::Result<Arc<dyn LogFile>>;
    fn open(&self, name: &str) -> io::Result<Arc<dyn LogFile>>;
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Makes the creations, renames and removals so far durable.
    fn sync(&self) -> io::Result<()>;
}

/// One file: positioned reads and writes, so readers need no lock.
pub trait LogFile: Send + Sync {
    /// The file's size in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Fills `out` from `offset`; fails if the file ends first.
    fn read_at(&self, offset: u64, out: &mut [u8]) -> io::Result<()>;
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Makes the writes so far durable (fdatasync).
    fn sync_data(&self) -> io::Result<()>;
}

/// A real directory, locked for this process while the value lives.
pub struct FsDir {
    path: PathBuf,
    /// Holds the exclusive lock on `LOCK`.
    _lock: File,
}

/// The lock file in every log directory.
pub const LOCK_FILE: &str = "LOCK";

impl FsDir {
    /// Opens `path` (creating it, private to the user) and takes its lock.
    pub fn open(path: &Path) -> Result<FsDir, StorageError> {
        let io_error = |source| StorageError::Io { path: path.to_path_buf(), source };
        let fresh = !path.exists();
        std::fs::create_dir_all(path).map_err(io_error)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(io_error)?;
        }
        if fresh {
            sync_dir(path).map_err(io_error)?;
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent).map_err(io_error)?;
            }
        }
        let lock_path = path.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|source| StorageError::Io { path: lock_path.clone(), source })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StorageError::InUse { path: path.to_path_buf() });
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(StorageError::Io { path: lock_path, source });
            }
        }
        Ok(FsDir { path: path.to_path_buf(), _lock: lock })
    }
}

fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

impl LogDir for FsDir {
    fn path_of(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.path)? {
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn create(&self, name: &str) -> io::Result<Arc<dyn LogFile>> {
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        Ok(Arc::new(options.open(self.path.join(name))?))
    }

    fn open(&self, name: &str) -> io::Result<Arc<dyn LogFile>> {
        Ok(Arc::new(OpenOptions::new().read(true).write(true).open(self.path.join(name))?))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        std::fs::rename(self.path.join(from), self.path.join(to))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        std::fs::remove_file(self.path.join(name))
    }

    fn sync(&self) -> io::Result<()> {
        sync_dir(&self.path)
    }
}

impl LogFile for File {
    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn read_at(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, out, offset)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(self, data, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }
}
