//! Conversions between openraft's values and synod's protobuf messages (`synodpb`).
//!
//! Everything openraft produces that leaves the process goes through here: log entries and
//! votes on disk, and every peer message. Keeping the formats synod's own means an openraft
//! upgrade cannot silently change what is on disk or on the wire. Decoding input from disk
//! or from a peer never panics: a missing or malformed field is a [`CodecError`].

use std::collections::{BTreeMap, BTreeSet};

use openraft::EntryPayload;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, StreamAppendError, StreamAppendResult, TransferLeaderError,
    TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use synod_api::synodpb as pb;

use crate::types::{
    Entry, LeaderId, LogId, MemberNode, Membership, Proposal, SnapshotMeta, StoredMembership, TypeConfig,
    Vote,
};

/// A stored or received message that does not describe a valid openraft value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed consensus message: {0}")]
pub struct CodecError(pub String);

fn missing(what: &str) -> CodecError {
    CodecError(format!("{what} is missing"))
}

pub fn leader_id(leader: &LeaderId) -> pb::LeaderId {
    pb::LeaderId { term: leader.term, node_id: leader.node_id }
}

fn leader_id_from(leader: Option<&pb::LeaderId>, what: &str) -> Result<LeaderId, CodecError> {
    let leader = leader.ok_or_else(|| missing(what))?;
    Ok(LeaderId { term: leader.term, node_id: leader.node_id })
}

pub fn log_id(id: &LogId) -> pb::LogId {
    pb::LogId { leader: Some(leader_id(&id.leader_id)), index: id.index }
}

pub fn log_id_from(id: &pb::LogId) -> Result<LogId, CodecError> {
    Ok(LogId { leader_id: leader_id_from(id.leader.as_ref(), "log id leader")?, index: id.index })
}

/// Decodes a stored value: the protobuf message, then the openraft value it describes.
/// `None` (nothing stored) stays `None`.
fn stored<M: prost::Message + Default, T>(
    bytes: Option<&[u8]>,
    convert: impl FnOnce(&M) -> Result<T, CodecError>,
) -> Result<Option<T>, CodecError> {
    bytes.map(|bytes| convert(&M::decode(bytes).map_err(|e| CodecError(e.to_string()))?)).transpose()
}

/// A log id as stored in meta (applied, committed, purged).
pub fn decode_log_id(bytes: Option<&[u8]>) -> Result<Option<LogId>, CodecError> {
    stored(bytes, log_id_from)
}

/// A vote as stored in meta.
pub fn decode_vote(bytes: Option<&[u8]>) -> Result<Option<Vote>, CodecError> {
    stored(bytes, |vote: &pb::Vote| vote_from(Some(vote)))
}

/// A membership as stored in meta; the empty one when nothing is stored.
pub fn decode_membership(bytes: Option<&[u8]>) -> Result<StoredMembership, CodecError> {
    Ok(stored(bytes, stored_membership_from)?.unwrap_or_default())
}

pub fn opt_log_id(id: Option<&LogId>) -> Option<pb::LogId> {
    id.map(log_id)
}

pub fn opt_log_id_from(id: Option<&pb::LogId>) -> Result<Option<LogId>, CodecError> {
    id.map(log_id_from).transpose()
}

pub fn vote(vote: &Vote) -> pb::Vote {
    pb::Vote { leader: Some(leader_id(&vote.leader_id)), committed: vote.committed }
}

pub fn vote_from(vote: Option<&pb::Vote>) -> Result<Vote, CodecError> {
    let vote = vote.ok_or_else(|| missing("vote"))?;
    Ok(Vote { leader_id: leader_id_from(vote.leader.as_ref(), "vote leader")?, committed: vote.committed })
}

pub fn member_node(node: &MemberNode) -> pb::MemberNode {
    pb::MemberNode {
        name: node.name.clone(),
        peer_urls: node.peer_urls.clone(),
        client_urls: node.client_urls.clone(),
    }
}

pub fn member_node_from(node: &pb::MemberNode) -> MemberNode {
    MemberNode {
        name: node.name.clone(),
        peer_urls: node.peer_urls.clone(),
        client_urls: node.client_urls.clone(),
    }
}

pub fn membership(membership: &Membership) -> pb::Membership {
    pb::Membership {
        configs: membership
            .get_joint_config()
            .iter()
            .map(|voters| pb::VoterSet { ids: voters.iter().copied().collect() })
            .collect(),
        nodes: membership.nodes().map(|(id, node)| (*id, member_node(node))).collect(),
    }
}

