//! Automatic compaction, as etcd's `--auto-compaction-mode` and `--auto-compaction-retention`
//! ask for it. Only the leader compacts, through the log like a client's Compact.
//!
//! - `periodic`: keep the history of the last retention period. The revision is sampled
//!   every tenth of the period; every period (at most every hour) the store is compacted
//!   to the revision it had one period ago (etcd's `Periodic` compactor).
//! - `revision`: keep the last N revisions; every five minutes the store is compacted to
//!   the current revision minus N (etcd's `Revision` compactor).

use std::collections::VecDeque;
use std::time::Duration;

use synod_api::EtcdError;
use synod_api::etcdserverpb::CompactionRequest;
use synod_api::synodpb::{Command, command};
use synod_consensus::{Consensus, ConsensusError};
use synod_storage::StateStore;
use tokio::time::Instant;

/// How often revision mode looks (etcd's `revInterval`).
const REVISION_CHECK: Duration = Duration::from_secs(5 * 60);
/// The longest interval between periodic compactions (etcd compacts hourly at most).
const PERIODIC_MAX: Duration = Duration::from_secs(3600);

/// What to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retention {
    /// The history of this long a period.
    Period(Duration),
    /// This many revisions.
    Revisions(i64),
}

/// Decides when to compact and to which revision; no clock or I/O of its own.
#[derive(Debug)]
pub struct Schedule {
    retention: Retention,
    /// Revisions sampled in periodic mode, oldest first.
    samples: VecDeque<(Instant, i64)>,
    last_compaction: Instant,
}

impl Schedule {
    pub fn new(retention: Retention, now: Instant) -> Schedule {
        Schedule { retention, samples: VecDeque::new(), last_compaction: now }
    }

    /// How often [`Schedule::tick`] wants to be called.
    pub fn interval(&self) -> Duration {
        match self.retention {
            Retention::Period(period) => (period.min(PERIODIC_MAX) / 10).max(Duration::from_millis(100)),
            Retention::Revisions(_) => REVISION_CHECK,
        }
    }

    /// Called every [`Schedule::interval`] with the store's revisions: the revision to
    /// compact to now, if any. Until [`Schedule::done`] says a compaction happened, later
    /// ticks ask again (a follower's, or a failed compaction, does not count).
    pub fn tick(&mut self, now: Instant, current: i64, compacted: i64) -> Option<i64> {
        let target = match self.retention {
            Retention::Revisions(keep) => current - keep,
            Retention::Period(period) => {
                self.samples.push_back((now, current));
                // Keep the newest sample that is at least a period old, and those after.
                while self.samples.len() > 1 && now.duration_since(self.samples[1].0) >= period {
                    self.samples.pop_front();
                }
                let (at, revision) = *self.samples.front().expect("a sample was just added");
                let due = now.duration_since(self.last_compaction) >= period.min(PERIODIC_MAX);
                if !due || now.duration_since(at) < period {
                    return None;
                }
                revision
            }
        };
        if target <= compacted.max(0) || target > current {
            return None;
        }
        Some(target)
    }

    /// A compaction the last tick asked for happened (or someone compacted further).
    pub fn done(&mut self, now: Instant) {
        self.last_compaction = now;
    }
}

