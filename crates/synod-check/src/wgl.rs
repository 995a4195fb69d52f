//! The Wing–Gong–Lowe search for a linearization of one object's operations, with Lowe's
//! memoization, as Anish Athalye's Porcupine does it.
//!
//! The calls and returns of all operations form one list sorted by time. The search walks
//! it from the front: at a call it tries to place that operation next (the model must
//! accept its reply in the current state); a placed operation is lifted out of the list,
//! call and return, and the walk restarts from the front. Reaching a return means the
//! operation it belongs to had to be placed by now and was not, so the search takes back
//! the last placement and tries the call after it instead. The list running empty means
//! every operation was placed: the history is linearizable. Running out of placements to
//! take back means no order works.
//!
//! Two configurations with the same set of placed operations and the same model state have
//! the same future, so each is explored once (Lowe's memoization): that is what keeps the
//! search fast on the histories real tests produce, where only a few operations overlap.
//!
//! One addition to Porcupine: the search stops as soon as every op with a known outcome is
//! placed. The ops left then all have unknown outcomes, which the models accept in every
//! state, so they can go last, where nothing observes them.
//!
//! A known limit, shared with Porcupine: an op with an unknown outcome stays a candidate
//! until the end of the history. Every such write that nobody observes can be placed or
//! left out at each later point, which doubles the configurations behind it, so proving
//! that no order exists (a violation) in a long history with tens of unknown writes on one
//! key can take longer than any budget; the verdict is then unknown. Linearizable histories
//! are not affected: the search places each unknown write early and finds an order fast
//! (16,000 ops with a fifth of the writes unknown take well under a second). Two remedies
//! were tried on 4,000 ops on one key with one stale read and 5% of the writes unknown, and
//! neither proved the violation in 20 s: skipping configurations that differ from one
//! entered before only by placing more unknown ops (sound, but in this search order the
//! larger configurations are entered first), and trying known ops before unknown ones so
//! that the smaller come first (which made 16,000 linearizable ops with 10% of the writes
//! unknown run out of a 60 s budget).

use std::collections::HashSet;
use std::time::Instant;

use crate::history::{Call, Reply};
use crate::limits;
use crate::model::Model;

/// One operation as the search sees it.
pub struct Entry<'a> {
    pub input: &'a Call,
    /// `None` when the outcome is unknown.
    pub output: Option<&'a Reply>,
    pub call_ns: u64,
    /// `u64::MAX` when the outcome is unknown: it may take effect at any time after its call.
    pub return_ns: u64,
}

/// How a search ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Search {
    Linearizable,
    Violation(Deepest),
    /// The deadline passed, or the memo grew past its bound, before an answer.
    OutOfBudget,
}

/// The deepest point a failed search reached. Operations are named by their position in
/// the slice searched.
#[derive(Debug, PartialEq, Eq)]
pub struct Deepest {
    /// The longest order of operations the search could place, in order.
    pub longest_prefix: Vec<usize>,
    /// The operations that were candidates to come next after that prefix: those whose
    /// call precedes the earliest return still pending.
    pub stuck: Vec<usize>,
    /// The model state after the prefix, for the message.
    pub state: String,
}

