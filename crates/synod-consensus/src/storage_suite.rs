//! openraft's storage conformance suite, run against synod's real stores (the segmented log
//! and the redb state, in a temporary directory).

use std::sync::Arc;

use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use openraft::{ErrorSubject, ErrorVerb};
use synod_base::GroupId;
use synod_storage::{LogStore, StateStore};
use tempfile::TempDir;

use crate::disk_io::DiskIo;
use crate::log_store::RaftLog;
use crate::removed::Removed;
use crate::state_machine::StateMachine;
use crate::types::TypeConfig;

struct Builder;

impl StoreBuilder<TypeConfig, RaftLog, StateMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, RaftLog, StateMachine), openraft::StorageError<TypeConfig>> {
        let error = |e: std::io::Error| {
            openraft::StorageError::from_io_error(ErrorSubject::Store, ErrorVerb::Write, e)
        };
        let dir = tempfile::tempdir().map_err(error)?;
        let log = LogStore::open(&dir.path().join("log")).map_err(|e| error(std::io::Error::other(e)))?;
        let log = RaftLog::open(Arc::new(log), GroupId::FIRST, None, DiskIo::Threads).map_err(error)?;
        let state = StateStore::open(&dir.path().join("state.redb"), GroupId::FIRST)
            .map_err(|e| error(std::io::Error::other(e)))?;
        let snapshots = dir.path().join("snap");
        let state_machine =
            StateMachine::open(Arc::new(state), GroupId::FIRST, &snapshots, Removed::new(0), DiskIo::Threads)
                .map_err(error)?;
        Ok((dir, log, state_machine))
    }
}

/// openraft's own conformance suite passes on synod's log and state machine: votes, log
/// ranges, truncation, purge, membership recovery, apply, and snapshot build and transfer.
#[test]
fn openraft_storage_suite() {
    TypeConfig::run(async {
        Suite::test_all(Builder).await.expect("the storage suite passes");
    });
}
