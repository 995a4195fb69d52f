//! Newtypes for the numbers synod keeps apart.
//!
//! A store revision, a raft log index and a raft term are all integers that grow, and mixing
//! them up is a classic source of silent bugs; each has its own type here. Widths follow the
//! etcd wire format: revisions and lease ids are signed 64-bit (`int64` in the protos), member
//! and cluster ids unsigned 64-bit.

use std::fmt;

/// A key-value store revision: 1 for an empty store, +1 per write request or Txn that
/// changes something. etcd calls it the "main" revision.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision(pub i64);

/// A lease id; 0 means "no lease".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseId(pub i64);

/// A cluster member's id, stable across restarts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberId(pub u64);

/// The cluster's id, derived from its initial membership and token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClusterId(pub u64);

/// A consensus group. There is one group (0) today; the keyspace is later split over many.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupId(pub u64);

/// A position in a group's replicated log. Never a revision: a log entry may change nothing
/// (a failed compare, a no-op) and one entry changes the revision by at most one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogIndex(pub u64);

/// A raft term: the number of the election epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Term(pub u64);

impl GroupId {
    /// The group that holds the whole keyspace while synod runs a single consensus group.
    pub const FIRST: GroupId = GroupId(0);
}

// etcd prints member and cluster ids as lower-case hex without padding.
impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

macro_rules! display_decimal {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    )*};
}
display_decimal!(Revision, LeaseId, GroupId, LogIndex, Term);

#[cfg(test)]
mod tests {
    use super::*;

    /// Member and cluster ids print as etcd prints them: lower-case hex, no padding.
    #[test]
    fn ids_print_like_etcd() {
        assert_eq!(MemberId(0x8e9e05c52164694d).to_string(), "8e9e05c52164694d");
        assert_eq!(ClusterId(0xcdf818194e3a8c32).to_string(), "cdf818194e3a8c32");
        assert_eq!(Revision(42).to_string(), "42");
    }
}
