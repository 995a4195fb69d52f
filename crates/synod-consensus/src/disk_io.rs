//! [`DiskIo`]: where a member runs its blocking disk work.

use std::io;

/// Where a member runs blocking disk work: log writes and fsyncs, applying entries, and
/// snapshot files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DiskIo {
    /// On threads of their own, so that a slow fsync never stalls the async runtime: what a
    /// server runs with.
    #[default]
    Threads,
    /// On the task that asks. The deterministic simulator runs with this: its disks are
    /// memory, and work finishing on another thread would finish at a moment that the seed
    /// does not decide.
    Inline,
}

impl DiskIo {
    /// Runs `work`, which may block, and returns what it returned.
    pub async fn run<T: Send + 'static>(
        self,
        work: impl FnOnce() -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        match self {
            DiskIo::Threads => tokio::task::spawn_blocking(work).await.map_err(io::Error::other)?,
            DiskIo::Inline => work(),
        }
    }
}
