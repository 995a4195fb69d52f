//! Durability under crashes of the `synod` process: `kill -9` at random moments loses
//! nothing acknowledged, and a damaged data file is refused instead of served. (Power cuts,
//! which drop unsynced writes, are simulated in synod-consensus's `power_cut` tests.)

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::{Server, kv, metric, wait_for};
use synod_api::etcdserverpb::{PutRequest, RangeRequest};

#[derive(Clone, Debug)]
struct Ack {
    key: Vec<u8>,
    value: Vec<u8>,
    revision: i64,
}

/// A writer loop runs while synod is killed with SIGKILL at random moments and restarted.
/// After every restart each acknowledged write is present with its value and the revision
/// it was acknowledged with, and the store's revisions have no gaps: nothing acknowledged
/// is lost and nothing unwritten appears.
#[test]
fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut synod = Server::synod(dir.path());
    let seed: u64 = std::env::var("SYNOD_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0xdead_2026);
    let mut rng = StdRng::seed_from_u64(seed);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut acked: Vec<Ack> = Vec::new();
    let rounds = 8;
    for round in 0..rounds {
        let kill_after = Duration::from_millis(rng.random_range(30..400));
        let new_acks = runtime.block_on(async {
            let acks = Arc::new(Mutex::new(Vec::new()));
            let mut tasks = Vec::new();
            for writer in 0..8 {
                let mut client = kv(&synod).await;
                let acks = acks.clone();
                tasks.push(tokio::spawn(async move {
                    for i in 0.. {
                        let key = format!("r{round:02}/w{writer}/{i:06}").into_bytes();
                        let value = format!("value-of-{}", String::from_utf8_lossy(&key)).into_bytes();
                        let put = PutRequest { key: key.clone(), value: value.clone(), ..Default::default() };
                        match client.put(put).await {
                            Ok(response) => {
                                let revision = response.into_inner().header.expect("header").revision;
                                acks.lock().unwrap().push(Ack { key, value, revision });
                            }
                            Err(_) => return,
                        }
                    }
                }));
            }
            // The crash moment is random, counted from the first acknowledgement so that a
            // slow first fsync cannot leave a round with nothing to check; the writers stop
            // by themselves when it comes.
            let first_ack = tokio::time::Instant::now() + support::START_DEADLINE;
            while acks.lock().unwrap().is_empty() {
                assert!(tokio::time::Instant::now() < first_ack, "round {round}: no write was acknowledged");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            tokio::time::sleep(kill_after).await;
            synod.kill();
            for task in tasks {
                task.await.expect("writer task");
            }
            Arc::try_unwrap(acks).expect("the writers are done").into_inner().expect("no writer panicked")
        });
        assert!(!new_acks.is_empty(), "round {round}: no write was acknowledged before the kill");
        acked.extend(new_acks);
        synod.start();
        runtime.block_on(verify(&synod, &acked, seed, round));
    }
}

/// Checks every acknowledged write, and that the revisions of all stored keys are exactly
/// 2..=current: each put wrote one new key at one new revision.
async fn verify(synod: &Server, acked: &[Ack], seed: u64, round: usize) {
    let mut client = kv(synod).await;
    let all = RangeRequest { key: vec![0], range_end: vec![0], ..Default::default() };
    let response = client.range(all).await.expect("range after restart").into_inner();
    let current = response.header.as_ref().expect("header").revision;
    let stored: std::collections::HashMap<&[u8], (&[u8], i64)> =
        response.kvs.iter().map(|kv| (kv.key.as_slice(), (kv.value.as_slice(), kv.mod_revision))).collect();
    for ack in acked {
        let (value, revision) = stored.get(ack.key.as_slice()).unwrap_or_else(|| {
            panic!(
                "seed {seed}, round {round}: acknowledged key {} is missing",
                String::from_utf8_lossy(&ack.key)
            )
        });
        assert_eq!(*value, ack.value.as_slice(), "seed {seed}, round {round}: wrong value");
        assert_eq!(*revision, ack.revision, "seed {seed}, round {round}: acknowledged revision changed");
    }
    let mut revisions: Vec<i64> = response.kvs.iter().map(|kv| kv.mod_revision).collect();
    revisions.sort_unstable();
    let expected: Vec<i64> = (2..=current).collect();
    assert_eq!(revisions, expected, "seed {seed}, round {round}: revisions have gaps or repeats");
    for kv in &response.kvs {
        let expected = format!("value-of-{}", String::from_utf8_lossy(&kv.key));
        assert_eq!(
            kv.value,
            expected.as_bytes(),
            "seed {seed}, round {round}: a stored value was never written"
        );
    }
}

/// Flips one byte inside every copy of `needle` in the file at `path`; returns how many.
fn damage(path: &std::path::Path, needle: &[u8]) -> usize {
    let mut bytes = std::fs::read(path).expect("read data file");
    let mut hits = 0;
    let mut i = 0;
    while i + needle.len() <= bytes.len() {
        if &bytes[i..i + needle.len()] == needle {
            bytes[i + needle.len() / 2] ^= 0x20;
            hits += 1;
            i += needle.len();
        } else {
            i += 1;
        }
    }
    std::fs::write(path, bytes).expect("write data file");
    hits
}

/// A value damaged on disk makes the member refuse to start, with an error that says so,
/// instead of serving the damaged value.
#[test]
fn damaged_state_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut synod = Server::synod(dir.path());
    let value = b"a-value-that-appears-nowhere-else-in-the-files";
    tokio::runtime::Runtime::new().expect("runtime").block_on(async {
        let put = PutRequest { key: b"precious".to_vec(), value: value.to_vec(), ..Default::default() };
        kv(&synod).await.put(put).await.expect("put");
    });
    assert_eq!(synod.terminate(), Some(0), "clean shutdown");
    let state = synod.data_dir.join("member").join("state.redb");
    assert!(damage(&state, value) > 0, "the value is not in the state file");

    let exit = synod.start_expecting_exit();
    assert_ne!(exit, Some(0), "synod started on a damaged file");
    let log = synod.log();
    assert!(log.contains("corrupt"), "the error does not say the data is corrupt:\n{log}");
}

