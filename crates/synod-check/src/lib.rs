//! Histories of client operations against a store, and the checks run on them: that the
//! history is linearizable (a Wing–Gong–Lowe search, as Porcupine does it), and that the
//! revisions the store reported never went backwards in real time.
//!
//! Both test harnesses, `synod-sim` and `synod-chaos`, record what their clients asked and
//! what they were told as [`Op`]s and hand the history to [`check`]; [`render_html`] draws
//! what went wrong. The checker knows nothing of the store: it depends on no other synod
//! crate, so that a history can be checked, and the checker tested, on its own. Only the
//! `etcd` feature (the harnesses') adds the mapping of calls onto etcd's KV messages
//! ([`etcd`]), with synod-api's messages and nothing else.
//!
//! Linearizability is local (Herlihy and Wing's P-compositionality): a history is
//! linearizable exactly when the ops on each object are. So the history is split by
//! [`Call::object`] and each object is searched on its own, which turns one search that is
//! exponential in the whole history into many small ones.

#[cfg(feature = "etcd")]
pub mod etcd;
pub mod history;
mod limits;
mod model;
mod picture;
mod revision;
mod wgl;

use std::time::{Duration, Instant};

pub use history::{Call, Op, Outcome, Reply, read_jsonl, write_jsonl};
pub use picture::render_html;
pub use revision::Regression;

use model::{Counter, Kind, Lock, Register};
use wgl::{Entry, Search};

/// Checks that `history` is linearizable, object by object, within `budget` of wall time,
/// and that revisions never went backwards.
///
/// Ops that failed (they did not take effect) and reads with unknown outcomes (they
/// observed nothing anyone saw) are left out. A write with an unknown outcome may take
/// effect at any time after its call, or never: it is searched as if it returned at the
/// end of time.
pub fn check(history: &[Op], budget: Duration) -> Report {
    let started = Instant::now();
    // A budget too large to add to the clock is no budget at all; a year stands in for it.
    let deadline = started.checked_add(budget).unwrap_or_else(|| started + Duration::from_secs(365 * 86_400));
    let revision_regressions = revision::regressions(history);
    let (objects, malformed) = partition(history);
    let report = |verdict| Report {
        verdict,
        objects: objects.len(),
        ops: objects.iter().map(|object| object.ops.len()).sum(),
        revision_regressions: revision_regressions.clone(),
    };
    if let Some(violation) = malformed {
        return report(Verdict::Violation(violation));
    }
    let mut verdict = Verdict::Linearizable;
    for object in &objects {
        // The deadline covers the whole history: after it passes, each remaining object
        // stops within a few thousand steps, but small ones may still finish and show a
        // violation, which says more than an unknown verdict.
        match check_object(object, deadline) {
            Verdict::Linearizable => {}
            Verdict::Unknown => verdict = Verdict::Unknown,
            violation @ Verdict::Violation(_) => return report(violation),
        }
    }
    report(verdict)
}

/// What [`check`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub verdict: Verdict,
    /// Objects (keys, counters, locks) in the history.
    pub objects: usize,
    /// Ops that took part in the search: those that neither failed nor were reads with an
    /// unknown outcome.
    pub ops: usize,
    /// Pairs of ops whose revisions went backwards in real time: the first 20 found
    /// (`limits::REGRESSIONS_MAX`).
    pub revision_regressions: Vec<Regression>,
}

impl Report {
    /// Whether the history passed both checks.
    pub fn is_ok(&self) -> bool {
        self.verdict == Verdict::Linearizable && self.revision_regressions.is_empty()
    }

    /// A few lines for a human: the verdict, where it went wrong, and the regressions.
    pub fn summary(&self) -> String {
        let counts = format!("{} ops on {} objects", self.ops, self.objects);
        let mut lines = match &self.verdict {
            Verdict::Linearizable => vec![format!("linearizable: {counts}")],
            Verdict::Unknown => {
                vec![format!("unknown: the budget ran out before the check finished ({counts})")]
            }
            Verdict::Violation(violation) => vec![
                format!("NOT linearizable ({counts}): {}", violation.message),
                format!(
                    "longest linearization: {} ops{}",
                    violation.longest_prefix.len(),
                    match violation.longest_prefix.len() {
                        0 => String::new(),
                        n if n > limits::PREFIX_TAIL_OPS => format!(
                            ", ending with ops {:?}",
                            &violation.longest_prefix[n - limits::PREFIX_TAIL_OPS..]
                        ),
                        _ => format!(": ops {:?}", violation.longest_prefix),
                    }
                ),
                format!("stuck ops: {:?}", violation.stuck),
            ],
        };
        if let Some(first) = self.revision_regressions.first() {
            lines.push(format!(
                "revisions went backwards {} times{}: op {} returned before op {} was called, yet op {} \
                 carries a lower revision",
                self.revision_regressions.len(),
                if self.revision_regressions.len() == limits::REGRESSIONS_MAX { " or more" } else { "" },
                first.earlier,
                first.later,
                first.later,
            ));
        }
        lines.join("\n")
    }
}

