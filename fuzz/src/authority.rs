//! The `:authority` rewriting shim that every byte a client sends to synod's client port
//! passes through, compiled here from synod-server's own source file (so the fuzz target
//! runs exactly the server's code without pulling in the server's dependencies), and a
//! driver that feeds it bytes in chunks of a chosen size.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, ReadBuf};

#[path = "../../crates/synod-server/src/authority.rs"]
#[allow(dead_code)] // the server's writer half and its helpers are not driven from here
mod shim;

/// A client that sends `data` in reads of at most `chunk` bytes.
struct Chunked<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl AsyncRead for Chunked<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = self.chunk.min(buf.remaining()).min(self.data.len());
        let (sent, rest) = self.data.split_at(n);
        buf.put_slice(sent);
        self.data = rest;
        Poll::Ready(Ok(()))
    }
}

/// What the server reads when a client sends `data` in reads of `chunk` bytes: every byte
/// the shim passes on, then `Err` if it refused the connection.
pub fn through(data: &[u8], chunk: usize) -> (Vec<u8>, Option<io::ErrorKind>) {
    let mut shim = shim::AuthorityRewrite::new(Chunked { data, chunk: chunk.max(1) });
    let mut cx = Context::from_waker(Waker::noop());
    let mut out = Vec::new();
    let mut buffer = [0u8; 4096];
    // Each read returns at least one byte until the end, so this ends; the bound only makes
    // a shim that stops making progress a finding instead of a hang.
    for _ in 0..(data.len() + 16) * 2 {
        let mut read = ReadBuf::new(&mut buffer);
        match Pin::new(&mut shim).poll_read(&mut cx, &mut read) {
            Poll::Ready(Ok(())) if read.filled().is_empty() => return (out, None),
            Poll::Ready(Ok(())) => out.extend_from_slice(read.filled()),
            Poll::Ready(Err(error)) => return (out, Some(error.kind())),
            Poll::Pending => panic!("the shim waits on a client that always has bytes"),
        }
    }
    panic!("the shim stopped making progress after {} bytes of {}", out.len(), data.len());
}
