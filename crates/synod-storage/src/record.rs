//! The checksummed framing of every stored value: a little-endian CRC32 of the payload,
//! then the payload.
//!
//! redb checksums its pages, but it verifies them only when it repairs a file after a
//! crash; this frame is checked on every read, so a flipped bit in a value is reported
//! instead of served.

const CRC_BYTES: usize = 4;

/// Frames `payload` with its checksum.
pub fn seal(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(CRC_BYTES + payload.len());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The payload of a frame, if its checksum holds.
pub fn open(frame: &[u8]) -> Result<&[u8], String> {
    if frame.len() < CRC_BYTES {
        return Err(format!("record of {} bytes is shorter than its checksum", frame.len()));
    }
    let (crc, payload) = frame.split_at(CRC_BYTES);
    let stored = u32::from_le_bytes(crc.try_into().expect("split at CRC_BYTES"));
    let actual = crc32fast::hash(payload);
    if stored != actual {
        return Err(format!("checksum mismatch: stored {stored:08x}, computed {actual:08x}"));
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sealed frame opens to its payload; any single flipped bit is caught.
    #[test]
    fn every_bit_flip_is_detected() {
        let frame = seal(b"hello, synod");
        assert_eq!(open(&frame).unwrap(), b"hello, synod");
        for byte in 0..frame.len() {
            for bit in 0..8 {
                let mut bad = frame.clone();
                bad[byte] ^= 1 << bit;
                assert!(open(&bad).is_err(), "flip of bit {bit} in byte {byte} went unnoticed");
            }
        }
        assert!(open(&[1, 2]).is_err());
    }
}
