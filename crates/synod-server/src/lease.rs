//! Leases: the leader's lease keeper ([`Lessor`]).
//!
//! Which leases exist, and which keys each holds, is replicated state (synod-mvcc). When
//! each one expires is not: only the leader keeps the clock, as in etcd. It renews leases on
//! KeepAlive (followers hand renewals to it), revokes expired ones through the log, at most
//! [`REVOKES_PER_SECOND`], and checkpoints the remaining time of leases nobody renewed for
//! a checkpoint interval, so that a new leader continues from there instead of granting
//! every lease a fresh TTL (etcd #9395).
//!
//! No lease expires before the deadline its holder was told:
//! - a renewal counts from a moment just before a round of heartbeats confirmed that this
//!   member still leads (never a barrier forwarded to another member), so any later leader
//!   was elected after that moment;
//! - a new leader starts its clocks only after it applied everything earlier leaders
//!   committed, and from a checkpoint's remaining time, which was measured before the
//!   checkpoint was written; a renewal of a checkpointed lease first clears the checkpoint
//!   through the log, after any checkpoint already on its way, and no checkpoint of a
//!   lease is taken while it is being renewed;
//! - everything the keeper proposes (revocations, checkpoints, clears) is proposed only
//!   while this member leads, never handed to another leader that did not decide it.
//!
//! A lease may live past its deadline by at most one checkpoint interval plus the failover
//! time (full TTL for a lease renewed within the last interval before the failover).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use synod_api::EtcdError;
use synod_api::etcdserverpb::{LeaseKeepAliveResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse};
use synod_api::synodpb::{Command, LeaseCheckpoint, LeaseCheckpoints, LeaseRecord, command};
use synod_consensus::{Consensus, ConsensusError, LeaderCall, LeaderReply, LeaderService};
use synod_mvcc::Response;
use synod_storage::StateStore;
use tokio::time::Instant;

/// etcd's default revocation rate (`defaultLeaseRevokeRate`).
pub const REVOKES_PER_SECOND: u32 = 1000;
/// How often the keeper looks for expired leases and checkpoints to write.
const TICK: Duration = Duration::from_millis(50);
/// Checkpoints per log entry (etcd's `maxLeaseCheckpointBatchSize`).
const CHECKPOINTS_PER_ENTRY: usize = 1000;

/// The leader's clock for one lease.
#[derive(Clone, Debug)]
struct Tracked {
    ttl: i64,
    expiry: Instant,
    /// When it was last granted, renewed or taken over: checkpoints count from here.
    renewed: Instant,
    /// When its remaining time was last checkpointed since it was renewed.
    checkpointed_at: Option<Instant>,
    /// The replicated state holds (or is about to hold) a checkpoint for it.
    checkpointed: bool,
    /// A revocation is on its way.
    revoking: bool,
    /// Renewals under way: no checkpoint is taken while one is.
    renewing: u32,
}

impl Tracked {
    /// A lease this leader takes over at `now`: from its checkpoint if it has one.
    fn taken_over(record: &LeaseRecord, now: Instant) -> Tracked {
        let remaining = if record.remaining_ms > 0 {
            Duration::from_millis(record.remaining_ms as u64)
        } else {
            ttl_duration(record.ttl)
        };
        Tracked {
            ttl: record.ttl,
            expiry: deadline(now, remaining),
            renewed: now,
            checkpointed_at: None,
            checkpointed: record.remaining_ms > 0,
            revoking: false,
            renewing: 0,
        }
    }
}

/// `from + after`, or as far as a clock goes: a lease is at most `MAX_LEASE_TTL` long.
fn deadline(from: Instant, after: Duration) -> Instant {
    from.checked_add(after.min(Duration::from_secs(synod_mvcc::MAX_LEASE_TTL as u64)))
        .unwrap_or_else(|| from + Duration::from_secs(365 * 24 * 3600))
}

