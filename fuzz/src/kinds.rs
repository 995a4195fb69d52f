//! The kind bytes of each target's frames: which message a frame holds. The targets read a
//! kind modulo the count, so every byte names some kind; the seed generator writes these.
//! Renumbering them makes the committed corpus mean something else: regenerate it then.

/// `etcd_request`: etcd's gRPC requests (protobuf), and synod's log command.
pub mod etcd_request {
    pub const RANGE: u8 = 0;
    pub const PUT: u8 = 1;
    pub const DELETE_RANGE: u8 = 2;
    pub const TXN: u8 = 3;
    pub const COMPACTION: u8 = 4;
    pub const LEASE_GRANT: u8 = 5;
    pub const LEASE_REVOKE: u8 = 6;
    /// A `synodpb.Command`, applied as a log entry with none of the server's checks.
    pub const COMMAND: u8 = 7;
    pub const WATCH: u8 = 8;
    pub const LEASE_KEEP_ALIVE: u8 = 9;
    pub const LEASE_TIME_TO_LIVE: u8 = 10;
    pub const ALARM: u8 = 11;
    pub const LOCK: u8 = 12;
    pub const CAMPAIGN: u8 = 13;
    pub const MEMBER_ADD: u8 = 14;
    pub const COUNT: u8 = 15;
}

/// `log_decode`: synod's consensus messages (`synodpb`, raft.proto), stored or exchanged.
pub mod log_decode {
    pub const ENTRY: u8 = 0;
    pub const APPEND_REQUEST: u8 = 1;
    pub const APPEND_RESPONSE: u8 = 2;
    pub const VOTE_REQUEST: u8 = 3;
    pub const VOTE_RESPONSE: u8 = 4;
    pub const VOTE: u8 = 5;
    pub const LOG_ID: u8 = 6;
    pub const MEMBERSHIP: u8 = 7;
    pub const STORED_MEMBERSHIP: u8 = 8;
    pub const SNAPSHOT_META: u8 = 9;
    pub const SNAPSHOT_CHUNK: u8 = 10;
    pub const TRANSFER_REQUEST: u8 = 11;
    pub const TRANSFER_RESPONSE: u8 = 12;
    pub const FORWARD_REQUEST: u8 = 13;
    pub const FORWARD_RESPONSE: u8 = 14;
    pub const READ_INDEX_RESPONSE: u8 = 15;
    pub const MEMBER_CHANGE_REQUEST: u8 = 16;
    pub const CLUSTER_INFO_RESPONSE: u8 = 17;
    pub const LEADER_CALL_REQUEST: u8 = 18;
    pub const LEADER_CALL_RESPONSE: u8 = 19;
    pub const IDENTITY: u8 = 20;
    pub const REMOVED_MEMBERS: u8 = 21;
    pub const COUNT: u8 = 22;
}

/// `snapshot_decode`: the first byte of an input says what the rest is.
pub mod snapshot_decode {
    /// synod's state snapshot stream (`StateStore::export`), as a member receives it.
    pub const STATE_STREAM: u8 = 0;
    /// An etcd snapshot file (bbolt), as `synodctl snapshot restore` reads it.
    pub const ETCD_BBOLT: u8 = 1;
    /// Frames describing a state stream, sealed by `state_stream::build`.
    pub const STATE_FRAMES: u8 = 2;
    pub const COUNT: u8 = 3;
}

/// `gateway_json`: the gateway route whose request type reads the body.
pub mod gateway_json {
    pub const RANGE: u8 = 0;
    pub const PUT: u8 = 1;
    pub const DELETE_RANGE: u8 = 2;
    pub const TXN: u8 = 3;
    pub const COMPACTION: u8 = 4;
    pub const LEASE_GRANT: u8 = 5;
    pub const LEASE_REVOKE: u8 = 6;
    pub const LEASE_TIME_TO_LIVE: u8 = 7;
    pub const LEASE_LEASES: u8 = 8;
    pub const WATCH: u8 = 9;
    pub const LEASE_KEEP_ALIVE: u8 = 10;
    pub const ALARM: u8 = 11;
    pub const STATUS: u8 = 12;
    pub const HASH_KV: u8 = 13;
    pub const MOVE_LEADER: u8 = 14;
    pub const MEMBER_ADD: u8 = 15;
    pub const MEMBER_REMOVE: u8 = 16;
    pub const MEMBER_UPDATE: u8 = 17;
    pub const MEMBER_PROMOTE: u8 = 18;
    pub const LOCK: u8 = 19;
    pub const UNLOCK: u8 = 20;
    pub const CAMPAIGN: u8 = 21;
    pub const PROCLAIM: u8 = 22;
    pub const LEADER: u8 = 23;
    pub const RESIGN: u8 = 24;
    pub const OBSERVE: u8 = 25;
    pub const COUNTER_ADD: u8 = 26;
    pub const COUNTER_GET: u8 = 27;
    pub const COUNT: u8 = 28;
}

/// `log_segment`: the first byte of an input says what the rest is.
pub mod log_segment {
    /// The bytes of segment 1 after its header.
    pub const RAW: u8 = 0;
    /// Operations, sealed into segments by `log_ops::segments`.
    pub const OPS: u8 = 1;
    pub const COUNT: u8 = 2;
}
