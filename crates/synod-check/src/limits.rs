//! Every bound the checker enforces, with the reason for its value. Relations between them
//! are checked at compile time at the bottom of this file.

/// Longest line [`crate::read_jsonl`] accepts: an op is a few hundred bytes, so anything
/// near this is not a history, and reading it whole would take unbounded memory.
pub const HISTORY_LINE_BYTES_MAX: u64 = 1024 * 1024;

/// Most ops [`crate::read_jsonl`] reads. The harnesses record tens of thousands; ten
/// million would already take minutes to check.
pub const HISTORY_OPS_MAX: usize = 10_000_000;

/// Words of memo bitsets the search may keep for one object (256 MiB). Past this it stops
/// with an unknown verdict, as if it had run out of time, rather than exhaust memory.
pub const MEMO_WORDS_MAX: usize = 32 * 1024 * 1024;

/// Search steps between two looks at the clock: often enough to stop within milliseconds
/// of the deadline, rarely enough that reading the clock costs nothing.
pub const STEPS_PER_DEADLINE_CHECK: u64 = 4096;

/// Revision regressions reported: the first few say what went wrong, thousands would not.
pub const REGRESSIONS_MAX: usize = 20;

/// Ops drawn in the picture of a violation: more than this and the bars are too thin to read.
pub const PICTURE_OPS_MAX: usize = 200;

/// Ops at the end of the longest linearization that the summary names and the picture
/// draws before the stuck ones: enough to see how the state the stuck ops found came about.
pub const PREFIX_TAIL_OPS: usize = 10;

/// Entries of the longest linearization listed below the picture (the last ones).
pub const PICTURE_LIST_OPS_MAX: usize = 50;

const _: () = assert!(PREFIX_TAIL_OPS < PICTURE_OPS_MAX);
const _: () = assert!(PREFIX_TAIL_OPS <= PICTURE_LIST_OPS_MAX);
