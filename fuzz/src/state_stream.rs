//! synod's state snapshot stream (`StateStore::export`), built from a fuzz input with every
//! checksum filled in.
//!
//! Each frame of the stream and each value in it carries a CRC32, so a mutated stream
//! almost never gets past the checksums and the fuzzer would only ever test them. Here
//! the input says what the frames hold and the checksums are computed, so the checks
//! behind them (record layout, revisions, meta values, counts) and the import get fuzzed.
//! The format is the one `crates/synod-storage/src/state_store.rs` writes: keep in step.

use crate::frames::Frame;

pub const MAGIC: &[u8; 12] = b"SYNODSTATE1\n";
pub const FRAME_RECORD: u8 = 1;
pub const FRAME_META: u8 = 2;
pub const FRAME_END: u8 = 3;

/// What a fuzz frame (its kind modulo [`SHAPES`]) describes.
pub const SHAPE_RECORD: u8 = 0;
pub const SHAPE_META: u8 = 1;
pub const SHAPE_END: u8 = 2;
pub const SHAPE_RAW: u8 = 3;
pub const SHAPES: u8 = 4;

/// A value as the store frames it: its CRC32, little-endian, then the value.
pub fn seal(payload: &[u8]) -> Vec<u8> {
    let mut out = crc32fast::hash(payload).to_le_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// One stream frame: kind, payload length, payload, CRC32 of kind and payload.
pub fn frame(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[kind]);
    hasher.update(payload);
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&hasher.finalize().to_le_bytes());
}

/// The stream `frames` describe, by shape:
/// - record: 16 bytes of revision (main, sub; big-endian), then the record value unsealed
///   (a flags byte, then an `mvccpb.KeyValue`);
/// - meta: a key length byte, the key, then the value unsealed;
/// - end: the end frame with the counts of the frames before it (the stream stops there);
/// - raw: a frame kind byte, then the payload, framed as it is.
///
/// A stream without an end frame gets one after its last frame.
pub fn build(frames: &[Frame<'_>]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    let (mut records, mut metas) = (0u64, 0u64);
    for f in frames {
        match f.kind % SHAPES {
            SHAPE_RECORD => {
                let split = f.payload.len().min(16);
                let mut payload = f.payload[..split].to_vec();
                payload.extend_from_slice(&seal(&f.payload[split..]));
                frame(&mut out, FRAME_RECORD, &payload);
                records += 1;
            }
            SHAPE_META => {
                let key_len =
                    f.payload.first().map_or(0, |&n| n as usize).min(f.payload.len().saturating_sub(1));
                let key = f.payload.get(1..1 + key_len).unwrap_or_default();
                let value = f.payload.get(1 + key_len..).unwrap_or_default();
                let mut payload = (key.len() as u16).to_le_bytes().to_vec();
                payload.extend_from_slice(key);
                payload.extend_from_slice(&seal(value));
                frame(&mut out, FRAME_META, &payload);
                metas += 1;
            }
            SHAPE_END => {
                end(&mut out, records, metas);
                return out;
            }
            _ => {
                let (&kind, payload) = f.payload.split_first().unwrap_or((&FRAME_END, &[]));
                frame(&mut out, kind, payload);
            }
        }
    }
    end(&mut out, records, metas);
    out
}

fn end(out: &mut Vec<u8>, records: u64, metas: u64) {
    let mut counts = records.to_le_bytes().to_vec();
    counts.extend_from_slice(&metas.to_le_bytes());
    frame(out, FRAME_END, &counts);
}
