//! Latency on peer links, from a small user-space TCP proxy in front of each member's peer
//! port. This kernel has no `netem`, so delay cannot come from `tc`.
//!
//! Member X advertises its peer URL as `http://10.77.0.X:2390`. The harness listens there,
//! *inside X's namespace* (so nftables cuts in X's namespace still see the real source
//! address), and forwards each connection to X's own peer port `10.77.0.X:2380` from the
//! root namespace (whose address, 10.77.0.1, is never cut). A connection's source address
//! names the member that opened it, so each direction of it gets the current delay of its
//! link from the [`LinkDelays`] table.
//!
//! Chunks keep their order: each is stamped with its due time when it is read and written
//! once that time comes, so a delay adds latency without cutting throughput to one chunk
//! per delay.

use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::netns;

/// Where synod listens for peers, inside its namespace.
pub const PEER_PORT: u16 = 2380;
/// Where the proxy listens for peers, inside the same namespace; members advertise it.
pub const PROXY_PORT: u16 = 2390;
/// Chunks in flight per direction of a connection: reading stops when the writer is this
/// far behind, so a slow link pushes back on the sender instead of growing memory.
const CHUNKS_IN_FLIGHT_MAX: usize = 256;
const CHUNK_BYTES: usize = 16 * 1024;

/// The delay of each directed link between members, in milliseconds (0: none).
#[derive(Debug)]
pub struct LinkDelays {
    members: usize,
    millis: Vec<AtomicU64>,
}

impl LinkDelays {
    pub fn new(members: usize) -> LinkDelays {
        LinkDelays { members, millis: (0..members * members).map(|_| AtomicU64::new(0)).collect() }
    }

