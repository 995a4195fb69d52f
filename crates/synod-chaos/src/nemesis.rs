//! The nemesis: faults injected one at a time while the clients run, each applied for a
//! few seconds and then healed, every step written to `faults.log` with its time from the
//! start of the run (the same clock as the history's).
//!
//! At most a minority of the members is ever down or paused, so the cluster as a whole
//! can always make progress: a run tests what synod does under faults it is built to
//! survive, not that it stops when it must.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::members::Cluster;
use crate::netns;
use crate::proxy::LinkDelays;
use crate::rpc;

/// The faults the nemesis can inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum FaultKind {
    /// SIGKILL a member (often the leader), restart it from its data directory.
    Kill,
    /// SIGSTOP a member, SIGCONT it later.
    Pause,
    /// Split the members into a majority and a minority that cannot talk.
    Partition,
    /// Cut one direction only: one member to another, or one member to all others.
    Oneway,
    /// Two sides that cannot talk, and one member in the middle that talks to both.
    Bridge,
    /// Latency on some peer links, through the proxies.
    Delay,
}

impl FaultKind {
    pub const ALL: [FaultKind; 6] = [
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Partition,
        FaultKind::Oneway,
        FaultKind::Bridge,
        FaultKind::Delay,
    ];
}

/// Time between two faults.
const GAP_MS: std::ops::Range<u64> = 2_000..5_000;
/// How long a partition or delay lasts.
const HOLD_MS: std::ops::Range<u64> = 2_000..8_000;
/// How long a killed member stays down. Short downtimes matter: a leader that is back
/// before the others time out reaches paths longer downtimes never do (they found synod
/// taking leadership back after a restart without an election, now fixed).
const DOWN_MS: std::ops::Range<u64> = 200..3_000;
/// How long a paused member stays stopped.
const PAUSE_MS: std::ops::Range<u64> = 1_000..6_000;
/// The latency added to a delayed link.
const DELAY_MS: std::ops::Range<u64> = 50..250;

/// The nemesis timeline: written to a file as it happens (so it survives a crash of the
/// harness) and kept for the summary.
#[derive(Debug)]
pub struct FaultLog {
    start: Instant,
    file: Mutex<File>,
    lines: Mutex<Vec<String>>,
    injected: AtomicUsize,
}

impl FaultLog {
    pub fn create(path: &Path, start: Instant) -> Result<FaultLog> {
        let file = File::create(path).with_context(|| format!("create {}", path.display()))?;
        Ok(FaultLog {
            start,
            file: Mutex::new(file),
            lines: Mutex::new(Vec::new()),
            injected: AtomicUsize::new(0),
        })
    }

    /// Notes one step, stamped with the time since the start of the run.
    pub fn note(&self, text: impl AsRef<str>) {
        let line = format!("{:>9.3}s  {}", self.start.elapsed().as_secs_f64(), text.as_ref());
        let mut file = self.file.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Err(error) = writeln!(file, "{line}") {
            eprintln!("synod-chaos: writing faults.log: {error}");
        }
        self.lines.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(line);
    }

    /// Notes the start of a fault, which the summary counts.
    pub fn fault(&self, text: impl AsRef<str>) {
        self.injected.fetch_add(1, Ordering::Relaxed);
        self.note(text);
    }

