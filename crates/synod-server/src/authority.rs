//! Rewrites the `:authority` of the client's HTTP/2 requests before hyper sees them, so
//! clients that send an authority h2 rejects still reach synod, as they reach etcd.
//!
//! etcdctl 3.4 dials `http://host:port` endpoints through grpc-go's `passthrough:///`
//! target for `endpoint status`, `endpoint hashkv` and every `--cluster` command, and so
//! sends `:authority: http://host:port`. etcd's grpc-go server never validates the
//! authority; h2 rejects it as malformed (RST_STREAM with PROTOCOL_ERROR) and has no option
//! not to. synod never reads the authority, so [`AuthorityRewrite`] replaces the value of
//! every literal `:authority` field in the client's header blocks with `x`. All other
//! bytes, and every byte of an HTTP/1.1 connection, pass unchanged; writes are not touched.
//!
//! Only HPACK's framing is parsed: no Huffman decoding and no dynamic table, which is why
//! the replacement must never make a field longer (see [`rewrite_block`]).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, BytesMut};
use synod_base::limits;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What every HTTP/2 client sends first (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_BYTES: usize = 9;
const FRAME_HEADERS: u8 = 0x1;
const FRAME_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
const PRIORITY_BYTES: usize = 5;

/// The largest frame payload every HTTP/2 peer must accept (RFC 9113 §4.2): re-emitted
/// frames stay within it without knowing the server's SETTINGS.
const FRAME_PAYLOAD_BYTES_MAX: usize = 16_384;

/// Bytes asked of the socket per read while frames are being parsed.
const READ_BYTES: usize = 16 * 1024;

const _: () = assert!(FRAME_HEADER_BYTES + FRAME_PAYLOAD_BYTES_MAX <= limits::HTTP2_HEADER_BLOCK_BYTES_MAX);

/// The replacement value: a valid authority, and at one byte never longer than a non-empty
/// value it replaces.
const AUTHORITY_VALUE: &[u8] = b"x";

/// `:authority` in HPACK's static table (RFC 7541 Appendix A).
const AUTHORITY_STATIC_INDEX: u64 = 1;

const AUTHORITY_NAME: &[u8] = b":authority";

/// `:authority` in HPACK's Huffman code (RFC 7541 Appendix B). The code is canonical and
/// its padding fixed, so this is the name's only Huffman form.
const AUTHORITY_NAME_HUFFMAN: &[u8] = &[0xb8, 0x3b, 0x53, 0x39, 0xec, 0x32, 0x7d, 0x7f];

/// An accepted connection whose inbound HTTP/2 header blocks get their `:authority`
/// values replaced (see the module docs). Reads are cancel safe: dropping a pending read
/// loses nothing, as with the stream it wraps.
pub(crate) struct AuthorityRewrite<S> {
    inner: S,
    /// Bytes read from the client that the parser has not consumed yet.
    input: BytesMut,
    /// Parsed bytes for the reader; they come before anything still in `input`.
    output: BytesMut,
    state: State,
    /// The client has closed its side.
    eof: bool,
}

/// Where the parser is in the client's byte stream.
enum State {
    /// At the start: the bytes so far may still be the HTTP/2 client preface.
    Preface,
    /// Not HTTP/2, or framing h2 rejects anyway: every byte passes as it comes.
    Verbatim,
    /// Passing on the next `remaining` bytes unchanged: the preface or a frame that is not
    /// part of a header block. Large DATA frames stream through here.
    Copy { remaining: usize },
    /// At a frame boundary.
    FrameStart,
    /// Collecting a header block's HEADERS and CONTINUATION frames, as received.
    HeaderBlock { stream_id: u32, frames: BytesMut },
    /// A header block outgrew [`limits::HTTP2_HEADER_BLOCK_BYTES_MAX`]; the connection is over.
    Failed,
}

impl<S> AuthorityRewrite<S> {
    pub(crate) fn new(inner: S) -> Self {
        AuthorityRewrite {
            inner,
            input: BytesMut::new(),
            output: BytesMut::new(),
            state: State::Preface,
            eof: false,
        }
    }

    /// Consumes what it can of `input` in the states that need whole units (the preface,
    /// frame headers, header blocks); returns whether it made progress.
    fn parse(&mut self) -> io::Result<bool> {
        match &mut self.state {
            State::Verbatim | State::Copy { .. } => return Ok(false),
            State::Failed => return Err(header_block_too_large()),
            State::Preface => {
                let seen = self.input.len().min(PREFACE.len());
                if self.input[..seen] != PREFACE[..seen] {
                    self.state = State::Verbatim;
                    return Ok(true);
                }
                if seen == PREFACE.len() {
                    self.state = State::Copy { remaining: seen };
                    return Ok(true);
                }
            }
            State::FrameStart => {
                if let Some(header) = FrameHeader::parse(&self.input) {
                    self.state = if header.kind == FRAME_HEADERS {
                        State::HeaderBlock { stream_id: header.stream_id, frames: BytesMut::new() }
                    } else {
                        State::Copy { remaining: FRAME_HEADER_BYTES + header.length }
                    };
                    return Ok(true);
                }
            }
            State::HeaderBlock { stream_id, frames } => {
                if let Some(header) = FrameHeader::parse(&self.input) {
                    let expected = if frames.is_empty() { FRAME_HEADERS } else { FRAME_CONTINUATION };
                    if header.kind != expected || header.stream_id != *stream_id {
                        // Another frame inside a header block is a connection error (RFC 9113
                        // §6.10): pass it all on as sent, and h2 reports it.
                        self.output.extend_from_slice(frames);
                        self.state = State::Verbatim;
                        return Ok(true);
                    }
                    let frame_bytes = FRAME_HEADER_BYTES + header.length;
                    if frames.len() + frame_bytes > limits::HTTP2_HEADER_BLOCK_BYTES_MAX {
                        self.state = State::Failed;
                        return Err(header_block_too_large());
                    }
                    if self.input.len() >= frame_bytes {
                        let frame = &self.input[..frame_bytes];
                        let end = header.flags & FLAG_END_HEADERS != 0;
                        if end && frames.is_empty() {
                            // The common case, a block in one frame, needs no copy.
                            rewrite_frames(frame, &mut self.output);
                        } else {
                            frames.extend_from_slice(frame);
                            if end {
                                rewrite_frames(frames, &mut self.output);
                            }
                        }
                        self.input.advance(frame_bytes);
                        if end {
                            self.state = State::FrameStart;
                        }
                        return Ok(true);
                    }
                }
            }
        }
        if self.eof {
            // The client stopped mid-preface or mid-frame: pass on what it sent, so the
            // HTTP parser sees the same truncated stream it would have seen without us.
            if let State::HeaderBlock { frames, .. } = &self.state {
                self.output.extend_from_slice(frames);
            }
            self.output.extend_from_slice(&self.input);
            self.input.clear();
            self.state = State::Verbatim;
            return Ok(true);
        }
        Ok(false)
    }
}

impl<S: AsyncRead + Unpin> AuthorityRewrite<S> {
    /// Reads more of the client's bytes into `input`.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let start = self.input.len();
        self.input.resize(start + READ_BYTES, 0);
        let mut read = ReadBuf::new(&mut self.input[start..]);
        let polled = Pin::new(&mut self.inner).poll_read(cx, &mut read);
        let read_bytes = read.filled().len();
        self.input.truncate(start + read_bytes);
        ready!(polled)?;
        self.eof = read_bytes == 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityRewrite<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let filled_before = buf.filled().len();
        // Hand on as much as is ready without waiting; wait on the socket only while
        // nothing has been handed on yet.
        loop {
            let progressed = buf.filled().len() > filled_before;
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            if !this.output.is_empty() {
                let n = this.output.len().min(buf.remaining());
                buf.put_slice(&this.output[..n]);
                this.output.advance(n);
                continue;
            }
            let copy_limit = match this.state {
                State::Verbatim => Some(usize::MAX),
                State::Copy { remaining } => Some(remaining),
                _ => None,
            };
            if let Some(limit) = copy_limit {
                let n = if !this.input.is_empty() {
                    let n = limit.min(this.input.len()).min(buf.remaining());
                    buf.put_slice(&this.input[..n]);
                    this.input.advance(n);
                    n
                } else if progressed {
                    return Poll::Ready(Ok(()));
                } else if limit == usize::MAX {
                    return Pin::new(&mut this.inner).poll_read(cx, buf);
                } else {
                    // Read the rest of a large frame straight into the reader's buffer.
                    let mut limited = ReadBuf::new(buf.initialize_unfilled_to(limit.min(buf.remaining())));
                    ready!(Pin::new(&mut this.inner).poll_read(cx, &mut limited))?;
                    let n = limited.filled().len();
                    buf.advance(n);
                    if n == 0 {
                        // The client's end of stream, which the reader sees as such.
                        return Poll::Ready(Ok(()));
                    }
                    n
                };
                if let State::Copy { remaining } = &mut this.state {
                    *remaining -= n;
                    if *remaining == 0 {
                        this.state = State::FrameStart;
                    }
                }
                continue;
            }
            match this.parse() {
                Ok(true) => continue,
                Ok(false) => {}
                // Hand on what came before the error first; the state keeps the error.
                Err(_) if progressed => return Poll::Ready(Ok(())),
                Err(error) => return Poll::Ready(Err(error)),
            }
            if progressed {
                return Poll::Ready(Ok(()));
            }
            ready!(this.poll_fill(cx))?;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityRewrite<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

fn header_block_too_large() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "an HTTP/2 header block from the client exceeds {} bytes",
            limits::HTTP2_HEADER_BLOCK_BYTES_MAX
        ),
    )
}

