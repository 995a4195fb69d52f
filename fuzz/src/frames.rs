//! The layout of a fuzz input that carries several messages: frames of a kind byte, a
//! little-endian `u16` length and that many bytes. A length past the end takes the rest, so
//! every input splits into frames and the first byte of an input always picks the kind of
//! its first message.
//!
//! Several messages per input let one run reach states a single request cannot: a Txn
//! against keys an earlier Put wrote, a Range at a revision a Compaction removed.

/// Frames read from one input at most; the rest of the input is ignored. Bounds a run's
/// work so that a long input cannot turn into a timeout.
pub const FRAMES_MAX: usize = 16;

const HEAD_BYTES: usize = 3;

/// One message of an input: `kind` picks its type, `payload` is its encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub kind: u8,
    pub payload: &'a [u8],
}

/// The frames of `data`, in order, at most [`FRAMES_MAX`].
pub fn split(mut data: &[u8]) -> Vec<Frame<'_>> {
    let mut frames = Vec::new();
    while !data.is_empty() && frames.len() < FRAMES_MAX {
        let kind = data[0];
        let len = match data.get(1..HEAD_BYTES) {
            Some(len) => u16::from_le_bytes([len[0], len[1]]) as usize,
            None => 0,
        };
        let rest = data.get(HEAD_BYTES..).unwrap_or_default();
        let (payload, next) = rest.split_at(len.min(rest.len()));
        frames.push(Frame { kind, payload });
        data = next;
    }
    frames
}

/// The input that [`split`] reads back as `frames` (for the seed generator).
pub fn join(frames: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (kind, payload) in frames {
        let len = u16::try_from(payload.len()).expect("a seed message fits a frame");
        out.push(*kind);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(payload);
    }
    out
}
