//! [`Removed`]: the members removed from a group, kept for good as etcd keeps removed IDs,
//! and whether this member is one of them.
//!
//! The state machine adds a member when it applies the membership without it. The peer
//! service refuses calls from removed members with [`REMOVED_MESSAGE`], and a member that
//! hears it, or applies its own removal, stops, as a removed etcd member does.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// etcd's words for a member that was removed from its cluster.
pub const REMOVED_MESSAGE: &str = "the member has been permanently removed from the cluster";

#[derive(Clone)]
pub(crate) struct Removed {
    member_id: u64,
    ids: Arc<Mutex<BTreeSet<u64>>>,
    this_member: watch::Sender<bool>,
}

impl Removed {
    pub(crate) fn new(member_id: u64) -> Removed {
        Removed { member_id, ids: Arc::default(), this_member: watch::Sender::new(false) }
    }

    /// Replaces the set (at startup and after a snapshot install).
    pub(crate) fn set(&self, ids: BTreeSet<u64>) {
        let this = ids.contains(&self.member_id);
        *self.ids.lock().unwrap_or_else(|p| p.into_inner()) = ids;
        if this {
            self.this_member_removed();
        }
    }

    /// Adds `gone` to the set and returns the whole set, to be stored.
    pub(crate) fn add(&self, gone: impl IntoIterator<Item = u64>) -> BTreeSet<u64> {
        let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        ids.extend(gone);
        let this = ids.contains(&self.member_id);
        let all = ids.clone();
        drop(ids);
        if this {
            self.this_member_removed();
        }
        all
    }

    pub(crate) fn contains(&self, id: u64) -> bool {
        self.ids.lock().unwrap_or_else(|p| p.into_inner()).contains(&id)
    }

    /// Records that this member was removed: by its own log, or by a peer's answer.
    pub(crate) fn this_member_removed(&self) {
        self.this_member.send_replace(true);
    }

    pub(crate) fn watch(&self) -> watch::Receiver<bool> {
        self.this_member.subscribe()
    }
}