/// The 9-byte header of an HTTP/2 frame (RFC 9113 §4.1).
#[derive(Clone, Copy, Debug)]
struct FrameHeader {
    length: usize,
    kind: u8,
    flags: u8,
    stream_id: u32,
}

impl FrameHeader {
    /// The header at the start of `bytes`, if they hold one.
    fn parse(bytes: &[u8]) -> Option<FrameHeader> {
        let header = bytes.get(..FRAME_HEADER_BYTES)?;
        Some(FrameHeader {
            length: u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize,
            kind: header[3],
            flags: header[4],
            stream_id: u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff,
        })
    }

    fn put(self, out: &mut BytesMut) {
        let length = u32::try_from(self.length).expect("re-emitted frames are at most 16 KiB");
        out.put_slice(&length.to_be_bytes()[1..]);
        out.put_u8(self.kind);
        out.put_u8(self.flags);
        out.put_u32(self.stream_id);
    }
}

/// Appends one header block to `out`: `frames` (a HEADERS frame and its CONTINUATION frames,
/// as received) re-framed with every literal `:authority` value replaced; or `frames` as
/// they are if there is nothing to replace or they do not parse, so that h2 reports the
/// error it would have reported without us.
fn rewrite_frames(frames: &[u8], out: &mut BytesMut) {
    let Some((first, priority, block)) = header_block(frames) else {
        out.extend_from_slice(frames);
        return;
    };
    let Some(block) = rewrite_block(&block) else {
        out.extend_from_slice(frames);
        return;
    };
    // One HEADERS frame with the original stream, END_STREAM and priority, then as many
    // CONTINUATION frames as the block needs; no padding.
    let priority: &[u8] = priority.as_ref().map_or(&[], |p| p.as_slice());
    let (head, mut rest) = block.split_at(block.len().min(FRAME_PAYLOAD_BYTES_MAX - priority.len()));
    let end_headers = if rest.is_empty() { FLAG_END_HEADERS } else { 0 };
    FrameHeader {
        length: priority.len() + head.len(),
        kind: FRAME_HEADERS,
        flags: (first.flags & (FLAG_END_STREAM | FLAG_PRIORITY)) | end_headers,
        stream_id: first.stream_id,
    }
    .put(out);
    out.extend_from_slice(priority);
    out.extend_from_slice(head);
    while !rest.is_empty() {
        let (chunk, after) = rest.split_at(rest.len().min(FRAME_PAYLOAD_BYTES_MAX));
        rest = after;
        let flags = if rest.is_empty() { FLAG_END_HEADERS } else { 0 };
        FrameHeader { length: chunk.len(), kind: FRAME_CONTINUATION, flags, stream_id: first.stream_id }
            .put(out);
        out.extend_from_slice(chunk);
    }
}

