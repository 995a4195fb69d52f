//! Durability under crashes: `kill -9` at random moments loses nothing acknowledged, and a
//! damaged data file is refused instead of served.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::{Server, kv};
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
            // The crash moment is random; the writers stop by themselves when it comes.
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
