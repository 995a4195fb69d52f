//! The check that revisions never go backwards in real time, which the search does not
//! cover: linearizability is checked one key at a time, but a store revision is one
//! counter for the whole store. If a reply carrying revision `r` reached a client before
//! another call was made, that call's reply must carry a revision of at least `r`, on
//! whichever key, through whichever member.

use crate::history::{Op, Outcome};
use crate::limits;

/// Two ops whose revisions went backwards: `earlier` returned before `later` was called,
/// yet `later`'s revision is lower. Both are indexes into the history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Regression {
    pub earlier: usize,
    pub later: usize,
}

/// Finds ops whose revision is below that of an op that returned before they were called,
/// each paired with the highest such revision, up to [`limits::REGRESSIONS_MAX`] of them.
///
/// One sweep over the ops in call order, with a running maximum over the ops returned
/// before the current call: O(n log n) for the two sorts, where comparing all pairs would
/// take minutes on a long history.
pub fn regressions(history: &[Op]) -> Vec<Regression> {
    let revised: Vec<(usize, i64)> = history
        .iter()
        .enumerate()
        .filter_map(|(index, op)| match op.outcome {
            Outcome::Ok { revision: Some(revision), .. } => Some((index, revision)),
            _ => None,
        })
        .collect();
    let mut by_call = revised.clone();
    by_call.sort_by_key(|&(index, _)| (history[index].call_ns, index));
    let mut by_return = revised;
    by_return.sort_by_key(|&(index, _)| (history[index].return_ns, index));

    let mut returned = by_return.into_iter().peekable();
    let mut highest: Option<(usize, i64)> = None;
    let mut found = Vec::new();
    for (later, revision) in by_call {
        let called_ns = history[later].call_ns;
        while let Some((earlier, earlier_revision)) =
            returned.next_if(|&(earlier, _)| history[earlier].return_ns < called_ns)
        {
            if highest.is_none_or(|(_, highest)| earlier_revision > highest) {
                highest = Some((earlier, earlier_revision));
            }
        }
        if let Some((earlier, highest)) = highest
            && revision < highest
        {
            found.push(Regression { earlier, later });
            if found.len() == limits::REGRESSIONS_MAX {
                break;
            }
        }
    }
    found
}