/// The first frame's header, its priority fields and the header block fragments joined,
/// from a HEADERS frame and its CONTINUATION frames; `None` if the padding or priority
/// fields do not fit their frame.
fn header_block(mut frames: &[u8]) -> Option<(FrameHeader, Option<[u8; PRIORITY_BYTES]>, Vec<u8>)> {
    let first = FrameHeader::parse(frames)?;
    let mut priority = None;
    let mut block = Vec::with_capacity(frames.len());
    let mut is_first = true;
    while let Some(header) = FrameHeader::parse(frames) {
        let end = FRAME_HEADER_BYTES.checked_add(header.length)?;
        let mut fragment = frames.get(FRAME_HEADER_BYTES..end)?;
        frames = &frames[end..];
        if is_first {
            if header.flags & FLAG_PADDED != 0 {
                let (&padding, rest) = fragment.split_first()?;
                fragment = rest.get(..rest.len().checked_sub(usize::from(padding))?)?;
            }
            if header.flags & FLAG_PRIORITY != 0 {
                let (fields, rest) = fragment.split_at_checked(PRIORITY_BYTES)?;
                priority = Some(fields.try_into().ok()?);
                fragment = rest;
            }
            is_first = false;
        }
        block.extend_from_slice(fragment);
    }
    Some((first, priority, block))
}

