//! Random histories that are linearizable by construction, and the same histories with one
//! read made certainly illegal: the checker must accept the first and reject the second.
//! Also the performance check: a history the size of a long test run finishes in budget.
//!
//! A history is built from a sequential execution: each op gets a point on a timeline where
//! it takes effect, the model's answer at that point, and a random interval around the
//! point during which its client waits. Any interval containing the point keeps the
//! sequential order a valid linearization.

use std::collections::HashSet;

use super::*;

/// A xorshift64* generator: enough randomness for tests, seeded so a failure replays.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // A zero state would stay zero; mixing the seed also spreads nearby seeds apart.
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A number in `low..=high`.
    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low + 1)
    }

    fn percent(&mut self, chance: u64) -> bool {
        self.below(100) < chance
    }
}

/// The shape of a random history.
struct Shape {
    clients: u32,
    ops: usize,
    keys: usize,
    /// Share of writes whose client gets no answer; half of them take effect.
    unknown_percent: u64,
    /// Longest time from a call to its effect, and from the effect to the return: with
    /// effects `GAP_NS` apart, about `2 * spread_ns / GAP_NS` ops overlap.
    spread_ns: u64,
}

const GAP_NS: u64 = 10;

/// A linearizable history of registers, with the revisions a store would report.
fn generate(seed: u64, shape: &Shape) -> Vec<Op> {
    let mut rng = Rng::new(seed);
    let mut values: Vec<Option<String>> = vec![None; shape.keys];
    // Every value a key ever held, for compare-and-swaps that expect a stale one.
    let mut written: Vec<Vec<String>> = vec![Vec::new(); shape.keys];
    let mut free_at_ns: Vec<u64> = vec![0; shape.clients as usize];
    let mut revision = 1;
    let mut history = Vec::with_capacity(shape.ops);
    let mut effect_ns = 1000;
    for sequence in 0..shape.ops {
        effect_ns += GAP_NS;
        // A client is free once its last op returned before this op's effect.
        let free: Vec<u32> = (0..shape.clients).filter(|&c| free_at_ns[c as usize] < effect_ns).collect();
        let client = if free.is_empty() {
            let (client, &free_ns) =
                free_at_ns.iter().enumerate().min_by_key(|&(_, &ns)| ns).expect("there is a client");
            effect_ns = free_ns + 1;
            client as u32
        } else {
            free[rng.below(free.len() as u64) as usize]
        };
        let key = rng.below(shape.keys as u64) as usize;
        let name = format!("k{key}");
        let state = &mut values[key];
        let value = format!("c{client}-{sequence}");

        let roll = rng.below(100);
        let unknown = roll >= 35 && rng.percent(shape.unknown_percent);
        // An unknown write takes effect here half the time, and never otherwise.
        let takes_effect = !unknown || rng.percent(50);
        let before = state.clone();
        let (call, reply) = if roll < 35 {
            (Call::Get { key: name }, Reply::Get { value: state.clone() })
        } else if roll < 65 {
            if takes_effect {
                *state = Some(value.clone());
            }
            (Call::Put { key: name, value }, Reply::Put)
        } else if roll < 85 {
            let expect = if rng.percent(60) || written[key].is_empty() {
                state.clone()
            } else if rng.percent(20) {
                None
            } else {
                Some(written[key][rng.below(written[key].len() as u64) as usize].clone())
            };
            let succeeded = expect == *state;
            if succeeded && takes_effect {
                *state = Some(value.clone());
            }
            (Call::Cas { key: name, expect, value }, Reply::Cas { succeeded })
        } else {
            let deleted = state.is_some();
            if takes_effect {
                *state = None;
            }
            (Call::Delete { key: name }, Reply::Delete { deleted })
        };
        if *state != before {
            revision += 1;
        }
        if let Some(value) = state.clone()
            && before.as_ref() != Some(&value)
        {
            written[key].push(value);
        }

        let earliest_call_ns =
            (free_at_ns[client as usize] + 1).max(effect_ns.saturating_sub(shape.spread_ns));
        let call_ns = rng.between(earliest_call_ns, effect_ns);
        let return_ns = rng.between(effect_ns, effect_ns + shape.spread_ns);
        free_at_ns[client as usize] = return_ns;
        let outcome = if unknown {
            Outcome::Unknown { error: "deadline exceeded".into() }
        } else {
            Outcome::Ok { reply, revision: Some(revision) }
        };
        history.push(Op { client, member: format!("m{}", client % 3), call_ns, return_ns, call, outcome });
    }
    history
}

