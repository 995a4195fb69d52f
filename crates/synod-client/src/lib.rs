//! A client for synod's native counter (`synod.v1.Counter`), with automatic, safe retries.
//!
//! ```no_run
//! # async fn example() -> Result<(), synod_client::Error> {
//! let client = synod_client::Client::connect(["127.0.0.1:2379", "127.0.0.1:22379"])?;
//! let session = client.session().await?;
//! let added = session.add("hits", 1).await?;
//! println!("hits is {} (revision {})", added.value, added.revision);
//! session.close().await;
//! # Ok(())
//! # }
//! ```
//!
//! Calls go to the leader: the client asks the members which of them leads (etcd's
//! `Maintenance.Status`) before its first call, again after a call fails, and every
//! [`LEADER_RECHECK`] in the background, so a write or add costs no hop through a follower.
//! When no member says it leads, calls go to the members in turn.
//!
//! An add through a [`Session`] happens exactly once, however often it is retried: the
//! session is a lease the client keeps alive, and every add carries the session and a
//! sequence number, so a member that already applied it answers with the recorded result.
//! A failed attempt (the member died, the leader changed, the connection broke) is retried
//! on the next endpoint until the retry timeout; only then does the add fail, with
//! [`Error::Unavailable`], and then its outcome is unknown. If the session's lease ends
//! while an add is retried, the add fails with [`Error::SessionEnded`] and is never
//! applied twice.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use synod_api::EtcdError;
use synod_api::etcdserverpb::auth_client::AuthClient;
use synod_api::etcdserverpb::lease_client::LeaseClient;
use synod_api::etcdserverpb::maintenance_client::MaintenanceClient;
use synod_api::etcdserverpb::{
    AuthenticateRequest, LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest, StatusRequest,
};
use synod_api::synod::v1::counter_client::CounterClient;
use synod_api::synod::v1::{AddRequest, GetRequest};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};

/// How a client connects and retries.
#[derive(Clone, Debug)]
pub struct Options {
    /// How long one attempt may take before it is given up and retried.
    pub attempt_timeout: Duration,
    /// How long a call keeps retrying before it fails.
    pub retry_timeout: Duration,
    /// The TTL of a session's lease, in seconds: how long a session outlives a client that
    /// stopped keeping it alive.
    pub session_ttl_secs: i64,
    /// How long to wait for a TCP connection to a member.
    pub connect_timeout: Duration,
    /// TLS for `https://` endpoints: the CA to check members against and, for mutual TLS,
    /// the client's certificate (`ClientTlsConfig::identity`).
    pub tls: Option<ClientTlsConfig>,
    /// A user and password: the client authenticates (etcd's Authenticate) and sends the
    /// token with every call, authenticating again when the token is refused as invalid.
    pub credentials: Option<(String, String)>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            // The server gives up on a request after 7 s.
            attempt_timeout: Duration::from_secs(8),
            retry_timeout: Duration::from_secs(30),
            session_ttl_secs: 60,
            connect_timeout: Duration::from_secs(2),
            tls: None,
            credentials: None,
        }
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An endpoint that is neither `host:port` nor an `http://` or `https://` URL, or an
    /// `https://` one without [`Options::tls`].
    #[error("endpoint {endpoint}: {reason}")]
    InvalidEndpoint { endpoint: String, reason: String },
    /// The cluster refused the request (an add that would overflow, a key that is not a
    /// counter, ...). Nothing was changed.
    #[error("{0}")]
    Refused(Status),
    /// No member could answer before the retry timeout. The outcome of an add is unknown.
    #[error("no member answered within the retry timeout; the last failure was: {}", .last.message())]
    Unavailable { last: Status },
    /// The session's lease ended (it expired, or was revoked). When `maybe_applied`, an
    /// earlier attempt of the add may have been applied; it was not applied twice.
    #[error("the counter session ended (its lease is gone); the add {}", if *.maybe_applied { "may have been applied once" } else { "was not applied" })]
    SessionEnded { maybe_applied: bool },
}

/// What an add returned: the counter's value right after it, and the revision it was
/// applied at (which is also the fencing of every read of the counter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Added {
    pub value: i64,
    pub revision: i64,
}

/// A counter's value, as a linearizable read saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Value {
    pub value: i64,
    /// Whether the key exists; a key that does not counts as 0.
    pub exists: bool,
    pub revision: i64,
}