/// `block` with the value of every literal field named `:authority` replaced by
/// [`AUTHORITY_VALUE`], keeping the field's representation; `None` if there is none to
/// replace or the block does not parse (then it goes to h2 as it is, which reports it).
///
/// Why this cannot desynchronise HPACK without tracking the dynamic table: a literal with
/// incremental indexing adds its field to both ends' tables, and the replacement only ever
/// makes that entry smaller (32 + name + 1 bytes against 32 + name + a non-empty value), so
/// the server's table never holds more bytes than the client's. The server then evicts no
/// sooner than the client: every entry the client can still name sits at the same index in
/// the server's table (entries only linger longer at the old end, which the client never
/// references), and a later reference to a rewritten entry yields `x`, as intended. That is
/// why empty values are left alone, and why fields named by a dynamic-table index are too:
/// their name is unknown here.
fn rewrite_block(block: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(block.len());
    let mut changed = false;
    let mut pos = 0;
    while let Some(&first) = block.get(pos) {
        let start = pos;
        // Indexed fields (§6.1) and dynamic table size updates (§6.3) are one integer.
        let bare_integer_bits = if first & 0x80 != 0 {
            Some(7)
        } else if first & 0xe0 == 0x20 {
            Some(5)
        } else {
            None
        };
        if let Some(bits) = bare_integer_bits {
            (_, pos) = integer(block, pos, bits)?;
            out.extend_from_slice(&block[start..pos]);
            continue;
        }
        // Literals with incremental indexing (§6.2.1) have a 6-bit name index; without
        // indexing and never indexed (§6.2.2, §6.2.3) a 4-bit one.
        let name_prefix_bits = if first & 0xc0 == 0x40 { 6 } else { 4 };
        let name_index;
        (name_index, pos) = integer(block, pos, name_prefix_bits)?;
        let is_authority = if name_index == 0 {
            let (huffman, name);
            (huffman, name, pos) = string(block, pos)?;
            name == if huffman { AUTHORITY_NAME_HUFFMAN } else { AUTHORITY_NAME }
        } else {
            name_index == AUTHORITY_STATIC_INDEX
        };
        let value_start = pos;
        let (_, value, value_end) = string(block, pos)?;
        pos = value_end;
        // A non-empty Huffman string decodes to at least one symbol (the shortest code is
        // 5 bits and padding is at most 7), so no replaced value was empty.
        if is_authority && !value.is_empty() {
            out.extend_from_slice(&block[start..value_start]);
            out.push(AUTHORITY_VALUE.len() as u8);
            out.extend_from_slice(AUTHORITY_VALUE);
            changed = true;
        } else {
            out.extend_from_slice(&block[start..pos]);
        }
    }
    changed.then_some(out)
}

