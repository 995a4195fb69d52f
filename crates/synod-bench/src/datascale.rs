//! `datascale`, the last part of `compare`: what a large keyspace costs. Each system gets a
//! fresh 3-member cluster, loaded with `keys` keys written `PASSES` times each (so half the
//! data is history), then measured:
//!
//! - each member's database size, data directory and resident memory;
//! - restart to serving: a follower killed with SIGKILL and started again, timed from its
//!   start to its first answered linearizable get;
//! - catch-up: a member added the etcd way (MemberAdd, then started with
//!   `--initial-cluster-state existing`), timed from its start until it has the revision the
//!   cluster had and answers a linearizable get; the log it needs has long been compacted on
//!   both systems, so it arrives by snapshot;
//! - write pauses: a steady trickle of puts runs while the cluster is compacted to its
//!   latest revision (physically) and each member is defragmented in turn; the longest put
//!   overlapping each phase is its pause, set against the longest in a quiet phase before.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use synod_api::etcdserverpb::kv_client::KvClient;
use synod_api::etcdserverpb::maintenance_client::MaintenanceClient;
use synod_api::etcdserverpb::{CompactionRequest, DefragmentRequest, PutRequest, RangeRequest};
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::cluster::{self, Cluster, Kind};
use crate::load::{self, LoadShape, Stop};
use crate::report::duration_text;
use crate::workload::{self, Data, Workload};

/// Every key is written this many times.
pub const PASSES: u64 = 2;
/// Both systems refuse writes past their backend quota (2 GiB by default); the load is
/// about that size, so both get 8 GiB, etcd's largest recommended.
const QUOTA_BYTES: &str = "8589934592";
/// How long a restarted or added member may take to serve.
const SERVE_DEADLINE: Duration = Duration::from_secs(20 * 60);
/// How often a starting member is asked whether it serves.
const POLL_EVERY: Duration = Duration::from_millis(10);
/// How long one probe of a starting member may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long compaction or one member's defragmentation may take.
const MAINTENANCE_DEADLINE: Duration = Duration::from_secs(20 * 60);
/// The trickle of puts that measures pauses: clients, and the time between one client's
/// puts (300 puts/s over all clients, far below either system's capacity).
const TRICKLE_CLIENTS: usize = 30;
const TRICKLE_EVERY: Duration = Duration::from_millis(100);
/// How often a member's bytes in use are read while it deletes compacted records. synod
/// deletes a batch every 10 ms and etcd as often, so a count unchanged over 50 such
/// pauses means the deletion is done.
const SETTLE_EVERY: Duration = Duration::from_millis(500);
/// The quiet phase before compaction, and the gap between phases.
const QUIET: Duration = Duration::from_secs(5);
const GAP: Duration = Duration::from_secs(2);

pub struct DatascaleOptions {
    pub keys: u64,
    pub value_size: usize,
    pub progress: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Datascale {
    pub keys: u64,
    pub value_size: usize,
    pub passes: u64,
    pub synod: Scale,
    pub etcd: Scale,
}

/// One system's results.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Scale {
    pub load_seconds: f64,
    /// Each member's database size (Status's dbSize), data directory, and resident set
    /// after the load, in bytes.
    pub db_bytes: Vec<i64>,
    pub disk_bytes: Vec<u64>,
    pub resident_bytes: Vec<u64>,
    pub restart_to_serving_seconds: f64,
    pub catch_up_seconds: f64,
    /// The added member's data directory once it had caught up.
    pub caught_up_disk_bytes: u64,
    /// The longest put overlapping each phase, in microseconds.
    pub quiet_pause_us: u64,
    pub compaction_pause_us: u64,
    pub defrag_pause_us: u64,
    /// Puts overlapping each phase that failed (a member answers a put it cannot finish
    /// with a timeout after 7 s, so a failed put caps the phase's longest put).
    pub compaction_failed: u64,
    pub defrag_failed: u64,
    pub compaction_seconds: f64,
    pub defrag_seconds: Vec<f64>,
    pub db_bytes_after_defrag: Vec<i64>,
    pub trickle_puts: u64,
    pub trickle_errors: u64,
}