/// With `--snapshot-count 1` the log is purged behind the durable state as soon as enough
/// entries accumulate; a `kill -9` after purges still loses no acknowledged write, and the
/// restarted member replays only what the state lacks.
#[test]
fn purged_log_still_recovers_after_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut synod = Server::synod_with(dir.path(), &["--snapshot-count", "1"]);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let acked = runtime.block_on(async {
        let mut tasks = Vec::new();
        for writer in 0..8 {
            let mut client = kv(&synod).await;
            tasks.push(tokio::spawn(async move {
                let mut acks = Vec::new();
                for i in 0..800 {
                    let key = format!("w{writer}/{i:04}").into_bytes();
                    let value = format!("value-of-{}", String::from_utf8_lossy(&key)).into_bytes();
                    let put = PutRequest { key: key.clone(), value: value.clone(), ..Default::default() };
                    let revision =
                        client.put(put).await.expect("put").into_inner().header.expect("header").revision;
                    acks.push(Ack { key, value, revision });
                }
                acks
            }));
        }
        let mut acked = Vec::new();
        for task in tasks {
            acked.extend(task.await.expect("writer"));
        }
        acked
    });
    // The purge rides on the next append after a checkpoint allows it: keep writing until
    // the log's first index moves.
    let mut nudges = 0;
    let mut last_nudge = None;
    let purged_to = wait_for("the log to be purged", Duration::from_secs(60), || {
        nudges += 1;
        let value = format!("nudge-{nudges}").into_bytes();
        let put = PutRequest { key: b"nudge".to_vec(), value: value.clone(), ..Default::default() };
        let response = runtime.block_on(async { kv(&synod).await.put(put).await }).expect("nudge");
        let revision = response.into_inner().header.expect("header").revision;
        last_nudge = Some(Ack { key: b"nudge".to_vec(), value, revision });
        let first = metric(&synod, "synod_log_first_index");
        (first > 1).then_some(first)
    });
    assert!(purged_to > 1000, "the log was purged only to {purged_to}");
    synod.kill();
    synod.start();
    let expected: Vec<Ack> = acked;
    runtime.block_on(async {
        let mut client = kv(&synod).await;
        // The nudges overwrite one key: the last acknowledged one must be there, written
        // after the purge, so it comes from the purged log's tail.
        let nudge = last_nudge.expect("at least one nudge");
        let stored =
            client.range(RangeRequest { key: b"nudge".to_vec(), ..Default::default() }).await.expect("range");
        let stored = stored.into_inner().kvs.pop().expect("the last nudge survives");
        assert_eq!(
            (stored.value, stored.mod_revision),
            (nudge.value, nudge.revision),
            "the last nudge was lost"
        );
        let all = RangeRequest { key: b"w".to_vec(), range_end: b"x".to_vec(), ..Default::default() };
        let stored = client.range(all).await.expect("range").into_inner();
        assert_eq!(stored.kvs.len(), expected.len(), "keys lost after purge and restart");
        let by_key: std::collections::HashMap<&[u8], (&[u8], i64)> =
            stored.kvs.iter().map(|kv| (kv.key.as_slice(), (kv.value.as_slice(), kv.mod_revision))).collect();
        for ack in &expected {
            assert_eq!(
                by_key.get(ack.key.as_slice()),
                Some(&(ack.value.as_slice(), ack.revision)),
                "acknowledged write changed"
            );
        }
    });
}
