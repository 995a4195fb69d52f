//! `compare`: the same workloads against a local 3-member synod cluster and a local 3-member
//! etcd cluster on this machine, alternating which goes first, with the ratios synod/etcd,
//! both raw results, plots, and (on request) the generated part of docs/benchmarks.md.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use crate::cluster::{Cluster, Kind};
pub use crate::datascale::DatascaleOptions;
use crate::datascale::{self, Datascale};
use crate::load::{LoadShape, Stop};
use crate::plot;
use crate::report::{Report, duration_text};
use crate::workload::{self, Data, Workload};

/// Members in each cluster.
const MEMBERS: usize = 3;
/// Where the generated part of docs/benchmarks.md begins and ends.
const DOCS_BEGIN: &str = "<!-- synod-bench compare: begin (generated; do not edit by hand) -->";
const DOCS_END: &str = "<!-- synod-bench compare: end -->";

pub struct CompareOptions {
    pub duration: Duration,
    pub load_keys: u64,
    pub out: PathBuf,
    pub synod: Option<PathBuf>,
    pub etcd: Option<PathBuf>,
    pub only: Vec<String>,
    /// Keys and value size of the datascale part (`None` skips it).
    pub datascale: Option<DatascaleOptions>,
    pub write_docs: Option<PathBuf>,
    pub progress: bool,
    /// The command line, recorded in the results so that they can be reproduced.
    pub command: String,
}

/// What a workload's numbers are held to, from the issue that set synod's targets.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum Target {
    /// Throughput at least twice etcd's, with p99 latency no higher.
    TwiceThroughputP99,
    /// Throughput at least twice etcd's.
    TwiceThroughput,
    /// Median latency no higher than etcd's.
    P50,
    /// Throughput at least a hundred times etcd's (the native counter against etcd's
    /// compare-and-swap loop).
    HundredfoldThroughput,
}

