//! Who is calling, and whether they may: etcd's auth on every request.
//!
//! A request names its user with a token from Authenticate (gRPC metadata `token`, or
//! `authorization` as the JSON gateway's `Authorization` header becomes) or, without one,
//! with the common name of its verified TLS client certificate. While auth is enabled,
//! every request states what it needs ([`Guard`], from [`Guarded`], which every request
//! type the API serves implements), and [`Api::admit`](crate::api::Api::admit) checks it
//! against the replicated users and roles (synod-mvcc's `auth`) before anything else runs.
//!
//! Passwords are hashed here with Argon2id before they are proposed, so the log, the state
//! and snapshots hold hashes only; Authenticate verifies against the hash (a constant-time
//! comparison inside `argon2`), and failed logins slow the next tries of that user down.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use sha2::Digest as _;
use synod_api::EtcdError;
use synod_mvcc::auth::{Access, Auth, Needs, TokenHash};
use tokio::sync::Semaphore;

use crate::tls::ClientIdentity;

/// The gRPC metadata keys that carry a token: etcd's clients send `token`; the gateway's
/// `Authorization` header arrives as `authorization`.
const TOKEN_KEYS: [&str; 2] = ["token", "authorization"];

/// Hashes and verifications that may run at once: each takes Argon2's memory (19 MiB)
/// and a core for tens of milliseconds, so a flood of logins queues instead of exhausting
/// the member.
const HASHES_AT_ONCE: usize = 2;

/// The delay after a user's first failed login; it doubles with each further failure, up
/// to [`FAILED_LOGIN_DELAY_MAX`], and a success resets it.
const FAILED_LOGIN_DELAY: Duration = Duration::from_millis(200);
const FAILED_LOGIN_DELAY_MAX: Duration = Duration::from_secs(5);

/// Users whose failed logins are remembered; past this the oldest are forgotten, so guessing
/// names cannot grow the table without bound.
const FAILED_LOGINS_TRACKED: usize = 10_000;

/// Token bytes: 32 alphanumerics, about 190 bits.
const TOKEN_CHARS: usize = 32;

/// What a request needs while auth is enabled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Guard {
    /// Nothing: anyone may call it (Authenticate, Status, MemberList, lease keep-alives).
    Open,
    /// A known user.
    User,
    /// The root role.
    Admin,
    /// The root role, or the named user asking about itself.
    SelfOrAdmin(String),
    /// The root role, or a user that has the named role.
    RoleOrAdmin(String),
    /// Each access to each key range (`range_end` as in etcd's requests).
    Keys(Needs),
    /// `Access` to every key attached to the lease.
    LeaseKeys(i64, Access),
}

/// The request types the API serves, each saying what it needs.
pub(crate) trait Guarded {
    fn guard(&self) -> Guard;
}

tokio::task_local! {
    /// The caller a client request was admitted for (`None` while auth is off or for calls
    /// open to anyone), while its handler runs: its writes carry the user into the log, and
    /// its linearizable reads check again once caught up. Unset outside client requests.
    static ADMITTED: Option<Admitted>;
}

/// Who a request was admitted as.
#[derive(Clone, Debug)]
pub(crate) struct Admitted {
    pub user: String,
    pub credentials: Credentials,
}

/// Runs a client request's handler as `admitted` (`None`: auth is off or the call needs no
/// user).
pub(crate) async fn run_as<F: std::future::Future>(admitted: Option<Admitted>, handler: F) -> F::Output {
    ADMITTED.scope(admitted, handler).await
}

/// `work` as part of the running client request (if any), for a task it spawns: the
/// task's writes carry the request's user as the request's own would.
pub(crate) fn carried<F: std::future::Future>(work: F) -> impl std::future::Future<Output = F::Output> {
    let admitted = admitted();
    async move {
        match admitted {
            Ok(admitted) => ADMITTED.scope(admitted, work).await,
            Err(()) => work.await,
        }
    }
}

/// Who the running client request was admitted as: `Err` outside a client request,
/// `Ok(None)` for one admitted without a user.
pub(crate) fn admitted() -> Result<Option<Admitted>, ()> {
    ADMITTED.try_with(Clone::clone).map_err(drop)
}

