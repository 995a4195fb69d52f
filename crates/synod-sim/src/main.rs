//! `synod-sim`: runs seeds of the deterministic simulation and reports any violation.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use clap::Parser;
use synod_sim::{Options, RunOutcome};

/// Real time one seed may take (a release build needs seconds): past it, a task is spinning.
const REAL_TIME_LIMIT: std::time::Duration = std::time::Duration::from_secs(600);

/// Simulates synod clusters under faults, one seed per run, and checks every history.
#[derive(Parser, Debug)]
#[command(name = "synod-sim", version)]
struct Args {
    /// Run this many seeds, from --first on.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    seeds: u64,
    /// The first seed [default: one drawn at random, and printed].
    #[arg(long)]
    first: Option<u64>,
    /// Run exactly this seed (the same as --first S --seeds 1), printing its faults.
    #[arg(long, conflicts_with_all = ["seeds", "first"])]
    seed: Option<u64>,
    /// Simulated seconds of faults per seed.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3600))]
    safety_secs: u64,
    /// Seeds run at once [default: the number of CPUs].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    jobs: Option<u16>,
    /// Run every seed twice and require the same trace hash (replay is exact).
    #[arg(long)]
    check_determinism: bool,
    /// The negative control: members serve linearizable reads without ReadIndex. The
    /// run must then report violations.
    #[arg(long)]
    unsafe_local_reads: bool,
    /// Where the history and the picture of a failing seed go.
    #[arg(long, default_value = "synod-sim-out")]
    out: PathBuf,
    /// Log what the members do (very verbose).
    #[arg(long)]
    verbose: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.verbose {
        tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    }
    let (first, count) = match args.seed {
        Some(seed) => (seed, 1),
        // Small numbers, easy to type back.
        None => (args.first.unwrap_or_else(|| u64::from(rand::random::<u32>())), args.seeds),
    };
    let Some(end) = first.checked_add(count) else {
        eprintln!("synod-sim: --first {first} with --seeds {count} runs past the largest seed");
        return ExitCode::from(2);
    };
    println!("synod-sim: seeds {first}..{} ({count}), {}s of faults each", end - 1, args.safety_secs);
    let jobs =
        args.jobs.map_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()), usize::from);
    let next = AtomicU64::new(first);
    let failed: Mutex<Vec<u64>> = Mutex::new(Vec::new());
    let errors = AtomicU64::new(0);
    let started = std::time::Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(count as usize) {
            scope.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= end {
                        return;
                    }
                    let options = Options {
                        seed,
                        safety_secs: args.safety_secs,
                        unsafe_local_reads: args.unsafe_local_reads,
                    };
                    match run_seed(&options, &args) {
                        Ok(true) => {}
                        Ok(false) => failed.lock().unwrap_or_else(|p| p.into_inner()).push(seed),
                        Err(e) => {
                            eprintln!("seed {seed}: harness error: {e:#}");
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
    });
    let mut failed = failed.into_inner().unwrap_or_else(|p| p.into_inner());
    failed.sort_unstable();
    println!(
        "synod-sim: {count} seeds in {:.1}s: {} failed{}, {} harness errors",
        started.elapsed().as_secs_f64(),
        failed.len(),
        if failed.is_empty() { String::new() } else { format!(" ({failed:?})") },
        errors.load(Ordering::Relaxed)
    );
    match (failed.is_empty(), errors.load(Ordering::Relaxed)) {
        (true, 0) => ExitCode::SUCCESS,
        (false, _) => ExitCode::from(1),
        (true, _) => ExitCode::from(2),
    }
}

/// Runs one seed (twice with --check-determinism); true when it found nothing wrong.
fn run_seed(options: &Options, args: &Args) -> anyhow::Result<bool> {
    let seed = options.seed;
    let started = std::time::Instant::now();
    let outcome = synod_sim::run_within(options, REAL_TIME_LIMIT)?;
    let mut ok = outcome.ok();
    let mut line = format!(
        "seed {seed}: {} members, {} ops, {} faults, trace {}, {:.1}s: {}",
        outcome.setup.members.len(),
        outcome.history.len(),
        outcome.faults.len(),
        outcome.trace,
        started.elapsed().as_secs_f64(),
        if ok { "ok" } else { "VIOLATION" }
    );
    if args.check_determinism || !ok {
        let again = synod_sim::run_within(options, REAL_TIME_LIMIT)?;
        let same = again.trace == outcome.trace;
        line.push_str(if same { " (replays exactly)" } else { " (REPLAY DIFFERS)" });
        if !same {
            line.push_str(&format!(": second trace {}", again.trace));
            ok = false;
        }
    }
    println!("{line}");
    if args.seed.is_some() {
        for fault in &outcome.faults {
            println!("  {fault}");
        }
    }
    if !outcome.ok() {
        let dir = args.out.join(format!("seed-{seed}"));
        write_failure(&dir, &outcome)?;
        println!("  {}", outcome.report.summary().replace('\n', "\n  "));
        for problem in &outcome.problems {
            println!("  problem: {problem}");
        }
        println!("  history, faults and picture in {}", dir.display());
        println!("  replay: cargo run --release -p synod-sim -- --seed {seed}");
    }
    Ok(ok)
}

fn write_failure(dir: &Path, outcome: &RunOutcome) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut history = std::io::BufWriter::new(std::fs::File::create(dir.join("history.jsonl"))?);
    synod_check::write_jsonl(&mut history, &outcome.history)?;
    history.flush()?;
    let mut faults = outcome.faults.join("\n");
    faults.push('\n');
    for problem in &outcome.problems {
        faults.push_str(&format!("problem: {problem}\n"));
    }
    std::fs::write(dir.join("faults.log"), faults)?;
    std::fs::write(dir.join("report.html"), synod_check::render_html(&outcome.history, &outcome.report))?;
    Ok(())
}
