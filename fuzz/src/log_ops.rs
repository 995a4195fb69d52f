//! Segment files for the `log_segment` target: a description of log operations read from
//! fuzz bytes, sealed into records and segments with valid checksums, and installed in a
//! simulated directory.

use std::collections::BTreeMap;

use synod_base::{GroupId, LogIndex};
use synod_storage::LogStore;
use synod_storage::log_format::{self, LogOp, PayloadWriter};
use synod_storage::log_fs::LogDir;
use synod_storage::sim_disk::SimDir;

/// The size of the segments built and of those the log makes.
pub const SEGMENT_BYTES: u64 = 4096;
/// Groups and meta keys the descriptions name.
pub const GROUPS: u64 = 4;
const KEYS: [&str; 3] = ["identity", "raft/vote/0", "k"];

/// One described operation, or a break.
#[derive(Debug, Clone)]
pub enum Step {
    Append {
        group: u64,
        first: u64,
        entries: Vec<Vec<u8>>,
    },
    Rewrite {
        group: u64,
        first: u64,
        entries: Vec<Vec<u8>>,
    },
    Truncate {
        group: u64,
        from: u64,
    },
    Purge {
        group: u64,
        through: u64,
    },
    PutMeta {
        key: &'static str,
        value: Vec<u8>,
    },
    DeleteMeta {
        key: &'static str,
    },
    /// The operations after it go in a new record.
    Record,
    /// ... in a new segment.
    Segment,
}

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u64> {
        Some(u64::from(u16::from_le_bytes([self.u8()?, self.u8()?])))
    }
    fn take(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        taken.to_vec()
    }
    fn entries(&mut self) -> Option<Vec<Vec<u8>>> {
        let count = self.u8()? % 8;
        (0..count).map(|_| self.u8().map(|len| self.take(usize::from(len % 48)))).collect()
    }
}

/// Reads steps from `data` until it runs out.
pub fn parse(data: &[u8]) -> Vec<Step> {
    let mut bytes = Bytes(data);
    let mut steps = Vec::new();
    while let Some(tag) = bytes.u8() {
        let group = u64::from(tag >> 4) % GROUPS;
        let step = match tag % 10 {
            0..=2 => (|| Some(Step::Append { group, first: bytes.u16()?, entries: bytes.entries()? }))(),
            3 => (|| Some(Step::Rewrite { group, first: bytes.u16()?, entries: bytes.entries()? }))(),
            4 => bytes.u16().map(|from| Step::Truncate { group, from }),
            5 => bytes.u16().map(|through| Step::Purge { group, through }),
            6 => {
                let key = KEYS[usize::from(tag >> 4) % KEYS.len()];
                bytes.u8().map(|len| Step::PutMeta { key, value: bytes.take(usize::from(len % 32)) })
            }
            7 => Some(Step::DeleteMeta { key: KEYS[usize::from(tag >> 4) % KEYS.len()] }),
            8 => Some(Step::Record),
            _ => Some(Step::Segment),
        };
        match step {
            Some(step) => steps.push(step),
            None => break,
        }
    }
    steps
}

/// Seals `steps` into segments: records of the operations between breaks, each segment
/// with its header, records packed after it, zero-filled to at least [`SEGMENT_BYTES`].
pub fn segments(steps: &[Step]) -> Vec<Vec<u8>> {
    let mut payloads: Vec<(bool, PayloadWriter)> = vec![(false, PayloadWriter::new())];
    for step in steps {
        let current = &mut payloads.last_mut().expect("one payload at least").1;
        let entries = |first: u64, entries: &[Vec<u8>]| -> Vec<(LogIndex, Vec<u8>)> {
            entries.iter().enumerate().map(|(n, e)| (LogIndex(first + n as u64), e.clone())).collect()
        };
        match step {
            Step::Append { group, first, entries: e } => {
                let owned = entries(*first, e);
                let refs: Vec<(LogIndex, &[u8])> = owned.iter().map(|(i, b)| (*i, b.as_slice())).collect();
                let _ = current.push(&LogOp::Append { group: GroupId(*group), entries: &refs });
            }
            Step::Rewrite { group, first, entries: e } => {
                let _ = current.push_rewrite(GroupId(*group), LogIndex(*first), e.iter().map(Vec::as_slice));
            }
            Step::Truncate { group, from } => {
                let _ = current.push(&LogOp::TruncateFrom { group: GroupId(*group), from: LogIndex(*from) });
            }
            Step::Purge { group, through } => {
                let _ = current
                    .push(&LogOp::PurgeThrough { group: GroupId(*group), through: LogIndex(*through) });
            }
            Step::PutMeta { key, value } => {
                let _ = current.push(&LogOp::PutMeta { key, value });
            }
            Step::DeleteMeta { key } => {
                let _ = current.push(&LogOp::DeleteMeta { key });
            }
            Step::Record => payloads.push((false, PayloadWriter::new())),
            Step::Segment => payloads.push((true, PayloadWriter::new())),
        }
    }
    let mut segments: Vec<Vec<u8>> = vec![log_format::segment_header(1)];
    for (new_segment, payload) in payloads {
        if new_segment {
            let sequence = segments.len() as u64 + 1;
            segments.push(log_format::segment_header(sequence));
        }
        if payload.is_empty() {
            continue;
        }
        let sequence = segments.len() as u64;
        let segment = segments.last_mut().expect("one segment at least");
        let offset = segment.len() as u64;
        segment.extend_from_slice(&payload.into_record(sequence, offset));
    }
    for segment in &mut segments {
        let len = (segment.len() as u64).max(SEGMENT_BYTES);
        segment.resize(len as usize, 0);
    }
    segments
}

/// Segment 1: a valid header, then `body`, zero-filled to at least [`SEGMENT_BYTES`].
pub fn raw_segment(body: &[u8]) -> Vec<u8> {
    let mut segment = log_format::segment_header(1);
    segment.extend_from_slice(body);
    let len = (segment.len() as u64).max(SEGMENT_BYTES);
    segment.resize(len as usize, 0);
    segment
}

/// Writes `segments` as segment files 1, 2, ... of `dir`, synced.
pub fn install(dir: &SimDir, segments: &[Vec<u8>]) {
    for (n, bytes) in segments.iter().enumerate() {
        let file = dir.create(&format!("{:016x}.log", n + 1)).expect("create a segment");
        file.write_at(0, bytes).expect("write a segment");
        file.sync_data().expect("sync a segment");
    }
    dir.sync().expect("sync the directory");
}

/// Everything the log holds of the described groups and keys.
pub fn contents(
    log: &LogStore,
) -> (BTreeMap<u64, Vec<(LogIndex, Vec<u8>)>>, BTreeMap<&'static str, Vec<u8>>) {
    let groups = (0..GROUPS)
        .map(|g| {
            (
                g,
                log.entries(GroupId(g), LogIndex(0)..LogIndex(u64::MAX))
                    .expect("a group's entries read back"),
            )
        })
        .collect();
    let meta = KEYS.iter().filter_map(|k| Some((*k, log.meta(k).expect("meta")?))).collect();
    (groups, meta)
}
