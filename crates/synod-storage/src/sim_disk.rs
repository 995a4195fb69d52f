//! [`SimDisk`]: an in-memory disk that loses everything not yet synced when the power is
//! cut, for tests (and later the simulator) to check the fsync discipline.
//!
//! A process kill cannot test fsync: the kernel keeps unsynced writes and writes them out
//! anyway. Only dropping them can show that an acknowledged write was never synced. This
//! disk keeps two images of the file: what was written, and what was synced. A power cut
//! throws the first away, and every later write or sync fails, as the dying process's
//! would.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use redb::StorageBackend;

/// The error type of redb's backend I/O methods (without its `experimental-api-5` feature).
type BackendIoError = std::io::Error;

/// The unit a disk writes whole.
const SECTOR: usize = 512;

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

    /// Cuts the power in the middle of writing: of the unsynced writes, the first
    /// `keep_bytes` bytes reached the disk (the last of them perhaps only in part, up to a
    /// sector boundary, as a disk writes whole 512-byte sectors), the rest did not; with
    /// `lose_first_sector`, the first sector of each of them did not either (a disk may
    /// write a request's sectors in any order). Then as [`SimDisk::power_cut`].
    pub fn power_cut_tearing(&self, keep_bytes: usize, lose_first_sector: bool) {
        let mut images = self.lock();
        let images = &mut *images;
        let mut budget = keep_bytes;
        for change in images.unsynced.drain(..) {
            match change {
                Change::SetLen(len) => images.synced.resize(len, 0),
                Change::Write { start, data } => {
                    let mut kept = data.len().min(budget);
                    budget -= kept;
                    if kept < data.len() {
                        // A disk writes whole sectors: the cut falls on a sector boundary.
                        kept = ((start + kept) / SECTOR * SECTOR).saturating_sub(start);
                        budget = 0;
                    }
                    let end = start + kept;
                    if end > images.synced.len() {
                        images.synced.resize(end, 0);
                    }
                    let skip =
                        if lose_first_sector { ((start / SECTOR + 1) * SECTOR - start).min(kept) } else { 0 };
                    images.synced[start + skip..end].copy_from_slice(&data[skip..kept]);
                }
            }
            if budget == 0 {
                break;
            }
        }
        images.written = images.synced.clone();
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

/// A simulated directory of [`SimDisk`] files for the log. Its entries are durable only
/// once synced, as a real directory's: a power cut undoes the creations, renames and
/// removals since the last [`LogDir::sync`], and each file keeps what was synced in it.
/// [`SimDir::cut_power_at`] cuts the power in the middle of a run, at a chosen write or
/// sync, tearing the file being written. Clones share the same directory.
#[derive(Clone, Default)]
pub struct SimDir {
    state: Arc<Mutex<DirState>>,
    boot: u64,
}

#[derive(Default)]
struct DirState {
    files: BTreeMap<String, SimDisk>,
    synced: BTreeMap<String, SimDisk>,
    powered_off: bool,
    boot: u64,
    /// Writes, syncs and directory changes until the power goes, and how many bytes of its
    /// unsynced writes the file being written then keeps.
    cut_at: Option<(u64, usize, bool)>,
    /// Writes, syncs and directory changes so far.
    operations: u64,
}

impl fmt::Debug for SimDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SimDir({:?})", self.lock().files.keys().collect::<Vec<_>>())
    }
}

impl DirState {
    fn cut(&mut self, tear: Option<(&SimDisk, usize, bool)>) {
        for disk in self.files.values().chain(self.synced.values()) {
            match tear {
                Some((torn, keep, lose_first)) if Arc::ptr_eq(&torn.images, &disk.images) => {
                    disk.power_cut_tearing(keep, lose_first)
                }
                _ => disk.power_cut(),
            }
        }
        self.files = self.synced.clone();
        self.powered_off = true;
    }
}

impl SimDir {
    pub fn new() -> SimDir {
        SimDir::default()
    }

    fn lock(&self) -> MutexGuard<'_, DirState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one write, sync or directory change on `file`, cutting the power instead when
    /// its turn has come.
    fn operate(&self, state: &mut DirState, file: Option<&SimDisk>) -> std::io::Result<()> {
        if state.powered_off {
            return Err(std::io::Error::other("simulated disk is powered off"));
        }
        if state.boot != self.boot {
            return Err(std::io::Error::other("simulated disk was rebooted by another process"));
        }
        state.operations += 1;
        if let Some((at, keep, lose_first)) = state.cut_at
            && state.operations >= at
        {
            state.cut_at = None;
            state.cut(file.map(|disk| (disk, keep, lose_first)));
            return Err(std::io::Error::other("simulated power cut"));
        }
        Ok(())
    }