/// What a request carries besides its message: its credentials, and etcd's `hasleader`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Credentials {
    pub token: Option<String>,
    pub common_name: Option<String>,
    /// `hasleader: true`: fail at once when no leader is known.
    pub require_leader: bool,
}

/// The request metadata key (with the value "true") that makes etcd refuse a request at
/// once when the member knows no leader.
const REQUIRE_LEADER: &str = "hasleader";

impl Credentials {
    pub fn new(metadata: &tonic::metadata::MetadataMap, extensions: &http::Extensions) -> Credentials {
        // A token that is not text is no token synod issued: it is refused as invalid, not
        // taken for no token at all.
        let token = TOKEN_KEYS
            .iter()
            .find_map(|key| metadata.get(*key))
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
        let common_name = extensions.get::<ClientIdentity>().map(|identity| identity.0.clone());
        // etcd checks the first value only, and only for "true" (clientv3.WithRequireLeader).
        let require_leader = metadata.get(REQUIRE_LEADER).is_some_and(|v| v.as_bytes() == b"true");
        Credentials { token, common_name, require_leader }
    }

    /// A JSON gateway request's: the `Authorization` header carries the token, and TLS
    /// common names are not used there, as in etcd.
    pub fn from_headers(headers: &http::HeaderMap) -> Credentials {
        let token = headers
            .get(http::header::AUTHORIZATION)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        Credentials { token, common_name: None, require_leader: false }
    }
}

impl<T> From<&tonic::Request<T>> for Credentials {
    fn from(request: &tonic::Request<T>) -> Credentials {
        Credentials::new(request.metadata(), request.extensions())
    }
}

/// The serving member's side of auth: hashing, token issue, failed-login delays.
pub(crate) struct Gate {
    token_ttl: Duration,
    hashing: Arc<Semaphore>,
    /// Failed logins by a hash of the name tried (names can be long; the table must not be).
    failures: Mutex<HashMap<u128, Failed>>,
}

/// A name's failed logins, and when its next try may go.
#[derive(Clone, Copy, Debug)]
struct Failed {
    count: u32,
    next_turn: Instant,
}

/// The failure table's key for a user name.
fn name_key(name: &str) -> u128 {
    let digest = sha2::Sha256::digest(name.as_bytes());
    u128::from_le_bytes(digest[..16].try_into().expect("a SHA-256 has 32 bytes"))
}

/// A token's SHA-256, as the members know it.
pub(crate) fn token_hash(token: &str) -> TokenHash {
    sha2::Sha256::digest(token.as_bytes()).into()
}