pub fn membership_from(membership: &pb::Membership) -> Result<Membership, CodecError> {
    let configs: Vec<BTreeSet<u64>> =
        membership.configs.iter().map(|c| c.ids.iter().copied().collect()).collect();
    let nodes: BTreeMap<u64, MemberNode> =
        membership.nodes.iter().map(|(id, node)| (*id, member_node_from(node))).collect();
    Membership::new(configs, nodes).map_err(|e| CodecError(format!("membership: {e}")))
}

pub fn stored_membership(stored: &StoredMembership) -> pb::StoredMembership {
    pb::StoredMembership {
        log_id: opt_log_id(stored.log_id().as_ref()),
        membership: Some(membership(stored.membership())),
    }
}

pub fn stored_membership_from(stored: &pb::StoredMembership) -> Result<StoredMembership, CodecError> {
    let membership = membership_from(stored.membership.as_ref().ok_or_else(|| missing("membership"))?)?;
    Ok(StoredMembership::new(opt_log_id_from(stored.log_id.as_ref())?, membership))
}

pub fn entry(entry: &Entry) -> pb::Entry {
    let payload = match &entry.payload {
        EntryPayload::Blank => pb::entry::Payload::Blank(pb::Blank {}),
        EntryPayload::Normal(Proposal(command)) => pb::entry::Payload::Command(command.clone()),
        EntryPayload::Membership(m) => pb::entry::Payload::Membership(membership(m)),
    };
    pb::Entry { log_id: Some(log_id(&entry.log_id)), payload: Some(payload) }
}

pub fn entry_from(entry: pb::Entry) -> Result<Entry, CodecError> {
    let log_id = log_id_from(entry.log_id.as_ref().ok_or_else(|| missing("entry log id"))?)?;
    let payload = match entry.payload.ok_or_else(|| missing("entry payload"))? {
        pb::entry::Payload::Blank(_) => EntryPayload::Blank,
        pb::entry::Payload::Command(command) => EntryPayload::Normal(Proposal(command)),
        pb::entry::Payload::Membership(m) => EntryPayload::Membership(membership_from(&m)?),
    };
    Ok(Entry { log_id, payload })
}

pub fn snapshot_meta(meta: &SnapshotMeta) -> pb::SnapshotMeta {
    pb::SnapshotMeta {
        last_log_id: opt_log_id(meta.last_log_id.as_ref()),
        last_membership: Some(stored_membership(&meta.last_membership)),
    }
}

pub fn snapshot_meta_from(meta: &pb::SnapshotMeta) -> Result<SnapshotMeta, CodecError> {
    Ok(SnapshotMeta {
        last_log_id: opt_log_id_from(meta.last_log_id.as_ref())?,
        last_membership: stored_membership_from(
            meta.last_membership.as_ref().ok_or_else(|| missing("snapshot membership"))?,
        )?,
    })
}

pub fn append_request(request: &AppendEntriesRequest<TypeConfig>, group_id: u64) -> pb::AppendEntriesRequest {
    pb::AppendEntriesRequest {
        group_id,
        vote: Some(vote(&request.vote)),
        prev_log_id: opt_log_id(request.prev_log_id.as_ref()),
        entries: request.entries.iter().map(entry).collect(),
        leader_commit: opt_log_id(request.leader_commit.as_ref()),
    }
}

pub fn append_request_from(
    request: pb::AppendEntriesRequest,
) -> Result<AppendEntriesRequest<TypeConfig>, CodecError> {
    Ok(AppendEntriesRequest {
        vote: vote_from(request.vote.as_ref())?,
        prev_log_id: opt_log_id_from(request.prev_log_id.as_ref())?,
        leader_commit: opt_log_id_from(request.leader_commit.as_ref())?,
        entries: request.entries.into_iter().map(entry_from).collect::<Result<_, _>>()?,
    })
}

/// Checks what openraft assumes of an AppendEntries, and would assert on: entries at
/// consecutive indexes right after `prev_log_id`, leaders that never go back along the
/// log, and nothing from a leader newer than the sender's vote. A peer that breaks these
/// is broken or hostile; its message is refused instead of stopping this member.
pub fn check_append(request: &AppendEntriesRequest<TypeConfig>) -> Result<(), CodecError> {
    let vote = &request.vote.leader_id;
    let newer_than_vote = |id: &LogId, what: &str| {
        if id.leader_id > *vote {
            return Err(CodecError(format!(
                "{what} {id} is from a leader newer than the vote {}",
                request.vote
            )));
        }
        Ok(())
    };
    if let Some(prev) = &request.prev_log_id {
        newer_than_vote(prev, "prev_log_id")?;
    }
    if let Some(committed) = &request.leader_commit {
        newer_than_vote(committed, "leader_commit")?;
    }
    let mut previous = request.prev_log_id.as_ref();
    for entry in &request.entries {
        let id = &entry.log_id;
        let due = previous.map_or(0, |p| p.index + 1);
        if id.index != due {
            return Err(CodecError(format!("entry {id} where index {due} was due")));
        }
        if previous.is_some_and(|p| id.leader_id < p.leader_id) {
            return Err(CodecError(format!("entry {id} comes after an entry of a newer leader")));
        }
        newer_than_vote(id, "entry")?;
        previous = Some(id);
    }
    Ok(())
}

