//! The native counter's replicated state: what a counter's value may look like, and the
//! sessions that make a retried add apply once.
//!
//! A session is a lease the client holds. For each of its adds the session keeps the
//! result, by sequence number, until the client says it has the reply (`answered_below`)
//! or more than [`SESSION_RESULTS_MAX`] are kept; the session ends with its lease. All of
//! it is in the log's order, so every member keeps the same sessions.

use std::collections::BTreeMap;

use synod_api::EtcdError;
use synod_api::synodpb::{CounterOp, CounterResult, CounterSession};

/// The results one session keeps at most: a client may have this many adds unanswered at
/// once. Beyond it the oldest result is forgotten, and a retry of that add fails with
/// [`EtcdError::CounterSequenceForgotten`] rather than adding again.
pub const SESSION_RESULTS_MAX: usize = 1024;

/// A counter's value as its key holds it: a decimal integer, as `i64` prints it (an
/// optional `-`, then digits). Anything else, the empty value included, is not a counter.
pub fn parse(value: &[u8]) -> Option<i64> {
    let digits = value.strip_prefix(b"-").unwrap_or(value);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// A counter value as its key stores it.
pub fn format(value: i64) -> Vec<u8> {
    value.to_string().into_bytes()
}

/// The value an add returned, and the revision it was applied at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CounterValue {
    pub value: i64,
    pub revision: i64,
}

/// Every live session, by lease id.
#[derive(Clone, Debug, Default)]
pub struct Sessions {
    sessions: BTreeMap<i64, CounterSession>,
}

/// What the state machine must do with one op of a session.
pub(crate) enum Lookup {
    /// The add was applied before: answer with its recorded result.
    Applied(CounterValue),
    /// Apply it now, then [`Sessions::record`] its result.
    Apply,
}

impl Sessions {
    pub(crate) fn insert(&mut self, session: CounterSession) {
        self.sessions.insert(session.lease, session);
    }

