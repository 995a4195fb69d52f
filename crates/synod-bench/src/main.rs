//! synod-bench: load for any etcd-compatible endpoints, and `compare`, which runs the same
//! workloads against local synod and etcd clusters side by side. See docs/benchmarks.md.

mod cluster;
mod compare;
mod datascale;
mod failover;
mod load;
mod plot;
mod report;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use synod_base::go_fmt;

use crate::load::{LoadShape, Stop};
use crate::workload::{Data, Workload};

#[derive(Parser)]
#[command(
    name = "synod-bench",
    version,
    about = "Load generator for etcd-compatible clusters, and synod compared with etcd"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Puts of random (or sequential) keys.
    Put(Common),
    /// Single-key gets.
    Get {
        #[command(flatten)]
        common: Common,
        #[arg(long, value_enum, default_value = "l")]
        consistency: Consistency,
        /// Put every key of the key space first (not measured), so that gets find values.
        #[arg(long)]
        preload: bool,
    },
    /// Txns of puts with no compares.
    TxnPut {
        #[command(flatten)]
        common: Common,
        /// Puts in each txn.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=10_000))]
        txn_puts: u16,
    },
    /// Gets and puts of random keys.
    Mixed {
        #[command(flatten)]
        common: Common,
        /// The share of requests that are gets, in percent.
        #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u8).range(0..=100))]
        read_percent: u8,
        #[arg(long, value_enum, default_value = "l")]
        consistency: Consistency,
    },
    /// Time from a put to each watcher's event: --clients watchers over one stream per
    /// connection, and one putter at --rate puts per second (100 unless given).
    WatchLatency(Common),
    /// Lease grants (the leases are revoked after the run, not measured).
    LeaseGrant {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 60)]
        ttl: i64,
    },
    /// Keep-alive round trips, one lease and one stream per client.
    LeaseKeepalive(Common),
    /// Increments of one hot counter by every client.
    Counter {
        #[command(flatten)]
        common: Common,
        #[arg(long, value_enum, default_value = "cas")]
        method: CounterMethod,
    },
    /// Starts local 3-member synod and etcd clusters, runs the same workloads against each,
    /// and reports the ratios synod/etcd with both raw results and plots.
    Compare(CompareArgs),
    /// Starts local 3-member synod and etcd clusters and times, over several rounds, how
    /// long after the leader is killed with SIGKILL a write through a survivor is accepted.
    Failover {
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1000))]
        rounds: u64,
        #[command(flatten)]
        clusters: Clusters,
    },
}

#[derive(Args, Clone)]
struct Common {
    /// Client URLs, comma-separated; connections go to them in turn.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:2379")]
    endpoints: Vec<String>,
    /// Concurrent clients (each has one request in flight).
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// HTTP/2 connections the clients share.
    #[arg(long, default_value_t = 10)]
    conns: usize,
    /// How long to run, as `10s`, `500ms` or `2m` (Go's duration syntax).
    #[arg(long, value_parser = parse_duration, conflicts_with = "total")]
    duration: Option<Duration>,
    /// How many requests to make instead of a duration.
    #[arg(long)]
    total: Option<u64>,
    /// Requests per second over all clients (unlimited when not given).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    rate: Option<u64>,
    /// Key length in bytes (zero-padded decimal; longer when the key space needs it).
    #[arg(long, default_value_t = 8, value_parser = bytes_at_most(KEY_SIZE_MAX))]
    key_size: usize,
    #[arg(long, default_value_t = 256, value_parser = bytes_at_most(VAL_SIZE_MAX))]
    val_size: usize,
    /// How many distinct keys the requests use.
    #[arg(long, default_value_t = 100_000)]
    key_space: u64,
    /// Keys in turn rather than at random.
    #[arg(long)]
    sequential_keys: bool,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
}

#[derive(Args)]
struct CompareArgs {
    /// How long each workload runs against each system.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    duration: Duration,
    /// Keys loaded before the runs (the reads read them; memory is measured after).
    #[arg(long, default_value_t = 200_000)]
    load_keys: u64,
    #[command(flatten)]
    clusters: Clusters,
    /// Keys the datascale part loads (each written twice) into fresh clusters; 0 skips it.
    #[arg(long, default_value_t = 1_000_000)]
    datascale_keys: u64,
    /// Value size of the datascale part, in bytes.
    #[arg(long, default_value_t = 1024, value_parser = bytes_at_most(VAL_SIZE_MAX))]
    datascale_value_size: usize,
    /// Run only these workloads (comma-separated names from the results table, or
    /// `datascale`).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Replace the generated part of this Markdown file (docs/benchmarks.md) with the results.
    #[arg(long)]
    write_docs: Option<PathBuf>,
    #[arg(long)]
    no_progress: bool,
}

