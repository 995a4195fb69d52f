//! The bytes of the log's segment files: a segment header, then records, each one batch of
//! operations written together.
//!
//! ```text
//! segment:  magic "SYNODLOG" | format u32 | 0 u32 | sequence u64 | crc u32 | 0 ... to 64
//! record:   length u32 | crc u32 | payload (length bytes) | zeros to a multiple of 8
//! payload:  op, op, ...
//! op:       1 append   group u64 | first u64 | count u32 | (length u32 | bytes) × count
//!           2 truncate group u64 | from u64
//!           3 purge    group u64 | through u64
//!           4 put meta key length u16 | key | value length u32 | value
//!           5 del meta key length u16 | key
//!           6 rewrite  as append: live entries copied forward out of an old segment
//! ```
//!
//! Integers are little-endian. A record's CRC32 covers the segment's sequence, the
//! record's offset, its length and its payload, so a record is only valid where it was
//! written: a copy inside an entry's bytes, or a stale one, does not verify elsewhere.
//! Segments are zero-filled before use, so a zero length marks the end of the records.
//!
//! Everything here is pure: [`decode_ops`] and [`frame_at`] take any bytes and return an
//! error for what is not a well-formed record, never panic (`fuzz/fuzz_targets/log_segment.rs`).

use synod_base::{GroupId, LogIndex};

/// The first bytes of every segment file.
pub const MAGIC: &[u8; 8] = b"SYNODLOG";
/// The version of this format, in every segment header.
pub const FORMAT: u32 = 1;
/// Bytes before a segment's first record.
pub const SEGMENT_HEADER_BYTES: u64 = 64;
/// A record's length and CRC.
pub const RECORD_HEADER_BYTES: u64 = 8;
/// Records start at multiples of this.
pub const ALIGN: u64 = 8;

/// One change to the log; see [`crate::LogStore::write`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogOp<'a> {
    /// Entries that follow the group's last entry without a gap.
    Append { group: GroupId, entries: &'a [(LogIndex, &'a [u8])] },
    /// Removes the entries from `from` on.
    TruncateFrom { group: GroupId, from: LogIndex },
    /// Removes the entries up to and including `through`.
    PurgeThrough { group: GroupId, through: LogIndex },
    /// Sets a metadata value.
    PutMeta { key: &'a str, value: &'a [u8] },
    /// Removes a metadata value.
    DeleteMeta { key: &'a str },
}

/// An operation read back from a record; entries are `(offset in the payload, length)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodedOp<'a> {
    Append {
        group: GroupId,
        first: LogIndex,
        entries: Vec<(usize, usize)>,
    },
    /// Entries copied forward by the store itself: they replace whatever the group holds
    /// at their indexes and must join its other entries without a gap.
    Rewrite {
        group: GroupId,
        first: LogIndex,
        entries: Vec<(usize, usize)>,
    },
    TruncateFrom {
        group: GroupId,
        from: LogIndex,
    },
    PurgeThrough {
        group: GroupId,
        through: LogIndex,
    },
    PutMeta {
        key: &'a str,
        value: &'a [u8],
    },
    DeleteMeta {
        key: &'a str,
    },
}

const OP_APPEND: u8 = 1;
const OP_TRUNCATE: u8 = 2;
const OP_PURGE: u8 = 3;
const OP_PUT_META: u8 = 4;
const OP_DELETE_META: u8 = 5;
const OP_REWRITE: u8 = 6;

/// Builds a record's payload.
#[derive(Default)]
pub struct PayloadWriter {
    bytes: Vec<u8>,
}