    pub fn injected(&self) -> usize {
        self.injected.load(Ordering::Relaxed)
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

/// What the nemesis acts on.
pub struct Nemesis {
    pub kinds: Vec<FaultKind>,
    pub rng: StdRng,
    pub cluster: Arc<Cluster>,
    pub names: Vec<String>,
    pub delays: Arc<LinkDelays>,
    /// One channel per member, for finding the leader.
    pub channels: Vec<Channel>,
    /// Each member's id, as its Status header reports it.
    pub ids: Vec<u64>,
    pub log: Arc<FaultLog>,
}

impl Nemesis {
    /// Injects faults until `stop` turns true; the fault in progress is then healed at once.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> Result<()> {
        if self.kinds.is_empty() {
            return Ok(());
        }
        loop {
            let gap = self.millis(GAP_MS);
            if wait(gap, &mut stop).await {
                return Ok(());
            }
            let kind = *self.kinds.choose(&mut self.rng).expect("the kinds are not empty");
            match kind {
                FaultKind::Kill => self.kill(&mut stop).await?,
                FaultKind::Pause => self.pause(&mut stop).await?,
                FaultKind::Partition => self.partition(&mut stop).await?,
                FaultKind::Oneway => self.oneway(&mut stop).await?,
                FaultKind::Bridge => self.bridge(&mut stop).await?,
                FaultKind::Delay => self.delay(&mut stop).await,
            }
            if *stop.borrow() {
                return Ok(());
            }
        }
    }

    async fn kill(&mut self, stop: &mut watch::Receiver<bool>) -> Result<()> {
        let victims = self.victims().await;
        if victims.is_empty() {
            self.log.note("kill: skipped, too few members for a minority");
            return Ok(());
        }
        for &(index, ref why) in &victims {
            self.cluster.kill(index)?;
            self.log.fault(format!("kill -9 {}{why}", self.names[index]));
        }
        let down = self.millis(DOWN_MS);
        wait(down, stop).await;
        for &(index, _) in &victims {
            self.cluster.start(index)?;
            self.log.note(format!("restart {}", self.names[index]));
        }
        Ok(())
    }

    async fn pause(&mut self, stop: &mut watch::Receiver<bool>) -> Result<()> {
        let victims = self.victims().await;
        if victims.is_empty() {
            self.log.note("pause: skipped, too few members for a minority");
            return Ok(());
        }
        for &(index, ref why) in &victims {
            self.cluster.pause(index);
            self.log.fault(format!("pause (SIGSTOP) {}{why}", self.names[index]));
        }
        let paused = self.millis(PAUSE_MS);
        wait(paused, stop).await;
        for &(index, _) in &victims {
            self.cluster.resume(index);
            self.log.note(format!("resume (SIGCONT) {}", self.names[index]));
        }
        Ok(())
    }

    async fn partition(&mut self, stop: &mut watch::Receiver<bool>) -> Result<()> {
        let n = self.names.len();
        let minority_max = (n - 1) / 2;
        if minority_max == 0 {
            self.log.note("partition: skipped, too few members for a minority");
            return Ok(());
        }
        // Cutting off the leader forces an election and leaves an old leader behind.
        let leader = if self.rng.random_bool(0.3) { self.leader().await } else { None };
        let minority: Vec<usize> = match leader {
            Some(leader) => vec![leader],
            None => {
                let mut order: Vec<usize> = (0..n).collect();
                order.shuffle(&mut self.rng);
                order.truncate(self.rng.random_range(1..=minority_max));
                order
            }
        };
        let majority: Vec<usize> = (0..n).filter(|i| !minority.contains(i)).collect();
        let cuts = between(&minority, &majority);
        let why = if leader.is_some() { " (the leader cut off)" } else { "" };
        self.hold_cuts(
            cuts,
            format!("partition {} | {}{why}", self.set(&minority), self.set(&majority)),
            stop,
        )
        .await
    }

    async fn oneway(&mut self, stop: &mut watch::Receiver<bool>) -> Result<()> {
        let n = self.names.len();
        if n < 2 {
            self.log.note("oneway: skipped, one member");
            return Ok(());
        }
        let from = self.rng.random_range(0..n);
        let others: Vec<usize> = (0..n).filter(|&i| i != from).collect();
        let (cuts, what) = if self.rng.random_bool(0.5) {
            let to = *others.choose(&mut self.rng).expect("two members or more");
            (vec![(from, to)], format!("one-way cut {} -> {}", self.names[from], self.names[to]))
        } else {
            let cuts = others.iter().map(|&to| (from, to)).collect();
            (cuts, format!("one-way cut {} -> all others", self.names[from]))
        };
        self.hold_cuts(cuts, what, stop).await
    }

    async fn bridge(&mut self, stop: &mut watch::Receiver<bool>) -> Result<()> {
        let n = self.names.len();
        if n < 3 {
            self.log.note("bridge: skipped, fewer than three members");
            return Ok(());
        }
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut self.rng);
        let middle = order.pop().expect("three members or more");
        let split = self.rng.random_range(1..order.len());
        let (left, right) = order.split_at(split);
        let cuts = between(left, right);
        let what = format!("bridge {} | {} | {}", self.set(left), self.names[middle], self.set(right));
        self.hold_cuts(cuts, what, stop).await
    }