fn ttl_duration(ttl: i64) -> Duration {
    Duration::from_secs(ttl.max(0) as u64)
}

/// The leader's clocks, for the term it leads in.
#[derive(Default)]
struct Book {
    /// The term these clocks belong to; `None` while this member does not lead.
    term: Option<u64>,
    /// The state's lease generation the clocks were last matched with.
    generation: u64,
    leases: HashMap<i64, Tracked>,
}

#[derive(Clone)]
pub struct Lessor {
    inner: Arc<Inner>,
}

struct Inner {
    consensus: Consensus,
    state: Arc<StateStore>,
    min_ttl: i64,
    checkpoint_interval: Duration,
    book: Mutex<Book>,
    /// Taken while the book is rebuilt for a new term.
    building: tokio::sync::Mutex<()>,
    /// Orders checkpoints and the clears renewals make: a clear is proposed only after the
    /// checkpoint before it applied.
    order: tokio::sync::Mutex<()>,
}

impl Lessor {
    /// `min_ttl` in seconds: etcd's `ceil(1.5 × election timeout)` rounded to heartbeats.
    pub fn new(
        consensus: Consensus,
        state: Arc<StateStore>,
        min_ttl: i64,
        checkpoint_interval: Duration,
    ) -> Lessor {
        Lessor {
            inner: Arc::new(Inner {
                consensus,
                state,
                min_ttl,
                checkpoint_interval,
                book: Mutex::new(Book::default()),
                building: tokio::sync::Mutex::new(()),
                order: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// The minimum TTL etcd computes: 1.5 election timeouts in whole heartbeats, rounded up
    /// to seconds (`minTTL` in etcd's server.go).
    pub fn min_ttl(heartbeat_ms: u64, election_ms: u64) -> i64 {
        let ticks = election_ms / heartbeat_ms.max(1);
        let min_ms = (3 * ticks / 2) * heartbeat_ms;
        min_ms.div_ceil(1000).max(1) as i64
    }

    pub fn clamp_ttl(&self, ttl: i64) -> i64 {
        ttl.max(self.inner.min_ttl)
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        self.inner.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn leading_term(&self) -> Option<u64> {
        let consensus = &self.inner.consensus;
        (consensus.leader() == Some(consensus.member_id())).then(|| consensus.term())
    }

    /// Makes sure the clocks belong to the term this member leads in; builds them from the
    /// replicated state once everything earlier leaders committed is applied here.
    async fn ensure_book(&self) -> Result<u64, ConsensusError> {
        let term = self.leading_term().ok_or(ConsensusError::NotLeader)?;
        if self.book().term == Some(term) {
            return Ok(term);
        }
        let _building = self.inner.building.lock().await;
        if self.book().term == Some(term) {
            return Ok(term);
        }
        self.inner.consensus.leader_barrier().await?;
        if self.leading_term() != Some(term) {
            return Err(ConsensusError::NotLeader);
        }
        let (generation, records) = self.read_leases()?;
        let now = Instant::now();
        let leases: HashMap<i64, Tracked> =
            records.iter().map(|r| (r.id, Tracked::taken_over(r, now))).collect();
        let checkpointed = leases.values().filter(|t| t.checkpointed).count();
        tracing::info!(term, leases = leases.len(), checkpointed, "keeping lease time as the leader");
        *self.book() = Book { term: Some(term), generation, leases };
        Ok(term)
    }

    fn read_leases(&self) -> Result<(u64, Vec<LeaseRecord>), ConsensusError> {
        let state = &self.inner.state;
        let storage = |e: synod_storage::StorageError| ConsensusError::Failed(e.to_string());
        let generation = state.lease_generation().map_err(storage)?;
        let records = state.leases().map_err(storage)?;
        Ok((generation, records))
    }

    /// Matches the clocks with the leases the state holds: a lease granted since (through
    /// another member) starts its full TTL now, a revoked one is forgotten.
    fn sync(&self) -> Result<(), ConsensusError> {
        let generation =
            self.inner.state.lease_generation().map_err(|e| ConsensusError::Failed(e.to_string()))?;
        if self.book().generation == generation {
            return Ok(());
        }
        let (generation, records) = self.read_leases()?;
        let now = Instant::now();
        let mut book = self.book();
        if book.term.is_none() {
            return Ok(());
        }
        let mut kept: HashMap<i64, Tracked> = HashMap::with_capacity(records.len());
        for record in &records {
            let tracked = book.leases.remove(&record.id).unwrap_or_else(|| Tracked::taken_over(record, now));
            kept.insert(record.id, tracked);
        }
        book.leases = kept;
        book.generation = generation;
        Ok(())
    }

    /// Starts the clock of a lease granted through this member while it leads.
    pub(crate) fn granted(&self, id: i64, ttl: i64) {
        let now = Instant::now();
        let leading = self.leading_term();
        let mut book = self.book();
        if book.term.is_some() && book.term == leading {
            let record = LeaseRecord { id, ttl, remaining_ms: 0 };
            book.leases.entry(id).or_insert_with(|| Tracked::taken_over(&record, now));
        }
    }

    /// Renews a lease on the leader; its TTL, or 0 if it does not exist or expired.
    pub async fn renew(&self, id: i64) -> Result<i64, ConsensusError> {
        let term = self.ensure_book().await?;
        let now = Instant::now();
        let (ttl, checkpointed) = {
            let mut book = self.book();
            if book.term != Some(term) {
                return Err(ConsensusError::NotLeader);
            }
            let tracked = match book.leases.entry(id) {
                Entry::Occupied(tracked) => tracked.into_mut(),
                // Granted through another member since the last sync.
                Entry::Vacant(entry) => {
                    let Some(lease) =
                        self.inner.state.lease(id).map_err(|e| ConsensusError::Failed(e.to_string()))?
                    else {
                        return Ok(0);
                    };
                    entry.insert(Tracked::taken_over(&lease.record, now))
                }
            };
            if tracked.revoking || tracked.expiry <= now {
                return Ok(0);
            }
            tracked.renewing += 1;
            (tracked.ttl, tracked.checkpointed)
        };
        // Undone however the renewal ends, also when its caller gives up on it.
        let _renewing = Renewing { lessor: self, id };
        self.finish_renewal(id, term, ttl, checkpointed).await
    }

    /// The rest of a renewal, while no checkpoint of the lease can be taken: clears a
    /// checkpoint the state holds or may soon hold (one proposed before the renewal
    /// began), confirms leadership, and only then restarts the lease's clock, from a moment
    /// before the confirmation (so any later leader was elected after it).
    async fn finish_renewal(
        &self,
        id: i64,
        term: u64,
        ttl: i64,
        checkpointed: bool,
    ) -> Result<i64, ConsensusError> {
        let storage = |e: synod_storage::StorageError| ConsensusError::Failed(e.to_string());
        let applied = self.inner.state.lease(id).map_err(storage)?.is_some_and(|l| l.record.remaining_ms > 0);
        let clear = checkpointed || applied;
        if clear {
            // After any checkpoint on its way: checkpoints hold this lock while proposed.
            let _order = self.inner.order.lock().await;
            let clear = LeaseCheckpoints { checkpoints: vec![LeaseCheckpoint { id, remaining_ms: 0 }] };
            self.propose(term, command::Op::LeaseCheckpoints(clear)).await?;
        }
        let start = Instant::now();
        self.inner.consensus.leader_barrier().await?;
        let mut book = self.book();
        if book.term != Some(term) || self.leading_term() != Some(term) {
            return Err(ConsensusError::NotLeader);
        }
        match book.leases.get_mut(&id) {
            Some(tracked) if !tracked.revoking => {
                tracked.expiry = deadline(start, ttl_duration(ttl));
                tracked.renewed = start;
                tracked.checkpointed_at = None;
                if clear {
                    tracked.checkpointed = false;
                }
                Ok(ttl)
            }
            _ => Ok(0),
        }
    }

    /// etcd's LeaseTimeToLive, answered by the leader: TTL -1 for a lease that does not exist.
    pub async fn time_to_live(
        &self,
        request: &LeaseTimeToLiveRequest,
    ) -> Result<LeaseTimeToLiveResponse, ConsensusError> {
        self.ensure_book().await?;
        self.sync()?;
        let lease = self.inner.state.lease(request.id).map_err(|e| ConsensusError::Failed(e.to_string()))?;
        let Some(synod_mvcc::Lease { record, keys }) = lease else {
            return Ok(LeaseTimeToLiveResponse { id: request.id, ttl: -1, ..Default::default() });
        };
        let now = Instant::now();
        let remaining = self
            .book()
            .leases
            .get(&request.id)
            .map_or(ttl_duration(record.ttl), |t| t.expiry.saturating_duration_since(now));
        Ok(LeaseTimeToLiveResponse {
            header: None,
            id: request.id,
            ttl: remaining.as_secs() as i64,
            granted_ttl: record.ttl,
            keys: if request.keys { keys.into_iter().collect() } else { Vec::new() },
        })
    }

    /// Proposes on this member only while it leads in the term it decided in: what the
    /// leader decides alone must not be applied under another leader, or under this one
    /// after another led in between.
    async fn propose(&self, decided_in: u64, op: command::Op) -> Result<Response, ConsensusError> {
        if self.leading_term() != Some(decided_in) || self.book().term != Some(decided_in) {
            return Err(ConsensusError::NotLeader);
        }
        match self.inner.consensus.propose_here(Command { op: Some(op), ..Default::default() }).await? {
            Ok(response) => Ok(response),
            Err(e) => Err(ConsensusError::Etcd(e)),
        }
    }

    /// Runs the keeper until the member stops: expiry and checkpoints while leading.
    pub async fn run(self) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_checkpoint = Instant::now();
        let checkpointing = Arc::new(tokio::sync::Mutex::new(()));
        loop {
            tick.tick().await;
            if self.leading_term().is_none() {
                // Another member leads: these clocks are of no use any more. (A leader
                // that briefly cannot confirm its quorum keeps them for its term.)
                let consensus = &self.inner.consensus;
                if consensus.leader().is_some_and(|l| l != consensus.member_id()) {
                    let mut book = self.book();
                    if book.term.is_some() {
                        *book = Book::default();
                    }
                }
                continue;
            }
            if self.ensure_book().await.is_err() || self.sync().is_err() {
                continue;
            }
            self.revoke_expired();
            if last_checkpoint.elapsed() >= self.inner.checkpoint_interval / 4
                && let Ok(guard) = checkpointing.clone().try_lock_owned()
            {
                last_checkpoint = Instant::now();
                let lessor = self.clone();
                tokio::spawn(async move {
                    lessor.checkpoint().await;
                    drop(guard);
                });
            }
        }
    }

    /// Proposes the revocation of expired leases, at most [`REVOKES_PER_SECOND`].
    fn revoke_expired(&self) {
        let now = Instant::now();
        let per_tick = (REVOKES_PER_SECOND as u128 * TICK.as_millis() / 1000).max(1) as usize;
        let (term, expired): (u64, Vec<i64>) = {
            let mut book = self.book();
            let Some(term) = book.term else { return };
            let mut ids: Vec<(Instant, i64)> = book
                .leases
                .iter()
                .filter(|(_, t)| !t.revoking && t.expiry <= now)
                .map(|(id, t)| (t.expiry, *id))
                .collect();
            ids.sort();
            ids.truncate(per_tick);
            for (_, id) in &ids {
                book.leases.get_mut(id).expect("listed above").revoking = true;
            }
            (term, ids.into_iter().map(|(_, id)| id).collect())
        };
        for id in expired {
            let lessor = self.clone();
            tokio::spawn(async move {
                let revoke = synod_api::etcdserverpb::LeaseRevokeRequest { id };
                match lessor.propose(term, command::Op::LeaseRevoke(revoke)).await {
                    Ok(_) | Err(ConsensusError::Etcd(EtcdError::LeaseNotFound)) => {
                        tracing::debug!(lease = %format!("{id:x}"), "revoked an expired lease");
                        lessor.book().leases.remove(&id);
                    }
                    Err(e) => {
                        tracing::warn!(lease = %format!("{id:x}"), error = %e, "could not revoke an expired lease; will retry");
                        if let Some(t) = lessor.book().leases.get_mut(&id) {
                            t.revoking = false;
                        }
                    }
                }
            });
        }
    }

    /// Checkpoints the remaining time of every lease not renewed (or checkpointed) within
    /// the last checkpoint interval.
    async fn checkpoint(&self) {
        let _order = self.inner.order.lock().await;
        let now = Instant::now();
        let interval = self.inner.checkpoint_interval;
        let (term, checkpoints): (u64, Vec<LeaseCheckpoint>) = {
            let mut book = self.book();
            let Some(term) = book.term else { return };
            let mut due = Vec::new();
            for (id, tracked) in &mut book.leases {
                let since = tracked.checkpointed_at.unwrap_or(tracked.renewed);
                if tracked.revoking
                    || tracked.renewing > 0
                    || now.saturating_duration_since(since) < interval
                    || tracked.expiry <= now
                {
                    continue;
                }
                let remaining = tracked.expiry - now;
                // Marked before the proposal: a renewal from now on clears it after it.
                tracked.checkpointed = true;
                tracked.checkpointed_at = Some(now);
                due.push(LeaseCheckpoint { id: *id, remaining_ms: remaining.as_millis().max(1) as i64 });
            }
            due.sort_by_key(|c| c.id);
            (term, due)
        };
        for batch in checkpoints.chunks(CHECKPOINTS_PER_ENTRY) {
            let op = command::Op::LeaseCheckpoints(LeaseCheckpoints { checkpoints: batch.to_vec() });
            if let Err(e) = self.propose(term, op).await {
                tracing::warn!(error = %e, "could not checkpoint lease time");
                return;
            }
        }
    }

    pub(crate) fn revoked(&self, id: i64) {
        self.book().leases.remove(&id);
    }
}

/// A renewal under way: no checkpoint of the lease is taken until it is dropped.
struct Renewing<'a> {
    lessor: &'a Lessor,
    id: i64,
}

impl Drop for Renewing<'_> {
    fn drop(&mut self) {
        if let Some(tracked) = self.lessor.book().leases.get_mut(&self.id) {
            tracked.renewing = tracked.renewing.saturating_sub(1);
        }
    }
}

impl LeaderService for Lessor {
    fn call(
        &self,
        call: LeaderCall,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<LeaderReply, ConsensusError>> + Send + '_>>
    {
        Box::pin(async move {
            match call {
                LeaderCall::LeaseKeepAlive(request) => {
                    let ttl = self.renew(request.id).await?;
                    Ok(LeaderReply::LeaseKeepAlive(LeaseKeepAliveResponse {
                        header: None,
                        id: request.id,
                        ttl,
                    }))
                }
                LeaderCall::LeaseTimeToLive(request) => {
                    Ok(LeaderReply::LeaseTimeToLive(self.time_to_live(&request).await?))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_ttl_is_etcds() {
        // etcd's defaults: 100 ms heartbeat, 1 s election timeout → 1.5 s → 2 s.
        assert_eq!(Lessor::min_ttl(100, 1000), 2);
        assert_eq!(Lessor::min_ttl(100, 2000), 3);
        assert_eq!(Lessor::min_ttl(50, 250), 1);
        // Election ticks are whole: 1050/100 = 10 ticks, 15 heartbeats.
        assert_eq!(Lessor::min_ttl(100, 1050), 2);
    }
}
