//! Replacing a leader whose process is gone without waiting out the election timeout.
//!
//! A follower hears from its leader on a replication stream. When that stream breaks
//! without being closed, the leader may have crashed: the follower calls the leader's peer
//! URL, and only a refused connection (nothing listens there any more) counts; silence may be
//! a partition, which the election timeout handles as before. It then asks the other voters
//! whether the leader is gone for them too (each calls the leader itself). With a majority
//! of voters agreeing, the most caught-up of them (by last log index, then lowest id) starts
//! an election at once, the others a moment later if none has won; its vote requests name
//! the gone leader, and a voter that found the same grants the vote although its lease on
//! that leader has not run out (the lease exists to keep a live leader in place, and this
//! one is not live). Anything short of that agreement changes nothing, so a live leader is
//! never deposed by it: pre-vote and the lease still guard every other election.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver as _;
use synod_api::synodpb as pb;
use tokio::time::Instant;

use crate::consensus::Inner;

/// How long a call to the leader may take to be refused. A refusal on a live network takes
/// a round trip; a partition makes the call wait, and the leader is then not judged gone.
const REFUSAL_WITHIN: Duration = Duration::from_millis(200);
/// How long the other voters have to answer whether the leader is gone for them.
const ASK_WITHIN: Duration = Duration::from_millis(400);
/// How long a voter behind the most caught-up one waits, per place, before campaigning.
const STAGGER: Duration = Duration::from_millis(150);
/// How soon a leader found live may be checked again.
const RECHECK_AFTER: Duration = Duration::from_millis(500);
/// How long a finding that a leader is gone stands: a vote request naming it later is an
/// ordinary one.
const FINDING_STANDS: Duration = Duration::from_secs(2);

/// What this member found about gone leaders.
#[derive(Default)]
pub(crate) struct Failover {
    /// A leader found gone: (leader, term, when).
    found: Mutex<Option<(u64, u64, Instant)>>,
    /// The last check this member started of its own: (leader, term, when). The streams a
    /// crash breaks each start one, and one is enough.
    checked: Mutex<Option<(u64, u64, Instant)>>,
    /// The last call this member made to a leader for another voter's question: (leader,
    /// term, when, refused), so that repeated questions cost one call.
    probed: Mutex<Option<(u64, u64, Instant, bool)>>,
}

impl Failover {
    fn record(&self, leader: u64, term: u64) {
        *self.found.lock().unwrap_or_else(|p| p.into_inner()) = Some((leader, term, Instant::now()));
    }

    /// The term of `leader` if it was found gone lately.
    fn found_gone(&self, leader: u64) -> Option<u64> {
        match *self.found.lock().unwrap_or_else(|p| p.into_inner()) {
            Some((found, term, at)) if found == leader && at.elapsed() < FINDING_STANDS => Some(term),
            _ => None,
        }
    }
}

/// This member's view of its group: its term, its leader, the voters and where they are.
struct View {
    term: u64,
    leader: Option<u64>,
    last_log_index: u64,
    voters: Vec<(u64, Vec<String>)>,
}

impl View {
    /// Where voter `id` is reached.
    fn urls_of(&self, id: u64) -> Option<&[String]> {
        self.voters.iter().find(|(voter, _)| *voter == id).map(|(_, urls)| urls.as_slice())
    }
}

fn view(inner: &Inner) -> View {
    let metrics = inner.raft.metrics().borrow_watched().clone();
    let membership = metrics.membership_config.membership();
    let voters = membership
        .voter_ids()
        .map(|id| (id, membership.get_node(&id).map(|node| node.peer_urls.clone()).unwrap_or_default()))
        .collect();
    View {
        term: metrics.current_term,
        leader: metrics.current_leader,
        last_log_index: metrics.last_log_index.unwrap_or(0),
        voters,
    }
}

/// The replication stream from `leader` broke, or another voter found it gone: checks
/// whether the leader is gone and, if a majority of voters agrees, replaces it.
pub(crate) fn check_leader(inner: Arc<Inner>, leader: u64) {
    tokio::spawn(async move {
        if let Some(delay) = replace_gone_leader(&inner, leader).await {
            tracing::info!(
                leader = %format!("{leader:x}"),
                after_ms = delay.as_millis() as u64,
                "the leader's process is gone; campaigning without waiting for the election timeout"
            );
        }
    });
}

