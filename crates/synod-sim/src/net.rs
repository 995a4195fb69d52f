//! The simulated network: every peer RPC a member makes is delivered in-process to the
//! target member's real peer service (the same tonic service a server exposes on its peer
//! port), whole, after a delay drawn from the seed, unless a cut link or a down member
//! stops it.
//!
//! - A cut link `a → b` drops what `a` sends to `b`, requests and replies alike: a request
//!   on it is never delivered, a reply on it never arrives, and the caller's deadline
//!   expires, as with a partition on a real network; a call without a shorter deadline
//!   fails when HTTP/2 keepalive would notice. Cuts are one-way; a partition is both.
//! - A down member refuses connections at once ("connect" in the message, as tonic says
//!   when nothing was sent), and whatever the dead process had in flight is lost.
//! - Every message gets its own delay, so messages overtake each other (reordering).
//! - Raft messages (AppendEntries, votes, snapshots) may be delivered a second time, later.
//!   RPCs that carry client commands (Forward, ReadIndex, MemberChange) are not: no real
//!   TCP stream repeats a request, and synod does not claim to survive that.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::BodyExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use synod_consensus::{Dialer, PeerChannel, PeerError};
use tower::ServiceExt;

/// A member's peer service, as the network calls it.
pub type PeerServer = tower::util::BoxCloneSyncService<
    http::Request<tonic::body::Body>,
    http::Response<tonic::body::Body>,
    Infallible,
>;

/// How long a call on a connection whose messages are being lost takes to fail: the
/// HTTP/2 keepalive a server's peer channels run with (10 s between pings, 5 s to answer).
const CONNECTION_LOST_AFTER: Duration = Duration::from_secs(15);

/// The RPCs of the Raft protocol itself, which may be duplicated.
const RAFT_MESSAGES: [&str; 4] = [
    "/synodpb.Raft/AppendEntries",
    "/synodpb.Raft/Vote",
    "/synodpb.Raft/PreVote",
    "/synodpb.Raft/InstallSnapshot",
];

/// The network's faults, set by the nemesis.
#[derive(Clone, Debug, PartialEq)]
pub struct Weather {
    /// One-way delay of a message, drawn uniformly from this range (milliseconds).
    pub delay_ms: (u64, u64),
    /// The chance that a Raft message is delivered twice.
    pub duplicate: f64,
}

impl Weather {
    pub fn calm() -> Weather {
        Weather { delay_ms: (1, 5), duplicate: 0.0 }
    }
}

struct State {
    rng: StdRng,
    /// The running incarnation of each member that is up, and its peer service.
    up: BTreeMap<u64, (u64, PeerServer)>,
    /// The newest incarnation of each member, up or down.
    boots: BTreeMap<u64, u64>,
    cut: BTreeSet<(u64, u64)>,
    weather: Weather,
}

/// The network between the simulated members.
#[derive(Clone)]
pub struct SimNet {
    state: Arc<Mutex<State>>,
}

/// Where a message goes, decided when it arrives.
enum Arrival {
    Deliver { server: PeerServer, boot: u64 },
    Refused,
    Lost,
}