/// Connections to a cluster's members. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    channels: Vec<Channel>,
    endpoints: Vec<String>,
    /// The auth token in use, when the client has credentials.
    token: Mutex<Option<String>>,
    /// The member calls go to first: the leader when one was found; moves on when a call
    /// fails.
    preferred: AtomicUsize,
    /// When the client last asked the members which of them leads, and whether one did.
    leader_asked: Mutex<Option<(Instant, bool)>>,
    options: Options,
}

/// How often a client asks again which member leads, while calls succeed: a leader that
/// changed without failing a call (a transfer) still answers through forwarding meanwhile.
pub const LEADER_RECHECK: Duration = Duration::from_secs(10);
/// How often calls ask again while no member says it leads (an election under way).
const LEADERLESS_RECHECK: Duration = Duration::from_millis(100);

impl Client {
    /// A client for the members at `endpoints` (`host:port`, `http://host:port`, or
    /// `https://host:port` with [`Options::tls`]), with the default options. Connects lazily: a member that is down now is tried later.
    /// Call it within a Tokio runtime.
    pub fn connect<E: AsRef<str>>(endpoints: impl IntoIterator<Item = E>) -> Result<Client, Error> {
        Client::with_options(endpoints, Options::default())
    }

    pub fn with_options<E: AsRef<str>>(
        endpoints: impl IntoIterator<Item = E>,
        options: Options,
    ) -> Result<Client, Error> {
        let mut channels = Vec::new();
        let mut urls = Vec::new();
        for endpoint in endpoints {
            let endpoint = endpoint.as_ref().trim();
            let invalid = |reason: String| Error::InvalidEndpoint { endpoint: endpoint.to_string(), reason };
            let url =
                if endpoint.contains("://") { endpoint.to_string() } else { format!("http://{endpoint}") };
            let mut target = Endpoint::from_shared(url.clone()).map_err(|e| invalid(e.to_string()))?;
            if url.starts_with("https://") {
                let tls = options
                    .tls
                    .clone()
                    .ok_or_else(|| invalid("an https endpoint needs Options::tls".into()))?;
                target = target.tls_config(tls).map_err(|e| invalid(e.to_string()))?;
            } else if !url.starts_with("http://") {
                return Err(invalid("only http:// and https:// endpoints are supported".into()));
            }
            channels.push(target.connect_timeout(options.connect_timeout).connect_lazy());
            urls.push(url);
        }
        if channels.is_empty() {
            return Err(Error::InvalidEndpoint {
                endpoint: String::new(),
                reason: "no endpoints given".into(),
            });
        }
        let inner = ClientInner {
            channels,
            endpoints: urls,
            token: Mutex::new(None),
            preferred: AtomicUsize::new(0),
            leader_asked: Mutex::new(None),
            options,
        };
        Ok(Client { inner: Arc::new(inner) })
    }

    /// The endpoint calls go to first: the leader's, once the client has found it.
    pub fn preferred_endpoint(&self) -> &str {
        &self.inner.endpoints[self.inner.preferred.load(Ordering::Relaxed) % self.inner.endpoints.len()]
    }

    /// Asks every member which member leads, and prefers the leader if it answered. Returns
    /// whether one did.
    async fn find_leader(&self) -> bool {
        *lock(&self.inner.leader_asked) = Some((Instant::now(), false));
        let within = self.inner.options.connect_timeout.min(Duration::from_secs(1));
        let asks = self.inner.channels.iter().enumerate().map(|(index, channel)| {
            Box::pin(async move {
                // Status needs no token, in etcd as in synod.
                let mut maintenance = MaintenanceClient::new(channel.clone());
                let call = maintenance.status(StatusRequest {});
                let status = tokio::time::timeout(within, call).await.ok().and_then(Result::ok);
                let status = status.ok_or(())?.into_inner();
                let member = status.header.ok_or(())?.member_id;
                if member != 0 && member == status.leader { Ok(index) } else { Err(()) }
            })
        });
        // The first member to say it leads; `channels` is never empty.
        match futures::future::select_ok(asks).await {
            Ok((leader, _)) => {
                self.inner.preferred.store(leader, Ordering::Relaxed);
                *lock(&self.inner.leader_asked) = Some((Instant::now(), true));
                true
            }
            // No leader yet (an election under way): calls ask again a little later.
            Err(()) => false,
        }
    }