/// Whether the history is linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    Violation(Violation),
    /// The budget ran out before the search finished: the history may be either.
    Unknown,
}

/// An object whose ops no order explains, or a history that cannot be checked as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The key or lock.
    pub object: String,
    /// The longest linearization found, in order, as indexes into the history.
    pub longest_prefix: Vec<usize>,
    /// The ops that could not come next after that prefix (those whose call precedes the
    /// earliest pending return), as indexes into the history.
    pub stuck: Vec<usize>,
    pub message: String,
}

/// The ops of one object that take part in the search.
struct Object<'h> {
    name: &'h str,
    kind: Kind,
    /// The op that first used the object, which set its kind.
    first: usize,
    /// Indexes into the history, in history order.
    ops: Vec<usize>,
    /// The ops as the search sees them, in the same order as `ops`.
    entries: Vec<Entry<'h>>,
}

/// Whether `op` takes part in the search: a failed op did not happen, and a read whose
/// reply was lost constrains nothing.
pub(crate) fn is_searched(op: &Op) -> bool {
    match op.outcome {
        Outcome::Ok { .. } => true,
        Outcome::Fail { .. } => false,
        Outcome::Unknown { .. } => !op.call.is_read(),
    }
}

/// Splits the history into objects, in the order they first appear, and finds the first op
/// that makes the history unfit to check: a reply of the wrong kind, a return before the
/// call, an object used as two kinds. Those are harness bugs, reported as a violation
/// because a panic would lose the history.
fn partition(history: &[Op]) -> (Vec<Object<'_>>, Option<Violation>) {
    let mut objects: Vec<Object<'_>> = Vec::new();
    let mut by_name = std::collections::HashMap::new();
    let mut malformed = None;
    for (index, op) in history.iter().enumerate() {
        let name = op.call.object();
        let kind = Kind::of(&op.call);
        let at = *by_name.entry(name).or_insert_with(|| {
            objects.push(Object { name, kind, first: index, ops: Vec::new(), entries: Vec::new() });
            objects.len() - 1
        });
        let object = &mut objects[at];
        let problem = if object.kind != kind {
            let first = object.first;
            Some((
                vec![first, index],
                format!(
                    "cannot check: {name:?} is used as a {} by op {first} and as a {kind} by op {index}",
                    object.kind
                ),
            ))
        } else if let Outcome::Ok { reply, .. } = &op.outcome
            && !Kind::reply_matches(&op.call, reply)
        {
            Some((
                vec![index],
                format!("cannot check: op {index} got a reply of the wrong kind: {reply:?} to {:?}", op.call),
            ))
        } else if op.return_ns < op.call_ns {
            Some((
                vec![index],
                format!(
                    "cannot check: op {index} returned at {} ns, before its call at {} ns",
                    op.return_ns, op.call_ns
                ),
            ))
        } else {
            None
        };
        if let Some((stuck, message)) = problem {
            malformed.get_or_insert(Violation {
                object: name.to_string(),
                longest_prefix: Vec::new(),
                stuck,
                message,
            });
            continue;
        }
        if !is_searched(op) {
            continue;
        }
        let (output, return_ns) = match &op.outcome {
            Outcome::Ok { reply, .. } => (Some(reply), op.return_ns),
            Outcome::Fail { .. } | Outcome::Unknown { .. } => (None, u64::MAX),
        };
        object.ops.push(index);
        object.entries.push(Entry { input: &op.call, output, call_ns: op.call_ns, return_ns });
    }
    (objects, malformed)
}

/// Searches one object's ops for a linearization under the model of its kind.
fn check_object(object: &Object<'_>, deadline: Instant) -> Verdict {
    let search = match object.kind {
        Kind::Register => wgl::search(&Register, &object.entries, deadline),
        Kind::Counter => wgl::search(&Counter, &object.entries, deadline),
        Kind::Lock => wgl::search(&Lock, &object.entries, deadline),
    };
    match search {
        Search::Linearizable => Verdict::Linearizable,
        Search::OutOfBudget => Verdict::Unknown,
        Search::Violation(deepest) => {
            let history_index =
                |ops: Vec<usize>| ops.into_iter().map(|op| object.ops[op]).collect::<Vec<_>>();
            let longest_prefix = history_index(deepest.longest_prefix);
            let stuck = history_index(deepest.stuck);
            let message = format!(
                "{} {:?}: no order of its {} ops is legal; the longest order found places {} of them, \
                 leaving it at {}, after which none of ops {stuck:?} can come next",
                object.kind,
                object.name,
                object.ops.len(),
                longest_prefix.len(),
                deepest.state,
            );
            Verdict::Violation(Violation { object: object.name.to_string(), longest_prefix, stuck, message })
        }
    }
}

#[cfg(test)]
mod tests;
