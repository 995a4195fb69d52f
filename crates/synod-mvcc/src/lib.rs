//! synod-mvcc: the deterministic etcd key-value state machine.
//!
//! It owns etcd's MVCC semantics: the in-memory key index (every key's generations of
//! revisions), the store revision, compaction, and the exact behaviour of Range, Put,
//! DeleteRange, Txn and Compact including their errors. Given the same commands in the same
//! order it produces the same responses and the same stored records on every member.
//!
//! Values live in a [`backend`] that the caller provides (synod-storage's redb tables in the
//! server, a `BTreeMap` in tests): the state machine reads and writes records by revision and
//! never touches files itself.
//!
//! This crate must not depend on tokio, tonic, the storage engine, or anything that reads a
//! clock or a random source: that is what keeps it deterministic and testable by simulation.

pub mod auth;
pub mod backend;
pub mod check;
pub mod counter;
mod key_index;
mod kv_store;
pub mod lease;
mod range;
mod reclaim;
mod rev;
mod tree_index;
mod txn;

pub use backend::{BackendError, MemBackend, RevisionRead, RevisionWrite, StoredKv};
pub use kv_store::{Applied, KvStore, Meta, REVISION_MAX, Response, Restoring};
pub use lease::{Lease, Leases, MAX_LEASE_TTL};
pub use range::RangePlan;
pub use reclaim::Unreclaimed;
pub use rev::Rev;
pub use txn::is_read_only as txn_is_read_only;