    /// Finds the leader before a call when none is known (at most every
    /// [`LEADERLESS_RECHECK`]; calls meanwhile go to the preferred member), and starts a
    /// search in the background when the last one is older than [`LEADER_RECHECK`].
    async fn follow_leader(&self) {
        let asked = *lock(&self.inner.leader_asked);
        match asked {
            None => {
                self.find_leader().await;
            }
            Some((at, false)) if at.elapsed() >= LEADERLESS_RECHECK => {
                self.find_leader().await;
            }
            Some((at, true)) if at.elapsed() >= LEADER_RECHECK => {
                *lock(&self.inner.leader_asked) = Some((Instant::now(), true));
                let client = self.clone();
                tokio::spawn(async move { client.find_leader().await });
            }
            Some(_) => {}
        }
    }

    pub fn options(&self) -> &Options {
        &self.inner.options
    }

    /// Runs `call` on the preferred member, and on the next one after each failure that
    /// is worth retrying, until it succeeds, fails for good, or the retry timeout passes.
    /// `attempts` counts the attempts made, including one that fails for good.
    async fn retry<T, F, Fut>(&self, attempts: &mut u32, mut call: F) -> Result<T, Error>
    where
        F: FnMut(Conn) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let options = &self.inner.options;
        let deadline = Instant::now() + options.retry_timeout;
        let mut pause = Duration::from_millis(20);
        self.follow_leader().await;
        loop {
            let member = self.inner.preferred.load(Ordering::Relaxed) % self.inner.channels.len();
            let channel = self.inner.channels[member].clone();
            *attempts += 1;
            let attempt = async {
                let token = self.token(&channel).await?;
                call(Conn { channel, token }).await
            };
            let outcome = match tokio::time::timeout(options.attempt_timeout, attempt).await {
                Ok(outcome) => outcome,
                Err(_) => Err(Status::deadline_exceeded("the attempt timed out")),
            };
            let status = match outcome {
                Ok(value) => return Ok(value),
                // An expired or revoked token: forget it, authenticate again, and retry.
                Err(status)
                    if EtcdError::from_message(status.message()) == Some(EtcdError::InvalidAuthToken) =>
                {
                    *lock(&self.inner.token) = None;
                    status
                }
                Err(status) if !retryable(&status) => return Err(Error::Refused(status)),
                Err(status) => status,
            };
            tracing::debug!(member, error = %status.message(), "retrying, on the leader if one is found");
            if Instant::now() + pause >= deadline {
                return Err(Error::Unavailable { last: status });
            }
            tokio::time::sleep(pause).await;
            if !self.find_leader().await {
                let _ = self.inner.preferred.compare_exchange(
                    member,
                    (member + 1) % self.inner.channels.len(),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// The token to send, authenticating on `channel` first if the client has credentials
    /// and no token yet.
    async fn token(&self, channel: &Channel) -> Result<Option<String>, Status> {
        let Some((name, password)) = &self.inner.options.credentials else {
            return Ok(None);
        };
        if let Some(token) = lock(&self.inner.token).clone() {
            return Ok(Some(token));
        }
        let request = AuthenticateRequest { name: name.clone(), password: password.clone() };
        let token = AuthClient::new(channel.clone()).authenticate(request).await?.into_inner().token;
        *lock(&self.inner.token) = Some(token.clone());
        Ok(Some(token))
    }

    /// The counter's value at `key`: a linearizable read.
    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<Value, Error> {
        let request = GetRequest { key: key.into(), serializable: false };
        let response = self
            .retry(&mut 0, |conn| {
                let request = conn.request(request.clone());
                async move { CounterClient::new(conn.channel).get(request).await.map(tonic::Response::into_inner) }
            })
            .await?;
        let revision = response.header.map_or(0, |h| h.revision);
        Ok(Value { value: response.value, exists: response.exists, revision })
    }

    /// Adds `delta` without a session: one attempt, never retried, because a retry after a
    /// lost reply could add twice. Prefer [`Session::add`].
    pub async fn add_once(&self, key: impl Into<Vec<u8>>, delta: i64) -> Result<Added, Error> {
        let member = self.inner.preferred.load(Ordering::Relaxed) % self.inner.channels.len();
        let channel = self.inner.channels[member].clone();
        let request = AddRequest { key: key.into(), delta, ..Default::default() };
        let call = async {
            let conn = Conn { token: self.token(&channel).await?, channel };
            CounterClient::new(conn.channel.clone()).add(conn.request(request)).await
        };
        match tokio::time::timeout(self.inner.options.attempt_timeout, call).await {
            Ok(Ok(response)) => Ok(added(response.into_inner())),
            Ok(Err(status)) if retryable(&status) => Err(Error::Unavailable { last: status }),
            Ok(Err(status)) => Err(Error::Refused(status)),
            Err(_) => Err(Error::Unavailable { last: Status::deadline_exceeded("the attempt timed out") }),
        }
    }

    /// Opens a counter session: grants its lease and keeps it alive until the session is
    /// closed or dropped.
    pub async fn session(&self) -> Result<Session, Error> {
        let ttl = self.inner.options.session_ttl_secs;
        let grant = self
            .retry(&mut 0, |conn| async move {
                let request = conn.request(LeaseGrantRequest { ttl, id: 0 });
                LeaseClient::new(conn.channel).lease_grant(request).await.map(tonic::Response::into_inner)
            })
            .await?;
        let keepalive = tokio::spawn(keep_alive(self.clone(), grant.id, grant.ttl));
        Ok(Session {
            client: self.clone(),
            lease: grant.id,
            sequences: Arc::new(Mutex::new(Sequences { next: 1, unanswered: BTreeSet::new() })),
            answered: Arc::new(Notify::new()),
            keepalive,
        })
    }
}

/// How far a session's newest add may run ahead of its oldest unanswered one: the results
/// the server keeps per session (synod_mvcc's `SESSION_RESULTS_MAX`). A new add waits while
/// the gap is this wide, so the server never forgets a result a retry may still ask for.
pub const SESSION_IN_FLIGHT_MAX: u64 = 1024;

/// Failures worth another attempt, on another member: the member could not serve (no
/// leader, leader changed, stopped, timed out, unreachable) or is overloaded.
fn retryable(status: &Status) -> bool {
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::ResourceExhausted => {
            // A full store is not going to empty itself.
            EtcdError::from_message(status.message()) != Some(EtcdError::NoSpace)
        }
        // A connection that broke mid-call surfaces as Unknown from the transport.
        Code::Unknown => EtcdError::from_message(status.message()).is_none(),
        _ => false,
    }
}

fn added(response: synod_api::synod::v1::AddResponse) -> Added {
    Added { value: response.value, revision: response.header.map_or(0, |h| h.revision) }
}

/// Renews the lease every third of its TTL, on whichever member answers, until the lease
/// is gone or the session is dropped.
async fn keep_alive(client: Client, lease: i64, ttl: i64) {
    let period = Duration::from_millis((ttl.max(1) as u64 * 1000) / 3);
    loop {
        tokio::time::sleep(period).await;
        let renewed = client
            .retry(&mut 0, |conn| async move {
                let request = conn.request(tokio_stream::once(LeaseKeepAliveRequest { id: lease }));
                let mut stream = LeaseClient::new(conn.channel).lease_keep_alive(request).await?.into_inner();
                stream.message().await?.ok_or_else(|| Status::unavailable("the keep-alive stream ended"))
            })
            .await;
        match renewed {
            Ok(response) if response.ttl > 0 => {}
            Ok(_) => {
                tracing::warn!(lease, "the counter session's lease is gone");
                return;
            }
            Err(e) => tracing::warn!(lease, error = %e, "could not renew the counter session's lease"),
        }
    }
}

struct Sequences {
    next: u64,
    unanswered: BTreeSet<u64>,
}

/// A counter session: adds through it are applied exactly once. Dropping it stops keeping
/// its lease alive (the lease then expires); [`Session::close`] revokes it at once.
pub struct Session {
    client: Client,
    lease: i64,
    sequences: Arc<Mutex<Sequences>>,
    /// Wakes adds waiting for the gap to narrow.
    answered: Arc<Notify>,
    keepalive: JoinHandle<()>,
}

impl Session {
    /// The lease that carries the session.
    pub fn lease(&self) -> i64 {
        self.lease
    }

    /// Adds `delta` to the counter at `key` and returns its value right after this add,
    /// retrying on other members as needed; the add is applied exactly once.
    pub async fn add(&self, key: impl Into<Vec<u8>>, delta: i64) -> Result<Added, Error> {
        self.add_losing_replies(key, delta, 0).await
    }

    /// [`Session::add`] as if the first `lost` replies were lost on their way back: each
    /// is thrown away and the add retried, as a client would after a broken connection.
    /// For fault tests: the result must be that of one add.
    pub async fn add_losing_replies(
        &self,
        key: impl Into<Vec<u8>>,
        delta: i64,
        lost: u32,
    ) -> Result<Added, Error> {
        let sequence = loop {
            let notified = self.answered.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut sequences = lock(&self.sequences);
                let oldest = sequences.unanswered.first().copied().unwrap_or(sequences.next);
                if sequences.next - oldest < SESSION_IN_FLIGHT_MAX {
                    let sequence = sequences.next;
                    sequences.next += 1;
                    sequences.unanswered.insert(sequence);
                    break sequence;
                }
            }
            notified.await;
        };
        // Answered or abandoned, the add stops holding back the others.
        let _answered = Answered { session: self, sequence };
        let key = key.into();
        let mut lost = lost;
        let mut attempts = 0;
        let outcome = self
            .client
            .retry(&mut attempts, |conn| {
                let answered_below =
                    lock(&self.sequences).unanswered.first().copied().unwrap_or(sequence).min(sequence);
                let request = conn.request(AddRequest {
                    key: key.clone(),
                    delta,
                    session: self.lease,
                    sequence,
                    answered_below,
                });
                let lose = lost > 0;
                lost = lost.saturating_sub(1);
                async move {
                    let response = CounterClient::new(conn.channel).add(request).await?;
                    if lose {
                        return Err(Status::unavailable("the reply was lost (injected)"));
                    }
                    Ok(response.into_inner())
                }
            })
            .await;
        match outcome {
            Ok(response) => Ok(added(response)),
            Err(Error::Refused(status)) => match EtcdError::from_message(status.message()) {
                Some(EtcdError::LeaseNotFound) => Err(Error::SessionEnded { maybe_applied: attempts > 1 }),
                // The session no longer holds this add's result: it may have been applied.
                Some(EtcdError::CounterSequenceForgotten) => Err(Error::Unavailable { last: status }),
                // A full store refuses a retry before it looks the add up: an earlier
                // attempt may have been applied.
                Some(EtcdError::NoSpace) if attempts > 1 => Err(Error::Unavailable { last: status }),
                _ => Err(Error::Refused(status)),
            },
            Err(e) => Err(e),
        }
    }

    /// Ends the session: revokes its lease, so the cluster forgets it at once.
    pub async fn close(self) {
        self.keepalive.abort();
        let lease = self.lease;
        let revoked = self
            .client
            .retry(&mut 0, |conn| async move {
                let request = conn.request(LeaseRevokeRequest { id: lease });
                LeaseClient::new(conn.channel).lease_revoke(request).await
            })
            .await;
        if let Err(e) = revoked {
            tracing::debug!(lease, error = %e, "could not revoke the counter session's lease; it will expire");
        }
    }
}

/// Removes an add from its session's unanswered ones when it ends, however it ends.
struct Answered<'a> {
    session: &'a Session,
    sequence: u64,
}