/// Makes one read in `history` return a value that is certainly illegal: one whose write
/// returned before another write replaced it, and that replacement returned before the read
/// was called. Values are unique, so nothing can bring the old value back. Returns the read,
/// or `None` if the history has no such read.
fn make_stale_read(rng: &mut Rng, history: &mut [Op]) -> Option<usize> {
    let overwrites = |op: &Op| match (&op.call, &op.outcome) {
        (Call::Put { .. }, Outcome::Ok { .. }) => true,
        (Call::Cas { .. }, Outcome::Ok { reply: Reply::Cas { succeeded }, .. }) => *succeeded,
        (Call::Delete { .. }, Outcome::Ok { reply: Reply::Delete { deleted }, .. }) => *deleted,
        _ => false,
    };
    let written = |op: &Op| match &op.call {
        Call::Put { value, .. } | Call::Cas { value, .. } if overwrites(op) => Some(value.clone()),
        _ => None,
    };
    let mut candidates: Vec<(usize, String)> = Vec::new();
    for (read, op) in history.iter().enumerate() {
        if !matches!((&op.call, &op.outcome), (Call::Get { .. }, Outcome::Ok { .. })) {
            continue;
        }
        let key = op.call.object();
        let same_key_before = |other: &Op, ns: u64| other.call.object() == key && other.return_ns < ns;
        let stale = history
            .iter()
            .filter(|replacement| same_key_before(replacement, op.call_ns) && overwrites(replacement))
            .find_map(|replacement| {
                history.iter().filter(|old| same_key_before(old, replacement.call_ns)).find_map(&written)
            });
        if let Some(stale) = stale {
            candidates.push((read, stale));
        }
    }
    if candidates.is_empty() {
        return None;
    }
    let (read, stale) = candidates.swap_remove(rng.below(candidates.len() as u64) as usize);
    history[read].outcome = Outcome::Ok { reply: Reply::Get { value: Some(stale) }, revision: None };
    Some(read)
}

/// Random linearizable histories of a few clients are accepted, and each with one read made
/// stale is rejected at the key of that read.
#[test]
fn random_histories_accepted_and_stale_reads_rejected() {
    let mut rejected = 0;
    for seed in 1..=300 {
        let mut rng = Rng::new(seed);
        let shape = Shape {
            clients: rng.between(2, 5) as u32,
            ops: rng.between(10, 80) as usize,
            keys: rng.between(1, 3) as usize,
            unknown_percent: 10,
            spread_ns: rng.between(5, 40),
        };
        let mut history = generate(seed, &shape);
        let report = check(&history, BUDGET);
        assert!(report.is_ok(), "seed {seed}: {}", report.summary());

        let Some(read) = make_stale_read(&mut rng, &mut history) else {
            continue;
        };
        let report = check(&history, BUDGET);
        let Verdict::Violation(violation) = &report.verdict else {
            panic!("seed {seed}: a stale read by op {read} was accepted: {}", report.summary());
        };
        assert_eq!(violation.object, history[read].call.object(), "seed {seed}: {}", violation.message);
        assert!(!violation.stuck.is_empty(), "seed {seed}");
        rejected += 1;
    }
    // Most histories are long enough to have a read that can be made stale.
    assert!(rejected > 200, "only {rejected} histories could be made stale");
}

/// The generator overlaps ops as intended: without concurrency the test above would only
/// prove that sequential histories work.
#[test]
fn random_histories_overlap() {
    let shape = Shape { clients: 4, ops: 1000, keys: 1, unknown_percent: 0, spread_ns: 40 };
    let history = generate(7, &shape);
    let overlapping = history.windows(2).filter(|pair| pair[1].call_ns < pair[0].return_ns).count();
    assert!(overlapping > 300, "only {overlapping} of 1000 ops overlap the one before");
    let clients: HashSet<u32> = history.iter().map(|op| op.client).collect();
    assert_eq!(clients.len(), 4);
}

/// A long run's history (16,000 ops by 8 clients over 5 keys, a few with unknown outcomes)
/// is checked within the budget.
#[test]
fn long_history_is_checked_in_budget() {
    let shape = Shape { clients: 8, ops: 16_000, keys: 5, unknown_percent: 2, spread_ns: 60 };
    let history = generate(42, &shape);
    let report = check(&history, Duration::from_secs(20));
    assert_eq!(report.verdict, Verdict::Linearizable, "{}", report.summary());
    assert!(report.is_ok(), "{}", report.summary());
    assert_eq!(report.objects, 5);
}