    /// Cuts the power: every file loses what was not synced, and the directory the
    /// entries not synced. With `tear`, the file named there keeps that many bytes of its
    /// unsynced writes ([`SimDisk::power_cut_tearing`]).
    pub fn power_cut(&self, tear: Option<(&str, usize)>) {
        let mut state = self.lock();
        let torn = tear.and_then(|(name, keep)| Some((state.files.get(name)?.clone(), keep)));
        state.cut(torn.as_ref().map(|(disk, keep)| (disk, *keep, false)));
    }

    /// Cuts the power at the `operation`th write, sync or directory change from now (that
    /// one fails, and everything after it): a write being synced then keeps `keep_bytes`
    /// of what it had not synced, without its first sector if `lose_first_sector`.
    pub fn cut_power_at(&self, operation: u64, keep_bytes: usize, lose_first_sector: bool) {
        let mut state = self.lock();
        state.cut_at = Some((state.operations + operation.max(1), keep_bytes, lose_first_sector));
    }

    /// Writes, syncs and directory changes so far.
    pub fn operations(&self) -> u64 {
        self.lock().operations
    }

    /// Restores power; the directory and its files hold what was synced before the cut.
    pub fn power_on(&self) {
        let mut state = self.lock();
        state.powered_off = false;
        state.files.values().for_each(SimDisk::power_on);
    }

    /// Restores power for a new process: the returned directory holds what was synced,
    /// and every handle from before fails from now on.
    pub fn reboot(&self) -> SimDir {
        let mut state = self.lock();
        state.powered_off = false;
        state.cut_at = None;
        state.boot += 1;
        let synced: BTreeMap<String, SimDisk> =
            state.synced.iter().map(|(name, disk)| (name.clone(), disk.reboot())).collect();
        state.files = synced.clone();
        state.synced = synced;
        SimDir { state: self.state.clone(), boot: state.boot }
    }

    /// How many times files in it were synced, all together.
    pub fn syncs(&self) -> u64 {
        self.lock().files.values().map(SimDisk::syncs).sum()
    }

    fn file(&self, disk: SimDisk) -> Arc<dyn crate::log_fs::LogFile> {
        Arc::new(SimFile { dir: self.clone(), disk })
    }
}

/// A file of a [`SimDir`]: its writes and syncs count towards the directory's power cut.
struct SimFile {
    dir: SimDir,
    disk: SimDisk,
}

impl crate::log_fs::LogFile for SimFile {
    fn size(&self) -> std::io::Result<u64> {
        StorageBackend::len(&self.disk)
    }

    fn read_at(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        StorageBackend::read(&self.disk, offset, out)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let mut state = self.dir.lock();
        self.dir.operate(&mut state, Some(&self.disk))?;
        StorageBackend::write(&self.disk, offset, data)
    }

    fn sync_data(&self) -> std::io::Result<()> {
        let mut state = self.dir.lock();
        self.dir.operate(&mut state, Some(&self.disk))?;
        StorageBackend::sync_data(&self.disk)
    }
}

impl crate::log_fs::LogDir for SimDir {
    fn path_of(&self, name: &str) -> std::path::PathBuf {
        std::path::PathBuf::from("sim").join(name)
    }

    fn list(&self) -> std::io::Result<Vec<String>> {
        let state = self.lock();
        if state.powered_off || state.boot != self.boot {
            return Err(std::io::Error::other("simulated disk is powered off"));
        }
        Ok(state.files.keys().cloned().collect())
    }

    fn create(&self, name: &str) -> std::io::Result<Arc<dyn crate::log_fs::LogFile>> {
        let mut state = self.lock();
        self.operate(&mut state, None)?;
        let images = Images { boot: 0, ..Images::default() };
        let disk = SimDisk { images: Arc::new(Mutex::new(images)), boot: 0 };
        state.files.insert(name.to_string(), disk.clone());
        drop(state);
        Ok(self.file(disk))
    }

    fn open(&self, name: &str) -> std::io::Result<Arc<dyn crate::log_fs::LogFile>> {
        let state = self.lock();
        if state.powered_off || state.boot != self.boot {
            return Err(std::io::Error::other("simulated disk is powered off"));
        }
        let disk = state
            .files
            .get(name)
            .cloned()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))?;
        drop(state);
        Ok(self.file(disk))
    }

    fn rename(&self, from: &str, to: &str) -> std::io::Result<()> {
        let mut state = self.lock();
        self.operate(&mut state, None)?;
        let disk =
            state.files.remove(from).ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))?;
        state.files.insert(to.to_string(), disk);
        Ok(())
    }

    fn remove(&self, name: &str) -> std::io::Result<()> {
        let mut state = self.lock();
        self.operate(&mut state, None)?;
        state.files.remove(name).map(drop).ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
    }

    fn sync(&self) -> std::io::Result<()> {
        let mut state = self.lock();
        self.operate(&mut state, None)?;
        state.synced = state.files.clone();
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
