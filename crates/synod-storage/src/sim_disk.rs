//! [`SimDisk`]: an in-memory disk that loses everything not yet synced when the power is
//! cut, for tests (and later the simulator) to check the fsync discipline.
//!
//! A process kill cannot test fsync: the kernel keeps unsynced writes and writes them out
//! anyway. Only dropping them can show that an acknowledged write was never synced. This
//! disk keeps two images of the file: what was written, and what was synced. A power cut
//! throws the first away, and every later write or sync fails, as the dying process's
//! would.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use redb::StorageBackend;

/// The error type of redb's backend I/O methods (without its `experimental-api-5` feature).
type BackendIoError = std::io::Error;

#[derive(Default)]
struct Images {
    written: Vec<u8>,
    synced: Vec<u8>,
    /// Changes since the last sync, in order, so a sync costs what was written since the
    /// previous one rather than a copy of the whole file.
    unsynced: Vec<Change>,
    syncs: u64,
    powered_off: bool,
    /// Bumped by every [`SimDisk::reboot`]: handles from an earlier boot are dead.
    boot: u64,
}

enum Change {
    Write { start: usize, data: Vec<u8> },
    SetLen(usize),
}

/// A simulated disk holding one file. Clones share the same disk.
#[derive(Clone, Default)]
pub struct SimDisk {
    images: Arc<Mutex<Images>>,
    /// The boot this handle belongs to.
    boot: u64,
}

impl fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let images = self.lock();
        write!(f, "SimDisk({} bytes written, {} synced)", images.written.len(), images.synced.len())
    }
}

impl SimDisk {
    pub fn new() -> SimDisk {
        SimDisk::default()
    }

    fn lock(&self) -> MutexGuard<'_, Images> {
        self.images.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Cuts the power: unsynced writes are lost, and the disk refuses all further I/O
    /// until [`SimDisk::power_on`].
    pub fn power_cut(&self) {
        let mut images = self.lock();
        images.written = images.synced.clone();
        images.unsynced.clear();
        images.powered_off = true;
    }

    /// Restores power; the disk holds what was synced before the cut.
    pub fn power_on(&self) {
        self.lock().powered_off = false;
    }

    /// Restores power for a new process: the returned handle works on what was synced
    /// before the cut, and every handle from before (held by whatever the dead process
    /// left running) fails all I/O from now on, so nothing it does can land.
    pub fn reboot(&self) -> SimDisk {
        let mut images = self.lock();
        images.powered_off = false;
        images.boot += 1;
        SimDisk { images: self.images.clone(), boot: images.boot }
    }

    /// How many times the file was synced.
    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }

    fn check_powered(&self, images: &Images) -> Result<(), BackendIoError> {
        if images.powered_off {
            return Err(std::io::Error::other("simulated disk is powered off"));
        }
        if images.boot != self.boot {
            return Err(std::io::Error::other("simulated disk was rebooted by another process"));
        }
        Ok(())
    }
}

impl StorageBackend for SimDisk {
    fn len(&self) -> Result<u64, BackendIoError> {
        let images = self.lock();
        if images.boot != self.boot {
            return Err(std::io::Error::other("simulated disk was rebooted by another process"));
        }
        Ok(images.written.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), BackendIoError> {
        let images = self.lock();
        if images.boot != self.boot {
            return Err(std::io::Error::other("simulated disk was rebooted by another process"));
        }
        let start = usize::try_from(offset).map_err(|_| std::io::Error::other("offset"))?;
        let end = start + out.len();
        if end > images.written.len() {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        }
        out.copy_from_slice(&images.written[start..end]);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), BackendIoError> {
        let mut images = self.lock();
        self.check_powered(&images)?;
        images.written.resize(len as usize, 0);
        images.unsynced.push(Change::SetLen(len as usize));
        Ok(())
    }

    fn sync_data(&self) -> Result<(), BackendIoError> {
        let mut images = self.lock();
        self.check_powered(&images)?;
        let images = &mut *images;
        for change in images.unsynced.drain(..) {
            match change {
                Change::SetLen(len) => images.synced.resize(len, 0),
                Change::Write { start, data } => {
                    let end = start + data.len();
                    if end > images.synced.len() {
                        images.synced.resize(end, 0);
                    }
                    images.synced[start..end].copy_from_slice(&data);
                }
            }
        }
        images.syncs += 1;
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), BackendIoError> {
        let mut images = self.lock();
        self.check_powered(&images)?;
        let start = offset as usize;
        let end = start + data.len();
        if end > images.written.len() {
            images.written.resize(end, 0);
        }
        images.written[start..end].copy_from_slice(data);
        images.unsynced.push(Change::Write { start, data: data.to_vec() });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(disk: &SimDisk) -> Vec<u8> {
        let mut out = vec![0; disk.len().unwrap() as usize];
        disk.read(0, &mut out).unwrap();
        out
    }

    /// A power cut keeps exactly what was synced: later writes, growth and truncation are
    /// undone, and I/O fails until power returns.
    #[test]
    fn power_cut_keeps_what_was_synced() {
        let disk = SimDisk::new();
        disk.write(0, b"hello").unwrap();
        disk.sync_data().unwrap();
        disk.write(2, b"LLO world").unwrap();
        disk.set_len(4).unwrap();
        disk.set_len(8).unwrap();
        assert_eq!(read_all(&disk), b"heLL\0\0\0\0");
        disk.power_cut();
        assert!(disk.write(0, b"x").is_err());
        disk.power_on();
        assert_eq!(read_all(&disk), b"hello");
        disk.write(5, b"!").unwrap();
        disk.set_len(3).unwrap();
        disk.set_len(6).unwrap();
        disk.sync_data().unwrap();
        disk.power_cut();
        disk.power_on();
        assert_eq!(read_all(&disk), b"hel\0\0\0", "bytes cut before the sync stay cut");
    }

    /// After a reboot, only the new boot's handle reaches the disk.
    #[test]
    fn a_reboot_kills_the_old_handles() {
        let disk = SimDisk::new();
        disk.write(0, b"old").unwrap();
        disk.sync_data().unwrap();
        disk.power_cut();
        let rebooted = disk.reboot();
        assert!(disk.write(0, b"x").is_err(), "a handle of the dead process wrote");
        assert!(disk.len().is_err());
        rebooted.write(3, b"new").unwrap();
        rebooted.sync_data().unwrap();
        assert_eq!(read_all(&rebooted), b"oldnew");
    }
}