/// Decodes the integer at `pos` with an `prefix_bits`-bit prefix (RFC 7541 §5.1); returns it
/// and the position after it. Like h2, at most five bytes.
fn integer(block: &[u8], mut pos: usize, prefix_bits: u32) -> Option<(u64, usize)> {
    const BYTES_MAX: usize = 5;
    let mask = (1u8 << prefix_bits) - 1;
    let mut value = u64::from(*block.get(pos)? & mask);
    pos += 1;
    if value < u64::from(mask) {
        return Some((value, pos));
    }
    for shift in (0..).step_by(7).take(BYTES_MAX - 1) {
        let byte = *block.get(pos)?;
        pos += 1;
        value += u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some((value, pos));
        }
    }
    None
}

/// Splits off the string literal at `pos` (RFC 7541 §5.2): whether it is Huffman-coded, its
/// bytes as sent, and the position after it.
fn string(block: &[u8], pos: usize) -> Option<(bool, &[u8], usize)> {
    let huffman = *block.get(pos)? & 0x80 != 0;
    let (length, pos) = integer(block, pos, 7)?;
    let end = pos.checked_add(usize::try_from(length).ok()?)?;
    Some((huffman, block.get(pos..end)?, end))
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A client that sends `data` in reads of at most `chunk` bytes, answering every other
    /// read with `Pending` first, so every parser state meets a read boundary.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        chunk: usize,
        stall: bool,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            this.stall = !this.stall;
            if this.stall {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let n = this.chunk.min(buf.remaining()).min(this.data.len() - this.pos);
            buf.put_slice(&this.data[this.pos..this.pos + n]);
            this.pos += n;
            Poll::Ready(Ok(()))
        }
    }

    const CHUNKS: &[usize] = &[1, 2, 3, 5, 8, 9, 13, 24, 100, 4096, usize::MAX];

    /// What the server reads when the client sends `data`, for each way of chunking it; the
    /// answer must not depend on the chunking.
    async fn through(data: &[u8]) -> io::Result<Vec<u8>> {
        let mut seen: Option<Vec<u8>> = None;
        for &chunk in CHUNKS {
            let client = Trickle { data: data.to_vec(), pos: 0, chunk, stall: false };
            let mut out = Vec::new();
            AuthorityRewrite::new(client).read_to_end(&mut out).await?;
            if let Some(seen) = &seen {
                assert_eq!(&out, seen, "the output changes with reads of {chunk} bytes");
            }
            seen = Some(out);
        }
        Ok(seen.expect("CHUNKS is not empty"))
    }

    fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        FrameHeader { length: payload.len(), kind, flags, stream_id }.put(&mut out);
        out.extend_from_slice(payload);
        out.to_vec()
    }

    fn settings() -> Vec<u8> {
        frame(0x4, 0, 0, &[0x00, 0x03, 0x00, 0x00, 0x00, 0x64])
    }

    fn data(stream_id: u32, payload: &[u8]) -> Vec<u8> {
        frame(0x0, FLAG_END_STREAM, stream_id, payload)
    }

    fn connection(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut out = PREFACE.to_vec();
        frames.iter().for_each(|f| out.extend_from_slice(f));
        out
    }

    /// RFC 7541 C.3.1: GET http://www.example.com/, with a raw `:authority` literal
    /// (incremental indexing, name from the static table).
    const C3_1: &[u8] = b"\x82\x86\x84\x41\x0fwww.example.com";
    /// RFC 7541 C.3.2: the second request, whose authority is a dynamic-table reference.
    const C3_2: &[u8] = b"\x82\x86\x84\xbe\x58\x08no-cache";
    /// RFC 7541 C.4.1: C.3.1 with the value Huffman-coded.
    const C4_1: &[u8] = &[
        0x82, 0x86, 0x84, 0x41, 0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff,
    ];
    /// RFC 7541 C.4.3: a custom-key literal with a Huffman-coded name and value.
    const C4_3: &[u8] = &[
        0x82, 0x87, 0x85, 0xbf, 0x40, 0x88, 0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xa9, 0x7d, 0x7f, 0x89, 0x25, 0xa8,
        0x49, 0xe9, 0x5b, 0xb8, 0xe8, 0xb4, 0xbf,
    ];
    /// C.3.1 and C.4.1 once rewritten: the same fields, the authority's value a raw `x`.
    const REWRITTEN: &[u8] = b"\x82\x86\x84\x41\x01x";

    /// The RFC's requests: literal authorities, raw or Huffman-coded, become `x`; a
    /// reference to the dynamic table and other literals are left alone.
    #[test]
    fn rewrites_the_rfc_examples() {
        assert_eq!(rewrite_block(C3_1).as_deref(), Some(REWRITTEN));
        assert_eq!(rewrite_block(C4_1).as_deref(), Some(REWRITTEN));
        assert_eq!(rewrite_block(C3_2), None);
        assert_eq!(rewrite_block(C4_3), None);
    }

    /// Each literal representation keeps its kind, whether the name is the static index or
    /// a literal `:authority`, raw or Huffman-coded.
    #[test]
    fn keeps_each_literal_representation() {
        let value = b"\x16http://127.0.0.1:23790";
        let names: [&[u8]; 2] = [b"\x0a:authority", b"\x88\xb8\x3b\x53\x39\xec\x32\x7d\x7f"];
        for (first_with_index, first_with_name) in [(0x41, 0x40), (0x01, 0x00), (0x11, 0x10)] {
            let block = [&[first_with_index][..], value].concat();
            assert_eq!(rewrite_block(&block), Some(vec![first_with_index, 1, b'x']));
            for name in names {
                let block = [&[first_with_name][..], name, value].concat();
                let expected = [&[first_with_name][..], name, b"\x01x"].concat();
                assert_eq!(rewrite_block(&block), Some(expected), "{block:02x?}");
            }
        }
    }

    /// The Huffman constant is `:authority` as RFC 7541 Appendix B codes it: the codes of
    /// its letters, concatenated, padded with ones.
    #[test]
    fn huffman_name_is_authority() {
        // (code, bits) for ':', 'a', 'u', 't', 'h', 'o', 'r', 'i', 't', 'y'.
        let codes: [(u64, u32); 10] = [
            (0x5c, 7),
            (0x3, 5),
            (0x2d, 6),
            (0x9, 5),
            (0x27, 6),
            (0x7, 5),
            (0x2c, 6),
            (0x6, 5),
            (0x9, 5),
            (0x7a, 7),
        ];
        let (mut bits, mut count) = (0u64, 0);
        for (code, length) in codes {
            bits = (bits << length) | code;
            count += length;
        }
        let padding = 64 - count;
        bits = (bits << padding) | ((1 << padding) - 1);
        assert_eq!(AUTHORITY_NAME_HUFFMAN, bits.to_be_bytes());
    }

    /// Empty values, dynamic-table names, other names and size updates pass unchanged, and
    /// a field after a size update is still found.
    #[test]
    fn leaves_other_fields_alone() {
        assert_eq!(rewrite_block(b"\x41\x00"), None);
        assert_eq!(rewrite_block(b"\x7e\x03abc"), None);
        assert_eq!(rewrite_block(b"\x40\x0b:authorityx\x03abc"), None);
        assert_eq!(rewrite_block(b"\x40\x04host\x03abc"), None);
        assert_eq!(rewrite_block(b"\x3f\xe1\x1f\x41\x03abc").as_deref(), Some(&b"\x3f\xe1\x1f\x41\x01x"[..]));
        // A name index continued past its prefix (63 = 63 + 0) is dynamic, not :authority.
        assert_eq!(rewrite_block(b"\x7f\x00\x03abc"), None);
    }

    /// A block that does not parse is not rewritten, even if it names `:authority` first.
    #[test]
    fn leaves_unparsable_blocks_alone() {
        assert_eq!(rewrite_block(b"\x41\x0fwww.example"), None);
        assert_eq!(rewrite_block(b"\x41\x03abc\x40"), None);
        assert_eq!(rewrite_block(b"\x41\x7f\xff\xff\xff\xff\xff"), None);
        // Integers take at most five bytes, as in h2, even when they encode a small value.
        let value = [b'a'; 127];
        let longest = [&[0x41, 0x7f, 0x80, 0x80, 0x80, 0x00][..], &value].concat();
        assert_eq!(rewrite_block(&longest).as_deref(), Some(&b"\x41\x01x"[..]));
        let too_long = [&[0x41, 0x7f, 0x80, 0x80, 0x80, 0x80, 0x00][..], &value].concat();
        assert_eq!(rewrite_block(&too_long), None);
    }

    /// The common case: preface, SETTINGS, one HEADERS frame with a literal authority, then
    /// DATA. Only the HEADERS frame changes.
    #[tokio::test]
    async fn rewrites_a_request() {
        let flags = FLAG_END_HEADERS;
        let sent = connection(&[settings(), frame(FRAME_HEADERS, flags, 1, C4_1), data(1, b"hello")]);
        let expected =
            connection(&[settings(), frame(FRAME_HEADERS, flags, 1, REWRITTEN), data(1, b"hello")]);
        assert_eq!(through(&sent).await.expect("read"), expected);
    }

    /// A block split over HEADERS and CONTINUATION frames, the authority's value cut in two,
    /// comes out as one HEADERS frame with END_STREAM kept.
    #[tokio::test]
    async fn joins_continuation_frames() {
        let sent = connection(&[
            settings(),
            frame(FRAME_HEADERS, FLAG_END_STREAM, 3, &C3_1[..8]),
            frame(FRAME_CONTINUATION, 0, 3, &C3_1[8..12]),
            frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 3, &C3_1[12..]),
            frame(0x8, 0, 0, &[0, 0, 0x10, 0]),
        ]);
        let expected = connection(&[
            settings(),
            frame(FRAME_HEADERS, FLAG_END_STREAM | FLAG_END_HEADERS, 3, REWRITTEN),
            frame(0x8, 0, 0, &[0, 0, 0x10, 0]),
        ]);
        assert_eq!(through(&sent).await.expect("read"), expected);
    }

    /// Padding is dropped and the priority fields are kept, with their flag.
    #[tokio::test]
    async fn drops_padding_and_keeps_priority() {
        let priority = [0x80, 0, 0, 1, 200];
        let payload = [&[3][..], &priority, C3_1, &[0, 0, 0]].concat();
        let flags = FLAG_END_HEADERS | FLAG_PADDED | FLAG_PRIORITY | FLAG_END_STREAM;
        let sent = connection(&[frame(FRAME_HEADERS, flags, 5, &payload)]);
        let flags = FLAG_END_HEADERS | FLAG_PRIORITY | FLAG_END_STREAM;
        let expected = connection(&[frame(FRAME_HEADERS, flags, 5, &[&priority[..], REWRITTEN].concat())]);
        assert_eq!(through(&sent).await.expect("read"), expected);
    }

    /// A block with nothing to rewrite passes exactly as sent, padding and all, and so do
    /// padding that overflows its frame and a header block interrupted by another frame:
    /// h2 must see those errors.
    #[tokio::test]
    async fn passes_other_blocks_as_sent() {
        let padded =
            frame(FRAME_HEADERS, FLAG_END_HEADERS | FLAG_PADDED, 1, &[&[2][..], C3_2, &[0, 0]].concat());
        let bad_padding =
            frame(FRAME_HEADERS, FLAG_END_HEADERS | FLAG_PADDED, 3, &[&[200][..], C3_1].concat());
        // A second HEADERS frame where a CONTINUATION frame must be.
        let interrupted = [
            frame(FRAME_HEADERS, 0, 5, C3_1),
            frame(FRAME_HEADERS, FLAG_END_HEADERS, 5, C3_1),
            data(5, b"x"),
        ];
        for frames in [vec![settings(), padded], vec![bad_padding], interrupted.to_vec()] {
            let sent = connection(&frames);
            assert_eq!(through(&sent).await.expect("read"), sent);
        }
    }

    /// A rewritten block larger than one frame is split into HEADERS and CONTINUATION
    /// frames of at most 16 KiB.
    #[tokio::test]
    async fn splits_large_blocks() {
        let big_value = vec![b'v'; 20_000];
        let mut block = b"\x40\x03big\x7f".to_vec();
        block.extend_from_slice(&[0xa1, 0x9b, 0x01]); // 127 + 19873 = 20000
        block.extend_from_slice(&big_value);
        let original = [&block[..], C3_1].concat();
        let rewritten = [&block[..], REWRITTEN].concat();
        let sent = connection(&[
            frame(FRAME_HEADERS, 0, 1, &original[..16_000]),
            frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 1, &original[16_000..]),
        ]);
        let expected = connection(&[
            frame(FRAME_HEADERS, 0, 1, &rewritten[..FRAME_PAYLOAD_BYTES_MAX]),
            frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 1, &rewritten[FRAME_PAYLOAD_BYTES_MAX..]),
        ]);
        assert_eq!(through(&sent).await.expect("read"), expected);
    }

    /// Large DATA frames stream through unchanged, followed by a rewritten request.
    #[tokio::test]
    async fn streams_data_frames() {
        let payload: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let headers = frame(FRAME_HEADERS, FLAG_END_HEADERS, 3, C4_1);
        let sent = connection(&[settings(), data(1, &payload), headers]);
        let expected = connection(&[
            settings(),
            data(1, &payload),
            frame(FRAME_HEADERS, FLAG_END_HEADERS, 3, REWRITTEN),
        ]);
        assert_eq!(through(&sent).await.expect("read"), expected);
    }

    /// HTTP/1.1, including a request that starts like the preface, passes byte for byte.
    #[tokio::test]
    async fn passes_http1_unchanged() {
        let requests: [&[u8]; 3] = [
            b"POST /v3/kv/range HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n{\"key\":\"Zm9v\"}",
            b"PRI * HTTP/1.1\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\r\x00\x00\x05\x01\x04\x00\x00\x00\x01\x41\x03abc",
        ];
        for request in requests {
            assert_eq!(through(request).await.expect("read"), request);
        }
    }

    /// Bytes that cannot begin the preface reach the server at once; bytes that still may
    /// wait for the rest of it.
    #[tokio::test]
    async fn decides_as_soon_as_the_preface_cannot_match() {
        use futures::FutureExt;
        for (sent, expected) in [(&b"PO"[..], Some(&b"PO"[..])), (b"PRI * HTTP/2.0", None)] {
            let (server_end, mut client) = tokio::io::duplex(64);
            client.write_all(sent).await.expect("write");
            let mut server = AuthorityRewrite::new(server_end);
            let mut seen = [0; 64];
            let read = server.read(&mut seen).now_or_never().map(|n| n.expect("read"));
            assert_eq!(read.map(|n| &seen[..n]), expected, "after {sent:?}");
        }
    }

    /// A client that stops mid-preface or mid-frame gets its bytes passed on, then the end.
    #[tokio::test]
    async fn passes_truncated_streams() {
        let whole = connection(&[settings(), frame(FRAME_HEADERS, 0, 1, C3_1)]);
        for cut in [10, PREFACE.len() + 4, PREFACE.len() + 20, whole.len()] {
            assert_eq!(through(&whole[..cut]).await.expect("read"), &whole[..cut]);
        }
    }

    /// A header block beyond the cap fails the connection instead of growing memory.
    #[tokio::test]
    async fn fails_on_oversized_blocks() {
        let fragment = vec![0x82; FRAME_PAYLOAD_BYTES_MAX];
        let frames: Vec<Vec<u8>> = std::iter::once(frame(FRAME_HEADERS, 0, 1, &fragment))
            .chain((0..20).map(|_| frame(FRAME_CONTINUATION, 0, 1, &fragment)))
            .collect();
        let error = through(&connection(&frames)).await.expect_err("oversized block");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }

    /// Writes reach the client untouched.
    #[tokio::test]
    async fn writes_pass_through() {
        let (server_end, mut client) = tokio::io::duplex(64);
        let mut server = AuthorityRewrite::new(server_end);
        server.write_all(b"\x00\x00\x00\x04\x01\x00\x00\x00\x00").await.expect("write");
        server.shutdown().await.expect("shutdown");
        let mut seen = Vec::new();
        client.read_to_end(&mut seen).await.expect("read");
        assert_eq!(seen, b"\x00\x00\x00\x04\x01\x00\x00\x00\x00");
    }
}