/// Checks a received snapshot's description against the vote it came with (openraft
/// asserts that a snapshot holds nothing beyond its leader's vote).
pub fn check_snapshot_meta(vote: &Vote, meta: &SnapshotMeta) -> Result<(), CodecError> {
    if let Some(last) = &meta.last_log_id {
        if last.leader_id > vote.leader_id {
            return Err(CodecError(format!(
                "snapshot up to {last} is from a leader newer than the vote {vote}"
            )));
        }
        if meta.last_membership.log_id().as_ref() > Some(last) {
            return Err(CodecError("snapshot membership is newer than the snapshot".into()));
        }
    } else if meta.last_membership.log_id().is_some() {
        return Err(CodecError("empty snapshot with a membership".into()));
    }
    Ok(())
}

pub fn append_response(response: &AppendEntriesResponse<TypeConfig>) -> pb::AppendEntriesResponse {
    use pb::append_entries_response::Result as R;
    let result = match response {
        AppendEntriesResponse::Success => R::Success(pb::Blank {}),
        AppendEntriesResponse::PartialSuccess(matched) => {
            R::PartialSuccess(pb::PartialSuccess { matched: opt_log_id(matched.as_ref()) })
        }
        AppendEntriesResponse::Conflict => R::Conflict(pb::Blank {}),
        AppendEntriesResponse::HigherVote(v) => R::HigherVote(vote(v)),
    };
    pb::AppendEntriesResponse { result: Some(result) }
}

pub fn append_response_from(
    response: pb::AppendEntriesResponse,
) -> Result<AppendEntriesResponse<TypeConfig>, CodecError> {
    use pb::append_entries_response::Result as R;
    Ok(match response.result.ok_or_else(|| missing("append result"))? {
        R::Success(_) => AppendEntriesResponse::Success,
        R::PartialSuccess(p) => AppendEntriesResponse::PartialSuccess(opt_log_id_from(p.matched.as_ref())?),
        R::Conflict(_) => AppendEntriesResponse::Conflict,
        R::HigherVote(v) => AppendEntriesResponse::HigherVote(vote_from(Some(&v))?),
    })
}

/// One answer on a replication stream.
pub fn append_result(result: &StreamAppendResult<TypeConfig>) -> pb::AppendResult {
    use pb::append_result::Result as R;
    let result = match result {
        Ok(matched) => R::Matched(pb::Matched { log_id: opt_log_id(matched.as_ref()) }),
        Err(StreamAppendError::Conflict(at)) => R::Conflict(log_id(at)),
        Err(StreamAppendError::HigherVote(v)) => R::HigherVote(vote(v)),
    };
    pb::AppendResult { result: Some(result) }
}

pub fn append_result_from(result: pb::AppendResult) -> Result<StreamAppendResult<TypeConfig>, CodecError> {
    use pb::append_result::Result as R;
    Ok(match result.result.ok_or_else(|| missing("append result"))? {
        R::Matched(m) => Ok(opt_log_id_from(m.log_id.as_ref())?),
        R::Conflict(at) => Err(StreamAppendError::Conflict(log_id_from(&at)?)),
        R::HigherVote(v) => Err(StreamAppendError::HigherVote(vote_from(Some(&v))?)),
    })
}

/// A vote request; `gone_leader` names the leader the candidate found gone, or is 0.
pub fn vote_request(request: &VoteRequest<TypeConfig>, group_id: u64, gone_leader: u64) -> pb::VoteRequest {
    pb::VoteRequest {
        group_id,
        vote: Some(vote(&request.vote)),
        last_log_id: opt_log_id(request.last_log_id.as_ref()),
        leadership_transfer: request.leadership_transfer,
        gone_leader,
    }
}

