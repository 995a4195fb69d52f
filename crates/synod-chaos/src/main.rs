//! synod-chaos: runs real `synod` processes under faults, records what clients were told,
//! and checks that it was linearizable.
//!
//! Each member runs in its own network namespace on a shared bridge (`netns`), with its
//! peer traffic through a delaying proxy (`proxy`). While clients make calls (`workload`),
//! the nemesis kills, pauses, partitions and slows members (`nemesis`). At the end every
//! fault is healed, each member is read once more, the members' key-value hashes are
//! compared, and the history goes to `synod_check`. Everything the run made (namespaces,
//! links, nftables tables, processes) is removed when it ends, however it ends.
//!
//! Exit status: 0 when no violation was found, 1 when one was, 2 when the harness itself
//! failed (setup, a cluster that never became healthy, a checker that could not decide),
//! 130 when interrupted.
//!
//! Needs root, `ip` and `nft`. This tool must never be linked into synod itself: it is the
//! outside observer.

mod members;
mod nemesis;
mod netns;
mod proxy;
mod rpc;
mod workload;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use rand::SeedableRng;
use rand::rngs::StdRng;
use synod_check::{Call, Op, Outcome, Verdict};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tonic::transport::Channel;

use members::{Cluster, KillOnDrop};
use nemesis::{FaultKind, FaultLog, Nemesis};
use netns::{Network, RunLock};
use proxy::LinkDelays;

/// How long members get to elect a leader and serve a linearizable read, at the start and
/// again after the faults are healed (debug builds on two busy cores are slow).
const HEALTHY_DEADLINE: Duration = Duration::from_secs(40);
/// How long the final reads may keep failing.
const FINAL_READS_DEADLINE: Duration = Duration::from_secs(20);
/// How long members get to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long the linearizability check may search before it answers "unknown".
const CHECK_BUDGET: Duration = Duration::from_secs(60);
/// How often the harness looks for members that exited by themselves.
const CRASH_POLL: Duration = Duration::from_millis(250);
/// How long to wait for another run to release the lock.
const LOCK_WAIT: Duration = Duration::from_secs(600);

const EXIT_VIOLATION: u8 = 1;
const EXIT_HARNESS_ERROR: u8 = 2;
const EXIT_INTERRUPTED: u8 = 130;

/// Runs a synod cluster in network namespaces under faults and checks the client history.
#[derive(Debug, Parser)]
#[command(name = "synod-chaos", max_term_width = 100)]
struct Args {
    /// Number of members.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=netns::MEMBERS_MAX as i64))]
    members: u8,

    /// How long the clients run under faults (e.g. 60s, 2m, 1500ms).
    #[arg(long, default_value = "60s", value_parser = parse_run_duration)]
    duration: Duration,

    /// Stop the clients after this many calls, even before --duration.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_ops: u64,

    /// Number of concurrent clients; client i talks to member i mod --members.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=64))]
    clients: u32,

    /// Number of keys the clients work on.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    keys: u32,

    /// Faults to inject: kill, pause, partition, oneway, bridge, delay, all or none.
    #[arg(long, default_value = "all", value_delimiter = ',', value_parser = parse_faults)]
    faults: Vec<Vec<FaultKind>>,

    /// Seed of the fault schedule and the clients' choices (random if absent; printed).
    #[arg(long)]
    seed: Option<u64>,

    /// Where the history, logs and data go [default: ./synod-chaos-out/seed-<SEED>-<TIME>].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,

    /// The synod binary [default: `synod` next to this program].
    #[arg(long, value_name = "PATH")]
    synod: Option<PathBuf>,

    /// Pass --unsafe-local-reads to the members: the negative control, which must make the
    /// run report a violation.
    #[arg(long)]
    unsafe_local_reads: bool,

