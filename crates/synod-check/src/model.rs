//! The sequential specifications the search checks a history against: a register (a key
//! read and written with Get, Put, Delete and Cas), a counter (Add and ReadCounter) and a
//! fencing lock (Acquire and Release).
//!
//! A model is a deterministic step function: given the state before an operation, the call
//! and what the client was told, it returns the state after, or `None` when the reply is
//! impossible in that state. A reply of `None` means the outcome is unknown (the client got
//! no answer): the step must then accept the call with whatever effect the call could have
//! had, because the search may place it anywhere after its call, including at the very end
//! where nothing observes it.

use std::fmt::Debug;
use std::hash::Hash;

use crate::history::{Call, Reply};

/// A sequential specification of one kind of object.
pub trait Model {
    /// The object's state. It is hashed with the set of operations already placed to
    /// remember configurations the search has explored, so it should be small.
    type State: Clone + Eq + Hash + Debug;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// The state after `input` answered with `output` (`None`: unknown), or `None` if that
    /// answer is impossible in `state`.
    ///
    /// With an unknown output the step must succeed in every state: an op that may never
    /// have taken effect can always be placed last, and the search relies on that to end
    /// once every known op is placed and to skip configurations that differ only by unknown
    /// ops placed.
    fn step(&self, state: &Self::State, input: &Call, output: Option<&Reply>) -> Option<Self::State>;
}

/// The kind of object a call is on. One object is used as one kind throughout a history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Register,
    Counter,
    Lock,
}

impl Kind {
    /// The kind of object `call` works on.
    pub fn of(call: &Call) -> Kind {
        match call {
            Call::Get { .. } | Call::Put { .. } | Call::Delete { .. } | Call::Cas { .. } => Kind::Register,
            Call::Add { .. } | Call::ReadCounter { .. } => Kind::Counter,
            Call::Acquire { .. } | Call::Release { .. } => Kind::Lock,
        }
    }

    /// Whether `reply` is the kind of reply `call` gets: a mismatch is a harness bug that
    /// is reported, not an impossible reply that the search would quietly reject.
    pub fn reply_matches(call: &Call, reply: &Reply) -> bool {
        matches!(
            (call, reply),
            (Call::Get { .. }, Reply::Get { .. })
                | (Call::Put { .. }, Reply::Put)
                | (Call::Delete { .. }, Reply::Delete { .. })
                | (Call::Cas { .. }, Reply::Cas { .. })
                | (Call::Add { .. }, Reply::Add { .. })
                | (Call::ReadCounter { .. }, Reply::ReadCounter { .. })
                | (Call::Acquire { .. }, Reply::Acquire { .. })
                | (Call::Release { .. }, Reply::Release { .. })
        )
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Register => "register",
            Kind::Counter => "counter",
            Kind::Lock => "lock",
        })
    }
}

/// A key: its value, or `None` when it does not exist.
pub struct Register;

impl Model for Register {
    type State = Option<String>;

    fn init(&self) -> Self::State {
        None
    }

    fn step(&self, state: &Self::State, input: &Call, output: Option<&Reply>) -> Option<Self::State> {
        match (input, output) {
            (Call::Get { .. }, Some(Reply::Get { value })) => (value == state).then(|| state.clone()),
            // Reads with unknown outcomes are left out before the search; accepting one
            // here keeps the step total.
            (Call::Get { .. }, None) => Some(state.clone()),
            (Call::Put { value, .. }, Some(Reply::Put) | None) => Some(Some(value.clone())),
            (Call::Delete { .. }, Some(Reply::Delete { deleted })) => {
                (*deleted == state.is_some()).then_some(None)
            }
            (Call::Delete { .. }, None) => Some(None),
            (Call::Cas { expect, value, .. }, output) => {
                let holds = state == expect;
                let succeeded = match output {
                    Some(Reply::Cas { succeeded }) => *succeeded,
                    // Unknown: had it taken effect here, it would have succeeded exactly
                    // when the compare holds.
                    None => holds,
                    Some(_) => return None,
                };
                if succeeded != holds {
                    return None;
                }
                Some(if succeeded { Some(value.clone()) } else { state.clone() })
            }
            _ => None,
        }
    }
}

/// A counter: an integer that starts at 0 and only changes by Add.
pub struct Counter;

impl Model for Counter {
    type State = i64;

    fn init(&self) -> Self::State {
        0
    }