impl SimNet {
    pub fn new(seed: u64) -> SimNet {
        SimNet {
            state: Arc::new(Mutex::new(State {
                rng: StdRng::seed_from_u64(seed),
                up: BTreeMap::new(),
                boots: BTreeMap::new(),
                cut: BTreeSet::new(),
                weather: Weather::calm(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a new incarnation of `member` and returns its boot number. Whatever earlier
    /// incarnations still send is lost from now on; the member refuses connections until
    /// [`SimNet::serve`].
    pub fn boot_next(&self, member: u64) -> u64 {
        let mut state = self.lock();
        state.up.remove(&member);
        let boot = state.boots.get(&member).map_or(1, |b| b + 1);
        state.boots.insert(member, boot);
        boot
    }

    /// Lets incarnation `boot` of `member` accept connections, if it is still the newest.
    pub fn serve(&self, member: u64, boot: u64, server: PeerServer) {
        let mut state = self.lock();
        if state.boots.get(&member) == Some(&boot) {
            state.up.insert(member, (boot, server));
        }
    }

    /// Takes `member` down: connections to it are refused, and nothing its dead incarnation
    /// sends or answers arrives any more.
    pub fn down(&self, member: u64) {
        let mut state = self.lock();
        state.up.remove(&member);
        if let Some(boot) = state.boots.get_mut(&member) {
            *boot += 1;
        }
    }

    /// The newest boot number of `member`.
    pub fn boot(&self, member: u64) -> u64 {
        self.lock().boots.get(&member).copied().unwrap_or(0)
    }

    pub fn cut(&self, from: u64, to: u64) {
        self.lock().cut.insert((from, to));
    }

    pub fn restore(&self, from: u64, to: u64) {
        self.lock().cut.remove(&(from, to));
    }

    pub fn heal(&self) {
        self.lock().cut.clear();
    }

    pub fn cuts(&self) -> Vec<(u64, u64)> {
        self.lock().cut.iter().copied().collect()
    }

    /// The network's state, for a report.
    pub fn describe(&self) -> String {
        let state = self.lock();
        let up: Vec<(u64, u64)> = state.up.iter().map(|(m, (boot, _))| (*m, *boot)).collect();
        format!("up (member, boot) {up:?}, newest boots {:?}, cut {:?}", state.boots, state.cut)
    }

    pub fn set_weather(&self, weather: Weather) {
        self.lock().weather = weather;
    }

    /// The delay of a message from `from` (incarnation `boot`), or `None` if it is lost
    /// on the way out: the sender is dead or the link is cut.
    fn send(&self, from: u64, boot: u64, to: u64) -> Option<Duration> {
        let mut state = self.lock();
        if state.boots.get(&from) != Some(&boot) || state.cut.contains(&(from, to)) {
            return None;
        }
        let (low, high) = state.weather.delay_ms;
        Some(Duration::from_millis(state.rng.random_range(low..=high.max(low))))
    }

    fn arrive(&self, from: u64, to: u64) -> Arrival {
        let state = self.lock();
        if state.cut.contains(&(from, to)) {
            return Arrival::Lost;
        }
        match state.up.get(&to) {
            Some((boot, server)) => Arrival::Deliver { server: server.clone(), boot: *boot },
            None => Arrival::Refused,
        }
    }

    fn duplicate(&self) -> Option<Duration> {
        let mut state = self.lock();
        let chance = state.weather.duplicate;
        if chance <= 0.0 || !state.rng.random_bool(chance.min(1.0)) {
            return None;
        }
        let (low, high) = state.weather.delay_ms;
        Some(Duration::from_millis(state.rng.random_range(low..=high.max(low) * 4 + 1)))
    }

    /// Carries one RPC from `from` to `to` and its reply back.
    async fn carry(
        self,
        from: u64,
        boot: u64,
        to: u64,
        request: http::Request<tonic::body::Body>,
    ) -> Result<http::Response<tonic::body::Body>, PeerError> {
        let (parts, body) = request.into_parts();
        let bytes = body.collect().await.map_err(|e| PeerError(e.into()))?.to_bytes();
        let Some(delay) = self.send(from, boot, to) else {
            return lost().await;
        };
        tokio::time::sleep(delay).await;
        let (server, to_boot) = match self.arrive(from, to) {
            Arrival::Deliver { server, boot } => (server, boot),
            Arrival::Refused => {
                let refused = tonic::Status::unavailable("connect: connection refused (member down)");
                return Err(PeerError(Box::new(refused)));
            }
            Arrival::Lost => return lost().await,
        };
        let rebuild = || {
            let mut copy =
                http::Request::new(tonic::body::Body::new(http_body_util::Full::new(bytes.clone())));
            *copy.method_mut() = parts.method.clone();
            *copy.uri_mut() = parts.uri.clone();
            *copy.version_mut() = parts.version;
            *copy.headers_mut() = parts.headers.clone();
            copy
        };
        if RAFT_MESSAGES.contains(&parts.uri.path())
            && let Some(later) = self.duplicate()
        {
            let (net, copy, server) = (self.clone(), rebuild(), server.clone());
            tokio::spawn(async move {
                tokio::time::sleep(later).await;
                if matches!(net.arrive(from, to), Arrival::Deliver { boot, .. } if boot == to_boot) {
                    let _ = server.oneshot(copy).await;
                }
            });
        }
        let response = match server.oneshot(rebuild()).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| PeerError(e.into()))?;
        let Some(delay) = self.send(to, to_boot, from) else {
            return lost().await;
        };
        tokio::time::sleep(delay).await;
        Ok(http::Response::from_parts(parts, tonic::body::Body::new(body)))
    }
}

/// A call whose request or reply was lost: the connection is declared dead when the
/// keepalive would.
async fn lost() -> Result<http::Response<tonic::body::Body>, PeerError> {
    tokio::time::sleep(CONNECTION_LOST_AFTER).await;
    Err(PeerError(Box::new(tonic::Status::unavailable("connection lost: keepalive timed out"))))
}

/// How one incarnation of a member reaches the others.
pub struct SimDialer {
    pub net: SimNet,
    pub member: u64,
    pub boot: u64,
}

impl Dialer for SimDialer {
    fn dial(&self, target: u64, _url: &str) -> Result<PeerChannel, String> {
        Ok(PeerChannel::new(Link { net: self.net.clone(), from: self.member, boot: self.boot, to: target }))
    }

    fn streams(&self) -> bool {
        false
    }
}

/// One member's channel to another.
#[derive(Clone)]
struct Link {
    net: SimNet,
    from: u64,
    boot: u64,
    to: u64,
}

impl tower::Service<http::Request<tonic::body::Body>> for Link {
    type Response = http::Response<tonic::body::Body>;
    type Error = PeerError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, PeerError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), PeerError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.net.clone().carry(self.from, self.boot, self.to, request))
    }
}