pub fn vote_request_from(request: &pb::VoteRequest) -> Result<VoteRequest<TypeConfig>, CodecError> {
    let mut vote_request =
        VoteRequest::new(vote_from(request.vote.as_ref())?, opt_log_id_from(request.last_log_id.as_ref())?);
    vote_request.leadership_transfer = request.leadership_transfer;
    Ok(vote_request)
}

pub fn vote_response(response: &VoteResponse<TypeConfig>) -> pb::VoteResponse {
    pb::VoteResponse {
        vote: Some(vote(&response.vote)),
        vote_granted: response.vote_granted,
        last_log_id: opt_log_id(response.last_log_id.as_ref()),
    }
}

pub fn vote_response_from(response: &pb::VoteResponse) -> Result<VoteResponse<TypeConfig>, CodecError> {
    Ok(VoteResponse {
        vote: vote_from(response.vote.as_ref())?,
        vote_granted: response.vote_granted,
        last_log_id: opt_log_id_from(response.last_log_id.as_ref())?,
    })
}

pub fn transfer_request(
    request: &TransferLeaderRequest<TypeConfig>,
    group_id: u64,
) -> pb::TransferLeaderRequest {
    pb::TransferLeaderRequest {
        group_id,
        from_leader: Some(vote(request.from_leader())),
        to_node_id: *request.to_node_id(),
        last_log_id: opt_log_id(request.last_log_id()),
    }
}

pub fn transfer_request_from(
    request: &pb::TransferLeaderRequest,
) -> Result<TransferLeaderRequest<TypeConfig>, CodecError> {
    Ok(TransferLeaderRequest::new(
        vote_from(request.from_leader.as_ref())?,
        request.to_node_id,
        opt_log_id_from(request.last_log_id.as_ref())?,
    ))
}

pub fn transfer_response(response: &TransferLeaderResponse<TypeConfig>) -> pb::TransferLeaderResponse {
    use pb::transfer_leader_response::Result as R;
    let result = match response {
        Ok(()) => R::Ok(pb::Blank {}),
        Err(TransferLeaderError::VoteChanged { expected, actual }) => {
            R::VoteChanged(pb::VoteMismatch { expected: Some(vote(expected)), actual: Some(vote(actual)) })
        }
        Err(TransferLeaderError::LogNotFlushed { expected, actual }) => R::LogNotFlushed(pb::LogMismatch {
            expected: opt_log_id(expected.as_ref()),
            actual: opt_log_id(actual.as_ref()),
        }),
    };
    pb::TransferLeaderResponse { result: Some(result) }
}

