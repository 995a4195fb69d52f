//! [`WatchedBody`]: an HTTP body that tells a [`BodyWatcher`] what passes through it, for
//! the byte and message counts and the final gRPC status that metrics need, without
//! buffering or changing anything.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// What a [`WatchedBody`] reports. `end` is called exactly once: when the body ends, fails,
/// or is dropped before its end (a cancelled call).
pub trait BodyWatcher: Send + 'static {
    fn data(&mut self, chunk: &[u8]);
    fn trailers(&mut self, _trailers: &http::HeaderMap) {}
    fn end(&mut self);
}

/// `inner`, reporting to a watcher.
pub struct WatchedBody<B, W: BodyWatcher> {
    inner: B,
    watcher: Option<W>,
}

impl<B, W: BodyWatcher> WatchedBody<B, W> {
    pub fn new(inner: B, watcher: W) -> Self {
        WatchedBody { inner, watcher: Some(watcher) }
    }

    fn end(&mut self) {
        if let Some(mut watcher) = self.watcher.take() {
            watcher.end();
        }
    }
}

impl<B, W> Body for WatchedBody<B, W>
where
    B: Body<Data = Bytes> + Unpin,
    W: BodyWatcher + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(watcher) = this.watcher.as_mut() {
                    if let Some(data) = frame.data_ref() {
                        watcher.data(data);
                    } else if let Some(trailers) = frame.trailers_ref() {
                        watcher.trailers(trailers);
                    }
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.end(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B, W: BodyWatcher> Drop for WatchedBody<B, W> {
    fn drop(&mut self) {
        self.end();
    }
}

/// Counts the gRPC messages in a stream of body chunks: each message is a 5-byte prefix (a
/// flag and a big-endian length) and its bytes, and chunks may cut anywhere.
#[derive(Debug, Default)]
pub struct MessageCounter {
    /// Bytes of the current prefix seen so far.
    prefix: [u8; 5],
    prefix_seen: usize,
    /// Bytes of the current message still to come.
    remaining: u64,
}

impl MessageCounter {
    /// Feeds a chunk; returns how many messages it completed.
    pub fn feed(&mut self, mut chunk: &[u8]) -> u64 {
        let mut completed = 0;
        while !chunk.is_empty() {
            if self.remaining > 0 {
                let take = (self.remaining.min(chunk.len() as u64)) as usize;
                self.remaining -= take as u64;
                chunk = &chunk[take..];
                if self.remaining == 0 {
                    completed += 1;
                }
                continue;
            }
            let take = (5 - self.prefix_seen).min(chunk.len());
            self.prefix[self.prefix_seen..self.prefix_seen + take].copy_from_slice(&chunk[..take]);
            self.prefix_seen += take;
            chunk = &chunk[take..];
            if self.prefix_seen == 5 {
                self.prefix_seen = 0;
                let length =
                    u32::from_be_bytes([self.prefix[1], self.prefix[2], self.prefix[3], self.prefix[4]]);
                self.remaining = u64::from(length);
                if length == 0 {
                    completed += 1;
                }
            }
        }
        completed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Messages are counted however the chunks cut them, empty messages included.
    #[test]
    fn messages_are_counted_across_chunks() {
        let mut stream = Vec::new();
        for length in [3u32, 0, 70_000, 1] {
            stream.push(0);
            stream.extend_from_slice(&length.to_be_bytes());
            stream.extend(std::iter::repeat_n(7u8, length as usize));
        }
        for cut in [1, 2, 5, 6, 1000, stream.len()] {
            let mut counter = MessageCounter::default();
            let counted: u64 = stream.chunks(cut).map(|chunk| counter.feed(chunk)).sum();
            assert_eq!(counted, 4, "chunks of {cut}");
        }
    }
}