/// Returns how long after the break this member campaigned, if it did.
async fn replace_gone_leader(inner: &Arc<Inner>, leader: u64) -> Option<Duration> {
    let started = Instant::now();
    let before = view(inner);
    let me = inner.member_id;
    if before.leader != Some(leader) || !before.voters.iter().any(|(id, _)| *id == me) {
        return None;
    }
    {
        let mut checked = inner.failover.checked.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(*checked, Some((l, t, at)) if (l, t) == (leader, before.term) && at.elapsed() < RECHECK_AFTER)
        {
            return None;
        }
        *checked = Some((leader, before.term, Instant::now()));
    }
    if !inner.network.refuses(leader, before.urls_of(leader)?, REFUSAL_WITHIN).await {
        return None;
    }
    inner.failover.record(leader, before.term);
    let others: Vec<&(u64, Vec<String>)> =
        before.voters.iter().filter(|(id, _)| *id != me && *id != leader).collect();
    let asks = others.iter().map(|(id, urls)| async move {
        let request = pb::LeaderGoneRequest { group_id: inner.group.0, leader, term: before.term };
        let answer = ask(inner, *id, urls, request).await;
        answer.filter(|a| a.gone).map(|a| (a.last_log_index, *id))
    });
    let mut agreeing: Vec<(u64, u64)> = futures::future::join_all(asks).await.into_iter().flatten().collect();
    // This member's own log as it is now, as the others answered with theirs as they were
    // when they answered: all after the leader went, so the voters rank alike.
    agreeing.push((view(inner).last_log_index, me));
    if agreeing.len() <= before.voters.len() / 2 {
        return None;
    }
    // The most caught-up first (it alone can win if the logs differ), ties to the lowest id.
    agreeing.sort_by_key(|&(index, id)| (std::cmp::Reverse(index), id));
    let place = agreeing.iter().position(|&(_, id)| id == me)? as u32;
    tracing::info!(
        leader = %format!("{leader:x}"),
        ?agreeing,
        place,
        "voters agree that the leader's process is gone"
    );
    tokio::time::sleep(STAGGER * place).await;
    let now = view(inner);
    if now.term != before.term || now.leader.is_some_and(|l| l != leader) {
        return None;
    }
    inner.network.campaign_for(now.term + 1, leader);
    inner.raft.trigger().elect(false).await.ok()?;
    Some(started.elapsed())
}

async fn ask(
    inner: &Inner,
    voter: u64,
    urls: &[String],
    request: pb::LeaderGoneRequest,
) -> Option<pb::LeaderGoneResponse> {
    let mut client = inner.network.client(voter, urls).ok()?;
    let request = inner.network.request(voter, request, ASK_WITHIN);
    let answer = tokio::time::timeout(ASK_WITHIN, client.leader_gone(request)).await;
    answer.ok()?.ok().map(tonic::Response::into_inner)
}

/// Answers another voter asking whether `leader` of `term` is gone: yes if this member
/// found so already, or finds it now.
pub(crate) async fn answer(inner: &Arc<Inner>, leader: u64, term: u64) -> pb::LeaderGoneResponse {
    let now = view(inner);
    let gone = if inner.failover.found_gone(leader) == Some(term) {
        true
    } else if now.term == term && now.leader == Some(leader) {
        let recent = *inner.failover.probed.lock().unwrap_or_else(|p| p.into_inner());
        let refused = match recent {
            Some((l, t, at, refused)) if (l, t) == (leader, term) && at.elapsed() < RECHECK_AFTER => refused,
            _ => {
                let refused = match now.urls_of(leader) {
                    Some(urls) => inner.network.refuses(leader, urls, REFUSAL_WITHIN).await,
                    None => false,
                };
                *inner.failover.probed.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((leader, term, Instant::now(), refused));
                refused
            }
        };
        if refused {
            inner.failover.record(leader, term);
        }
        refused
    } else {
        false
    };
    if gone {
        // This member may not have seen a stream of its own break; it campaigns too if it
        // ranks first.
        check_leader(inner.clone(), leader);
    }
    pb::LeaderGoneResponse { gone, last_log_index: now.last_log_index }
}

/// Whether a vote request for `term` naming `gone_leader` may pass this member's lease on
/// it: this member found that leader gone in an earlier term, and follows it or no one.
pub(crate) fn may_pass_lease(inner: &Inner, gone_leader: u64, term: u64) -> bool {
    if gone_leader == 0 {
        return false;
    }
    let Some(found_in) = inner.failover.found_gone(gone_leader) else { return false };
    let now = view(inner);
    term > found_in && now.leader.is_none_or(|leader| leader == gone_leader)
}
