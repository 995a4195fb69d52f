//! The simulation smoke that CI runs: a handful of seeds must pass, a seed must replay
//! exactly, and the negative control must be caught. Longer runs: `synod-sim --seeds 200`
//! (README, "Testing").

use std::time::Duration;

use synod_check::{Call, Outcome};
use synod_sim::{Options, run_within};

/// Real time a seed may take in a debug build on a busy machine before the test calls it
/// stuck (a task spinning without letting simulated time pass).
const REAL_TIME_LIMIT: Duration = Duration::from_secs(600);

fn run(options: &Options) -> anyhow::Result<synod_sim::RunOutcome> {
    run_within(options, REAL_TIME_LIMIT)
}

/// Seeds CI checks on every change. They are fixed, so a failure here is a regression that
/// replays with `cargo run --release -p synod-sim -- --seed N --safety-secs 10`.
const SMOKE_SEEDS: std::ops::Range<u64> = 1..21;
const SAFETY_SECS: u64 = 10;

fn options(seed: u64, unsafe_local_reads: bool) -> Options {
    Options { seed, safety_secs: SAFETY_SECS, unsafe_local_reads }
}

/// Fixed seeds under every fault find nothing: no violation, no lost write, members that
/// recover and agree; and their histories exercise the counter and the lock, not only keys.
#[test]
fn smoke_seeds_find_no_violation() {
    let seeds = std::sync::Mutex::new(SMOKE_SEEDS);
    let failures = std::sync::Mutex::new(Vec::new());
    let answered = std::sync::Mutex::new(std::collections::BTreeSet::new());
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                while let Some(seed) = seeds.lock().unwrap_or_else(|p| p.into_inner()).next() {
                    let outcome = run(&options(seed, false)).expect("the simulation runs");
                    let kinds = outcome.history.iter().filter(|op| matches!(op.outcome, Outcome::Ok { .. }));
                    answered
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend(kinds.map(|op| call_kind(&op.call)));
                    let mut failed = Vec::new();
                    if outcome.history.len() < 50 {
                        failed.push(format!("only {} ops", outcome.history.len()));
                    }
                    if !outcome.ok() {
                        failed.push(format!("{}; problems {:?}", outcome.report.summary(), outcome.problems));
                    }
                    if !failed.is_empty() {
                        failures
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(format!("seed {seed}: {}", failed.join("; ")));
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap_or_else(|p| p.into_inner());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let answered = answered.into_inner().unwrap_or_else(|p| p.into_inner());
    for kind in ["add", "read_counter", "acquire", "release"] {
        assert!(answered.contains(kind), "no {kind} call was answered in the smoke seeds: {answered:?}");
    }
}

fn call_kind(call: &Call) -> &'static str {
    match call {
        Call::Get { .. } => "get",
        Call::Put { .. } => "put",
        Call::Delete { .. } => "delete",
        Call::Cas { .. } => "cas",
        Call::Add { .. } => "add",
        Call::ReadCounter { .. } => "read_counter",
        Call::Acquire { .. } => "acquire",
        Call::Release { .. } => "release",
    }
}

/// A seed decides the whole run: the same seed gives the same history and trace, another
/// seed a different one.
#[test]
fn a_seed_replays_exactly() {
    let first = run(&options(7, false)).expect("the simulation runs");
    let second = run(&options(7, false)).expect("the simulation runs");
    assert_eq!(first.trace, second.trace, "the same seed ran differently");
    assert_eq!(first.history, second.history);
    let other = run(&options(8, false)).expect("the simulation runs");
    assert_ne!(first.trace, other.trace, "two seeds ran the same: the seed decides nothing");
}

/// With reads served locally (no ReadIndex), the simulation must report a violation: a
/// checker that cannot fail proves nothing.
#[test]
fn the_negative_control_is_caught() {
    // A violation or a revision going backwards; an unknown verdict (the checker's budget
    // ran out) does not count as caught.
    let caught = (1..5).find(|&seed| {
        let report = run(&options(seed, true)).expect("the simulation runs").report;
        matches!(report.verdict, synod_check::Verdict::Violation(_))
            || !report.revision_regressions.is_empty()
    });
    assert!(caught.is_some(), "stale reads went unnoticed in 4 seeds");
}