/// Searches for an order of `entries` that `model` accepts and that respects real time.
pub fn search<M: Model>(model: &M, entries: &[Entry<'_>], deadline: Instant) -> Search {
    let mut list = EventList::new(entries);
    let mut linearized = Bitset::new(entries.len());
    let mut state = model.init();
    let mut known_left = entries.iter().filter(|entry| entry.output.is_some()).count();
    // The ops placed so far, each with the state before it, to take it back.
    let mut placed: Vec<(usize, M::State)> = Vec::new();
    let mut seen: HashSet<(Bitset, M::State)> = HashSet::new();
    // Past this many memo entries the search gives up rather than exhaust memory.
    let seen_max = limits::MEMO_WORDS_MAX / linearized.words().max(1);
    // The deepest point the search got stuck at, as the violation to report if it fails.
    let mut longest: Option<Deepest> = None;

    let mut node = list.first();
    let mut steps: u64 = 0;
    while let Some(current) = node {
        if known_left == 0 {
            // The ops left all have unknown outcomes: they can go last.
            return Search::Linearizable;
        }
        steps += 1;
        if steps.is_multiple_of(limits::STEPS_PER_DEADLINE_CHECK) && Instant::now() >= deadline {
            return Search::OutOfBudget;
        }
        let op = list.op(current);
        if list.is_call(current) {
            let entry = &entries[op];
            let Some(next_state) = model.step(&state, entry.input, entry.output) else {
                node = list.next(current);
                continue;
            };
            let mut next_linearized = linearized.clone();
            next_linearized.set(op);
            let configuration = (next_linearized, next_state);
            if seen.contains(&configuration) {
                // This configuration was entered before and led nowhere.
                node = list.next(current);
                continue;
            }
            if seen.len() >= seen_max {
                return Search::OutOfBudget;
            }
            seen.insert(configuration.clone());
            let (next_linearized, next_state) = configuration;
            placed.push((op, std::mem::replace(&mut state, next_state)));
            linearized = next_linearized;
            if entry.output.is_some() {
                known_left -= 1;
            }
            list.lift(op);
            node = list.first();
        } else {
            // The op this return belongs to was not placed before its return: every call
            // before `current` was tried next and failed.
            if longest.as_ref().is_none_or(|longest| placed.len() > longest.longest_prefix.len()) {
                longest = Some(Deepest {
                    longest_prefix: placed.iter().map(|(op, _)| *op).collect(),
                    stuck: list.window(),
                    state: format!("{state:?}"),
                });
            }
            let Some((op, before)) = placed.pop() else {
                return Search::Violation(longest.expect("recorded just above"));
            };
            state = before;
            linearized.clear(op);
            if entries[op].output.is_some() {
                known_left += 1;
            }
            list.unlift(op);
            node = list.next(list.call_node(op));
        }
    }
    // The list only runs out once every op is placed.
    Search::Linearizable
}

/// A sentinel for "no node" in [`EventList`]'s links.
const NIL: usize = usize::MAX;

/// The calls and returns of all operations as a doubly linked list sorted by time, from
/// which a placed operation's two events are lifted out and put back in last-out-first-in
/// order (dancing links): an unlinked node keeps its own links, so putting it back is two
/// pointer writes.
///
/// Node 0 is the head; node `1 + 2 * op` is the call of `op` and `2 + 2 * op` its return.
struct EventList {
    next: Vec<usize>,
    prev: Vec<usize>,
}

impl EventList {
    fn new(entries: &[Entry<'_>]) -> EventList {
        let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * entries.len());
        for (op, entry) in entries.iter().enumerate() {
            events.push((entry.call_ns, false, 1 + 2 * op));
            events.push((entry.return_ns, true, 2 + 2 * op));
        }
        // At equal times calls sort before returns: an operation called at the instant
        // another returned counts as concurrent with it, which only ever allows more orders.
        // A false violation would be worse than a missed one from a coarse clock.
        events.sort_unstable();
        let nodes = 1 + events.len();
        let mut next = vec![NIL; nodes];
        let mut prev = vec![NIL; nodes];
        let mut last = 0;
        for (_, _, node) in events {
            next[last] = node;
            prev[node] = last;
            last = node;
        }
        EventList { next, prev }
    }

    fn first(&self) -> Option<usize> {
        self.next(0)
    }

    fn next(&self, node: usize) -> Option<usize> {
        let next = self.next[node];
        (next != NIL).then_some(next)
    }

    fn op(&self, node: usize) -> usize {
        (node - 1) / 2
    }

    fn is_call(&self, node: usize) -> bool {
        node % 2 == 1
    }

    fn call_node(&self, op: usize) -> usize {
        1 + 2 * op
    }

    /// The ops that may come next: those whose calls come before the first return.
    fn window(&self) -> Vec<usize> {
        let mut calls = Vec::new();
        let mut at = self.next[0];
        while at != NIL && self.is_call(at) {
            calls.push(self.op(at));
            at = self.next[at];
        }
        calls
    }

    fn unlink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = next;
        if next != NIL {
            self.prev[next] = prev;
        }
    }

    fn relink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = node;
        if next != NIL {
            self.prev[next] = node;
        }
    }

    /// Takes `op`'s call and return out of the list.
    fn lift(&mut self, op: usize) {
        self.unlink(1 + 2 * op);
        self.unlink(2 + 2 * op);
    }

    /// Puts back the operation lifted last, in the reverse order of [`EventList::lift`].
    fn unlift(&mut self, op: usize) {
        self.relink(2 + 2 * op);
        self.relink(1 + 2 * op);
    }
}

