//! The type configuration synod runs openraft with.
//!
//! A log entry's application data is a [`Proposal`] (a synod [`Command`]); applying it
//! yields a [`Reply`]; members are identified by their etcd member id (`u64`) and described
//! by a [`MemberNode`]. These types stay in memory: on disk and on the wire every openraft
//! value is converted to synod's own protobuf messages (see `codec`).

use std::fmt;

use synod_api::synodpb::{Command, command};
use synod_mvcc::Applied;

/// A command to replicate: the application data of a log entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Proposal(pub Command);

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.0.op {
            Some(command::Op::Put(_)) => "put",
            Some(command::Op::DeleteRange(_)) => "delete_range",
            Some(command::Op::Txn(_)) => "txn",
            Some(command::Op::Compaction(_)) => "compaction",
            Some(command::Op::Alarm(_)) => "alarm",
            Some(command::Op::MemberAttributes(_)) => "member_attributes",
            Some(command::Op::LeaseGrant(_)) => "lease_grant",
            Some(command::Op::LeaseRevoke(_)) => "lease_revoke",
            Some(command::Op::LeaseCheckpoints(_)) => "lease_checkpoints",
            Some(command::Op::CounterAdd(_)) => "counter_add",
            Some(command::Op::Auth(_)) => "auth",
            None => "unknown",
        };
        f.write_str(kind)
    }
}

/// What applying an entry produced: the command's outcome, or nothing for entries that
/// carry no command (a new leader's blank entry, a membership change, member attributes).
#[derive(Clone, Debug, Default)]
pub struct Reply(pub Option<Applied>);

/// A member as the consensus layer knows it: its name and where it is reached.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberNode {
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
}

openraft::declare_raft_types!(
    /// synod's openraft type configuration.
    pub TypeConfig:
        D = Proposal,
        R = Reply,
        NodeId = u64,
        Node = MemberNode,
        AsyncRuntime = crate::runtime::SynodRuntime,
);

pub type Raft = openraft::Raft<TypeConfig, crate::state_machine::StateMachine>;
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
pub type Membership = openraft::Membership<u64, MemberNode>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
pub type LeaderId = openraft::alias::LeaderIdOf<TypeConfig>;
