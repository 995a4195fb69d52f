//! synod-storage: everything synod keeps on disk, on one embedded engine (redb).
//!
//! A member's data directory holds two redb files, as etcd keeps a WAL and a bbolt file:
//! - the **log** ([`LogStore`], `member/raftlog.redb`): replicated log entries and the
//!   member's durable metadata. Every append is one durable commit (one fdatasync) and is
//!   on disk before anyone hears of it.
//! - the **state** ([`StateStore`], `member/state.redb`): the MVCC records and the applied
//!   index. Entries are applied without a sync and made durable by a checkpoint every
//!   ~100 ms; after a crash the state rolls back to its last checkpoint and the log replays
//!   the rest. So the log may only be purged up to the last *durable* applied index.
//!
//! Every record carries a CRC32 that is checked on every read: a torn or corrupted record
//! is reported as corruption, never served. Table names carry the consensus group id, so
//! several groups can later share these files.
//!
//! This crate must not depend on tonic, tokio or consensus internals: it is called from
//! the consensus layer and knows nothing of networks.

mod data_dir;
mod error;
mod log_store;
mod record;
pub mod sim_disk;
mod state_store;

pub mod etcd_snapshot;

pub use data_dir::DataDir;
pub use error::StorageError;
pub use log_store::{Durability, LogOp, LogStore, RESTORED_CLUSTER_META};
pub use state_store::{ApplyObserver, ExportSummary, History, MetaValues, StateStats, StateStore};
