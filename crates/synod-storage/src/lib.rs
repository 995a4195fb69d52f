//! synod-storage: everything synod keeps on disk.
//!
//! A member's data directory holds a log and a state, as etcd keeps a WAL and a bbolt file:
//! - the **log** ([`LogStore`], `member/log/`, or the `--wal-dir`): the replicated log
//!   entries of every consensus group on the member and its durable metadata, in
//!   append-only segment files of synod's own format (`log_format`). Every write is one
//!   record made durable by one fdatasync, on disk before anyone hears of it; one write
//!   carries the pending appends of every group.
//! - the **state** ([`StateStore`], `member/state.redb`, on redb): the MVCC records and the
//!   applied index. Entries are applied without a sync and made durable by a checkpoint
//!   every ~100 ms; after a crash the state rolls back to its last checkpoint and the log
//!   replays the rest. So the log may only be purged up to the last *durable* applied index.
//!
//! Every record carries a CRC32 that is checked when it is read: a torn write at the end
//! of the log is cut off, and damage anywhere else is reported as corruption, never served.
//!
//! This crate must not depend on tonic, tokio or consensus internals: it is called from
//! the consensus layer and knows nothing of networks.

mod data_dir;
mod error;
mod legacy_log;
pub mod log_format;
pub mod log_fs;
mod log_store;
mod record;
pub mod sim_disk;
mod state_store;

pub mod etcd_snapshot;

pub use data_dir::DataDir;
pub use error::StorageError;
pub use log_store::{LogOp, LogOptions, LogStore, RESTORED_CLUSTER_META};
pub use state_store::{
    ApplyObserver, ExportSummary, History, MetaValues, PreparedState, StateStats, StateStore, StateView,
};
