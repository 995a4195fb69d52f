//! Fuzzes the client port's `:authority` rewriting shim (synod-server's `authority`
//! module, compiled from its source): the first byte picks how the bytes are chunked, the
//! rest is what a client sends. The shim must never panic or stall, must pass anything
//! that is not HTTP/2 through unchanged, must never make the stream longer (a replacement
//! is never longer than what it replaces), and must read the same bytes however the
//! client's writes were split.

#![no_main]

use libfuzzer_sys::fuzz_target;
use synod_fuzz::authority::through;

/// What every HTTP/2 client sends first.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    let Some((&first, sent)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(first) + 1;
    let (whole, whole_error) = through(sent, usize::MAX);
    let (chunked, chunked_error) = through(sent, chunk);
    assert_eq!(whole, chunked, "the output depends on chunks of {chunk}");
    assert_eq!(whole_error, chunked_error, "the outcome depends on chunks of {chunk}");
    assert!(whole.len() <= sent.len(), "{} bytes in, {} out", sent.len(), whole.len());
    let h2 = sent.len() >= PREFACE.len() && sent.starts_with(PREFACE);
    if !h2 && !PREFACE.starts_with(sent) {
        assert_eq!(whole, sent, "a stream that is not HTTP/2 was changed");
    }
});
