//! Fuzzes the segmented log's recovery (`synod_storage::LogStore`, `log_format`): segment
//! files are written into a simulated directory and the log is opened on them. The first
//! byte picks what the rest is:
//! - `RAW`: the bytes after a valid header of segment 1, as a disk could hold them (torn,
//!   damaged, stale);
//! - `OPS`: a description of operations (`synod_fuzz::log_ops`), sealed into records and
//!   segments with valid checksums, so that what lies behind the checksums gets fuzzed:
//!   appends, rewrites, truncations and purges of any indexes, in any order, across
//!   segments.
//!
//! The open may refuse (with an error, never a panic). When it succeeds, every group's
//! entries read back, a second open finds the same log, and the log takes a write that
//! then reads back, before and after a third open.

#![no_main]

use libfuzzer_sys::fuzz_target;
use synod_base::{GroupId, LogIndex};
use synod_fuzz::kinds::log_segment as kind;
use synod_fuzz::log_ops;
use synod_storage::sim_disk::SimDir;
use synod_storage::{LogOp, LogOptions, LogStore};

fuzz_target!(|data: &[u8]| {
    let Some((&first, body)) = data.split_first() else { return };
    let segments = match first % kind::COUNT {
        kind::RAW => vec![log_ops::raw_segment(body)],
        _ => log_ops::segments(&log_ops::parse(body)),
    };
    let dir = SimDir::new();
    log_ops::install(&dir, &segments);
    let options = || LogOptions {
        segment_bytes: log_ops::SEGMENT_BYTES,
        prepare_in_background: false,
        rewrite_below: 0.5,
    };
    let Ok(log) = LogStore::open_on_with(dir.clone(), "fuzz".into(), options()) else { return };
    let before = log_ops::contents(&log);
    drop(log);
    let log =
        LogStore::open_on_with(dir.clone(), "fuzz".into(), options()).expect("a log that opened opens again");
    assert_eq!(log_ops::contents(&log), before, "a second open finds another log");
    let next = log.bounds(GroupId(0)).expect("bounds").map_or(1, |(_, last)| last.0 + 1);
    if next < u64::MAX {
        log.write(&[LogOp::Append { group: GroupId(0), entries: &[(LogIndex(next), b"after".as_slice())] }])
            .expect("the opened log takes a write");
        let read = log.entries(GroupId(0), LogIndex(next)..LogIndex(next + 1)).expect("read the write back");
        assert_eq!(read, vec![(LogIndex(next), b"after".to_vec())]);
        // And the log opens again with it: nothing the open left behind reads as damage.
        let written = log_ops::contents(&log);
        drop(log);
        let log =
            LogStore::open_on_with(dir, "fuzz".into(), options()).expect("the log opens after the write");
        assert_eq!(log_ops::contents(&log), written, "the write is not all there after a reopen");
    }
});