pub async fn run(
    binaries: &[(Kind, std::path::PathBuf)],
    parent: &std::path::Path,
    options: &DatascaleOptions,
) -> anyhow::Result<Datascale> {
    let mut synod = None;
    let mut etcd = None;
    for (kind, binary) in binaries {
        let scale = measure(*kind, binary, parent, options)
            .await
            .with_context(|| format!("datascale on {}", kind.name()))?;
        match kind {
            Kind::Synod => synod = Some(scale),
            Kind::Etcd => etcd = Some(scale),
        }
    }
    let (Some(synod), Some(etcd)) = (synod, etcd) else { bail!("datascale needs both systems") };
    Ok(Datascale { keys: options.keys, value_size: options.value_size, passes: PASSES, synod, etcd })
}

async fn measure(
    kind: Kind,
    binary: &std::path::Path,
    parent: &std::path::Path,
    options: &DatascaleOptions,
) -> anyhow::Result<Scale> {
    let name = kind.name();
    let mut cluster =
        Cluster::start_with(kind, binary, 3, parent, &["--quota-backend-bytes", QUOTA_BYTES]).await?;
    let data = Data { key_size: 8, val_size: options.value_size, key_space: options.keys, sequential: true };
    let shape = LoadShape {
        endpoints: cluster.endpoints(),
        clients: 100,
        conns: 10,
        stop: Stop::Total(options.keys * PASSES),
        rate: None,
        progress: options.progress,
    };
    let label = format!("{name} datascale load");
    let started = Instant::now();
    let report = workload::run(&Workload::Put(data.clone()), &shape, &label).await?;
    if report.errors > 0 {
        bail!("the load failed {} times: {:?}", report.errors, report.error_kinds);
    }
    cluster.settle().await?;
    let load_seconds = started.elapsed().as_secs_f64();
    eprintln!("{label}: {} puts in {load_seconds:.0} s", options.keys * PASSES);
    cluster.check_running()?;

    let mut db_bytes = Vec::new();
    let mut disk_bytes = Vec::new();
    for i in 0..cluster.len() {
        db_bytes.push(db_size(cluster.endpoint(i)).await?);
        disk_bytes.push(cluster.data_bytes(i)?);
    }
    let resident_bytes = cluster.resident_bytes()?;
    let probe_key = data.key_at(options.keys - 1);

    // Restart to serving.
    let follower = (cluster.leader().await? + 1) % cluster.len();
    cluster.kill(follower)?;
    let started = Instant::now();
    cluster.respawn(follower)?;
    wait_serving(cluster.endpoint(follower), &probe_key, 0).await.context("the restarted member")?;
    let restart_to_serving_seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "{name} datascale: a killed member served again {restart_to_serving_seconds:.2} s after its start"
    );
    cluster.settle().await?;

    // Catch-up of a new member.
    let cluster_revision = revision(cluster.endpoint(0)).await?;
    let added = cluster.add_member().await?;
    let started = Instant::now();
    wait_serving(cluster.endpoint(added), &probe_key, cluster_revision)
        .await
        .with_context(|| format!("the added member (log: {})", cluster.log(added).display()))?;
    let catch_up_seconds = started.elapsed().as_secs_f64();
    let caught_up_disk_bytes = cluster.data_bytes(added)?;
    eprintln!("{name} datascale: an added member caught up in {catch_up_seconds:.2} s");
    cluster.remove_member(added).await?;
    cluster.settle().await?;

    // Write pauses during compaction and defragmentation.
    let trickle = Trickle::start(&cluster.endpoints(), data.clone()).await?;
    tokio::time::sleep(QUIET).await;
    let compaction_start = trickle.now();
    let latest = revision(cluster.endpoint(0)).await?;
    let mut kv = KvClient::new(channel(cluster.endpoint(0)).await?);
    let call = kv.compact(CompactionRequest { revision: latest, physical: true });
    tokio::time::timeout(MAINTENANCE_DEADLINE, call).await.context("compaction took too long")??;
    let compaction = (compaction_start, trickle.now());
    eprintln!(
        "{name} datascale: compaction to {latest} took {:.2} s",
        (compaction.1 - compaction.0).as_secs_f64()
    );
    // A physical compaction answers once the member that took it has deleted what it
    // dropped; the others may still be deleting. Defragmenting before they finish would
    // leave their files larger than they need be.
    for i in 0..cluster.len() {
        wait_settled(cluster.endpoint(i)).await?;
    }
    tokio::time::sleep(GAP).await;
    let defrag_start = trickle.now();
    let mut defrag_seconds = Vec::new();
    let mut db_bytes_after_defrag = Vec::new();
    for i in 0..cluster.len() {
        let started = Instant::now();
        let mut maintenance = MaintenanceClient::new(channel(cluster.endpoint(i)).await?);
        let call = maintenance.defragment(DefragmentRequest {});
        tokio::time::timeout(MAINTENANCE_DEADLINE, call).await.context("defragmentation took too long")??;
        defrag_seconds.push(started.elapsed().as_secs_f64());
        db_bytes_after_defrag.push(db_size(cluster.endpoint(i)).await?);
        eprintln!("{name} datascale: defragmenting member {i} took {:.2} s", started.elapsed().as_secs_f64());
    }
    let defrag = (defrag_start, trickle.now());
    tokio::time::sleep(GAP).await;
    let puts = trickle.stop().await?;
    cluster.check_running()?;
    let pause = |(from, to): (Duration, Duration)| {
        puts.iter()
            .filter(|p| p.start < to && p.start + p.took > from)
            .map(|p| p.took.as_micros() as u64)
            .max()
    };
    let failed = |(from, to): (Duration, Duration)| {
        puts.iter().filter(|p| !p.ok && p.start < to && p.start + p.took > from).count() as u64
    };
    // The quiet phase: puts answered before compaction began.
    let quiet_pause =
        puts.iter().filter(|p| p.start + p.took < compaction_start).map(|p| p.took.as_micros() as u64).max();
    Ok(Scale {
        load_seconds,
        db_bytes,
        disk_bytes,
        resident_bytes,
        restart_to_serving_seconds,
        catch_up_seconds,
        caught_up_disk_bytes,
        quiet_pause_us: quiet_pause.unwrap_or(0),
        compaction_pause_us: pause(compaction).unwrap_or(0),
        defrag_pause_us: pause(defrag).unwrap_or(0),
        compaction_failed: failed(compaction),
        defrag_failed: failed(defrag),
        compaction_seconds: (compaction.1 - compaction.0).as_secs_f64(),
        defrag_seconds,
        db_bytes_after_defrag,
        trickle_puts: puts.iter().filter(|p| p.ok).count() as u64,
        trickle_errors: puts.iter().filter(|p| !p.ok).count() as u64,
    })
}