/// Runs the schedule on this member: it compacts while this member leads.
pub async fn run(consensus: Consensus, state: std::sync::Arc<StateStore>, retention: Retention) {
    let mut schedule = Schedule::new(retention, Instant::now());
    let mut tick = tokio::time::interval(schedule.interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (Ok(current), Ok(compacted)) = (state.current_revision(), state.compact_revision()) else {
            continue;
        };
        let now = Instant::now();
        let Some(target) = schedule.tick(now, current, compacted) else {
            continue;
        };
        if consensus.leader() != Some(consensus.member_id()) {
            continue;
        }
        tracing::info!(revision = target, ?retention, "starting auto-compaction");
        let compact = CompactionRequest { revision: target, physical: false };
        match consensus
            .propose(Command { op: Some(command::Op::Compaction(compact)), ..Default::default() })
            .await
        {
            Ok(Ok(_)) => {
                schedule.done(now);
                tracing::info!(revision = target, "finished auto-compaction");
            }
            // Someone compacted further meanwhile.
            Ok(Err(EtcdError::Compacted)) => schedule.done(now),
            Ok(Err(e)) => tracing::warn!(revision = target, error = %e, "auto-compaction refused"),
            Err(ConsensusError::NotLeader | ConsensusError::NoLeader | ConsensusError::LeaderChanged) => {}
            Err(e) => tracing::warn!(revision = target, error = %e, "auto-compaction failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_mode_keeps_the_last_n_revisions() {
        let start = Instant::now();
        let mut schedule = Schedule::new(Retention::Revisions(100), start);
        assert_eq!(schedule.interval(), Duration::from_secs(300));
        assert_eq!(schedule.tick(start, 50, -1), None, "nothing to compact below N");
        assert_eq!(schedule.tick(start, 150, -1), Some(50));
        assert_eq!(schedule.tick(start, 150, -1), Some(50), "asked again until it happens");
        schedule.done(start);
        assert_eq!(schedule.tick(start, 150, 50), None, "already compacted there");
        assert_eq!(schedule.tick(start, 400, 50), Some(300));
    }

    #[test]
    fn periodic_mode_compacts_to_the_revision_of_one_period_ago() {
        let start = Instant::now();
        let period = Duration::from_secs(10);
        let mut schedule = Schedule::new(Retention::Period(period), start);
        assert_eq!(schedule.interval(), Duration::from_secs(1));
        let mut compactions = Vec::new();
        // The revision grows by 10 a second: at second s it is 10 s + 1.
        for s in 0..=35u64 {
            let now = start + Duration::from_secs(s);
            let current = 10 * s as i64 + 1;
            let compacted = compactions.last().map_or(-1, |&(_, r)| r);
            if let Some(revision) = schedule.tick(now, current, compacted) {
                schedule.done(now);
                compactions.push((s, revision));
            }
        }
        // Every period, to the revision of one period before.
        assert_eq!(compactions, vec![(10, 1), (20, 101), (30, 201)]);
    }

    #[test]
    fn periodic_mode_compacts_at_most_hourly() {
        let start = Instant::now();
        let period = Duration::from_secs(5 * 3600);
        let mut schedule = Schedule::new(Retention::Period(period), start);
        let mut compactions = Vec::new();
        for minutes in (0..=8 * 60).step_by(30) {
            let now = start + Duration::from_secs(minutes * 60);
            let compacted = compactions.last().map_or(-1, |&(_, r)| r);
            if let Some(revision) = schedule.tick(now, minutes as i64 + 1, compacted) {
                schedule.done(now);
                compactions.push((minutes, revision));
            }
        }
        // First once five hours of history exist, then hourly, each keeping five hours.
        assert_eq!(compactions, vec![(300, 1), (360, 61), (420, 121), (480, 181)]);
    }

    #[test]
    fn a_periodic_compaction_that_did_not_happen_is_asked_for_again() {
        let start = Instant::now();
        let period = Duration::from_secs(10);
        let mut schedule = Schedule::new(Retention::Period(period), start);
        for s in 0..10u64 {
            assert_eq!(schedule.tick(start + Duration::from_secs(s), s as i64 + 1, -1), None);
        }
        let at = |s: u64| start + Duration::from_secs(s);
        assert_eq!(schedule.tick(at(10), 11, -1), Some(1));
        // Not done (a follower, or a failed proposal): the next tick asks again.
        assert_eq!(schedule.tick(at(11), 12, -1), Some(2));
        schedule.done(at(11));
        assert_eq!(schedule.tick(at(12), 13, 2), None);
    }
}