/// A fixed-size set of operations, hashed with the model state for the memo.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bitset(Vec<u64>);

impl Bitset {
    fn new(bits: usize) -> Bitset {
        Bitset(vec![0; bits.div_ceil(64)])
    }

    fn words(&self) -> usize {
        self.0.len()
    }

    fn set(&mut self, bit: usize) {
        self.0[bit / 64] |= 1 << (bit % 64);
    }

    fn clear(&mut self, bit: usize) {
        self.0[bit / 64] &= !(1 << (bit % 64));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::Register;

    fn deadline() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    /// The list yields events in time order, calls first at equal times, and lifting and
    /// putting back operations in stack order restores it exactly.
    #[test]
    fn event_list_lifts_and_restores() {
        let call = Call::Get { key: "k".into() };
        let entry = |call_ns, return_ns| Entry { input: &call, output: None, call_ns, return_ns };
        let entries = [entry(0, 10), entry(10, 20), entry(5, 30)];
        let mut list = EventList::new(&entries);
        let order = |list: &EventList| {
            let mut nodes = Vec::new();
            let mut node = list.first();
            while let Some(n) = node {
                nodes.push((list.op(n), list.is_call(n)));
                node = list.next(n);
            }
            nodes
        };
        let full = vec![(0, true), (2, true), (1, true), (0, false), (1, false), (2, false)];
        assert_eq!(order(&list), full);
        list.lift(1);
        list.lift(0);
        assert_eq!(order(&list), vec![(2, true), (2, false)]);
        list.unlift(0);
        list.unlift(1);
        assert_eq!(order(&list), full);
    }

    /// Two overlapping writes and a read of the first one: the search must place the read
    /// before the second write's effect, which needs it to back out of its first guess.
    #[test]
    fn search_backtracks_to_find_an_order() {
        let (put_a, put_b) = (
            Call::Put { key: "k".into(), value: "a".into() },
            Call::Put { key: "k".into(), value: "b".into() },
        );
        let get = Call::Get { key: "k".into() };
        let (ok, read_a) = (Reply::Put, Reply::Get { value: Some("a".into()) });
        let entries = [
            Entry { input: &put_b, output: Some(&ok), call_ns: 0, return_ns: 100 },
            Entry { input: &put_a, output: Some(&ok), call_ns: 10, return_ns: 20 },
            Entry { input: &get, output: Some(&read_a), call_ns: 30, return_ns: 40 },
        ];
        assert_eq!(search(&Register, &entries, deadline()), Search::Linearizable);
    }

    /// A read of a value nobody wrote has nowhere to go: the prefix is empty and the read
    /// is among the stuck operations.
    #[test]
    fn search_reports_where_it_got_stuck() {
        let put = Call::Put { key: "k".into(), value: "a".into() };
        let get = Call::Get { key: "k".into() };
        let (ok, read_z) = (Reply::Put, Reply::Get { value: Some("z".into()) });
        let entries = [
            Entry { input: &put, output: Some(&ok), call_ns: 0, return_ns: 10 },
            Entry { input: &get, output: Some(&read_z), call_ns: 20, return_ns: 30 },
        ];
        let expected = Deepest { longest_prefix: vec![0], stuck: vec![1], state: r#"Some("a")"#.into() };
        assert_eq!(search(&Register, &entries, deadline()), Search::Violation(expected));
    }

    /// A deadline already past ends the search without an answer.
    #[test]
    fn search_respects_the_deadline() {
        let put = Call::Put { key: "k".into(), value: "a".into() };
        let entries: Vec<Entry> = (0..2 * limits::STEPS_PER_DEADLINE_CHECK)
            .map(|i| Entry { input: &put, output: Some(&Reply::Put), call_ns: i, return_ns: u64::MAX - 1 })
            .collect();
        assert_eq!(search(&Register, &entries, Instant::now()), Search::OutOfBudget);
    }
}
