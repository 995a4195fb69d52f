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
mod failover;
mod force;
mod forward_stream;
mod log_store;
mod network;
mod observer;
mod peer_service;
mod removed;
mod runtime;
mod state_machine;
#[cfg(test)]
mod storage_suite;
mod types;

pub use consensus::{
    Bootstrap, Consensus, ConsensusError, ConsensusOptions, ConsensusStatus, LeaderCall, LeaderReply,
    LeaderService, MemberChange, MemberInfo, discover_cluster, peer_hashes,
};
pub use disk_io::DiskIo;
pub use force::{ForcedCluster, force_new_cluster};
pub use observer::{NoObserver, Observer};

/// The decoders of what members store and exchange, for the fuzz targets (`fuzz/`): each
/// takes bytes as a disk or a peer would hand them over and says whether synod accepted
/// them, running the same checks the member runs. Nothing of openraft's leaves.
#[doc(hidden)]
pub mod fuzzing {
    use prost::Message;
    use synod_api::synodpb as pb;

    use crate::codec;

    /// A log entry as the log store holds it.
    pub fn log_entry(bytes: &[u8]) -> bool {
        pb::Entry::decode(bytes).ok().is_some_and(|entry| codec::entry_from(entry).is_ok())
    }

    /// An AppendEntries from a peer, decoded and checked as the peer service does.
    pub fn append_entries(bytes: &[u8]) -> bool {
        let Ok(request) = pb::AppendEntriesRequest::decode(bytes) else { return false };
        codec::append_request_from(request).is_ok_and(|request| codec::check_append(&request).is_ok())
    }

    /// A vote request from a peer.
    pub fn vote_request(bytes: &[u8]) -> bool {
        pb::VoteRequest::decode(bytes).ok().is_some_and(|request| codec::vote_request_from(&request).is_ok())
    }

    /// Snapshot metadata from a peer, checked against the vote it came with.
    pub fn snapshot_meta(vote: &[u8], meta: &[u8]) -> bool {
        let (Ok(Some(vote)), Ok(meta)) = (codec::decode_vote(Some(vote)), pb::SnapshotMeta::decode(meta))
        else {
            return false;
        };
        codec::snapshot_meta_from(&meta).is_ok_and(|meta| codec::check_snapshot_meta(&vote, &meta).is_ok())
    }

    /// The vote, membership and log ids as the log's meta holds them.
    pub fn stored_meta(bytes: &[u8]) -> bool {
        let vote = codec::decode_vote(Some(bytes)).is_ok();
        let membership = codec::decode_membership(Some(bytes)).is_ok();
        let log_id = codec::decode_log_id(Some(bytes)).is_ok();
        vote || membership || log_id
    }
}
pub use log_store::FlushObserver;
pub use network::{CLUSTER_ID_HEADER, Dialer, FROM_HEADER, GrpcDialer, PeerChannel, PeerError, TO_HEADER};
pub use removed::REMOVED_MESSAGE;
pub use runtime::{random_u64, seed_thread_rng};
pub use types::MemberNode;