    fn step(&self, state: &Self::State, input: &Call, output: Option<&Reply>) -> Option<Self::State> {
        match (input, output) {
            // A reply cannot report a counter past i64's range; an add whose outcome is
            // unknown and that would overflow is taken not to have happened, as the step
            // must accept it.
            (Call::Add { delta, .. }, Some(Reply::Add { value })) => {
                state.checked_add(*delta).filter(|after| after == value)
            }
            (Call::Add { delta, .. }, None) => Some(state.checked_add(*delta).unwrap_or(*state)),
            (Call::ReadCounter { .. }, Some(Reply::ReadCounter { value })) => {
                (value == state).then_some(*state)
            }
            (Call::ReadCounter { .. }, None) => Some(*state),
            _ => None,
        }
    }
}

/// A fencing lock: who holds it with which token, and the last token handed out.
pub struct Lock;

/// The state of a [`Lock`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LockState {
    /// The owner holding the lock and the token it was granted, if anyone holds it.
    pub holder: Option<(String, i64)>,
    /// The largest token granted so far (`i64::MIN` before the first grant): every grant
    /// must carry a larger one, which is what makes tokens usable for fencing.
    pub last_token: i64,
}

impl Model for Lock {
    type State = LockState;

    fn init(&self) -> Self::State {
        LockState { holder: None, last_token: i64::MIN }
    }

