//! `failover`: how long after its leader's process is killed (SIGKILL) a cluster accepts a
//! write again, for local synod and etcd clusters, over several rounds each.
//!
//! Each round finds the leader, connects to a survivor, kills the leader, and from then on
//! starts a put through the survivor every few milliseconds, each with a generous deadline;
//! the round's time is when the first of them is acknowledged. Then the killed member is
//! started again and the cluster settles before the next round.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use synod_api::etcdserverpb::PutRequest;
use synod_api::etcdserverpb::kv_client::KvClient;
use tokio::time::Instant;

use crate::cluster::{Cluster, Kind};
use crate::compare::find_binary;

/// How often a new put starts while the cluster has no leader.
const PUT_EVERY: Duration = Duration::from_millis(5);
/// How long one put may take: long enough for any election to finish.
const PUT_DEADLINE: Duration = Duration::from_secs(5);
/// How long a round may take before the cluster is declared stuck.
const ROUND_DEADLINE: Duration = Duration::from_secs(30);

pub struct FailoverOptions {
    pub rounds: usize,
    pub synod: Option<PathBuf>,
    pub etcd: Option<PathBuf>,
    pub out: PathBuf,
}

pub async fn run(options: &FailoverOptions) -> anyhow::Result<()> {
    let binaries = [
        (Kind::Synod, find_binary("synod", options.synod.as_deref(), true)?),
        (Kind::Etcd, find_binary("etcd", options.etcd.as_deref(), false)?),
    ];
    std::fs::create_dir_all(&options.out).with_context(|| format!("create {}", options.out.display()))?;
    let mut summaries = Vec::new();
    for (kind, binary) in binaries {
        let mut cluster = Cluster::start(kind, &binary, 3, &options.out).await?;
        let mut times = Vec::with_capacity(options.rounds);
        for round in 1..=options.rounds {
            let took =
                round_trip(&mut cluster).await.with_context(|| format!("{} round {round}", kind.name()))?;
            eprintln!(
                "{} round {round}: a write was accepted {} ms after kill -9 of the leader",
                kind.name(),
                took.as_millis()
            );
            times.push(took);
        }
        times.sort();
        let median = times[times.len() / 2];
        let max = times[times.len() - 1];
        summaries.push(format!(
            "{}: median {} ms, max {} ms over {} rounds",
            kind.name(),
            median.as_millis(),
            max.as_millis(),
            times.len()
        ));
    }
    for summary in summaries {
        println!("{summary}");
    }
    Ok(())
}

/// One round: kill the leader, time the first acknowledged write, restart it.
async fn round_trip(cluster: &mut Cluster) -> anyhow::Result<Duration> {
    let leader = cluster.leader().await?;
    let survivor = (leader + 1) % 3;
    let mut client =
        KvClient::connect(cluster.endpoint(survivor).to_string()).await.context("connect to a survivor")?;
    client.put(put("before")).await.context("a put before the kill")?;
    cluster.kill(leader)?;
    let killed_at = Instant::now();
    let mut puts = tokio::task::JoinSet::new();
    let mut every = tokio::time::interval(PUT_EVERY);
    let took = loop {
        tokio::select! {
            biased;
            Some(result) = puts.join_next() => {
                if let Ok(Ok(Ok(_))) = result {
                    break killed_at.elapsed();
                }
            }
            _ = every.tick() => {
                if killed_at.elapsed() > ROUND_DEADLINE {
                    bail!("no write accepted within {ROUND_DEADLINE:?} of the kill");
                }
                let mut client = client.clone();
                puts.spawn(async move { tokio::time::timeout(PUT_DEADLINE, client.put(put("after"))).await });
            }
        }
    };
    puts.abort_all();
    cluster.restart(leader).await?;
    cluster.settle().await?;
    Ok(took)
}

fn put(key: &str) -> PutRequest {
    PutRequest { key: format!("failover-{key}").into_bytes(), value: b"x".to_vec(), ..Default::default() }
}