async fn channel(url: &str) -> anyhow::Result<Channel> {
    Ok(load::connect(&[url.to_string()], 1).await?.remove(0))
}

async fn db_size(url: &str) -> anyhow::Result<i64> {
    cluster::status(url).await.map(|s| s.db_size).with_context(|| format!("Status of {url}"))
}

async fn revision(url: &str) -> anyhow::Result<i64> {
    cluster::status(url)
        .await
        .and_then(|s| s.header)
        .map(|h| h.revision)
        .with_context(|| format!("Status of {url}"))
}

/// Waits until the bytes the member at `url` has in use (Status's dbSizeInUse) stop
/// falling: its deletions after a compaction are done.
async fn wait_settled(url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + MAINTENANCE_DEADLINE;
    let mut last = None;
    loop {
        let in_use = cluster::status(url)
            .await
            .map(|s| s.db_size_in_use)
            .with_context(|| format!("Status of {url}"))?;
        if last.is_some_and(|last| in_use >= last) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{url} was still deleting compacted records after {MAINTENANCE_DEADLINE:?}");
        }
        last = Some(in_use);
        tokio::time::sleep(SETTLE_EVERY).await;
    }
}

/// Waits until the member at `url` answers a linearizable get of `key` at a revision of at
/// least `revision`.
async fn wait_serving(url: &str, key: &[u8], revision: i64) -> anyhow::Result<()> {
    let deadline = Instant::now() + SERVE_DEADLINE;
    loop {
        let probe = async {
            let mut client = KvClient::new(channel(url).await.ok()?);
            let request = RangeRequest { key: key.to_vec(), ..Default::default() };
            let response = client.range(request).await.ok()?.into_inner();
            response.header.map(|h| h.revision)
        };
        if let Ok(Some(served)) = tokio::time::timeout(PROBE_TIMEOUT, probe).await
            && served >= revision
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{url} did not serve a linearizable get within {SERVE_DEADLINE:?}");
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// One put of the trickle: when it started (from the trickle's start) and how long it took.
struct TimedPut {
    start: Duration,
    took: Duration,
    ok: bool,
}

/// A steady, light stream of puts over every member, each client waiting for its put before
/// the next, so that a stalled member shows as one long put.
struct Trickle {
    began: Instant,
    stop: Arc<AtomicBool>,
    clients: tokio::task::JoinSet<Vec<TimedPut>>,
}

impl Trickle {
    async fn start(endpoints: &[String], data: Data) -> anyhow::Result<Trickle> {
        let channels = load::connect(endpoints, endpoints.len()).await?;
        let began = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let mut clients = tokio::task::JoinSet::new();
        for c in 0..TRICKLE_CLIENTS {
            let mut kv = KvClient::new(channels[c % channels.len()].clone());
            let stop = stop.clone();
            let data = data.clone();
            clients.spawn(async move {
                let mut puts = Vec::new();
                let mut every = tokio::time::interval(TRICKLE_EVERY);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut n = c as u64;
                while !stop.load(Ordering::Relaxed) {
                    every.tick().await;
                    let request = PutRequest {
                        key: data.key_at(n % data.key_space),
                        value: vec![b'x'; data.val_size],
                        ..Default::default()
                    };
                    n += TRICKLE_CLIENTS as u64 * 7919;
                    let start = Instant::now();
                    let result = tokio::time::timeout(MAINTENANCE_DEADLINE, kv.put(request)).await;
                    let ok = matches!(result, Ok(Ok(_)));
                    puts.push(TimedPut { start: start - began, took: start.elapsed(), ok });
                }
                puts
            });
        }
        Ok(Trickle { began, stop, clients })
    }

    fn now(&self) -> Duration {
        self.began.elapsed()
    }

    async fn stop(mut self) -> anyhow::Result<Vec<TimedPut>> {
        self.stop.store(true, Ordering::Relaxed);
        let mut puts = Vec::new();
        while let Some(client) = self.clients.join_next().await {
            puts.extend(client.context("a trickle client")?);
        }
        Ok(puts)
    }
}

/// A phase's longest put, and how many puts in it failed: those ended at a timeout, so the
/// pause was at least as long as the longest.
fn pause_text(longest_us: u64, failed: u64) -> String {
    match failed {
        0 => duration_text(longest_us),
        n => format!("≥ {} ({n} failed)", duration_text(longest_us)),
    }
}

/// Whether synod's pause (longest put in microseconds, failed puts) is shorter than etcd's:
/// a phase with failed puts is capped at the timeout, so it only compares by the failures.
fn shorter_pause((synod_us, synod_failed): (u64, u64), (etcd_us, etcd_failed): (u64, u64)) -> bool {
    match (synod_failed, etcd_failed) {
        (0, 0) => synod_us < etcd_us,
        (0, _) => true,
        _ => false,
    }
}

/// The datascale results as a Markdown section: one row per measure, synod beside etcd.
pub fn markdown(d: &Datascale) -> String {
    let (s, e) = (&d.synod, &d.etcd);
    let mib = |bytes: u64| format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0));
    let list = |bytes: &[u64]| bytes.iter().map(|b| mib(*b)).collect::<Vec<_>>().join(", ");
    let signed = |bytes: &[i64]| bytes.iter().map(|b| mib((*b).max(0) as u64)).collect::<Vec<_>>().join(", ");
    let seconds = |s: f64| format!("{s:.2} s");
    let list_seconds =
        |all: &[f64]| all.iter().map(|s| format!("{s:.1}")).collect::<Vec<_>>().join(", ") + " s";
    let met = |ok: bool| if ok { "yes" } else { "**no**" };
    let max = |bytes: &[u64]| bytes.iter().copied().max().unwrap_or(0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nDatascale: {} keys of {}-byte values, each written {} times ({} puts, 100 clients over 10 connections), into a fresh 3-member cluster of each system with an 8 GiB backend quota:\n",
        d.keys,
        d.value_size,
        d.passes,
        d.keys * d.passes
    );
    out.push_str("| measure | synod | etcd | target | met |\n|---|---|---|---|---|\n");
    let mut row = |measure: &str, synod: String, etcd: String, target: &str, ok: Option<bool>| {
        let _ = writeln!(out, "| {measure} | {synod} | {etcd} | {target} | {} |", ok.map_or("", met));
    };
    row("load time", seconds(s.load_seconds), seconds(e.load_seconds), "", None);
    row("database size per member (Status dbSize)", signed(&s.db_bytes), signed(&e.db_bytes), "", None);
    row("data directory per member", list(&s.disk_bytes), list(&e.disk_bytes), "", None);
    row(
        "resident memory per member",
        list(&s.resident_bytes),
        list(&e.resident_bytes),
        "≤ etcd",
        Some(max(&s.resident_bytes) <= max(&e.resident_bytes)),
    );
    row(
        "a killed follower, from its start to its first linearizable get",
        seconds(s.restart_to_serving_seconds),
        seconds(e.restart_to_serving_seconds),
        "≤ etcd",
        Some(s.restart_to_serving_seconds <= e.restart_to_serving_seconds),
    );
    row(
        "an added member, from its start to serving the cluster's revision",
        seconds(s.catch_up_seconds),
        seconds(e.catch_up_seconds),
        "≤ etcd",
        Some(s.catch_up_seconds <= e.catch_up_seconds),
    );
    row(
        "the added member's data directory",
        mib(s.caught_up_disk_bytes),
        mib(e.caught_up_disk_bytes),
        "",
        None,
    );
    row(
        "longest put, quiet (300 puts/s)",
        duration_text(s.quiet_pause_us),
        duration_text(e.quiet_pause_us),
        "",
        None,
    );
    row(
        "longest put during compaction to the latest revision",
        pause_text(s.compaction_pause_us, s.compaction_failed),
        pause_text(e.compaction_pause_us, e.compaction_failed),
        "< etcd",
        Some(shorter_pause(
            (s.compaction_pause_us, s.compaction_failed),
            (e.compaction_pause_us, e.compaction_failed),
        )),
    );
    row("compaction took", seconds(s.compaction_seconds), seconds(e.compaction_seconds), "", None);
    row(
        "longest put while each member is defragmented in turn",
        pause_text(s.defrag_pause_us, s.defrag_failed),
        pause_text(e.defrag_pause_us, e.defrag_failed),
        "< etcd",
        Some(shorter_pause((s.defrag_pause_us, s.defrag_failed), (e.defrag_pause_us, e.defrag_failed))),
    );
    row(
        "defragmentation took, per member",
        list_seconds(&s.defrag_seconds),
        list_seconds(&e.defrag_seconds),
        "",
        None,
    );
    row(
        "database size after defragmentation",
        signed(&s.db_bytes_after_defrag),
        signed(&e.db_bytes_after_defrag),
        "",
        None,
    );
    row(
        "puts of the trickle answered / failed",
        format!("{} / {}", s.trickle_puts, s.trickle_errors),
        format!("{} / {}", e.trickle_puts, e.trickle_errors),
        "",
        None,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A phase whose puts failed ended at the timeout: its longest put is a floor, and it
    /// is never the shorter pause unless the other side failed more.
    #[test]
    fn failed_puts_decide_the_pause() {
        assert!(shorter_pause((100, 0), (200, 0)));
        assert!(!shorter_pause((300, 0), (200, 0)));
        assert!(!shorter_pause((7_010_000, 3), (7_010_000, 0)), "synod timed out, etcd did not");
        assert!(!shorter_pause((7_000_000, 1), (7_010_000, 2)), "both capped at the timeout");
        assert!(shorter_pause((7_000_000, 0), (7_010_000, 2)));
        assert_eq!(pause_text(2_000, 0), duration_text(2_000));
        let capped = pause_text(7_010_000, 3);
        assert!(capped.starts_with('≥') && capped.ends_with("(3 failed)"), "{capped}");
    }
}