/// The local clusters `compare` and `failover` start.
#[derive(Args)]
struct Clusters {
    /// Where results, plots and the clusters' temporary directories go.
    #[arg(long, default_value = "bench-out")]
    out: PathBuf,
    /// The synod binary (default: the one beside synod-bench).
    #[arg(long)]
    synod: Option<PathBuf>,
    /// The etcd binary (default: etcd on PATH).
    #[arg(long)]
    etcd: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Consistency {
    /// Linearizable.
    L,
    /// Serializable.
    S,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum CounterMethod {
    /// etcd's way: read, then compare-and-swap in a Txn until the swap wins.
    Cas,
    /// synod's native counter (`synod.v1.Counter/Add`), each client in its own session;
    /// etcd does not serve it.
    Native,
}

/// Keys longer than this are refused: etcd takes no request over its limit (1.5 MiB by
/// default), and each client holds its key in memory.
const KEY_SIZE_MAX: usize = 1 << 20;
/// Values longer than this are refused (the largest `--max-request-bytes` worth measuring).
const VAL_SIZE_MAX: usize = 64 << 20;

/// A byte count no larger than `max`, refused with a clear error otherwise.
fn bytes_at_most(max: usize) -> impl Fn(&str) -> Result<usize, String> + Clone {
    move |text| {
        let bytes: usize = text.parse().map_err(|_| format!("{text:?} is not a byte count"))?;
        if bytes > max {
            return Err(format!("{bytes} bytes is more than the {max} allowed"));
        }
        Ok(bytes)
    }
}

/// A run's length in Go's duration syntax (`10s`, `500ms`, `1m30s`), as etcd's tools take
/// it; a run of no time measures nothing.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = go_fmt::parse_duration(text)?;
    if duration.is_zero() {
        return Err(format!("{text:?}: a run needs some time"));
    }
    Ok(duration)
}

impl Common {
    fn shape(&self, default_rate: Option<u64>) -> LoadShape {
        let stop = match (self.total, self.duration) {
            (Some(total), _) => Stop::Total(total),
            (None, Some(duration)) => Stop::After(duration),
            (None, None) => Stop::After(Duration::from_secs(10)),
        };
        LoadShape {
            endpoints: self.endpoints.clone(),
            clients: self.clients,
            conns: self.conns,
            stop,
            rate: self.rate.or(default_rate),
            progress: !self.no_progress,
        }
    }

    fn data(&self) -> Data {
        Data {
            key_size: self.key_size,
            val_size: self.val_size,
            key_space: self.key_space.max(1),
            sequential: self.sequential_keys,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("synod-bench: start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // The future given to block_on runs on this thread, so members that `compare` starts
    // are forked from a thread that lives as long as the process.
    let result = runtime.block_on(async {
        tokio::select! {
            result = run(cli) => result,
            _ = interrupted() => Err(anyhow::anyhow!("interrupted; every process started was stopped")),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("synod-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let (common, workload, default_rate) = match cli.command {
        Command::Compare(args) => {
            let options = compare::CompareOptions {
                duration: args.duration,
                load_keys: args.load_keys,
                out: args.clusters.out.join(format!("compare-{}", unix_seconds())),
                synod: args.clusters.synod,
                etcd: args.clusters.etcd,
                only: args.only,
                datascale: (args.datascale_keys > 0).then_some(compare::DatascaleOptions {
                    keys: args.datascale_keys,
                    value_size: args.datascale_value_size,
                    progress: !args.no_progress,
                }),
                write_docs: args.write_docs,
                progress: !args.no_progress,
                command: std::env::args().collect::<Vec<_>>().join(" "),
            };
            compare::run(&options).await?;
            return Ok(());
        }
        Command::Failover { rounds, clusters } => {
            let options = failover::FailoverOptions {
                rounds: rounds as usize,
                synod: clusters.synod,
                etcd: clusters.etcd,
                out: clusters.out.join(format!("failover-{}", unix_seconds())),
            };
            return failover::run(&options).await;
        }
        Command::Put(common) => {
            let workload = Workload::Put(common.data());
            (common, workload, None)
        }
        Command::Get { common, consistency, preload } => {
            if preload {
                preload_keys(&common).await?;
            }
            let workload =
                Workload::Get { data: common.data(), serializable: matches!(consistency, Consistency::S) };
            (common, workload, None)
        }
        Command::TxnPut { common, txn_puts } => {
            anyhow::ensure!(
                u64::from(txn_puts) <= common.key_space,
                "--txn-puts {txn_puts} needs a --key-space of at least as many keys (a txn may not put a key twice)"
            );
            let workload = Workload::TxnPut { data: common.data(), puts: usize::from(txn_puts) };
            (common, workload, None)
        }
        Command::Mixed { common, read_percent, consistency } => {
            let workload = Workload::Mixed {
                data: common.data(),
                read_percent,
                serializable: matches!(consistency, Consistency::S),
            };
            (common, workload, None)
        }
        Command::WatchLatency(common) => {
            anyhow::ensure!(
                common.val_size >= 8,
                "--val-size must be at least 8: the value carries the send time"
            );
            let workload = Workload::Watch { val_size: common.val_size };
            (common, workload, Some(100))
        }
        Command::LeaseGrant { common, ttl } => (common, Workload::LeaseGrant { ttl }, None),
        Command::LeaseKeepalive(common) => (common, Workload::LeaseKeepalive, None),
        Command::Counter { common, method } => {
            let workload = match method {
                CounterMethod::Cas => Workload::CounterCas,
                CounterMethod::Native => Workload::CounterNative,
            };
            (common, workload, None)
        }
    };
    let shape = common.shape(default_rate);
    let report = workload::run(&workload, &shape, workload.name()).await?;
    print!("{}", report::markdown(std::slice::from_ref(&report)));
    if let Some(path) = &common.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    // A run with failures is not a measurement a script should take at face value.
    anyhow::ensure!(
        report.errors == 0 && report.ops > 0,
        "{} requests failed and {} succeeded (see the table above)",
        report.errors,
        report.ops
    );
    Ok(())
}

/// Puts every key of the key space once, with the run's clients, before a get run.
async fn preload_keys(common: &Common) -> anyhow::Result<()> {
    let mut data = common.data();
    data.sequential = true;
    let mut shape = common.shape(None);
    shape.stop = Stop::Total(data.key_space);
    shape.rate = None;
    let report = workload::run(&Workload::Put(data), &shape, "preload").await?;
    anyhow::ensure!(
        report.errors == 0,
        "preloading failed {} times: {:?}",
        report.errors,
        report.error_kinds
    );
    Ok(())
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("7").is_err(), "Go durations need a unit");
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("0s").is_err());
    }
}