    /// Start no cluster: check the history.jsonl of an earlier run again (and write its
    /// report.html next to it on a violation).
    #[arg(long, value_name = "HISTORY", conflicts_with_all = ["out", "synod", "unsafe_local_reads"])]
    recheck: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("synod-chaos: start the runtime: {error}");
            return ExitCode::from(EXIT_HARNESS_ERROR);
        }
    };
    // One thread runs everything (except blocking `nft` calls and the checker): members
    // must be forked from a thread that lives as long as the harness (see `members`).
    let code = runtime.block_on(async {
        // A closed terminal (SIGHUP) must tear the network down too.
        let (mut interrupt, mut terminate, mut hangup) = match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(interrupt), Ok(terminate), Ok(hangup)) => (interrupt, terminate, hangup),
            (Err(error), _, _) | (_, Err(error), _) | (_, _, Err(error)) => {
                eprintln!("synod-chaos: install the signal handlers: {error}");
                return EXIT_HARNESS_ERROR;
            }
        };
        // Dropping `run` on a signal drops its guards, which stop the members and remove
        // the network before the process exits.
        let work = async {
            match args.recheck.clone() {
                Some(history) => recheck(&history).await,
                None => run(args).await,
            }
        };
        tokio::select! {
            result = work => match result {
                Ok(code) => code,
                Err(error) => {
                    eprintln!("synod-chaos: error: {error:#}");
                    EXIT_HARNESS_ERROR
                }
            },
            _ = interrupt.recv() => {
                eprintln!("synod-chaos: interrupted (SIGINT): tearing down");
                EXIT_INTERRUPTED
            }
            _ = terminate.recv() => {
                eprintln!("synod-chaos: terminated (SIGTERM): tearing down");
                EXIT_INTERRUPTED
            }
            _ = hangup.recv() => {
                eprintln!("synod-chaos: hung up (SIGHUP): tearing down");
                EXIT_INTERRUPTED
            }
        }
    });
    // The run's guards have stopped the members and removed the network by now; a checker
    // still searching on a blocking thread (after a signal) is not waited for.
    runtime.shutdown_background();
    ExitCode::from(code)
}

