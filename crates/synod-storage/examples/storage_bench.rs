//! Measures synod's own storage access pattern on this machine: durable log appends
//! (batch of 1 and of 64 entries, one fsync each), applying puts to the MVCC state,
//! point reads and range scans through the state store, checkpoints, and reopening.
//!
//! Run: `cargo run --release -p synod-storage --example storage_bench [-- DIR]`
//! (DIR defaults to a temporary directory on the same disk as the target directory).

use std::time::{Duration, Instant};

use prost::Message;
use synod_api::etcdserverpb::{PutRequest, RangeRequest};
use synod_api::synodpb::{Command, command};
use synod_base::{GroupId, LogIndex};
use synod_storage::{LogStore, StateStore};

const VALUE_BYTES: usize = 256;
const KEYS: u64 = 200_000;

fn command(i: u64) -> Command {
    Command {
        op: Some(command::Op::Put(PutRequest {
            key: format!("/registry/bench/{i:012}").into_bytes(),
            value: vec![b'v'; VALUE_BYTES],
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn report(what: &str, count: u64, elapsed: Duration) {
    let per_second = count as f64 / elapsed.as_secs_f64();
    let micros = elapsed.as_secs_f64() * 1e6 / count as f64;
    println!("| {what} | {count} | {:.0} | {micros:.1} |", per_second);
}

fn main() {
    let base = std::env::args().nth(1).map(std::path::PathBuf::from).unwrap_or_else(|| "target".into());
    let dir = tempfile::tempdir_in(&base).expect("temporary directory");
    println!("| operation | count | per second | µs each |");
    println!("|---|---|---|---|");

    let log = LogStore::open(&dir.path().join("log")).expect("open log");
    let entry = command(0).encode_to_vec();
    let mut index = 1;
    for batch in [1u64, 64] {
        let appends = if batch == 1 { 2000 } else { 250 };
        let started = Instant::now();
        for _ in 0..appends {
            let entries: Vec<(LogIndex, &[u8])> =
                (0..batch).map(|i| (LogIndex(index + i), entry.as_slice())).collect();
            log.append(GroupId::FIRST, &entries, None).expect("append");
            index += batch;
        }
        let elapsed = started.elapsed();
        report(&format!("log append, {batch} entries per fsync (appends)"), appends, elapsed);
        report(&format!("log append, {batch} entries per fsync (entries)"), appends * batch, elapsed);
    }

    let state = StateStore::open(&dir.path().join("state.redb"), GroupId::FIRST).expect("open state");
    let commands: Vec<Command> = (0..KEYS).map(command).collect();
    let started = Instant::now();
    for (chunk_index, chunk) in commands.chunks(64).enumerate() {
        let first = chunk_index as u64 * 64 + 1;
        let entries: Vec<(LogIndex, Option<&Command>)> =
            chunk.iter().enumerate().map(|(i, c)| (LogIndex(first + i as u64), Some(c))).collect();
        state.apply(&entries, &[]).expect("apply");
    }
    report("state apply, puts in batches of 64 (not synced)", KEYS, started.elapsed());

    let started = Instant::now();
    state.checkpoint().expect("checkpoint");
    report("state checkpoint after 200k puts (2 fsyncs)", 1, started.elapsed());

    let reads = 100_000;
    let started = Instant::now();
    for i in 0..reads {
        let key = format!("/registry/bench/{:012}", (i * 7919) % KEYS).into_bytes();
        let response =
            state.range(&RangeRequest { key, ..Default::default() }).expect("range").expect("valid");
        assert_eq!(response.kvs.len(), 1);
    }
    report("point read (Range of one key)", reads, started.elapsed());

    let scans = 20;
    let started = Instant::now();
    for _ in 0..scans {
        let request = RangeRequest {
            key: b"/registry/".to_vec(),
            range_end: b"/registry0".to_vec(),
            ..Default::default()
        };
        let response = state.range(&request).expect("range").expect("valid");
        assert_eq!(response.kvs.len() as u64, KEYS);
    }
    report("full scan of 200k keys (scans)", scans, started.elapsed());
    report("full scan of 200k keys (keys)", scans * KEYS, started.elapsed());

    let started = Instant::now();
    for _ in 0..scans {
        let request = RangeRequest {
            key: b"/registry/".to_vec(),
            range_end: b"/registry0".to_vec(),
            limit: 500,
            ..Default::default()
        };
        let response = state.range(&request).expect("range").expect("valid");
        assert_eq!(response.kvs.len(), 500);
    }
    report("paged scan, limit 500 (pages)", scans, started.elapsed());

    drop(state);
    let started = Instant::now();
    let state = StateStore::open(&dir.path().join("state.redb"), GroupId::FIRST).expect("reopen state");
    report("reopen state with 200k keys (verify + rebuild index)", 1, started.elapsed());
    println!();
    println!(
        "state file: {} bytes; log file: {} bytes",
        state.stats().size_bytes,
        std::fs::metadata(log.path()).map(|m| m.len()).unwrap_or(0)
    );
}