impl Target {
    fn text(self) -> &'static str {
        match self {
            Target::TwiceThroughputP99 => "≥ 2× ops/s, p99 ≤ etcd",
            Target::TwiceThroughput => "≥ 2× ops/s",
            Target::P50 => "p50 ≤ etcd",
            Target::HundredfoldThroughput => "≥ 100× ops/s",
        }
    }

    fn met(self, synod: &Report, etcd: &Report) -> bool {
        let twice = synod.throughput >= 2.0 * etcd.throughput;
        match self {
            Target::TwiceThroughputP99 => twice && synod.latency_us.p99 <= etcd.latency_us.p99,
            Target::TwiceThroughput => twice,
            Target::P50 => synod.latency_us.p50 <= etcd.latency_us.p50,
            Target::HundredfoldThroughput => synod.throughput >= 100.0 * etcd.throughput,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    pub name: String,
    pub shape: String,
    pub target: Option<Target>,
    pub synod: Report,
    pub etcd: Report,
    /// The CPU time all members of each cluster used during the run, in seconds.
    #[serde(default)]
    pub synod_cpu_seconds: f64,
    #[serde(default)]
    pub etcd_cpu_seconds: f64,
}

impl Row {
    pub fn throughput_ratio(&self) -> f64 {
        ratio(self.synod.throughput, self.etcd.throughput)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Memory {
    pub keys: u64,
    pub value_size: usize,
    pub synod_bytes: Vec<u64>,
    pub etcd_bytes: Vec<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Comparison {
    pub command: String,
    pub machine: String,
    pub synod_version: String,
    pub etcd_version: String,
    pub seconds_per_run: f64,
    pub memory: Memory,
    pub rows: Vec<Row>,
    #[serde(default)]
    pub datascale: Option<Datascale>,
}

/// The name `--only` selects the datascale part by.
const DATASCALE: &str = "datascale";

/// One workload of the comparison.
struct Plan {
    name: &'static str,
    workload: Workload,
    /// What etcd runs instead, when synod's way of doing the job is its own.
    etcd_workload: Option<Workload>,
    clients: usize,
    conns: usize,
    rate: Option<u64>,
    target: Option<Target>,
}

fn plans(load_keys: u64) -> Vec<Plan> {
    let data = |key_space| Data { key_size: 8, val_size: 256, key_space, sequential: false };
    let plan = |name, workload, clients, conns, target| Plan {
        name,
        workload,
        etcd_workload: None,
        clients,
        conns,
        rate: None,
        target,
    };
    // One hot counter: synod's native adds against etcd's compare-and-swap loop.
    let counter = |name, clients| Plan {
        name,
        workload: Workload::CounterNative,
        etcd_workload: Some(Workload::CounterCas),
        clients,
        conns: 10,
        rate: None,
        target: Some(Target::HundredfoldThroughput),
    };
    vec![
        plan("put", Workload::Put(data(100_000)), 100, 10, Some(Target::TwiceThroughputP99)),
        plan("put-1-client", Workload::Put(data(100_000)), 1, 1, Some(Target::P50)),
        plan(
            "get-linearizable",
            Workload::Get { data: data(load_keys.max(1)), serializable: false },
            100,
            10,
            Some(Target::TwiceThroughput),
        ),
        plan(
            "get-serializable",
            Workload::Get { data: data(load_keys.max(1)), serializable: true },
            100,
            10,
            Some(Target::TwiceThroughput),
        ),
        plan("txn-put", Workload::TxnPut { data: data(100_000), puts: 1 }, 100, 10, None),
        plan(
            "mixed-90-read",
            Workload::Mixed { data: data(100_000), read_percent: 90, serializable: false },
            100,
            10,
            None,
        ),
        Plan {
            name: "watch-latency",
            workload: Workload::Watch { val_size: 256 },
            etcd_workload: None,
            clients: 100,
            conns: 10,
            rate: Some(100),
            target: None,
        },
        plan("lease-keepalive", Workload::LeaseKeepalive, 100, 10, None),
        plan("lease-grant", Workload::LeaseGrant { ttl: 60 }, 100, 10, None),
        plan("counter-cas", Workload::CounterCas, 100, 10, None),
        counter("counter-32", 32),
        counter("counter-256", 256),
    ]
}

pub async fn run(options: &CompareOptions) -> anyhow::Result<Comparison> {
    let synod = find_binary("synod", options.synod.as_deref(), true)?;
    let etcd = find_binary("etcd", options.etcd.as_deref(), false)?;
    let known = plans_names(options.load_keys);
    if let Some(unknown) = options
        .only
        .iter()
        .find(|o| o.as_str() != DATASCALE && !known.split(", ").any(|name| name == o.as_str()))
    {
        bail!("--only {unknown}: no such workload; the workloads are {known}, {DATASCALE}");
    }
    let plans: Vec<Plan> = plans(options.load_keys)
        .into_iter()
        .filter(|p| options.only.is_empty() || options.only.iter().any(|o| o == p.name))
        .collect();
    fs::create_dir_all(&options.out).with_context(|| format!("create {}", options.out.display()))?;
    let (memory, rows) = if plans.is_empty() {
        let memory = Memory { keys: 0, value_size: 256, synod_bytes: Vec::new(), etcd_bytes: Vec::new() };
        (memory, Vec::new())
    } else {
        run_plans(&plans, &synod, &etcd, options).await?
    };
    let datascale = match &options.datascale {
        Some(datascale) if options.only.is_empty() || options.only.iter().any(|o| o == DATASCALE) => {
            let binaries = [(Kind::Etcd, etcd.clone()), (Kind::Synod, synod.clone())];
            Some(datascale::run(&binaries, &options.out, datascale).await?)
        }
        _ => None,
    };
    let comparison = Comparison {
        command: options.command.clone(),
        machine: machine(),
        synod_version: version(&synod),
        etcd_version: version(&etcd),
        seconds_per_run: options.duration.as_secs_f64(),
        memory,
        rows,
        datascale,
    };
    write_outputs(&comparison, options)?;
    Ok(comparison)
}

/// Loads both clusters, measures their memory, and runs the workloads on each in turn.
async fn run_plans(
    plans: &[Plan],
    synod: &Path,
    etcd: &Path,
    options: &CompareOptions,
) -> anyhow::Result<(Memory, Vec<Row>)> {
    eprintln!("starting 3 etcd members and 3 synod members under {}", options.out.display());
    let mut etcd_cluster = Cluster::start(Kind::Etcd, etcd, MEMBERS, &options.out).await?;
    let mut synod_cluster = Cluster::start(Kind::Synod, synod, MEMBERS, &options.out).await?;

    // The load doubles as the data the reads read.
    let load = Plan {
        name: "load",
        workload: Workload::Put(Data {
            key_size: 8,
            val_size: 256,
            key_space: options.load_keys.max(1),
            sequential: true,
        }),
        etcd_workload: None,
        clients: 100,
        conns: 10,
        rate: None,
        target: None,
    };
    let mut memory =
        Memory { keys: options.load_keys, value_size: 256, synod_bytes: Vec::new(), etcd_bytes: Vec::new() };
    if options.load_keys > 0 {
        for cluster in [&mut etcd_cluster, &mut synod_cluster] {
            let shape = shape(&load, cluster, Stop::Total(options.load_keys), options.progress);
            let report =
                workload::run(&load.workload, &shape, &format!("{} load", cluster.kind.name())).await?;
            if report.errors > 0 {
                bail!(
                    "loading {} keys into {} failed {} times: {:?}",
                    options.load_keys,
                    cluster.kind.name(),
                    report.errors,
                    report.error_kinds
                );
            }
            cluster.settle().await?;
            cluster.check_running()?;
            let bytes = cluster.resident_bytes()?;
            match cluster.kind {
                Kind::Synod => memory.synod_bytes = bytes,
                Kind::Etcd => memory.etcd_bytes = bytes,
            }
        }
    }

    let mut rows = Vec::with_capacity(plans.len());
    for (i, plan) in plans.iter().enumerate() {
        let order = if i % 2 == 0 { [Kind::Synod, Kind::Etcd] } else { [Kind::Etcd, Kind::Synod] };
        let mut synod_report = None;
        let mut etcd_report = None;
        let mut cpu = [0.0; 2];
        for kind in order {
            let cluster = if kind == Kind::Synod { &mut synod_cluster } else { &mut etcd_cluster };
            let shape = shape(plan, cluster, Stop::After(options.duration), options.progress);
            let label = format!("{} {}", kind.name(), plan.name);
            let workload = match (kind, &plan.etcd_workload) {
                (Kind::Etcd, Some(etcd_workload)) => etcd_workload,
                _ => &plan.workload,
            };
            let cpu_before = cluster.cpu_seconds()?;
            let report = workload::run(workload, &shape, &label).await.with_context(|| label.clone())?;
            cluster.check_running()?;
            cpu[usize::from(kind == Kind::Etcd)] = cluster.cpu_seconds()? - cpu_before;
            eprintln!(
                "{label}: {:.0} ops/s, p50 {}, p99 {}",
                report.throughput,
                duration_text(report.latency_us.p50),
                duration_text(report.latency_us.p99)
            );
            match kind {
                Kind::Synod => synod_report = Some(report),
                Kind::Etcd => etcd_report = Some(report),
            }
        }
        let (Some(synod), Some(etcd)) = (synod_report, etcd_report) else {
            unreachable!("both clusters ran")
        };
        rows.push(Row {
            name: plan.name.to_string(),
            shape: shape_text(plan),
            target: plan.target,
            synod,
            etcd,
            synod_cpu_seconds: cpu[0],
            etcd_cpu_seconds: cpu[1],
        });
    }
    Ok((memory, rows))
}

fn plans_names(load_keys: u64) -> String {
    plans(load_keys).iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
}

fn shape(plan: &Plan, cluster: &Cluster, stop: Stop, progress: bool) -> LoadShape {
    LoadShape {
        endpoints: cluster.endpoints(),
        clients: plan.clients,
        conns: plan.conns,
        stop,
        rate: plan.rate,
        progress,
    }
}

fn shape_text(plan: &Plan) -> String {
    let mut text = match &plan.workload {
        Workload::Watch { .. } => format!("{} watchers on {} streams", plan.clients, plan.conns),
        _ if plan.clients == 1 && plan.conns == 1 => "1 client, 1 conn".to_string(),
        _ => format!("{} clients, {} conns", plan.clients, plan.conns),
    };
    if let Some(rate) = plan.rate {
        let _ = write!(text, ", {rate} puts/s");
    }
    if let Some(etcd_workload) = &plan.etcd_workload {
        let _ = write!(text, "; synod {}, etcd {}", plan.workload.name(), etcd_workload.name());
    }
    text
}

fn write_outputs(comparison: &Comparison, options: &CompareOptions) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(comparison)?;
    let out = &options.out;
    fs::write(out.join("results.json"), json).context("write results.json")?;
    let plots = plot::write_all(comparison, out)?;
    let markdown = markdown(comparison, &plots, Path::new(""));
    fs::write(out.join("results.md"), &markdown).context("write results.md")?;
    println!("{markdown}");
    eprintln!("results in {}", out.display());
    if let Some(docs) = &options.write_docs {
        write_docs(comparison, docs, out)?;
        eprintln!("updated {}", docs.display());
    }
    Ok(())
}

/// Replaces the generated part of the benchmarks document, and copies the plots next to it.
fn write_docs(comparison: &Comparison, docs: &Path, out: &Path) -> anyhow::Result<()> {
    let text = fs::read_to_string(docs).with_context(|| format!("read {}", docs.display()))?;
    let (Some(begin), Some(end)) = (text.find(DOCS_BEGIN), text.find(DOCS_END)) else {
        bail!("{} has no generated part (the lines {DOCS_BEGIN} and {DOCS_END})", docs.display());
    };
    let plot_dir_name = "benchmarks";
    let plot_dir = docs.with_file_name(plot_dir_name);
    fs::create_dir_all(&plot_dir)?;
    let mut plots = Vec::new();
    for entry in fs::read_dir(out)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "svg") {
            let name = path.file_name().expect("a file").to_owned();
            fs::copy(&path, plot_dir.join(&name))?;
            plots.push(PathBuf::from(name));
        }
    }
    plots.sort();
    let generated = markdown(comparison, &plots, Path::new(plot_dir_name));
    let updated = format!("{}{DOCS_BEGIN}\n{generated}{}", &text[..begin], &text[end..]);
    fs::write(docs, updated).with_context(|| format!("write {}", docs.display()))
}

fn ratio(synod: f64, etcd: f64) -> f64 {
    if etcd > 0.0 { synod / etcd } else { f64::INFINITY }
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// The comparison as Markdown: the ratio table, the targets, memory, then the raw results.
pub fn markdown(c: &Comparison, plots: &[PathBuf], plot_dir: &Path) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Command: `{}`\n", c.command);
    let _ = writeln!(out, "- Machine: {}", c.machine);
    let _ = writeln!(out, "- synod: {}", c.synod_version);
    let _ = writeln!(out, "- etcd: {}", c.etcd_version);
    let _ = writeln!(
        out,
        "- Each cluster: 3 members on loopback, fsync on, data on the same disk; {:.0} s per workload and system, alternating which system goes first.\n",
        c.seconds_per_run
    );
    out.push_str("| workload | shape | synod ops/s | etcd ops/s | ratio | synod p50 | etcd p50 | synod p99 | etcd p99 | target | met |\n");
    out.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|\n");
    for row in &c.rows {
        let (target, met) = match row.target {
            Some(target) => (target.text(), if target.met(&row.synod, &row.etcd) { "yes" } else { "**no**" }),
            None => ("", ""),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.0} | {:.2}× | {} | {} | {} | {} | {target} | {met} |",
            row.name,
            row.shape,
            row.synod.throughput,
            row.etcd.throughput,
            row.throughput_ratio(),
            duration_text(row.synod.latency_us.p50),
            duration_text(row.etcd.latency_us.p50),
            duration_text(row.synod.latency_us.p99),
            duration_text(row.etcd.latency_us.p99),
        );
    }
    if c.rows.iter().any(|r| r.synod_cpu_seconds > 0.0) {
        out.push_str(
            "\nCPU time per request: user and system time of all three members together (from /proc), divided by the requests answered; the figure that carries over to a machine with more cores. For watch-latency, per event delivered.\n\n",
        );
        out.push_str("| workload | synod CPU/op | etcd CPU/op | synod/etcd |\n|---|---:|---:|---:|\n");
        for row in &c.rows {
            let per_op = |cpu: f64, report: &Report| {
                if report.ops > 0 { cpu * 1e6 / report.ops as f64 } else { f64::NAN }
            };
            let synod = per_op(row.synod_cpu_seconds, &row.synod);
            let etcd = per_op(row.etcd_cpu_seconds, &row.etcd);
            let _ = writeln!(out, "| {} | {synod:.0} µs | {etcd:.0} µs | {:.2} |", row.name, synod / etcd);
        }
    }
    let m = &c.memory;
    if !m.synod_bytes.is_empty() {
        let max = |bytes: &[u64]| bytes.iter().copied().max().unwrap_or(0);
        let list = |bytes: &[u64]| bytes.iter().map(|b| mib(*b)).collect::<Vec<_>>().join(", ");
        let met = if max(&m.synod_bytes) <= max(&m.etcd_bytes) { "yes" } else { "**no**" };
        let _ = writeln!(
            out,
            "\nResident memory per member after loading {} keys of {}-byte values (target: synod ≤ etcd, met: {met}):\n\n- synod: {}\n- etcd: {}",
            m.keys,
            m.value_size,
            list(&m.synod_bytes),
            list(&m.etcd_bytes)
        );
    }
    if let Some(datascale) = &c.datascale {
        out.push_str(&datascale::markdown(datascale));
    }
    let mut notes = String::new();
    for row in &c.rows {
        for (system, report) in [("synod", &row.synod), ("etcd", &row.etcd)] {
            for (key, value) in &report.extra {
                let _ = writeln!(notes, "- {} on {system}: {key} = {value}", row.name);
            }
            if report.errors > 0 {
                let _ = writeln!(
                    notes,
                    "- {} on {system}: {} failed requests: {:?}",
                    row.name, report.errors, report.error_kinds
                );
            }
        }
    }
    if !notes.is_empty() {
        let _ = writeln!(out, "\nNotes:\n\n{notes}");
    }
    if !plots.is_empty() {
        out.push('\n');
        for plot in plots {
            let path = plot_dir.join(plot);
            let _ = writeln!(out, "![{}]({})", plot.display(), path.display());
        }
    }
    out
}