/// One run, from setup to verdict; the exit status, or a harness error.
async fn run(args: Args) -> Result<u8> {
    let seed = args.seed.unwrap_or_else(|| {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        now.as_nanos() as u64 ^ u64::from(std::process::id())
    });
    let kinds = fault_kinds(&args.faults);
    let n = usize::from(args.members);
    println!(
        "synod-chaos: seed {seed}, {n} members, {} clients, {} keys, {:?}, faults: {}",
        args.clients,
        args.keys,
        args.duration,
        if kinds.is_empty() { "none".to_string() } else { names_of(&kinds) }
    );
    netns::check_prerequisites()?;
    let synod = find_synod(args.synod.as_deref())?;
    let out_dir = match &args.out {
        Some(out) => out.clone(),
        None => {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
            PathBuf::from("synod-chaos-out").join(format!("seed-{seed}-{now}"))
        }
    };
    std::fs::create_dir_all(&out_dir).with_context(|| format!("create {}", out_dir.display()))?;
    let out_dir = out_dir.canonicalize().with_context(|| format!("resolve {}", out_dir.display()))?;

    let _lock = RunLock::acquire(LOCK_WAIT).await?;
    let start = Instant::now();
    let faults = Arc::new(FaultLog::create(&out_dir.join("faults.log"), start)?);
    let names: Vec<String> = (0..n).map(|i| char::from(b'a' + i as u8).to_string()).collect();
    // Declaration order is teardown order, reversed: members die before their network.
    let network = Network::create(&names).context("set up the test network")?;
    let delays = Arc::new(LinkDelays::new(n));
    let mut proxies = Vec::new();
    for (index, name) in names.iter().enumerate() {
        proxies.push(AbortOnDrop(proxy::start(index, name, delays.clone())?));
    }
    let settings = members::Settings {
        synod,
        out_dir: out_dir.clone(),
        cluster_token: format!("synod-chaos-{seed}"),
        extra_flags: if args.unsafe_local_reads { vec!["--unsafe-local-reads".to_string()] } else { vec![] },
    };
    let cluster = Arc::new(Cluster::new(network.members(), &settings, start)?);
    let _members = KillOnDrop(cluster.clone());
    for index in 0..n {
        cluster.start(index)?;
    }
    faults.note(format!(
        "started {n} members{}",
        if args.unsafe_local_reads { " with --unsafe-local-reads" } else { "" }
    ));
    let channels: Vec<(String, Channel)> = cluster
        .members
        .iter()
        .map(|member| Ok((member.name.clone(), rpc::channel(&member.client_url())?)))
        .collect::<Result<_>>()?;
    let ids = wait_healthy(&cluster, &channels, HEALTHY_DEADLINE)
        .await
        .context("the cluster never became healthy")?;
    faults.note("cluster healthy");

    let recorder = Arc::new(workload::Recorder::new(start, args.max_ops));
    let (stop, stopped) = watch::channel(false);
    let nemesis = Nemesis {
        kinds: kinds.clone(),
        rng: StdRng::seed_from_u64(seed),
        cluster: cluster.clone(),
        names: names.clone(),
        delays: delays.clone(),
        channels: channels.iter().map(|(_, channel)| channel.clone()).collect(),
        ids,
        log: faults.clone(),
    };
    let nemesis = AbortOnDrop(tokio::spawn(nemesis.run(stopped.clone())));
    let crash_watch = AbortOnDrop(tokio::spawn(watch_crashes(cluster.clone(), faults.clone(), stopped)));
    let clients = workload::Settings {
        clients: args.clients as usize,
        keys: args.keys as usize,
        seed,
        stop_at: Instant::now() + args.duration,
    };
    let workload = workload::run(&clients, &channels, recorder.clone()).await;
    let _ = stop.send(true);
    let nemesis = nemesis.join().await;
    drop(crash_watch);
    faults.note("workload done");
    let history_path = out_dir.join("history.jsonl");
    let finished = match (workload, nemesis) {
        (Ok(()), Ok(Ok(()))) => {
            finish(&cluster, &names, &delays, &channels, &clients, &recorder, &faults).await
        }
        (Err(error), _) => Err(error),
        (_, Ok(Err(error))) => Err(error.context("the nemesis failed")),
        (_, Err(error)) => Err(anyhow!("the nemesis task failed: {error}")),
    };
    note_crashes(&cluster, &faults);
    cluster.stop_all(STOP_GRACE).await;
    let ops = recorder.ops();
    write_history(&history_path, &ops)?;
    let hash_mismatch = match finished {
        Ok(mismatch) => mismatch,
        // A member that died by itself under faults is a finding, even though it also
        // kept the run from finishing.
        Err(error) if !cluster.crashes().is_empty() => {
            eprintln!("synod-chaos: the run could not finish: {error:#}");
            for crash in cluster.crashes() {
                println!("CRASH: {crash}");
            }
            println!("history: {}", history_path.display());
            println!("synod-chaos: VIOLATION found (a member crashed)");
            return Ok(EXIT_VIOLATION);
        }
        Err(error) => return Err(error),
    };
    faults.note("members stopped; checking the history");

    let check_started = Instant::now();
    let ops = Arc::new(ops);
    let report = check(&ops).await?;
    let check_time = check_started.elapsed();
    let crashes = cluster.crashes();

    print_summary(&ops, &faults.lines(), faults.injected(), &kinds);
    println!("checker ({:.1}s): {}", check_time.as_secs_f64(), report.summary());
    if let Some(mismatch) = &hash_mismatch {
        println!("VIOLATION: the members' key-value hashes differ: {mismatch}");
    }
    for crash in &crashes {
        println!("CRASH: {crash}");
    }
    // A violation, a revision that went backwards, diverging members or a crashed member
    // are each a finding on their own, even when the search ran out of budget.
    let checker_found =
        matches!(report.verdict, Verdict::Violation(_)) || !report.revision_regressions.is_empty();
    let found = checker_found || hash_mismatch.is_some() || !crashes.is_empty();
    let report_path = out_dir.join("report.html");
    if !report.is_ok() {
        std::fs::write(&report_path, synod_check::render_html(&ops, &report))
            .with_context(|| format!("write {}", report_path.display()))?;
    }
    println!("history: {}", history_path.display());
    println!("faults:  {}", out_dir.join("faults.log").display());
    println!(
        "logs:    {}",
        cluster.members.iter().map(|m| m.log_path().display().to_string()).collect::<Vec<_>>().join(" ")
    );
    if report_path.exists() {
        println!("report:  {}", report_path.display());
    }
    println!("seed:    {seed}");
    if found {
        println!("synod-chaos: VIOLATION found");
        return Ok(EXIT_VIOLATION);
    }
    if report.verdict == Verdict::Unknown {
        bail!(
            "the checker could not decide within {CHECK_BUDGET:?}: run shorter, or with fewer clients, or \
             with fewer of the faults that leave writes unknown (kill, pause)"
        );
    }
    println!("synod-chaos: no violation found");
    Ok(0)
}