    pub(crate) fn remove(&mut self, lease: i64) -> bool {
        self.sessions.remove(&lease).is_some()
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Every session, in lease order.
    pub fn iter(&self) -> impl Iterator<Item = &CounterSession> {
        self.sessions.values()
    }

    pub fn get(&self, lease: i64) -> Option<&CounterSession> {
        self.sessions.get(&lease)
    }

    /// Looks `op` up in its session (which must have a live lease), first forgetting the
    /// results the client says it has. Creates the session on its first add.
    /// With `owned` (auth is on), the session must be the op's user's.
    pub(crate) fn lookup(&mut self, key: &[u8], op: &CounterOp, owned: bool) -> Result<Lookup, EtcdError> {
        if op.sequence == 0 {
            return Err(EtcdError::CounterNoSequence);
        }
        let session = self.sessions.entry(op.session).or_insert_with(|| CounterSession {
            lease: op.session,
            floor: 1,
            results: Vec::new(),
            owner: op.user.clone(),
        });
        if owned && session.owner != op.user {
            return Err(EtcdError::PermissionDenied);
        }
        if let Some(result) = find(session, op.sequence) {
            if result.key != key {
                return Err(EtcdError::CounterSequenceReused);
            }
            return Ok(Lookup::Applied(CounterValue { value: result.value, revision: result.revision }));
        }
        if op.sequence < session.floor {
            return Err(EtcdError::CounterSequenceForgotten);
        }
        // The op itself is unanswered, whatever the client claims.
        forget_below(session, op.answered_below.min(op.sequence));
        Ok(Lookup::Apply)
    }

    /// Records the result of an add to `key` [`Sessions::lookup`] said to apply.
    pub(crate) fn record(&mut self, key: &[u8], op: &CounterOp, result: CounterValue) {
        let session = self.sessions.get_mut(&op.session).expect("lookup created the session");
        let at = session.results.partition_point(|r| r.sequence < op.sequence);
        let recorded = CounterResult {
            sequence: op.sequence,
            value: result.value,
            revision: result.revision,
            key: key.to_vec(),
        };
        session.results.insert(at, recorded);
        if session.results.len() > SESSION_RESULTS_MAX {
            let oldest = session.results[0].sequence;
            forget_below(session, oldest + 1);
        }
    }
}

fn find(session: &CounterSession, sequence: u64) -> Option<&CounterResult> {
    let at = session.results.binary_search_by_key(&sequence, |r| r.sequence).ok()?;
    Some(&session.results[at])
}

fn forget_below(session: &mut CounterSession, floor: u64) {
    if floor > session.floor {
        session.floor = floor;
        let keep = session.results.partition_point(|r| r.sequence < floor);
        session.results.drain(..keep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_decimal_integers_are_counters() {
        for (text, value) in [("0", Some(0)), ("42", Some(42)), ("-7", Some(-7)), ("007", Some(7))] {
            assert_eq!(parse(text.as_bytes()), value, "{text:?}");
        }
        let max = i64::MAX.to_string();
        let min = i64::MIN.to_string();
        assert_eq!(parse(max.as_bytes()), Some(i64::MAX));
        assert_eq!(parse(min.as_bytes()), Some(i64::MIN));
        for text in ["", "-", "+1", " 1", "1 ", "1.0", "0x10", "9223372036854775808", "abc", "--1", "1e3"] {
            assert_eq!(parse(text.as_bytes()), None, "{text:?}");
        }
        assert_eq!(parse(&[0xff, b'1']), None);
        assert_eq!(format(-12), b"-12");
    }

    fn op(sequence: u64, answered_below: u64) -> CounterOp {
        CounterOp { session: 5, sequence, delta: 1, answered_below, user: "u".into() }
    }

    /// A session answers a retry from its record, forgets what the client has, refuses a
    /// retry it no longer holds, and keeps at most SESSION_RESULTS_MAX results.
    #[test]
    fn a_session_records_forgets_and_bounds_its_results() {
        let mut sessions = Sessions::default();
        assert!(matches!(sessions.lookup(b"k", &op(0, 0), false), Err(EtcdError::CounterNoSequence)));
        assert!(matches!(sessions.lookup(b"k", &op(1, 0), false), Ok(Lookup::Apply)));
        sessions.record(b"k", &op(1, 0), CounterValue { value: 10, revision: 3 });
        assert!(matches!(
            sessions.lookup(b"k", &op(1, 0), false),
            Ok(Lookup::Applied(CounterValue { value: 10, revision: 3 }))
        ));
        // Add 2 says 1 was answered: 1 is forgotten, and its retry is refused.
        assert!(matches!(sessions.lookup(b"k", &op(2, 2), false), Ok(Lookup::Apply)));
        sessions.record(b"k", &op(2, 2), CounterValue { value: 11, revision: 4 });
        assert!(matches!(sessions.lookup(b"k", &op(1, 0), false), Err(EtcdError::CounterSequenceForgotten)));
        // A claim that the op itself was answered does not make it forgettable.
        assert!(matches!(sessions.lookup(b"k", &op(3, 100), false), Ok(Lookup::Apply)));
        sessions.record(b"k", &op(3, 100), CounterValue { value: 12, revision: 5 });
        assert_eq!(sessions.get(5).unwrap().floor, 3);

        for sequence in 4..4 + SESSION_RESULTS_MAX as u64 + 10 {
            assert!(matches!(sessions.lookup(b"k", &op(sequence, 0), false), Ok(Lookup::Apply)));
            sessions.record(b"k", &op(sequence, 0), CounterValue { value: sequence as i64, revision: 6 });
        }
        let session = sessions.get(5).unwrap();
        assert_eq!(session.results.len(), SESSION_RESULTS_MAX);
        assert_eq!(session.floor, session.results[0].sequence);
        assert!(matches!(sessions.lookup(b"k", &op(4, 0), false), Err(EtcdError::CounterSequenceForgotten)));
        assert!(sessions.remove(5));
        assert!(sessions.is_empty());
    }

    /// A recorded sequence number answers only a retry to the same key, and while auth is
    /// on only the session's owner may use it.
    #[test]
    fn a_session_is_its_owners_for_its_keys() {
        let mut sessions = Sessions::default();
        assert!(matches!(sessions.lookup(b"k", &op(1, 0), true), Ok(Lookup::Apply)));
        sessions.record(b"k", &op(1, 0), CounterValue { value: 10, revision: 3 });
        assert!(matches!(sessions.lookup(b"other", &op(1, 0), true), Err(EtcdError::CounterSequenceReused)));
        let intruder = CounterOp { user: "m".into(), ..op(1, u64::MAX) };
        assert!(matches!(sessions.lookup(b"k", &intruder, true), Err(EtcdError::PermissionDenied)));
        assert_eq!(sessions.get(5).unwrap().results.len(), 1, "the intruder made it forget");
        assert!(matches!(sessions.lookup(b"k", &op(1, 0), true), Ok(Lookup::Applied(_))));
    }
}