impl PayloadWriter {
    pub fn new() -> PayloadWriter {
        PayloadWriter::default()
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Adds `op`; returns, for an append, where each entry's bytes start in the payload.
    pub fn push(&mut self, op: &LogOp<'_>) -> Result<Vec<usize>, String> {
        match *op {
            LogOp::Append { group, entries } => {
                let first = entries.first().map_or(0, |(index, _)| index.0);
                Ok(self.entries(
                    OP_APPEND,
                    group,
                    LogIndex(first),
                    entries.iter().map(|(_, bytes)| *bytes),
                )?)
            }
            LogOp::TruncateFrom { group, from } => {
                self.bytes.push(OP_TRUNCATE);
                self.u64(group.0);
                self.u64(from.0);
                Ok(Vec::new())
            }
            LogOp::PurgeThrough { group, through } => {
                self.bytes.push(OP_PURGE);
                self.u64(group.0);
                self.u64(through.0);
                Ok(Vec::new())
            }
            LogOp::PutMeta { key, value } => {
                self.bytes.push(OP_PUT_META);
                self.key(key)?;
                self.u32(u32::try_from(value.len()).map_err(|_| format!("meta value {key} is too large"))?);
                self.bytes.extend_from_slice(value);
                Ok(Vec::new())
            }
            LogOp::DeleteMeta { key } => {
                self.bytes.push(OP_DELETE_META);
                self.key(key)?;
                Ok(Vec::new())
            }
        }
    }

    /// Adds entries the store copies forward out of an old segment.
    pub fn push_rewrite<'b>(
        &mut self,
        group: GroupId,
        first: LogIndex,
        entries: impl Iterator<Item = &'b [u8]>,
    ) -> Result<Vec<usize>, String> {
        self.entries(OP_REWRITE, group, first, entries)
    }

    fn entries<'b>(
        &mut self,
        op: u8,
        group: GroupId,
        first: LogIndex,
        entries: impl Iterator<Item = &'b [u8]>,
    ) -> Result<Vec<usize>, String> {
        self.bytes.push(op);
        self.u64(group.0);
        self.u64(first.0);
        let count_at = self.bytes.len();
        self.u32(0);
        let mut offsets = Vec::new();
        for bytes in entries {
            self.u32(u32::try_from(bytes.len()).map_err(|_| "a log entry is too large".to_string())?);
            offsets.push(self.bytes.len());
            self.bytes.extend_from_slice(bytes);
        }
        let count = u32::try_from(offsets.len()).map_err(|_| "too many entries in one append".to_string())?;
        self.bytes[count_at..count_at + 4].copy_from_slice(&count.to_le_bytes());
        Ok(offsets)
    }

    fn key(&mut self, key: &str) -> Result<(), String> {
        let len = u16::try_from(key.len()).map_err(|_| format!("meta key {key:?} is too long"))?;
        self.bytes.extend_from_slice(&len.to_le_bytes());
        self.bytes.extend_from_slice(key.as_bytes());
        Ok(())
    }

    fn u32(&mut self, value: u32) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    fn u64(&mut self, value: u64) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    /// The record to write at `offset` of segment `sequence`: header, payload, padding.
    pub fn into_record(self, sequence: u64, offset: u64) -> Vec<u8> {
        let len = u32::try_from(self.bytes.len()).expect("records are bounded below 4 GiB by the caller");
        let mut record = Vec::with_capacity(record_bytes(self.bytes.len()) as usize);
        record.extend_from_slice(&len.to_le_bytes());
        record.extend_from_slice(&record_crc(sequence, offset, &self.bytes).to_le_bytes());
        record.extend_from_slice(&self.bytes);
        record.resize(record_bytes(self.bytes.len()) as usize, 0);
        record
    }
}

/// The bytes a record with a payload of `payload_len` takes, padding included.
pub fn record_bytes(payload_len: usize) -> u64 {
    (RECORD_HEADER_BYTES + payload_len as u64).div_ceil(ALIGN) * ALIGN
}