/// Runs the linearizability checker on a worker thread, within its time budget.
async fn check(ops: &Arc<Vec<synod_check::Op>>) -> Result<synod_check::Report> {
    let ops = ops.clone();
    tokio::task::spawn_blocking(move || synod_check::check(&ops, CHECK_BUDGET))
        .await
        .map_err(|error| anyhow!("the checker failed: {error}"))
}

/// Checks a recorded history again: the exit status as for a run.
async fn recheck(history: &Path) -> Result<u8> {
    let file = std::fs::File::open(history).with_context(|| format!("open {}", history.display()))?;
    let ops = synod_check::read_jsonl(std::io::BufReader::new(file))
        .map_err(|error| anyhow!("read {}: {error}", history.display()))?;
    let started = Instant::now();
    let ops = Arc::new(ops);
    let report = check(&ops).await?;
    println!("checker ({:.1}s): {}", started.elapsed().as_secs_f64(), report.summary());
    if report.is_ok() {
        return Ok(0);
    }
    if report.verdict == Verdict::Unknown && report.revision_regressions.is_empty() {
        bail!("the checker could not decide within {CHECK_BUDGET:?}");
    }
    let report_path = history.with_file_name("report.html");
    std::fs::write(&report_path, synod_check::render_html(&ops, &report))
        .with_context(|| format!("write {}", report_path.display()))?;
    println!("report:  {}", report_path.display());
    Ok(EXIT_VIOLATION)
}

/// The end of a run: heal every fault, bring every member back, wait until each serves
/// linearizable reads, read each key through each member, and compare the members' hashes.
/// Returns a description of a hash mismatch, if there is one.
async fn finish(
    cluster: &Cluster,
    names: &[String],
    delays: &LinkDelays,
    channels: &[(String, Channel)],
    clients: &workload::Settings,
    recorder: &workload::Recorder,
    faults: &FaultLog,
) -> Result<Option<String>> {
    nemesis::set_cuts(names, Vec::new()).await.context("heal the partitions")?;
    delays.clear();
    note_crashes(cluster, faults);
    for index in 0..cluster.len() {
        cluster.resume(index);
        cluster.start(index)?;
    }
    faults.note("healed everything; waiting for the cluster");
    wait_healthy(cluster, channels, HEALTHY_DEADLINE)
        .await
        .context("the cluster did not recover after healing")?;
    faults.note("cluster healthy again; final reads");
    let deadline = Instant::now() + FINAL_READS_DEADLINE;
    workload::final_reads(channels, clients.keys, clients.clients as u32, deadline, recorder).await?;
    compare_hashes(channels).await
}

