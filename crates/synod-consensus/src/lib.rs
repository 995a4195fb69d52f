//! synod-consensus: replication of synod's state machine with openraft.
//!
//! openraft (pinned, decision 0004) runs the Raft protocol; this crate implements what it
//! needs around it and nothing of the protocol itself: the log storage and state machine
//! traits on synod-storage (`log_store`, `state_machine`), the peer transport over gRPC on
//! the peer URLs (`network`, `peer_service`), the conversion of every openraft value that
//! reaches a disk or a wire into synod's protobuf messages (`codec`), and [`Consensus`],
//! the facade the server calls: propose, read barrier, membership, status.
//!
//! openraft's types do not leak out of this crate: the facade speaks synod's commands,
//! outcomes and etcd errors. This crate must not depend on the server or its API adapters.

mod batch;
mod codec;
mod combine;
mod consensus;
mod disk_io;
mod log_store;
mod network;
mod peer_service;
mod removed;
mod runtime;
mod state_machine;
#[cfg(test)]
mod storage_suite;
mod types;

pub use consensus::{
    Bootstrap, Consensus, ConsensusError, ConsensusOptions, ConsensusStatus, LeaderCall, LeaderReply,
    LeaderService, MemberChange, MemberInfo, discover_cluster,
};
pub use disk_io::DiskIo;
pub use log_store::FlushObserver;
pub use network::{CLUSTER_ID_HEADER, Dialer, FROM_HEADER, GrpcDialer, PeerChannel, PeerError, TO_HEADER};
pub use removed::REMOVED_MESSAGE;
pub use runtime::{random_u64, seed_thread_rng};
pub use types::MemberNode;