fn record_crc(sequence: u64, offset: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&sequence.to_le_bytes());
    hasher.update(&offset.to_le_bytes());
    hasher.update(&(payload.len() as u32).to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// The header of segment `sequence`.
pub fn segment_header(sequence: u64) -> Vec<u8> {
    let mut header = Vec::with_capacity(SEGMENT_HEADER_BYTES as usize);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&FORMAT.to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    header.extend_from_slice(&sequence.to_le_bytes());
    let crc = crc32fast::hash(&header);
    header.extend_from_slice(&crc.to_le_bytes());
    header.resize(SEGMENT_HEADER_BYTES as usize, 0);
    header
}

/// Checks a segment's header: what it must say for segment `sequence`.
pub fn check_segment_header(bytes: &[u8], sequence: u64) -> Result<(), String> {
    let Some(header) = bytes.get(..28) else {
        return Err(format!("{} bytes, shorter than a segment header", bytes.len()));
    };
    if &header[..8] != MAGIC {
        return Err("no segment header (not a synod log file)".into());
    }
    let crc = u32::from_le_bytes(header[24..28].try_into().expect("4 bytes"));
    if crc32fast::hash(&header[..24]) != crc {
        return Err("the segment header's checksum does not match".into());
    }
    let format = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    if format != FORMAT {
        return Err(format!("log format {format}; this synod reads format {FORMAT}"));
    }
    let found = u64::from_le_bytes(header[16..24].try_into().expect("8 bytes"));
    if found != sequence {
        return Err(format!("the header says segment {found}"));
    }
    Ok(())
}

/// What is at `offset` of a segment's bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A valid record: its payload, and the offset of the next record.
    Record { payload: &'a [u8], next: u64 },
    /// Zeros where a record's length would be: no record was written here.
    End,
    /// Neither: a torn or damaged record, with why.
    Bad(String),
}

/// Reads the record at `offset` of segment `sequence`, whose bytes are `segment`.
pub fn frame_at(segment: &[u8], sequence: u64, offset: u64) -> Frame<'_> {
    let Some(start) = usize::try_from(offset).ok().filter(|start| *start <= segment.len()) else {
        return Frame::Bad(format!("offset {offset} is beyond the segment"));
    };
    let Some(header) = segment.get(start..).and_then(|rest| rest.get(..RECORD_HEADER_BYTES as usize)) else {
        return Frame::End;
    };
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    if len == 0 {
        return if crc == 0 { Frame::End } else { Frame::Bad("a record of length 0".into()) };
    }
    let body = start + RECORD_HEADER_BYTES as usize;
    let Some(payload) = segment.get(body..).and_then(|rest| rest.get(..len as usize)) else {
        return Frame::Bad(format!("a record of {len} bytes runs past the end of the segment"));
    };
    if record_crc(sequence, offset, payload) != crc {
        return Frame::Bad(format!("the checksum of a record of {len} bytes does not match"));
    }
    Frame::Record { payload, next: offset + record_bytes(len as usize) }
}