impl Drop for Answered<'_> {
    fn drop(&mut self) {
        lock(&self.session.sequences).unanswered.remove(&self.sequence);
        self.session.answered.notify_waiters();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.keepalive.abort();
    }
}

/// One member's connection for one attempt, with the auth token to send, if any.
struct Conn {
    channel: Channel,
    token: Option<String>,
}

impl Conn {
    /// `message` as a request carrying the token in the `token` metadata, as etcd's
    /// clients send it.
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.token
            && let Ok(value) = token.parse()
        {
            request.metadata_mut().insert("token", value);
        }
        request
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_only_what_may_succeed_elsewhere() {
        for error in [EtcdError::NoLeader, EtcdError::LeaderChanged, EtcdError::Timeout, EtcdError::Stopped] {
            assert!(retryable(&error.into()), "{error:?}");
        }
        assert!(retryable(&Status::unknown("transport error")));
        assert!(retryable(&Status::deadline_exceeded("the attempt timed out")));
        for error in [
            EtcdError::CounterOverflow,
            EtcdError::CounterNotNumber,
            EtcdError::LeaseNotFound,
            EtcdError::NoSpace,
            EtcdError::EmptyKey,
            EtcdError::CounterSequenceForgotten,
        ] {
            assert!(!retryable(&error.into()), "{error:?}");
        }
    }

    #[tokio::test]
    async fn endpoints_are_checked() {
        assert!(Client::connect(["127.0.0.1:2379", "http://localhost:22379"]).is_ok());
        assert!(matches!(Client::connect(Vec::<String>::new()), Err(Error::InvalidEndpoint { .. })));
        assert!(matches!(Client::connect(["https://127.0.0.1:2379"]), Err(Error::InvalidEndpoint { .. })));
        assert!(matches!(Client::connect(["ftp://127.0.0.1:2379"]), Err(Error::InvalidEndpoint { .. })));
        let tls = Options { tls: Some(ClientTlsConfig::new()), ..Options::default() };
        assert!(Client::with_options(["https://127.0.0.1:2379"], tls).is_ok());
    }
}