impl Gate {
    pub fn new(token_ttl: Duration) -> Gate {
        Gate {
            token_ttl,
            hashing: Arc::new(Semaphore::new(HASHES_AT_ONCE)),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// The user `credentials` name under `auth`, or the error etcd gives. `None` when auth
    /// is disabled: everything is allowed.
    pub fn caller(&self, auth: &Auth, credentials: &Credentials) -> Result<Option<String>, EtcdError> {
        if !auth.enabled() {
            return Ok(None);
        }
        if let Some(token) = &credentials.token {
            return match auth.token_user(&token_hash(token), now_unix_ms()) {
                Some(user) => Ok(Some(user.to_string())),
                None => Err(EtcdError::InvalidAuthToken),
            };
        }
        match &credentials.common_name {
            Some(name) => Ok(Some(name.clone())),
            None => Err(EtcdError::UserEmpty),
        }
    }

    /// Whether `credentials` may do what `guard` asks, under `auth`; `lease_keys` are the
    /// keys attached to the lease of a [`Guard::LeaseKeys`]. Returns the user it allowed
    /// (`None` when auth is off or the call is open to anyone).
    pub fn check(
        &self,
        auth: &Auth,
        credentials: &Credentials,
        guard: &Guard,
        lease_keys: Vec<Vec<u8>>,
    ) -> Result<Option<String>, EtcdError> {
        if *guard == Guard::Open {
            return Ok(None);
        }
        let Some(user) = self.caller(auth, credentials)? else { return Ok(None) };
        let allowed = match guard {
            Guard::Open => true,
            Guard::User => auth.user(&user).is_some(),
            Guard::Admin => auth.is_admin(&user),
            Guard::SelfOrAdmin(name) => *name == user || auth.is_admin(&user),
            Guard::RoleOrAdmin(role) => {
                auth.is_admin(&user) || auth.user(&user).is_some_and(|u| u.roles.iter().any(|r| r == role))
            }
            Guard::Keys(needs) => auth.permits(&user, needs),
            Guard::LeaseKeys(_, access) => {
                auth.is_admin(&user) || lease_keys.iter().all(|key| auth.permitted(&user, *access, key, &[]))
            }
        };
        if allowed { Ok(Some(user)) } else { Err(EtcdError::PermissionDenied) }
    }

    /// A password's Argon2id hash (a PHC string), made off the async workers.
    pub async fn hash(&self, password: String) -> Result<String, EtcdError> {
        let _permit = self.hashing.acquire().await.map_err(|_| EtcdError::Stopped)?;
        tokio::task::spawn_blocking(move || {
            let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
            Argon2::default().hash_password(password.as_bytes(), &salt).map(|hash| hash.to_string())
        })
        .await
        .map_err(|_| EtcdError::Stopped)?
        .map_err(|error| {
            tracing::error!(%error, "hashing a password failed");
            EtcdError::AuthFailed
        })
    }

    /// Checks `password` against `user`'s stored hash (`None`: no such user, or no
    /// password). Unknown users cost a verification too, so the answer's timing does not
    /// tell which names exist. Failures delay the user's next tries.
    pub async fn verify(
        &self,
        name: &str,
        stored: Option<String>,
        password: String,
    ) -> Result<(), EtcdError> {
        // Each try of a name that failed before waits its turn: the turns of concurrent
        // tries queue up one delay apart, so guessing in parallel gains nothing.
        let key = name_key(name);
        let wait = self.reserve_turn(key);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let known = stored.is_some();
        let _permit = self.hashing.acquire().await.map_err(|_| EtcdError::Stopped)?;
        let matched = tokio::task::spawn_blocking(move || {
            let stored = stored.unwrap_or_else(|| DECOY_HASH.to_string());
            let hash = PasswordHash::new(&stored).ok()?;
            Some(Argon2::default().verify_password(password.as_bytes(), &hash).is_ok())
        })
        .await
        .map_err(|_| EtcdError::Stopped)?;
        let mut failures = self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if matched == Some(true) && known {
            failures.remove(&key);
            return Ok(());
        }
        if failures.len() >= FAILED_LOGINS_TRACKED && !failures.contains_key(&key) {
            let oldest = failures.iter().min_by_key(|(_, failed)| failed.next_turn).map(|(key, _)| *key);
            if let Some(oldest) = oldest {
                failures.remove(&oldest);
            }
        }
        let failed = failures.entry(key).or_insert(Failed { count: 0, next_turn: Instant::now() });
        failed.count = failed.count.saturating_add(1);
        Err(EtcdError::AuthFailed)
    }

    /// When a try of the name keyed `key` may go: now if it has no failures, else one delay
    /// after the turn of the try before it, which this try takes over.
    fn reserve_turn(&self, key: u128) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(failed) = failures.get_mut(&key) else { return Duration::ZERO };
        let delay = FAILED_LOGIN_DELAY
            .saturating_mul(1u32 << (failed.count.max(1) - 1).min(16))
            .min(FAILED_LOGIN_DELAY_MAX);
        let now = Instant::now();
        let turn = failed.next_turn.max(now) + delay;
        failed.next_turn = turn;
        turn - now
    }

    /// A new random token and when it stops being valid.
    /// A new random token, its SHA-256, and when it stops being valid.
    pub fn new_token(&self) -> (String, TokenHash, i64) {
        use rand::Rng as _;
        let token: String =
            rand::rng().sample_iter(rand::distr::Alphanumeric).take(TOKEN_CHARS).map(char::from).collect();
        let ttl_ms = i64::try_from(self.token_ttl.as_millis()).unwrap_or(i64::MAX);
        (token.clone(), token_hash(&token), now_unix_ms().saturating_add(ttl_ms))
    }
}

/// Stands in for the hash of a user that does not exist (its password is not known to
/// anyone), so that verifying against it costs what a real one does.
const DECOY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c3lub2QtZGVjb3ktc2FsdA$J5m0S2nSQdPQHtC3+gUuZQnY0w2JmM+bg0tiQ3kDmWY";

/// Milliseconds since the Unix epoch on this member's clock.
pub(crate) fn now_unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The end of the range of keys starting with `prefix` (etcd's `GetPrefixRangeEnd`).
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// What each request needs, in one place: etcd's rules, with the root role for everything
/// that manages the cluster or reads it whole.
mod guards {
    use synod_api::etcdserverpb::{
        AlarmRequest, AuthDisableRequest, AuthEnableRequest, AuthRoleAddRequest, AuthRoleDeleteRequest,
        AuthRoleGetRequest, AuthRoleGrantPermissionRequest, AuthRoleListRequest,
        AuthRoleRevokePermissionRequest, AuthStatusRequest, AuthUserAddRequest,
        AuthUserChangePasswordRequest, AuthUserDeleteRequest, AuthUserGetRequest, AuthUserGrantRoleRequest,
        AuthUserListRequest, AuthUserRevokeRoleRequest, AuthenticateRequest, CompactionRequest,
        DefragmentRequest, DeleteRangeRequest, DowngradeRequest, HashKvRequest, HashRequest,
        LeaseGrantRequest, LeaseKeepAliveRequest, LeaseLeasesRequest, LeaseRevokeRequest,
        LeaseTimeToLiveRequest, MemberAddRequest, MemberListRequest, MemberPromoteRequest,
        MemberRemoveRequest, MemberUpdateRequest, MoveLeaderRequest, PutRequest, RangeRequest,
        SnapshotRequest, StatusRequest, TxnRequest, WatchRequest, alarm_request::AlarmAction,
    };
    use synod_api::synod::v1::{AddRequest, GetRequest};
    use synod_api::v3electionpb::{CampaignRequest, LeaderRequest, ProclaimRequest, ResignRequest};
    use synod_api::v3lockpb::{LockRequest, UnlockRequest};
    use synod_mvcc::auth::Access::{Read, Write};
    use synod_mvcc::auth::{self, Needs};

    use super::{Guard, Guarded, prefix_end};

    macro_rules! guard {
        ($guard:expr => $($request:ty),+) => {
            $(impl Guarded for $request {
                fn guard(&self) -> Guard {
                    $guard
                }
            })+
        };
    }

    guard!(Guard::Open => AuthenticateRequest, AuthStatusRequest, AuthEnableRequest, StatusRequest,
        MemberListRequest, LeaseGrantRequest, LeaseKeepAliveRequest, LeaseLeasesRequest, WatchRequest);
    guard!(Guard::User => CompactionRequest);
    guard!(Guard::Admin => AuthDisableRequest, AuthUserAddRequest, AuthUserDeleteRequest,
        AuthUserChangePasswordRequest, AuthUserGrantRoleRequest, AuthUserRevokeRoleRequest, AuthRoleAddRequest,
        AuthRoleDeleteRequest, AuthRoleGrantPermissionRequest, AuthRoleRevokePermissionRequest, AuthUserListRequest,
        AuthRoleListRequest, DefragmentRequest, SnapshotRequest, HashRequest, HashKvRequest, MoveLeaderRequest,
        DowngradeRequest, MemberAddRequest, MemberRemoveRequest, MemberUpdateRequest, MemberPromoteRequest);

    impl Guarded for AuthUserGetRequest {
        fn guard(&self) -> Guard {
            Guard::SelfOrAdmin(self.name.clone())
        }
    }

    impl Guarded for AuthRoleGetRequest {
        fn guard(&self) -> Guard {
            Guard::RoleOrAdmin(self.role.clone())
        }
    }

    impl Guarded for AlarmRequest {
        /// Anyone may list alarms; raising or disarming one is the operator's.
        fn guard(&self) -> Guard {
            if self.action == AlarmAction::Get as i32 { Guard::Open } else { Guard::Admin }
        }
    }

    fn keys(fill: impl FnOnce(&mut Needs)) -> Guard {
        let mut needs = Vec::new();
        fill(&mut needs);
        Guard::Keys(needs)
    }

    impl Guarded for RangeRequest {
        fn guard(&self) -> Guard {
            keys(|needs| auth::range_needs(needs, self))
        }
    }

    impl Guarded for PutRequest {
        fn guard(&self) -> Guard {
            keys(|needs| auth::put_needs(needs, self))
        }
    }

    impl Guarded for DeleteRangeRequest {
        fn guard(&self) -> Guard {
            keys(|needs| auth::delete_needs(needs, self))
        }
    }

    impl Guarded for TxnRequest {
        fn guard(&self) -> Guard {
            keys(|needs| auth::txn_needs(needs, self))
        }
    }

    impl Guarded for LeaseRevokeRequest {
        /// Revoking deletes the lease's keys.
        fn guard(&self) -> Guard {
            Guard::LeaseKeys(self.id, Write)
        }
    }

    impl Guarded for LeaseTimeToLiveRequest {
        /// Listing the keys reads them.
        fn guard(&self) -> Guard {
            if self.keys { Guard::LeaseKeys(self.id, Read) } else { Guard::Open }
        }
    }

    /// A counter add writes the key and returns its value.
    impl Guarded for AddRequest {
        fn guard(&self) -> Guard {
            Guard::Keys(vec![(Write, self.key.clone(), Vec::new()), (Read, self.key.clone(), Vec::new())])
        }
    }

    impl Guarded for GetRequest {
        fn guard(&self) -> Guard {
            Guard::Keys(vec![(Read, self.key.clone(), Vec::new())])
        }
    }

    /// A lock or an election queues a key under `name/` and reads the queue: both, on the
    /// whole prefix, as etcd's recipes need.
    fn queue(name: &[u8]) -> Guard {
        let (prefix, end) = queue_range(name);
        Guard::Keys(vec![(Write, prefix.clone(), end.clone()), (Read, prefix, end)])
    }

    /// Reading who holds a lock or leads an election.
    fn queue_read(name: &[u8]) -> Guard {
        let (prefix, end) = queue_range(name);
        Guard::Keys(vec![(Read, prefix, end)])
    }

    /// The keys of `name`'s queue, as the Lock and Election services make them.
    fn queue_range(name: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let prefix = crate::lock_api::queue_prefix(name);
        let end = prefix_end(&prefix);
        (prefix, end)
    }

    /// Rewriting one's own queue key (Proclaim, Resign read it first).
    fn own_key(key: &[u8]) -> Guard {
        Guard::Keys(vec![(Write, key.to_vec(), Vec::new()), (Read, key.to_vec(), Vec::new())])
    }

    impl Guarded for LockRequest {
        fn guard(&self) -> Guard {
            queue(&self.name)
        }
    }

    /// Unlocking deletes the key, as etcd's Unlock does: writing it is enough.
    impl Guarded for UnlockRequest {
        fn guard(&self) -> Guard {
            Guard::Keys(vec![(Write, self.key.clone(), Vec::new())])
        }
    }

    impl Guarded for CampaignRequest {
        fn guard(&self) -> Guard {
            queue(&self.name)
        }
    }

    impl Guarded for ProclaimRequest {
        fn guard(&self) -> Guard {
            own_key(self.leader.as_ref().map_or(&[][..], |l| &l.key))
        }
    }

    impl Guarded for ResignRequest {
        fn guard(&self) -> Guard {
            own_key(self.leader.as_ref().map_or(&[][..], |l| &l.key))
        }
    }

    impl Guarded for LeaderRequest {
        fn guard(&self) -> Guard {
            queue_read(&self.name)
        }
    }
}