pub fn transfer_response_from(
    response: &pb::TransferLeaderResponse,
) -> Result<TransferLeaderResponse<TypeConfig>, CodecError> {
    use pb::transfer_leader_response::Result as R;
    Ok(match response.result.as_ref().ok_or_else(|| missing("transfer result"))? {
        R::Ok(_) => Ok(()),
        R::VoteChanged(m) => Err(TransferLeaderError::VoteChanged {
            expected: vote_from(m.expected.as_ref())?,
            actual: vote_from(m.actual.as_ref())?,
        }),
        R::LogNotFlushed(m) => Err(TransferLeaderError::LogNotFlushed {
            expected: opt_log_id_from(m.expected.as_ref())?,
            actual: opt_log_id_from(m.actual.as_ref())?,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_api::etcdserverpb::PutRequest;
    use synod_api::synodpb::{Command, command};

    fn lid(term: u64, node: u64, index: u64) -> LogId {
        LogId { leader_id: LeaderId { term, node_id: node }, index }
    }

    fn node(name: &str) -> MemberNode {
        MemberNode { name: name.into(), peer_urls: vec![format!("http://{name}:2380")], client_urls: vec![] }
    }

    fn append(vote_term: u64, prev: Option<LogId>, ids: &[LogId]) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(vote_term, 1),
            prev_log_id: prev,
            leader_commit: None,
            entries: ids.iter().map(|id| Entry { log_id: *id, payload: EntryPayload::Blank }).collect(),
        }
    }

    /// What openraft would assert on is refused; what a leader sends passes.
    #[test]
    fn appends_are_checked_before_openraft_sees_them() {
        let good = append(3, Some(lid(2, 1, 4)), &[lid(2, 1, 5), lid(3, 1, 6)]);
        assert_eq!(check_append(&good), Ok(()));
        assert_eq!(check_append(&append(3, None, &[lid(1, 1, 0), lid(1, 1, 1)])), Ok(()));
        for bad in [
            append(3, Some(lid(2, 1, 4)), &[lid(2, 1, 6)]), // skips an index
            append(3, None, &[lid(1, 1, 0), lid(1, 1, 5), lid(1, 1, 3)]), // jumps around
            append(3, Some(lid(2, 1, 4)), &[lid(2, 1, 5), lid(1, 1, 6)]), // leader goes back
            append(3, Some(lid(2, 1, 4)), &[lid(4, 1, 5)]), // newer than the vote
            append(3, Some(lid(4, 1, 4)), &[]),             // prev newer than the vote
        ] {
            assert!(check_append(&bad).is_err(), "{bad:?} passed");
        }
        let vote = Vote::new_committed(3, 1);
        let meta = |last: Option<LogId>, membership: Option<LogId>| SnapshotMeta {
            last_log_id: last,
            last_membership: StoredMembership::new(
                membership,
                Membership::new_with_defaults(vec![BTreeSet::from([1])], []),
            ),
        };
        assert_eq!(check_snapshot_meta(&vote, &meta(Some(lid(3, 1, 9)), Some(lid(1, 1, 0)))), Ok(()));
        assert!(check_snapshot_meta(&vote, &meta(Some(lid(4, 1, 9)), None)).is_err());
        assert!(check_snapshot_meta(&vote, &meta(Some(lid(3, 1, 9)), Some(lid(3, 1, 10)))).is_err());
    }

    /// Every kind of entry survives the round trip through protobuf unchanged.
    #[test]
    fn entries_round_trip() {
        let membership = Membership::new(
            vec![[1, 2].into(), [2, 3].into()],
            BTreeMap::from([(1, node("a")), (2, node("b")), (3, node("c")), (4, node("learner"))]),
        )
        .unwrap();
        let put = Command {
            op: Some(command::Op::Put(PutRequest {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                ..Default::default()
            })),
            ..Default::default()
        };
        for payload in
            [EntryPayload::Blank, EntryPayload::Normal(Proposal(put)), EntryPayload::Membership(membership)]
        {
            let original = Entry { log_id: lid(3, 2, 17), payload };
            let back = entry_from(entry(&original)).unwrap();
            assert_eq!(back.log_id, original.log_id);
            assert_eq!(format!("{:?}", back.payload), format!("{:?}", original.payload));
        }
    }

    /// Messages with missing parts are errors, not panics.
    #[test]
    fn missing_fields_are_errors() {
        assert!(entry_from(pb::Entry::default()).is_err());
        assert!(vote_from(None).is_err());
        assert!(append_response_from(pb::AppendEntriesResponse::default()).is_err());
        assert!(append_result_from(pb::AppendResult::default()).is_err());
        let conflict_without_index = pb::append_result::Result::Conflict(pb::LogId::default());
        assert!(append_result_from(pb::AppendResult { result: Some(conflict_without_index) }).is_err());
        let voters_without_nodes =
            pb::Membership { configs: vec![pb::VoterSet { ids: vec![9] }], nodes: Default::default() };
        assert!(membership_from(&voters_without_nodes).is_err());
    }

    /// Every answer on a replication stream comes back as it was.
    #[test]
    fn stream_answers_round_trip() {
        let vote = Vote { leader_id: LeaderId { term: 5, node_id: 7 }, committed: true };
        let answers: [StreamAppendResult<TypeConfig>; 4] = [
            Ok(None),
            Ok(Some(lid(5, 7, 12))),
            Err(StreamAppendError::Conflict(lid(4, 2, 9))),
            Err(StreamAppendError::HigherVote(vote)),
        ];
        for answer in answers {
            assert_eq!(append_result_from(append_result(&answer)).unwrap(), answer);
        }
    }

    /// Peer requests keep votes, log ids and transfer details.
    #[test]
    fn requests_round_trip() {
        let vote = Vote { leader_id: LeaderId { term: 5, node_id: 7 }, committed: true };
        let mut request = VoteRequest::<TypeConfig>::new(vote, Some(lid(4, 7, 99)));
        request.leadership_transfer = true;
        assert_eq!(vote_request_from(&vote_request(&request, 0, 0)).unwrap(), request);
        assert_eq!(vote_request(&request, 0, 0xd2).gone_leader, 0xd2);
        let transfer = TransferLeaderRequest::<TypeConfig>::new(vote, 9, Some(lid(5, 7, 100)));
        assert_eq!(transfer_request_from(&transfer_request(&transfer, 0)).unwrap(), transfer);
        let refused: TransferLeaderResponse<TypeConfig> =
            Err(TransferLeaderError::LogNotFlushed { expected: Some(lid(5, 7, 100)), actual: None });
        assert_eq!(transfer_response_from(&transfer_response(&refused)).unwrap(), refused);
    }
}
