//! etcd's `--force-new-cluster`: recovery after a lost quorum. One surviving member restarts
//! as a one-member cluster with all the data it has; the others are then added back as new
//! members.
//!
//! It works on the stored log before openraft starts: a membership entry naming this member
//! alone is appended after the last entry, in a term above every term the log and the vote
//! have seen, with a vote for this member in that term. On start, openraft finds itself the
//! only voter, elects itself, and commits everything the log holds, the forced membership
//! included. Unlike etcd, which drops the entries its member had not seen committed, every
//! entry is kept: a member elected leader in a normal election would commit them too.

use prost::Message;
use synod_api::synodpb as pb;
use synod_base::{GroupId, LogIndex};
use synod_storage::{LogOp, LogStore, StateStore};

use crate::codec;
use crate::log_store::vote_key;
use crate::state_machine::read_applied;

/// What forcing a new cluster changed: the members that are gone and the index of the
/// membership entry that removed them.
#[derive(Debug)]
pub struct ForcedCluster {
    pub removed: Vec<u64>,
    pub index: u64,
}

/// Rewrites the log of `group` so this member (`member_id`) starts as the only member of
/// its cluster. Fails, changing nothing, if the log and state do not name this member.
pub fn force_new_cluster(
    log: &LogStore,
    state: &StateStore,
    group: GroupId,
    member_id: u64,
) -> Result<ForcedCluster, String> {
    let storage = |e: synod_storage::StorageError| e.to_string();
    let (applied, stored) = read_applied(state, group).map_err(|e| e.to_string())?;
    let mut membership = codec::membership(stored.membership());
    let mut last: Option<pb::LogId> = applied.as_ref().map(codec::log_id);
    let first_unapplied = applied.map_or(0, |id| id.index + 1);
    let bounds = log.bounds(group).map_err(storage)?;
    // After a snapshot from a leader the applied state can be ahead of the log until the
    // log is trimmed; the new entry must follow both.
    if let Some((_, end)) = bounds
        && end.0 + 1 < first_unapplied
    {
        return Err(format!(
            "the log ends at entry {}, before the applied entry {} (a snapshot was installed and the \
             log not trimmed yet); restart the member once without --force-new-cluster, or restore a \
             snapshot into a new cluster",
            end.0,
            first_unapplied - 1
        ));
    }
    // Entries past the applied index may change the membership, and the newest counts.
    if let Some((_, end)) = bounds {
        for (index, bytes) in
            log.entries(group, LogIndex(first_unapplied)..LogIndex(end.0 + 1)).map_err(storage)?
        {
            let entry =
                pb::Entry::decode(bytes.as_slice()).map_err(|e| format!("log entry {}: {e}", index.0))?;
            if let Some(pb::entry::Payload::Membership(changed)) = &entry.payload {
                membership = changed.clone();
            }
            last = entry.log_id;
        }
    }
    let last = last.ok_or("the log and the state are empty: this member never joined a cluster")?;
    let node = membership
        .nodes
        .get(&member_id)
        .cloned()
        .ok_or_else(|| format!("member {member_id:x} is not in its cluster's membership"))?;
    // A learner never voted: it may lack writes the cluster committed without it.
    if !membership.configs.iter().any(|voters| voters.ids.contains(&member_id)) {
        return Err(format!(
            "member {member_id:x} is a learner and may lack committed writes; force a new cluster from a voter"
        ));
    }
    let vote = log.meta(&vote_key(group)).map_err(storage)?;
    let vote =
        vote.map(|bytes| pb::Vote::decode(bytes.as_slice())).transpose().map_err(|e| format!("vote: {e}"))?;
    let term_of = |leader: Option<&pb::LeaderId>| leader.map_or(0, |l| l.term);
    let term = term_of(vote.as_ref().and_then(|v| v.leader.as_ref())).max(term_of(last.leader.as_ref())) + 1;
    let leader = pb::LeaderId { term, node_id: member_id };
    let index = last.index + 1;
    let entry = pb::Entry {
        log_id: Some(pb::LogId { leader: Some(leader), index }),
        payload: Some(pb::entry::Payload::Membership(pb::Membership {
            configs: vec![pb::VoterSet { ids: vec![member_id] }],
            nodes: [(member_id, node)].into_iter().collect(),
        })),
    };
    let removed: Vec<u64> = membership.nodes.keys().copied().filter(|id| *id != member_id).collect();
    let encoded = entry.encode_to_vec();
    let vote = pb::Vote { leader: Some(leader), committed: true }.encode_to_vec();
    let key = vote_key(group);
    log.write(&[
        LogOp::Append { group, entries: &[(LogIndex(index), encoded.as_slice())] },
        LogOp::PutMeta { key: &key, value: &vote },
    ])
    .map_err(storage)?;
    Ok(ForcedCluster { removed, index })
}