    async fn delay(&mut self, stop: &mut watch::Receiver<bool>) {
        let n = self.names.len();
        let mut links: Vec<(usize, usize)> = (0..n)
            .flat_map(|from| (0..n).map(move |to| (from, to)))
            .filter(|(from, to)| from != to)
            .collect();
        if links.is_empty() {
            self.log.note("delay: skipped, one member");
            return;
        }
        links.shuffle(&mut self.rng);
        links.truncate(self.rng.random_range(1..=links.len()));
        let mut what = Vec::new();
        for &(from, to) in &links {
            let delay = self.millis(DELAY_MS);
            self.delays.set(from, to, delay);
            what.push(format!("{}->{} {}ms", self.names[from], self.names[to], delay.as_millis()));
        }
        self.log.fault(format!("delay {}", what.join(", ")));
        let hold = self.millis(HOLD_MS);
        wait(hold, stop).await;
        self.delays.clear();
        self.log.note("delays removed");
    }

    /// Cuts `cuts` for a while, then heals.
    async fn hold_cuts(
        &mut self,
        cuts: Vec<(usize, usize)>,
        what: String,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<()> {
        set_cuts(&self.names, cuts).await?;
        self.log.fault(what);
        let hold = self.millis(HOLD_MS);
        wait(hold, stop).await;
        set_cuts(&self.names, Vec::new()).await?;
        self.log.note("heal");
        Ok(())
    }

    /// Members to kill or pause: a minority, half the time starting with the leader.
    async fn victims(&mut self) -> Vec<(usize, String)> {
        let n = self.names.len();
        let count = if n >= 3 { self.rng.random_range(1..=(n - 1) / 2) } else { 0 };
        let mut victims: Vec<(usize, String)> = Vec::new();
        if count > 0
            && self.rng.random_bool(0.5)
            && let Some(leader) = self.leader().await
        {
            victims.push((leader, " (the leader)".to_string()));
        }
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut self.rng);
        for index in order {
            if victims.len() >= count {
                break;
            }
            if !victims.iter().any(|&(v, _)| v == index) {
                victims.push((index, String::new()));
            }
        }
        victims
    }

    /// The member that some member names as leader, if any answers in time.
    async fn leader(&self) -> Option<usize> {
        for (index, channel) in self.channels.iter().enumerate() {
            if !self.cluster.is_up(index) {
                continue;
            }
            if let Ok(status) = rpc::status(channel).await
                && let Some(leader) = self.ids.iter().position(|&id| id == status.leader && id != 0)
            {
                return Some(leader);
            }
        }
        None
    }

    fn millis(&mut self, range: std::ops::Range<u64>) -> Duration {
        Duration::from_millis(self.rng.random_range(range))
    }

    fn set(&self, members: &[usize]) -> String {
        let mut names: Vec<&str> = members.iter().map(|&i| self.names[i].as_str()).collect();
        names.sort();
        format!("{{{}}}", names.join(","))
    }
}

/// Every directed link between the two sides, both ways.
fn between(left: &[usize], right: &[usize]) -> Vec<(usize, usize)> {
    left.iter().flat_map(|&l| right.iter().flat_map(move |&r| [(l, r), (r, l)])).collect()
}

/// Makes the cut links exactly `cuts`, off the runtime's thread (`nft` takes a few
/// milliseconds per member, which would stall the clients and proxies).
pub async fn set_cuts(names: &[String], cuts: Vec<(usize, usize)>) -> Result<()> {
    let names = names.to_vec();
    tokio::task::spawn_blocking(move || netns::set_cuts(&names, &cuts))
        .await
        .map_err(|error| anyhow!("the nft task failed: {error}"))?
}

/// Sleeps for `duration` or until `stop` turns true; true if it did.
async fn wait(duration: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    // `wait_for` also returns when the sender is gone, which means stop as well.
    let stopped = tokio::select! {
        _ = tokio::time::sleep(duration) => false,
        _ = stop.wait_for(|stopped| *stopped) => true,
    };
    stopped || *stop.borrow()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A partition cuts every link between its sides, both ways, and none within a side.
    #[test]
    fn cuts_between_sides_go_both_ways_and_stay_across() {
        let cuts = between(&[0], &[1, 2]);
        assert_eq!(cuts, vec![(0, 1), (1, 0), (0, 2), (2, 0)]);
    }
}