    /// Sets the delay of data sent from member `from` to member `to`.
    pub fn set(&self, from: usize, to: usize, delay: Duration) {
        self.millis[from * self.members + to].store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn get(&self, from: usize, to: usize) -> Duration {
        Duration::from_millis(self.millis[from * self.members + to].load(Ordering::Relaxed))
    }

    /// Removes every delay.
    pub fn clear(&self) {
        for delay in &self.millis {
            delay.store(0, Ordering::Relaxed);
        }
    }
}

/// Starts the proxy in front of member `index` (named `name`): the listener is bound now,
/// inside the member's namespace, and served by a task on the current runtime.
pub fn start(index: usize, name: &str, delays: Arc<LinkDelays>) -> Result<tokio::task::JoinHandle<()>> {
    let ip = netns::member_ip(index);
    let listener = bind_in_namespace(name, SocketAddrV4::new(ip, PROXY_PORT))
        .with_context(|| format!("bind the peer proxy of member {name} on {ip}:{PROXY_PORT}"))?;
    let listener = TcpListener::from_std(listener).context("hand the peer proxy listener to tokio")?;
    let target = SocketAddr::V4(SocketAddrV4::new(ip, PEER_PORT));
    Ok(tokio::spawn(serve(listener, index, target, delays)))
}

/// Binds a listening socket inside member `name`'s namespace. A socket keeps the namespace
/// it was made in, so a short-lived thread enters the namespace, binds, and ends; the
/// harness's own threads never leave the root namespace.
fn bind_in_namespace(name: &str, addr: SocketAddrV4) -> std::io::Result<std::net::TcpListener> {
    let name = name.to_string();
    std::thread::spawn(move || {
        netns::enter(&name)?;
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    })
    .join()
    .unwrap_or_else(|_| Err(std::io::Error::other("the namespace thread panicked")))
}

async fn serve(listener: TcpListener, to: usize, target: SocketAddr, delays: Arc<LinkDelays>) {
    loop {
        let (inbound, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Accept errors (EMFILE, aborted handshakes) are transient: wait a moment.
                eprintln!("synod-chaos: peer proxy {target}: accept: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let from = match peer {
            SocketAddr::V4(v4) => netns::member_index(*v4.ip(), delays.members),
            SocketAddr::V6(_) => None,
        };
        let delays = delays.clone();
        tokio::spawn(async move {
            // A connection that fails (the member is down, a cut stalled it until a
            // reset) ends here; synod reconnects by itself, as it would after a real fault.
            let _ = forward(inbound, from, to, target, delays).await;
        });
    }
}

/// Forwards one connection from member `from` (None: not a member, so never delayed) to
/// member `to`'s peer port, both ways.
async fn forward(
    inbound: TcpStream,
    from: Option<usize>,
    to: usize,
    target: SocketAddr,
    delays: Arc<LinkDelays>,
) -> std::io::Result<()> {
    let outbound = TcpStream::connect(target).await?;
    inbound.set_nodelay(true)?;
    outbound.set_nodelay(true)?;
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    let (forth, back) = (delays.clone(), delays);
    let delay_forth = move || from.map_or(Duration::ZERO, |from| forth.get(from, to));
    let delay_back = move || from.map_or(Duration::ZERO, |from| back.get(to, from));
    tokio::try_join!(pump(in_read, out_write, delay_forth), pump(out_read, in_write, delay_back))?;
    Ok(())
}

/// Copies one direction of a connection, holding each chunk back by the link's delay at
/// the moment it was read. Ends at end of stream (passing it on) or at the first error.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    delay: impl Fn() -> Duration,
) -> std::io::Result<()> {
    let (sender, mut receiver) = mpsc::channel::<(Instant, Vec<u8>)>(CHUNKS_IN_FLIGHT_MAX);
    let read = async move {
        let mut buffer = vec![0u8; CHUNK_BYTES];
        loop {
            let n = from.read(&mut buffer).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            let due = Instant::now() + delay();
            if sender.send((due, buffer[..n].to_vec())).await.is_err() {
                return Ok(()); // the writer failed; its error is the one reported
            }
        }
    };
    let write = async move {
        while let Some((due, chunk)) = receiver.recv().await {
            tokio::time::sleep_until(due).await;
            to.write_all(&chunk).await?;
        }
        to.shutdown().await
    };
    tokio::try_join!(read, write)?;
    Ok(())
}

/// The peer URL member `index` advertises: its proxy.
pub fn advertised_peer_url(index: usize) -> String {
    format!("http://{}:{PROXY_PORT}", netns::member_ip(index))
}

/// The peer URL member `index` listens on.
pub fn listen_peer_url(index: usize) -> String {
    format!("http://{}:{PEER_PORT}", netns::member_ip(index))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Data through a delayed link arrives whole, in order, and no earlier than the delay;
    /// the reverse direction has its own (zero) delay.
    #[tokio::test]
    async fn delayed_link_keeps_order_and_adds_latency() {
        let server = TcpListener::bind("127.0.0.1:0").await.expect("bind the server");
        let target = server.local_addr().expect("server address");
        let proxy = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let proxy_addr = proxy.local_addr().expect("proxy address");
        let delays = Arc::new(LinkDelays::new(2));
        delays.set(0, 1, Duration::from_millis(150));
        tokio::spawn(async move {
            let (inbound, _) = proxy.accept().await.expect("accept at the proxy");
            let _ = forward(inbound, Some(0), 1, target, delays).await;
        });
        let echo = tokio::spawn(async move {
            let (mut stream, _) = server.accept().await.expect("accept at the server");
            let mut received = Vec::new();
            stream.read_to_end(&mut received).await.expect("read at the server");
            stream.write_all(&received).await.expect("echo");
            stream.shutdown().await.expect("shut down the echo");
        });

        let sent: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let started = Instant::now();
        let mut client = TcpStream::connect(proxy_addr).await.expect("connect to the proxy");
        client.write_all(&sent).await.expect("send");
        client.shutdown().await.expect("shut down the sending side");
        let mut echoed = Vec::new();
        client.read_to_end(&mut echoed).await.expect("read the echo");
        let elapsed = started.elapsed();
        echo.await.expect("echo task");

        assert!(echoed == sent, "the echo differs from what was sent");
        assert!(elapsed >= Duration::from_millis(150), "arrived after {elapsed:?}, before the delay");
        // Many chunks, one delay: latency is added once, not per chunk.
        assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}: the delay was applied per chunk");
    }
}