/// The binary to run: the flag, else (for synod) the one beside synod-bench, else PATH.
pub fn find_binary(name: &str, flag: Option<&Path>, beside: bool) -> anyhow::Result<PathBuf> {
    if let Some(path) = flag {
        if path.is_file() {
            return Ok(path.to_path_buf());
        }
        bail!("{}: no such file", path.display());
    }
    let next_to_me = beside
        .then(|| std::env::current_exe().ok().map(|exe| exe.with_file_name(name)))
        .flatten()
        .filter(|p| p.is_file());
    let on_path = || {
        std::env::var_os("PATH")
            .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(name)).find(|p| p.is_file()))
    };
    next_to_me.or_else(on_path).with_context(|| match name {
        "etcd" => "cannot find etcd on PATH; install Debian's etcd-server (see the README) or pass --etcd"
            .to_string(),
        _ => format!("cannot find {name}; build it with `cargo build --release` or pass --{name}"),
    })
}

fn version(binary: &Path) -> String {
    let output = std::process::Command::new(binary).arg("--version").output();
    match output {
        Ok(output) => {
            let text = String::from_utf8_lossy(&output.stdout);
            text.lines().next().unwrap_or("unknown").trim().to_string()
        }
        Err(error) => format!("unknown ({error})"),
    }
}

/// CPU model, cores, memory and kernel, read from /proc.
fn machine() -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.trim().strip_suffix("kB"))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .map_or("unknown memory".into(), |kib| format!("{:.0} GiB", kib as f64 / (1024.0 * 1024.0)));
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{model}, {cores} cores, {memory}, Linux {}", kernel.trim())
}