/// Decodes a record's payload into its operations.
pub fn decode_ops(payload: &[u8]) -> Result<Vec<DecodedOp<'_>>, String> {
    let mut reader = Reader { bytes: payload, at: 0 };
    let mut ops = Vec::new();
    while reader.at < payload.len() {
        let op = reader.u8()?;
        ops.push(match op {
            OP_APPEND | OP_REWRITE => {
                let group = GroupId(reader.u64()?);
                let first = LogIndex(reader.u64()?);
                let count = reader.u32()?;
                let mut entries = Vec::new();
                for _ in 0..count {
                    let len = reader.u32()? as usize;
                    entries.push((reader.at, len));
                    reader.take(len)?;
                }
                if first.0.checked_add(u64::from(count)).is_none() {
                    return Err(format!("entries from index {first} overflow"));
                }
                if op == OP_APPEND {
                    DecodedOp::Append { group, first, entries }
                } else {
                    DecodedOp::Rewrite { group, first, entries }
                }
            }
            OP_TRUNCATE => {
                DecodedOp::TruncateFrom { group: GroupId(reader.u64()?), from: LogIndex(reader.u64()?) }
            }
            OP_PURGE => {
                DecodedOp::PurgeThrough { group: GroupId(reader.u64()?), through: LogIndex(reader.u64()?) }
            }
            OP_PUT_META => {
                let key = reader.key()?;
                let len = reader.u32()? as usize;
                DecodedOp::PutMeta { key, value: reader.take(len)? }
            }
            OP_DELETE_META => DecodedOp::DeleteMeta { key: reader.key()? },
            other => return Err(format!("unknown operation {other} at byte {}", reader.at - 1)),
        });
    }
    Ok(ops)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(len).filter(|end| *end <= self.bytes.len()).ok_or_else(|| {
            format!("{len} bytes wanted at byte {} of a {}-byte record", self.at, self.bytes.len())
        })?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn key(&mut self) -> Result<&'a str, String> {
        let len = u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")) as usize;
        std::str::from_utf8(self.take(len)?).map_err(|_| "a meta key that is not UTF-8".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ops: &[LogOp<'_>], sequence: u64, offset: u64) -> Vec<u8> {
        let mut payload = PayloadWriter::new();
        for op in ops {
            payload.push(op).unwrap();
        }
        payload.into_record(sequence, offset)
    }

    /// Every operation reads back as written, entries by their place in the payload.
    #[test]
    fn operations_round_trip() {
        let entries = [(LogIndex(7), b"seven".as_slice()), (LogIndex(8), b"".as_slice())];
        let ops = [
            LogOp::Append { group: GroupId(3), entries: &entries },
            LogOp::TruncateFrom { group: GroupId(3), from: LogIndex(8) },
            LogOp::PurgeThrough { group: GroupId(1), through: LogIndex(2) },
            LogOp::PutMeta { key: "identity", value: b"abc" },
            LogOp::DeleteMeta { key: "gone" },
        ];
        let mut segment = segment_header(5);
        let bytes = record(&ops, 5, SEGMENT_HEADER_BYTES);
        segment.extend_from_slice(&bytes);
        segment.resize(segment.len() + 64, 0);
        let Frame::Record { payload, next } = frame_at(&segment, 5, SEGMENT_HEADER_BYTES) else {
            panic!("no record");
        };
        assert_eq!(next, SEGMENT_HEADER_BYTES + bytes.len() as u64);
        assert_eq!(next % ALIGN, 0);
        assert_eq!(frame_at(&segment, 5, next), Frame::End);
        let decoded = decode_ops(payload).unwrap();
        let DecodedOp::Append { group, first, entries: read } = &decoded[0] else { panic!("{decoded:?}") };
        assert_eq!((*group, *first), (GroupId(3), LogIndex(7)));
        let (at, len) = read[0];
        assert_eq!(&payload[at..at + len], b"seven");
        assert_eq!(read[1].1, 0);
        assert_eq!(decoded[1], DecodedOp::TruncateFrom { group: GroupId(3), from: LogIndex(8) });
        assert_eq!(decoded[2], DecodedOp::PurgeThrough { group: GroupId(1), through: LogIndex(2) });
        assert_eq!(decoded[3], DecodedOp::PutMeta { key: "identity", value: b"abc" });
        assert_eq!(decoded[4], DecodedOp::DeleteMeta { key: "gone" });
        check_segment_header(&segment, 5).unwrap();
        assert!(check_segment_header(&segment, 6).unwrap_err().contains("segment 5"));
    }

    /// A flipped bit anywhere in a record (padding aside), or the record read at another offset or in
    /// another segment, does not verify.
    #[test]
    fn a_record_verifies_only_intact_and_in_place() {
        let bytes = record(&[LogOp::PutMeta { key: "k", value: b"value" }], 2, 64);
        let mut segment = vec![0u8; 64];
        segment.extend_from_slice(&bytes);
        assert!(matches!(frame_at(&segment, 2, 64), Frame::Record { .. }));
        assert!(matches!(frame_at(&segment, 3, 64), Frame::Bad(_)), "verified in another segment");
        let mut moved = vec![0u8; 72];
        moved.extend_from_slice(&bytes);
        assert!(matches!(frame_at(&moved, 2, 72), Frame::Bad(_)), "verified at another offset");
        // The padding after the payload is not part of the record.
        let unpadded = 64 + 8 + u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
        for byte in 64..unpadded {
            for bit in 0..8 {
                let mut bad = segment.clone();
                bad[byte] ^= 1 << bit;
                assert!(
                    !matches!(frame_at(&bad, 2, 64), Frame::Record { .. }),
                    "flip of bit {bit} in byte {byte} went unnoticed"
                );
            }
        }
    }

    /// Cut records and nonsense payloads are errors, not panics.
    #[test]
    fn damaged_input_is_an_error() {
        let bytes = record(&[LogOp::PutMeta { key: "k", value: b"value" }], 1, 0);
        let unpadded = 8 + u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
        for cut in 1..unpadded {
            assert!(!matches!(frame_at(&bytes[..cut], 1, 0), Frame::Record { .. }), "cut at {cut}");
        }
        assert!(decode_ops(&[9]).is_err());
        assert!(decode_ops(&[OP_APPEND, 1, 2]).is_err());
        assert!(decode_ops(&[OP_PUT_META, 1, 0, 0xff]).is_err());
        let mut overflow = vec![OP_APPEND];
        overflow.extend_from_slice(&0u64.to_le_bytes());
        overflow.extend_from_slice(&u64::MAX.to_le_bytes());
        overflow.extend_from_slice(&2u32.to_le_bytes());
        overflow.extend_from_slice(&[0; 8]);
        assert!(decode_ops(&overflow).unwrap_err().contains("overflow"));
        assert_eq!(frame_at(&[0, 0, 0, 0, 1, 0, 0, 0], 1, 0), Frame::Bad("a record of length 0".into()));
        assert_eq!(
            frame_at(&[], 1, u64::MAX),
            Frame::Bad(format!("offset {} is beyond the segment", u64::MAX))
        );
    }
}