/// Waits until every member answers Status naming a leader and serves a linearizable
/// read. Returns the members' ids, in member order.
async fn wait_healthy(
    cluster: &Cluster,
    channels: &[(String, Channel)],
    within: Duration,
) -> Result<Vec<u64>> {
    let deadline = Instant::now() + within;
    let crashes_before = cluster.crashes().len();
    let mut ids = vec![0u64; channels.len()];
    for (index, (name, channel)) in channels.iter().enumerate() {
        loop {
            let probe = async {
                let status = rpc::status(channel).await?;
                if status.leader == 0 {
                    return Err("no leader yet".to_string());
                }
                rpc::linearizable_probe(channel).await?;
                Ok(status.header.map_or(0, |header| header.member_id))
            };
            let error = match probe.await {
                Ok(id) => {
                    ids[index] = id;
                    break;
                }
                Err(error) => error,
            };
            cluster.find_crashes();
            if let Some(crash) = cluster.crashes().get(crashes_before) {
                bail!("{crash}");
            }
            if Instant::now() >= deadline {
                bail!("member {name} is not healthy after {within:?}: {error}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(ids)
}

/// Notes crashes in the timeline as they are found (every [`CRASH_POLL`]) until `stop`.
async fn watch_crashes(cluster: Arc<Cluster>, faults: Arc<FaultLog>, mut stop: watch::Receiver<bool>) {
    loop {
        note_crashes(&cluster, &faults);
        tokio::select! {
            _ = tokio::time::sleep(CRASH_POLL) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
    }
}

fn note_crashes(cluster: &Cluster, faults: &FaultLog) {
    for crash in cluster.find_crashes() {
        faults.note(format!("CRASH: {crash}"));
    }
}

/// Compares the members' HashKV at the lowest revision they all have. Returns a
/// description of the mismatch, if any.
async fn compare_hashes(channels: &[(String, Channel)]) -> Result<Option<String>> {
    let mut revision = i64::MAX;
    for (name, channel) in channels {
        let status = rpc::status(channel).await.map_err(|e| anyhow!("Status of member {name}: {e}"))?;
        revision = revision.min(status.header.map_or(0, |header| header.revision));
    }
    let mut hashes = Vec::new();
    for (name, channel) in channels {
        let response =
            rpc::hash_kv(channel, revision).await.map_err(|e| anyhow!("HashKV of member {name}: {e}"))?;
        hashes.push(format!("{name}={:#010x}", response.hash));
    }
    let first = hashes[0].split('=').nth(1);
    if hashes.iter().all(|hash| hash.split('=').nth(1) == first) {
        println!("hashes at revision {revision}: equal ({})", hashes.join(" "));
        Ok(None)
    } else {
        Ok(Some(format!("at revision {revision}: {}", hashes.join(" "))))
    }
}

fn write_history(path: &Path, ops: &[Op]) -> Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    let mut writer = std::io::BufWriter::new(file);
    synod_check::write_jsonl(&mut writer, ops).with_context(|| format!("write {}", path.display()))?;
    std::io::Write::flush(&mut writer).with_context(|| format!("write {}", path.display()))
}

/// Prints the calls by kind and outcome, and the fault timeline.
fn print_summary(ops: &[Op], faults: &[String], injected: usize, kinds: &[FaultKind]) {
    let mut counts: BTreeMap<&str, [usize; 3]> = BTreeMap::new();
    for op in ops {
        let kind = match op.call {
            Call::Get { .. } => "get",
            Call::Put { .. } => "put",
            Call::Delete { .. } => "delete",
            Call::Cas { .. } => "cas",
            _ => "other",
        };
        let column = match op.outcome {
            Outcome::Ok { .. } => 0,
            Outcome::Fail { .. } => 1,
            Outcome::Unknown { .. } => 2,
        };
        counts.entry(kind).or_default()[column] += 1;
    }
    println!("calls       ok   fail  unknown");
    for (kind, [ok, fail, unknown]) in &counts {
        println!("  {kind:<7} {ok:>6} {fail:>6} {unknown:>8}");
    }
    println!(
        "timeline, {injected} faults injected ({}):",
        if kinds.is_empty() { "none".to_string() } else { names_of(kinds) }
    );
    for line in faults {
        println!("  {line}");
    }
}

/// Finds the synod binary: `--synod`, else next to this program, else one directory up
/// (a test executable lives in `target/debug/deps`, synod in `target/debug`).
fn find_synod(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        if path.is_file() {
            return Ok(path.to_path_buf());
        }
        bail!("--synod {}: no such file", path.display());
    }
    let exe = std::env::current_exe().context("find this program's path")?;
    let dir = exe.parent().ok_or_else(|| anyhow!("{} has no directory", exe.display()))?;
    let candidates: Vec<PathBuf> =
        [Some(dir), dir.parent()].into_iter().flatten().map(|dir| dir.join("synod")).collect();
    candidates.iter().find(|path| path.is_file()).cloned().ok_or_else(|| {
        anyhow!(
            "no synod binary at {}: build it with `cargo build --release -p synod-server` \
             (or without --release for target/debug), or pass --synod PATH",
            candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" or ")
        )
    })
}

/// Parses `60s`, `2m`, `1500ms`, or a plain number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) =
        text.split_at(text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len()));
    let value: f64 =
        number.parse().map_err(|_| format!("{text:?} is not a duration like 60s, 2m or 500ms"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

/// Parses `--duration`: more than nothing (a run without clients checks nothing) and at
/// most a day.
fn parse_run_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration.is_zero() || duration > Duration::from_secs(86_400) {
        return Err(format!("{text:?}: a run lasts more than 0s and at most 24h"));
    }
    Ok(duration)
}

/// Parses one item of `--faults`: a fault kind, `all` or `none`.
fn parse_faults(text: &str) -> Result<Vec<FaultKind>, String> {
    match text.trim() {
        "all" => Ok(FaultKind::ALL.to_vec()),
        "none" => Ok(Vec::new()),
        other => <FaultKind as clap::ValueEnum>::from_str(other, true).map(|kind| vec![kind]).map_err(|_| {
            format!("unknown fault {other:?}: use kill, pause, partition, oneway, bridge, delay, all or none")
        }),
    }
}

/// The distinct fault kinds, in the order given.
fn fault_kinds(items: &[Vec<FaultKind>]) -> Vec<FaultKind> {
    let mut kinds = Vec::new();
    for kind in items.iter().flatten() {
        if !kinds.contains(kind) {
            kinds.push(*kind);
        }
    }
    kinds
}

fn names_of(kinds: &[FaultKind]) -> String {
    kinds.iter().map(|kind| format!("{kind:?}").to_lowercase()).collect::<Vec<_>>().join(",")
}

/// A spawned task that is aborted when the handle is dropped, so that a cancelled run
/// leaves no task behind acting on members or the network.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> AbortOnDrop<T> {
    async fn join(mut self) -> Result<T, tokio::task::JoinError> {
        (&mut self.0).await
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// --duration takes the units people write.
    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_run_duration("0s").is_err(), "a run without time checks nothing");
        assert!(parse_run_duration("1e12s").is_err(), "an endless run");
        assert_eq!(parse_run_duration("30s"), Ok(Duration::from_secs(30)));
    }

    /// --faults all and none expand to the fault kinds they stand for.
    #[test]
    fn fault_lists_expand() {
        let parsed: Vec<Vec<FaultKind>> =
            ["kill", "all", "none"].iter().map(|t| parse_faults(t).expect("parses")).collect();
        assert_eq!(fault_kinds(&parsed), FaultKind::ALL.to_vec());
        assert_eq!(parse_faults("oneway"), Ok(vec![FaultKind::Oneway]));
        assert!(parse_faults("flood").is_err());
    }
}