    /// An Acquire whose outcome is unknown leaves the state as it is. It may still be
    /// waiting, or it may have been granted with a token nobody saw, but then its owner
    /// never uses the lock and the lease behind the grant expires. The model cannot tell a
    /// lock that was freed that way from one that was never taken, so a double grant that
    /// involves a lost Acquire reply goes unnoticed: a known limitation.
    fn step(&self, state: &Self::State, input: &Call, output: Option<&Reply>) -> Option<Self::State> {
        match (input, output) {
            (Call::Acquire { owner, .. }, Some(Reply::Acquire { token })) => {
                if state.holder.is_some() || *token <= state.last_token {
                    return None;
                }
                Some(LockState { holder: Some((owner.clone(), *token)), last_token: *token })
            }
            (Call::Acquire { .. }, None) => Some(state.clone()),
            (Call::Release { owner, token, .. }, output) => {
                let holds = state.holder.as_ref().is_some_and(|(o, t)| o == owner && t == token);
                let released = match output {
                    Some(Reply::Release { released }) => *released,
                    None => holds,
                    Some(_) => return None,
                };
                if released != holds {
                    return None;
                }
                let holder = if released { None } else { state.holder.clone() };
                Some(LockState { holder, last_token: state.last_token })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(value: Option<&str>) -> (Call, Reply) {
        (Call::Get { key: "k".into() }, Reply::Get { value: value.map(Into::into) })
    }

    fn put(value: &str) -> Call {
        Call::Put { key: "k".into(), value: value.into() }
    }

    fn cas(expect: Option<&str>, value: &str) -> Call {
        Call::Cas { key: "k".into(), expect: expect.map(Into::into), value: value.into() }
    }

    fn some(value: &str) -> Option<String> {
        Some(value.to_string())
    }

    /// A Get sees exactly the current value, and a missing key reads as `None`.
    #[test]
    fn register_get() {
        let (call, reply) = get(Some("a"));
        assert_eq!(Register.step(&some("a"), &call, Some(&reply)), Some(some("a")));
        assert_eq!(Register.step(&some("b"), &call, Some(&reply)), None);
        assert_eq!(Register.step(&None, &call, Some(&reply)), None);
        let (call, reply) = get(None);
        assert_eq!(Register.step(&None, &call, Some(&reply)), Some(None));
        assert_eq!(Register.step(&some("a"), &call, Some(&reply)), None);
    }

    /// A Put, known or unknown, always replaces the value.
    #[test]
    fn register_put() {
        assert_eq!(Register.step(&None, &put("a"), Some(&Reply::Put)), Some(some("a")));
        assert_eq!(Register.step(&some("b"), &put("a"), None), Some(some("a")));
    }

    /// A Delete says whether there was something to delete; an unknown one may have deleted.
    #[test]
    fn register_delete() {
        let call = Call::Delete { key: "k".into() };
        let deleted = |d| Reply::Delete { deleted: d };
        assert_eq!(Register.step(&some("a"), &call, Some(&deleted(true))), Some(None));
        assert_eq!(Register.step(&None, &call, Some(&deleted(true))), None);
        assert_eq!(Register.step(&None, &call, Some(&deleted(false))), Some(None));
        assert_eq!(Register.step(&some("a"), &call, Some(&deleted(false))), None);
        assert_eq!(Register.step(&some("a"), &call, None), Some(None));
    }

    /// A Cas succeeds exactly when the compare holds, and only a success writes; an
    /// unknown Cas takes effect only where its compare holds.
    #[test]
    fn register_cas() {
        let ok = |s| Reply::Cas { succeeded: s };
        let call = cas(Some("a"), "b");
        assert_eq!(Register.step(&some("a"), &call, Some(&ok(true))), Some(some("b")));
        assert_eq!(Register.step(&some("x"), &call, Some(&ok(true))), None);
        assert_eq!(Register.step(&some("x"), &call, Some(&ok(false))), Some(some("x")));
        assert_eq!(Register.step(&some("a"), &call, Some(&ok(false))), None);
        assert_eq!(Register.step(&some("a"), &call, None), Some(some("b")));
        assert_eq!(Register.step(&some("x"), &call, None), Some(some("x")));
        let create = cas(None, "b");
        assert_eq!(Register.step(&None, &create, Some(&ok(true))), Some(some("b")));
        assert_eq!(Register.step(&some("a"), &create, Some(&ok(true))), None);
    }

    /// A reply of the wrong kind, or a call on another kind of object, is never accepted.
    #[test]
    fn register_rejects_other_kinds() {
        assert_eq!(Register.step(&None, &put("a"), Some(&Reply::Delete { deleted: false })), None);
        assert_eq!(Register.step(&None, &cas(None, "a"), Some(&Reply::Put)), None);
        let add = Call::Add { key: "k".into(), delta: 1 };
        assert_eq!(Register.step(&None, &add, None), None);
    }

    /// An Add reports the counter after it, a read reports the counter as it is.
    #[test]
    fn counter_steps() {
        let add = Call::Add { key: "n".into(), delta: 3 };
        let read = Call::ReadCounter { key: "n".into() };
        assert_eq!(Counter.init(), 0);
        assert_eq!(Counter.step(&2, &add, Some(&Reply::Add { value: 5 })), Some(5));
        assert_eq!(Counter.step(&2, &add, Some(&Reply::Add { value: 3 })), None);
        assert_eq!(Counter.step(&2, &add, None), Some(5));
        assert_eq!(Counter.step(&i64::MAX, &add, Some(&Reply::Add { value: i64::MIN + 2 })), None);
        assert_eq!(Counter.step(&i64::MAX, &add, None), Some(i64::MAX));
        assert_eq!(Counter.step(&5, &read, Some(&Reply::ReadCounter { value: 5 })), Some(5));
        assert_eq!(Counter.step(&5, &read, Some(&Reply::ReadCounter { value: 2 })), None);
    }

    fn held(owner: &str, token: i64) -> LockState {
        LockState { holder: Some((owner.into(), token)), last_token: token }
    }

    /// A lock is granted only when free and only with a larger token than any before.
    #[test]
    fn lock_acquire() {
        let acquire = Call::Acquire { lock: "l".into(), owner: "o1".into() };
        let token = |t| Reply::Acquire { token: t };
        let free = LockState { holder: None, last_token: 4 };
        assert_eq!(Lock.step(&Lock.init(), &acquire, Some(&token(1))), Some(held("o1", 1)));
        assert_eq!(Lock.step(&free, &acquire, Some(&token(5))), Some(held("o1", 5)));
        assert_eq!(Lock.step(&free, &acquire, Some(&token(4))), None);
        assert_eq!(Lock.step(&held("o2", 4), &acquire, Some(&token(5))), None);
        assert_eq!(Lock.step(&held("o2", 4), &acquire, None), Some(held("o2", 4)));
        assert_eq!(Lock.step(&free, &acquire, None), Some(free));
    }

    /// A release succeeds exactly when the owner holds the lock with that token.
    #[test]
    fn lock_release() {
        let release = Call::Release { lock: "l".into(), owner: "o1".into(), token: 4 };
        let released = |r| Reply::Release { released: r };
        let free = LockState { holder: None, last_token: 4 };
        assert_eq!(Lock.step(&held("o1", 4), &release, Some(&released(true))), Some(free.clone()));
        assert_eq!(Lock.step(&held("o1", 3), &release, Some(&released(true))), None);
        assert_eq!(Lock.step(&held("o2", 4), &release, Some(&released(true))), None);
        assert_eq!(Lock.step(&free, &release, Some(&released(true))), None);
        assert_eq!(Lock.step(&held("o1", 4), &release, Some(&released(false))), None);
        assert_eq!(Lock.step(&held("o2", 4), &release, Some(&released(false))), Some(held("o2", 4)));
        assert_eq!(Lock.step(&held("o1", 4), &release, None), Some(free.clone()));
        assert_eq!(Lock.step(&held("o2", 4), &release, None), Some(held("o2", 4)));
    }
}
