//! [`KvStore`]: the state machine. It applies replicated commands and serves reads.
//!
//! The write path mirrors etcd's `storeTxnWrite`: a request starts at the current revision
//! `begin`, every change it makes is written at `begin + 1` with an increasing sub-revision,
//! and the store revision moves to `begin + 1` only if something changed. Reads inside a
//! write see its earlier changes. Revisions are assigned here and nowhere else.

use std::collections::BTreeSet;

use synod_api::EtcdError;
use synod_api::etcdserverpb::alarm_request::AlarmAction;
use synod_api::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmResponse, AlarmType, CompactionRequest, CompactionResponse,
    DeleteRangeRequest, DeleteRangeResponse, LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeRequest,
    LeaseRevokeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseHeader,
    ResponseOp, TxnRequest, TxnResponse, request_op, response_op,
};
use synod_api::mvccpb::KeyValue;
use synod_api::synodpb::{
    AuthCommand, AuthState, Command, CounterAdd, CounterSession, LeaseCheckpoints, LeaseRecord, auth_command,
    command,
};

use crate::auth::{self, Auth};
use crate::reclaim::Unreclaimed;

use crate::backend::{BackendError, RevisionRead, RevisionWrite, StoredKv};
use crate::counter::{self, CounterValue, Lookup, Sessions};
use crate::lease::{Leases, MAX_LEASE_TTL};
use crate::range::{self, RangePlan};
use crate::tree_index::{KeyRange, TreeIndex};
use crate::txn::{self, View, branch, path_len};
use crate::{Rev, check};

/// The response to an applied command.
#[derive(Clone, Debug, PartialEq)]
pub enum Response {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compaction(CompactionResponse),
    Alarm(AlarmResponse),
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke(LeaseRevokeResponse),
    LeaseCheckpoints,
    /// Each op's outcome, in order: an op that fails changed nothing.
    CounterAdd(Vec<Result<CounterValue, EtcdError>>),
    /// An auth change applied: the auth revision after it.
    Auth(u64),
}

/// The outcome of applying one command: a response, or the etcd error the client gets.
/// Either way the outcome is the same on every member.
pub type Applied = Result<Response, EtcdError>;

/// The largest store revision a restored state may have. Real stores never come near it
/// (2^62 writes), and refusing more leaves room for every write after a restore, so a
/// snapshot or data file with a huge revision is an error instead of an overflow later.
pub const REVISION_MAX: i64 = 1 << 62;

/// The scalar state persisted next to the records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    /// The store revision: 1 for an empty store.
    pub current_revision: i64,
    /// The revision of the last compaction; -1 if there was none (etcd's `compactMainRev`).
    pub compact_revision: i64,
    /// Raised alarms as (member id, `AlarmType` number).
    pub alarms: Vec<(u64, i32)>,
}

impl Default for Meta {
    fn default() -> Self {
        Meta { current_revision: 1, compact_revision: -1, alarms: Vec::new() }
    }
}

#[derive(Clone, Debug, Default)]
pub struct KvStore {
    index: TreeIndex,
    current: i64,
    compacted: i64,
    alarms: BTreeSet<(u64, i32)>,
    leases: Leases,
    sessions: Sessions,
    auth: Auth,
    /// Records compactions dropped that the backend still holds; see [`Unreclaimed`].
    unreclaimed: Unreclaimed,
    /// The newest compaction's pass over the key index, while it is unfinished.
    pass: Option<IndexPass>,
}

/// A compaction's pass over the key index, done a slice of keys at a time
/// ([`KvStore::compact_index`]) so that a large index does not hold up every write and
/// read at once. Keys the pass has not reached still hold history the compaction dropped,
/// which no read at or after the compaction revision can see (a key index answers for a
/// revision from the newest entries at or before it, and compaction keeps those), so only
/// readers of the backend's records care: they finish the pass first
/// ([`KvStore::finish_index_pass`]).
///
/// A pass goes from `next` up to `until`, then, if `wrap` is set, from the first key up to
/// `wrap`. A compaction that applies during a pass takes it over where it is, at the new
/// revision, and wraps round to that key: starting over would let compactions that come
/// faster than a pass takes keep it from ever ending.
#[derive(Clone, Debug, Default)]
struct IndexPass {
    /// The first key not yet compacted in this part of the pass; empty for the first key.
    next: Vec<u8>,
    /// Where this part ends (not included); `None` after the last key.
    until: Option<Vec<u8>>,
    /// Where the part after the wrap round ends, if there is one.
    wrap: Option<Vec<u8>>,
    /// Revisions the pass has dropped so far, in no order; they join [`Unreclaimed`] when
    /// it ends.
    dropped: Vec<Rev>,
}

impl KvStore {
    /// An empty store at revision 1.
    pub fn new() -> KvStore {
        KvStore::from_meta(Meta::default())
    }

    fn from_meta(meta: Meta) -> KvStore {
        KvStore {
            index: TreeIndex::default(),
            current: meta.current_revision,
            compacted: meta.compact_revision,
            alarms: meta.alarms.into_iter().collect(),
            leases: Leases::default(),
            sessions: Sessions::default(),
            auth: Auth::default(),
            unreclaimed: Unreclaimed::default(),
            pass: None,
        }
    }

    /// Rebuilds the store from persisted meta, every stored record in revision order, the
    /// stored leases, the counter sessions and the auth state; each key is attached to the
    /// lease its newest record names. [`Restoring`] does the same a record at a time, for
    /// records that arrive before their meta.
    ///
    /// The records may come from another member (a snapshot), so anything that does not
    /// fit together is an error, not a panic.
    ///
    /// `reclaiming` says that a compaction's records were being deleted when the records
    /// were written (see [`Unreclaimed`]): the store compacts the rebuilt index again to
    /// find the rest. Deletion goes in revision order, so what is left of each key's history
    /// is its newest part, which may begin with a tombstone at or below the compaction
    /// revision (its generation's puts already deleted); such a tombstone is one of the
    /// records still to delete, not a key.
    pub fn restore<E: From<BackendError>>(
        meta: Meta,
        records: impl IntoIterator<Item = Result<(Rev, StoredKv), E>>,
        leases: impl IntoIterator<Item = Result<LeaseRecord, E>>,
        sessions: impl IntoIterator<Item = Result<CounterSession, E>>,
        auth: Option<AuthState>,
        reclaiming: bool,
    ) -> Result<KvStore, E> {
        check_meta(&meta)?;
        let mut restoring =
            if reclaiming { Restoring::reclaiming(meta.compact_revision) } else { Restoring::new() };
        for record in records {
            let (rev, stored) = record?;
            restoring.record(rev, &stored)?;
        }
        restoring.finish(meta, leases, sessions, auth)
    }

    pub fn meta(&self) -> Meta {
        Meta {
            current_revision: self.current,
            compact_revision: self.compacted,
            alarms: self.alarms.iter().copied().collect(),
        }
    }

    pub fn current_revision(&self) -> i64 {
        self.current
    }

    pub fn compact_revision(&self) -> i64 {
        self.compacted
    }

    /// Number of keys that currently exist.
    pub fn key_count(&self) -> usize {
        self.index.live_keys()
    }

    pub fn alarms(&self) -> Vec<AlarmMember> {
        self.alarms.iter().map(|&(member_id, alarm)| AlarmMember { member_id, alarm }).collect()
    }

    fn alarm_raised(&self, alarm: AlarmType) -> bool {
        self.alarms.iter().any(|&(_, a)| a == alarm as i32)
    }

    /// Whether writes that add data are refused (etcd's NOSPACE maintenance mode).
    pub fn out_of_space(&self) -> bool {
        self.alarm_raised(AlarmType::Nospace)
    }

    /// Whether the store refuses every write because a member reported corruption (etcd's
    /// `applierV3Corrupt`): nothing more is changed until an operator disarms the alarm.
    fn corrupt(&self) -> Result<(), EtcdError> {
        if self.alarm_raised(AlarmType::Corrupt) { Err(EtcdError::Corrupt) } else { Ok(()) }
    }

    fn lease_exists(&self, lease: i64) -> bool {
        self.leases.contains(lease)
    }

    pub fn leases(&self) -> &Leases {
        &self.leases
    }

    pub fn counter_sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// Users, roles, permissions and tokens.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// The key-value `key` had at revision `at`, if it existed then and `at` is not
    /// compacted (a watch event's previous value).
    pub fn kv_at(
        &self,
        backend: &impl RevisionRead,
        key: &[u8],
        at: i64,
    ) -> Result<Option<KeyValue>, BackendError> {
        if at < self.compacted.max(1) || at > self.current {
            return Ok(None);
        }
        let kvs = range::kvs_at(&self.index, backend, &KeyRange::Single(key), at)?;
        Ok(kvs.into_iter().next())
    }

    /// Plans a Range at the newest revision. Call under the same lock that guards applies,
    /// then execute the plan against a backend snapshot taken under that lock.
    pub fn plan_range(&self, request: &RangeRequest) -> Result<RangePlan, EtcdError> {
        check::range(request)?;
        range::plan(&self.index, request, self.current, self.compacted)
    }

    /// A Txn that only reads, served without consensus like etcd does.
    pub fn read_txn(
        &self,
        backend: &impl RevisionRead,
        request: &TxnRequest,
    ) -> Result<Result<TxnResponse, EtcdError>, BackendError> {
        debug_assert!(txn::is_read_only(request));
        if let Err(e) = check::txn(request, usize::MAX) {
            return Ok(Err(e));
        }
        let view = self.view(backend);
        let path = view.path(request)?;
        if let Err(e) = view.check(request, &path, false, &|_| false)? {
            return Ok(Err(e));
        }
        let mut response = self.read_txn_ops(backend, request, &path)?;
        response.header = Some(ResponseHeader { revision: self.current, ..Default::default() });
        Ok(Ok(response))
    }

    fn read_txn_ops(
        &self,
        backend: &impl RevisionRead,
        request: &TxnRequest,
        path: &[bool],
    ) -> Result<TxnResponse, BackendError> {
        let mut responses = Vec::new();
        let mut rest = &path[1..];
        for op in branch(request, path[0]) {
            let response = match &op.request {
                Some(request_op::Request::RequestRange(r)) => {
                    let plan = range::plan(&self.index, r, self.current, self.compacted)
                        .expect("range revisions were checked before the txn ran");
                    response_op::Response::ResponseRange(plan.execute(backend)?)
                }
                Some(request_op::Request::RequestTxn(nested)) => {
                    let response = self.read_txn_ops(backend, nested, rest)?;
                    rest = &rest[path_len(nested, rest)..];
                    response_op::Response::ResponseTxn(response)
                }
                _ => unreachable!("a read-only txn holds only ranges and txns"),
            };
            responses.push(ResponseOp { response: Some(response) });
        }
        Ok(TxnResponse { header: Some(ResponseHeader::default()), succeeded: path[0], responses })
    }

    fn view<'a, B: RevisionRead>(&'a self, backend: &'a B) -> View<'a, B> {
        View { index: &self.index, backend, revision: self.current, compacted: self.compacted }
    }

    /// Applies one replicated command. An `Err` is a backend failure and leaves this store
    /// unusable: the caller must stop and rebuild from disk.
    pub fn apply(
        &mut self,
        backend: &mut impl RevisionWrite,
        command: &Command,
    ) -> Result<Applied, BackendError> {
        if let Err(refused) = self.check_auth(command) {
            return Ok(Err(refused));
        }
        match &command.op {
            Some(command::Op::Put(r)) => self.apply_put(backend, r),
            Some(command::Op::DeleteRange(r)) => self.apply_delete_range(backend, r),
            Some(command::Op::Txn(r)) => self.apply_txn(backend, r),
            Some(command::Op::Compaction(r)) => self.apply_compaction(r),
            Some(command::Op::Alarm(r)) => Ok(self.apply_alarm(r)),
            Some(command::Op::LeaseGrant(r)) => self.apply_lease_grant(backend, r),
            Some(command::Op::LeaseRevoke(r)) => self.apply_lease_revoke(backend, r),
            Some(command::Op::LeaseCheckpoints(r)) => self.apply_lease_checkpoints(backend, r),
            Some(command::Op::CounterAdd(r)) => self.apply_counter_add(backend, r),
            Some(command::Op::Auth(r)) => self.apply_auth(backend, r),
            // Member attributes belong to the consensus layer, which keeps them itself; one
            // that reaches the key-value store changes nothing here.
            Some(command::Op::MemberAttributes(_)) => Ok(Err(EtcdError::NotCapable)),
            // A command from a newer synod that this one does not know: refuse it the same
            // way on every member rather than guess.
            None => Ok(Err(EtcdError::NotCapable)),
        }
    }

    /// etcd's apply-time permission check. A client's write names the user it was admitted
    /// for (none while auth was off), and the user must still be allowed it by the auth state
    /// it is applied against: deterministic, since users and roles are replicated state. The
    /// member's own writes (lease expiry, alarms it raises, checkpoints) are not checked.
    fn check_auth(&self, command: &Command) -> Result<(), EtcdError> {
        if !command.from_client || !self.auth.enabled() {
            return Ok(());
        }
        let user = command.auth_user.as_str();
        let mut needs = auth::Needs::new();
        let admin_only = match &command.op {
            Some(command::Op::Put(r)) => {
                auth::put_needs(&mut needs, r);
                false
            }
            Some(command::Op::DeleteRange(r)) => {
                auth::delete_needs(&mut needs, r);
                false
            }
            Some(command::Op::Txn(r)) => {
                auth::txn_needs(&mut needs, r);
                false
            }
            Some(command::Op::LeaseRevoke(r)) => {
                let keys = self.leases.get(r.id).map(|lease| lease.keys.iter().cloned().collect::<Vec<_>>());
                needs.extend(
                    keys.unwrap_or_default().into_iter().map(|key| (auth::Access::Write, key, Vec::new())),
                );
                false
            }
            // Any known user may compact, as in etcd.
            Some(command::Op::Compaction(_)) => false,
            Some(command::Op::Alarm(r)) => r.action != AlarmAction::Get as i32,
            Some(command::Op::Auth(AuthCommand { op })) => match op {
                // Authenticate and enabling auth are open to anyone; a token is checked
                // against the password it was issued for (`Auth::issue`).
                Some(auth_command::Op::IssueToken(_)) | Some(auth_command::Op::Enable(_)) => return Ok(()),
                _ => true,
            },
            // Counter adds are checked per op (`apply_counter_add`); grants need no user.
            Some(command::Op::CounterAdd(_))
            | Some(command::Op::LeaseGrant(_))
            | Some(command::Op::LeaseCheckpoints(_))
            | Some(command::Op::MemberAttributes(_))
            | None => return Ok(()),
        };
        if user.is_empty() {
            // Admitted while auth was off, applied after it was enabled: etcd's answer.
            return Err(EtcdError::UserEmpty);
        }
        let allowed = if admin_only {
            self.auth.is_admin(user)
        } else {
            self.auth.user(user).is_some() && self.auth.permits(user, &needs)
        };
        if allowed { Ok(()) } else { Err(EtcdError::PermissionDenied) }
    }

    fn apply_auth(
        &mut self,
        backend: &mut impl RevisionWrite,
        command: &AuthCommand,
    ) -> Result<Applied, BackendError> {
        match self.auth.apply(command) {
            Ok(applied) => {
                if applied.changed {
                    backend.put_auth(&self.auth.state())?;
                }
                Ok(Ok(Response::Auth(self.auth.revision())))
            }
            Err(error) => Ok(Err(error)),
        }
    }

    fn apply_put(
        &mut self,
        backend: &mut impl RevisionWrite,
        request: &PutRequest,
    ) -> Result<Applied, BackendError> {
        if let Err(e) = check::put(request).and_then(|()| self.corrupt()) {
            return Ok(Err(e));
        }
        if self.out_of_space() {
            return Ok(Err(EtcdError::NoSpace));
        }
        if request.lease != 0 && !self.lease_exists(request.lease) {
            return Ok(Err(EtcdError::LeaseNotFound));
        }
        let mut write = self.write(backend);
        let response = write.put(request)?;
        let response = response.map(Response::Put);
        self.current = write.end();
        Ok(response)
    }

    fn apply_delete_range(
        &mut self,
        backend: &mut impl RevisionWrite,
        request: &DeleteRangeRequest,
    ) -> Result<Applied, BackendError> {
        if let Err(e) = check::delete_range(request).and_then(|()| self.corrupt()) {
            return Ok(Err(e));
        }
        let mut write = self.write(backend);
        let response = write.delete_range(request)?;
        self.current = write.end();
        Ok(Ok(Response::DeleteRange(response)))
    }

    fn apply_txn(
        &mut self,
        backend: &mut impl RevisionWrite,
        request: &TxnRequest,
    ) -> Result<Applied, BackendError> {
        // The op count limit is the server's to enforce (it is configurable); the structure
        // checks run again here so that a malformed entry fails the same way everywhere.
        if let Err(e) = check::txn(request, usize::MAX).and_then(|()| self.corrupt()) {
            return Ok(Err(e));
        }
        if self.out_of_space() && txn::has_top_level_put(request) {
            return Ok(Err(EtcdError::NoSpace));
        }
        let writes = !txn::is_read_only(request);
        let view = self.view(&*backend);
        let path = view.path(request)?;
        if let Err(e) = view.check(request, &path, writes, &|lease| self.lease_exists(lease))? {
            return Ok(Err(e));
        }
        let mut write = self.write(backend);
        let mut response = write.txn(request, &path)?;
        let revision = write.read_revision();
        self.current = write.end();
        response.header = Some(ResponseHeader { revision, ..Default::default() });
        Ok(Ok(Response::Txn(response)))
    }

    /// Compacts the first slice of the key index (see [`IndexPass`]); the rest follows in
    /// [`KvStore::compact_index`] steps, and the records the pass drops are deleted after
    /// it, by [`KvStore::reclaim`].
    fn apply_compaction(&mut self, request: &CompactionRequest) -> Result<Applied, BackendError> {
        if let Err(e) = self.corrupt() {
            return Ok(Err(e));
        }
        let at = request.revision;
        if at <= self.compacted {
            return Ok(Err(EtcdError::Compacted));
        }
        if at > self.current {
            return Ok(Err(EtcdError::FutureRev));
        }
        self.compacted = at;
        // A pass of an older compaction goes on from where it is at the new revision, keeping
        // what it has dropped so far, and wraps round to cover the keys it passed already.
        self.pass = Some(match self.pass.take() {
            None => IndexPass::default(),
            Some(pass) => IndexPass {
                wrap: (!pass.next.is_empty()).then(|| pass.next.clone()),
                next: pass.next,
                until: None,
                dropped: pass.dropped,
            },
        });
        self.compact_index(synod_base::limits::COMPACTION_PASS_KEYS);
        let header = Some(ResponseHeader { revision: self.current, ..Default::default() });
        Ok(Ok(Response::Compaction(CompactionResponse { header })))
    }

    fn apply_alarm(&mut self, request: &AlarmRequest) -> Applied {
        let entry = (request.member_id, request.alarm);
        // As etcd's alarm store: activating reports the alarm whether or not it was already
        // raised; deactivating reports it only if it was.
        let reported = match AlarmAction::try_from(request.action) {
            Ok(AlarmAction::Activate) if request.alarm != AlarmType::None as i32 => {
                self.alarms.insert(entry);
                true
            }
            Ok(AlarmAction::Deactivate) => self.alarms.remove(&entry),
            Ok(AlarmAction::Get) => {
                return Ok(Response::Alarm(AlarmResponse { header: None, alarms: self.alarms() }));
            }
            _ => false,
        };
        let alarms = if reported {
            vec![AlarmMember { member_id: request.member_id, alarm: request.alarm }]
        } else {
            Vec::new()
        };
        Ok(Response::Alarm(AlarmResponse { header: None, alarms }))
    }

    /// A grant as etcd's lessor makes it: the serving member chose the id and clamped the
    /// TTL to the minimum before proposing; an id in use or a TTL beyond the maximum fails.
    fn apply_lease_grant(
        &mut self,
        backend: &mut impl RevisionWrite,
        request: &LeaseGrantRequest,
    ) -> Result<Applied, BackendError> {
        if let Err(e) = self.corrupt() {
            return Ok(Err(e));
        }
        if self.out_of_space() {
            return Ok(Err(EtcdError::NoSpace));
        }
        if request.id == 0 {
            return Ok(Err(EtcdError::LeaseNotFound));
        }
        if request.ttl > MAX_LEASE_TTL {
            return Ok(Err(EtcdError::LeaseTtlTooLarge));
        }
        if self.leases.contains(request.id) {
            return Ok(Err(EtcdError::LeaseExist));
        }
        let record = LeaseRecord { id: request.id, ttl: request.ttl, remaining_ms: 0 };
        backend.put_lease(&record)?;
        self.leases.insert(record);
        Ok(Ok(Response::LeaseGrant(LeaseGrantResponse {
            header: Some(ResponseHeader { revision: self.current, ..Default::default() }),
            id: request.id,
            ttl: request.ttl,
            error: String::new(),
        })))
    }

    /// Revokes a lease and deletes the keys attached to it, all at one revision, in key
    /// order (etcd's lessor deletes them in one write txn).
    fn apply_lease_revoke(
        &mut self,
        backend: &mut impl RevisionWrite,
        request: &LeaseRevokeRequest,
    ) -> Result<Applied, BackendError> {
        if let Err(e) = self.corrupt() {
            return Ok(Err(e));
        }
        let Some(keys) = self.leases.remove(request.id) else {
            return Ok(Err(EtcdError::LeaseNotFound));
        };
        backend.delete_lease(request.id)?;
        if self.sessions.remove(request.id) {
            backend.delete_session(request.id)?;
        }
        let mut write = self.write(backend);
        for key in &keys {
            write.delete_range(&DeleteRangeRequest { key: key.clone(), ..Default::default() })?;
        }
        self.current = write.end();
        Ok(Ok(Response::LeaseRevoke(LeaseRevokeResponse {
            header: Some(ResponseHeader { revision: self.current, ..Default::default() }),
        })))
    }

    fn apply_lease_checkpoints(
        &mut self,
        backend: &mut impl RevisionWrite,
        request: &LeaseCheckpoints,
    ) -> Result<Applied, BackendError> {
        for checkpoint in &request.checkpoints {
            if let Some(record) = self.leases.checkpoint(checkpoint.id, checkpoint.remaining_ms) {
                backend.put_lease(record)?;
            }
        }
        Ok(Ok(Response::LeaseCheckpoints))
    }

    /// Applies a counter entry: its ops in order, each on the running value the one before
    /// left, and the key written once, at one revision, with the value after the last. An op
    /// that fails (overflow, a session whose lease is gone) changes nothing, and the others
    /// still apply; if the key's value is not a decimal integer, every op fails. An op its
    /// session already applied answers with its recorded result and adds nothing.
    fn apply_counter_add(
        &mut self,
        backend: &mut impl RevisionWrite,
        request: &CounterAdd,
    ) -> Result<Applied, BackendError> {
        if let Err(e) = check::counter_add(request).and_then(|()| self.corrupt()) {
            return Ok(Err(e));
        }
        if self.out_of_space() {
            return Ok(Err(EtcdError::NoSpace));
        }
        let previous = range::kvs_at(&self.index, &*backend, &KeyRange::Single(&request.key), self.current)?
            .into_iter()
            .next();
        let start = match &previous {
            None => Some(0),
            Some(kv) => counter::parse(&kv.value),
        };
        let revision = self.current + 1;
        let mut running = start;
        let mut touched = BTreeSet::new();
        let mut results = Vec::with_capacity(request.ops.len());
        let auth_on = self.auth.enabled();
        for op in &request.ops {
            let result = (|| {
                // Each add is checked for its own user: the leader folds many callers' adds
                // into one entry. An add admitted while auth was off names no user.
                if auth_on {
                    if op.user.is_empty() {
                        return Err(EtcdError::UserEmpty);
                    }
                    let needs = vec![
                        (auth::Access::Write, request.key.clone(), Vec::new()),
                        (auth::Access::Read, request.key.clone(), Vec::new()),
                    ];
                    if self.auth.user(&op.user).is_none() || !self.auth.permits(&op.user, &needs) {
                        return Err(EtcdError::PermissionDenied);
                    }
                }
                if op.session != 0 {
                    if !self.leases.contains(op.session) {
                        return Err(EtcdError::LeaseNotFound);
                    }
                    if let Lookup::Applied(recorded) = self.sessions.lookup(&request.key, op, auth_on)? {
                        return Ok(recorded);
                    }
                    // The lookup may have forgotten results: the session is written back.
                    touched.insert(op.session);
                }
                let value = running.ok_or(EtcdError::CounterNotNumber)?;
                let value = value.checked_add(op.delta).ok_or(EtcdError::CounterOverflow)?;
                running = Some(value);
                let result = CounterValue { value, revision };
                if op.session != 0 {
                    self.sessions.record(&request.key, op, result);
                }
                Ok(result)
            })();
            results.push(result);
        }
        let added = results.iter().any(|r| r.as_ref().is_ok_and(|r| r.revision == revision));
        if added {
            let value = running.expect("an add succeeded, so the value is a number");
            let lease = previous.as_ref().map_or(0, |kv| kv.lease);
            let mut write = self.write(backend);
            write.put_kv(&request.key, counter::format(value), lease)?;
            self.current = write.end();
        }
        for lease in touched {
            let session = self.sessions.get(lease).expect("a touched session exists");
            backend.put_session(session)?;
        }
        Ok(Ok(Response::CounterAdd(results)))
    }

    fn write<'a, B: RevisionWrite>(&'a mut self, backend: &'a mut B) -> WriteTxn<'a, B> {
        WriteTxn {
            index: &mut self.index,
            leases: &mut self.leases,
            backend,
            begin: self.current,
            compacted: self.compacted,
            changes: 0,
        }
    }

    /// Checks that the backend holds exactly the records the index refers to; `records` is
    /// how many the backend holds. For tests and integrity checks.
    pub fn check_backend<B: RevisionRead>(&self, backend: &B, records: usize) -> Result<(), BackendError> {
        let revs = self.index.all_revisions();
        let mut unreclaimed = self.unreclaimed.batch(usize::MAX).to_vec();
        unreclaimed.extend(self.pass.iter().flat_map(|pass| &pass.dropped));
        for &rev in revs.iter().chain(&unreclaimed) {
            if backend.get(rev)?.is_none() {
                return Err(BackendError::Missing(rev));
            }
        }
        if revs.len() + unreclaimed.len() != records {
            return Err(BackendError::Corrupt {
                rev: Rev::default(),
                detail: format!(
                    "the index refers to {} records and {} await deletion, but the backend holds {records}",
                    revs.len(),
                    unreclaimed.len()
                ),
            });
        }
        Ok(())
    }

    /// The records compactions dropped that the backend still holds, as far as the pass
    /// of the newest compaction has found them (see [`KvStore::index_pass_pending`]).
    pub fn unreclaimed(&self) -> &Unreclaimed {
        &self.unreclaimed
    }

    /// Whether the newest compaction's pass over the key index is unfinished: until it is,
    /// [`KvStore::unreclaimed`] lacks what the pass has yet to find.
    pub fn index_pass_pending(&self) -> bool {
        self.pass.is_some()
    }

    /// Compacts up to `max_keys` more keys of the newest compaction's unfinished pass, and
    /// returns whether the pass is still unfinished. When it ends, what it dropped awaits
    /// deletion ([`KvStore::reclaim`]).
    pub fn compact_index(&mut self, max_keys: usize) -> bool {
        let Some(pass) = &mut self.pass else {
            return false;
        };
        let until = pass.until.as_deref();
        match self.index.compact_from(&pass.next, until, self.compacted, max_keys, &mut pass.dropped) {
            Some(next) => pass.next = next,
            None => match pass.wrap.take() {
                Some(wrap) => {
                    pass.next = Vec::new();
                    pass.until = Some(wrap);
                }
                None => {
                    let pass = self.pass.take().expect("a pass is under way");
                    self.unreclaimed.add(pass.dropped);
                    return false;
                }
            },
        }
        true
    }

    /// Finishes the newest compaction's pass over the key index, if one is under way.
    pub fn finish_index_pass(&mut self) {
        while self.compact_index(usize::MAX) {}
    }

    /// Deletes up to `max` records that compactions dropped, oldest first, and returns how
    /// many are left. Finishes the index pass first, if one is under way. On an error
    /// nothing counts as deleted.
    pub fn reclaim(&mut self, backend: &mut impl RevisionWrite, max: usize) -> Result<usize, BackendError> {
        self.finish_index_pass();
        let batch = self.unreclaimed.batch(max);
        for &rev in batch {
            backend.delete(rev)?;
        }
        let deleted = batch.len();
        self.unreclaimed.advance(deleted);
        Ok(self.unreclaimed.len())
    }

    /// After a restart with deletions outstanding: the index was rebuilt from every record
    /// the backend holds, so compacting it again at the compaction revision finds the
    /// records still to delete (with the orphaned tombstones `restore` set aside).
    fn resume_reclaim(&mut self) {
        if self.compacted > 0 {
            let dropped = self.index.compact(self.compacted);
            self.unreclaimed.add(dropped);
        }
    }
}

/// A [`KvStore`] being rebuilt from its records, given one at a time in revision order,
/// before the meta that closes it is known: a received snapshot's records are indexed as
/// they arrive, and its meta comes after them.
#[derive(Debug, Default)]
pub struct Restoring {
    index: TreeIndex,
    /// The lease each key's newest record names.
    key_lease: std::collections::HashMap<Vec<u8>, i64>,
    last: Rev,
    /// The compaction revision, when a compaction's records were being deleted as the
    /// records were written (see [`KvStore::restore`]).
    reclaim_at: Option<i64>,
    orphaned_tombstones: Vec<Rev>,
}

impl Restoring {
    pub fn new() -> Restoring {
        Restoring::default()
    }

    /// For records written while the records of the compaction at `compact_revision` were
    /// being deleted (see [`KvStore::restore`]).
    pub fn reclaiming(compact_revision: i64) -> Restoring {
        Restoring { reclaim_at: Some(compact_revision), ..Restoring::default() }
    }

    /// Indexes the next record. The records must come in revision order.
    pub fn record(&mut self, rev: Rev, stored: &StoredKv) -> Result<(), BackendError> {
        let corrupt = |detail: String| BackendError::Corrupt { rev, detail };
        if rev <= self.last {
            return Err(corrupt(format!("records out of order: {rev} after {}", self.last)));
        }
        if rev.main < 1 || rev.sub < 0 || rev.main > REVISION_MAX {
            return Err(corrupt(format!("a record at revision {rev}")));
        }
        self.last = rev;
        let kv = &stored.kv;
        if let Some(compacted) = self.reclaim_at
            && stored.tombstone
            && rev.main <= compacted
            && !self.index.has_key(&kv.key)
        {
            self.orphaned_tombstones.push(rev);
            return Ok(());
        }
        self.index
            .restore(&kv.key, rev, kv.create_revision, kv.version, stored.tombstone)
            .map_err(corrupt)?;
        if stored.tombstone || kv.lease == 0 {
            self.key_lease.remove(&kv.key);
        } else {
            self.key_lease.insert(kv.key.clone(), kv.lease);
        }
        Ok(())
    }

    /// The store the records make with `meta`, the stored leases, the counter sessions
    /// and the auth state. Refuses a meta whose revision is behind the last record.
    pub fn finish<E: From<BackendError>>(
        self,
        meta: Meta,
        leases: impl IntoIterator<Item = Result<LeaseRecord, E>>,
        sessions: impl IntoIterator<Item = Result<CounterSession, E>>,
        auth: Option<AuthState>,
    ) -> Result<KvStore, E> {
        check_meta(&meta)?;
        if self.last.main > meta.current_revision {
            return Err(E::from(BackendError::Corrupt {
                rev: self.last,
                detail: format!("record outside the store's revisions 1..={}", meta.current_revision),
            }));
        }
        // Both come from the same meta: a mismatch is a caller's mistake, not the data's.
        debug_assert!(self.reclaim_at.is_none_or(|at| at == meta.compact_revision));
        let mut store = KvStore::from_meta(meta);
        store.index = self.index;
        for lease in leases {
            store.leases.insert(lease?);
        }
        for (key, lease) in self.key_lease {
            store.leases.attach(&key, lease);
        }
        for session in sessions {
            let session = session?;
            if !store.leases.contains(session.lease) {
                return Err(E::from(BackendError::Corrupt {
                    rev: Rev::default(),
                    detail: format!("a counter session of lease {:x}, which does not exist", session.lease),
                }));
            }
            store.sessions.insert(session);
        }
        if let Some(auth) = auth {
            store.auth = Auth::restore(auth)
                .map_err(|detail| E::from(BackendError::Corrupt { rev: Rev::default(), detail }))?;
        }
        if self.reclaim_at.is_some() {
            store.resume_reclaim();
            store.unreclaimed.add(self.orphaned_tombstones);
        }
        Ok(store)
    }
}

/// Refuses persisted meta outside what any store can reach.
fn check_meta(meta: &Meta) -> Result<(), BackendError> {
    let bad_meta = |detail: String| BackendError::Corrupt { rev: Rev::default(), detail };
    if !(1..=REVISION_MAX).contains(&meta.current_revision) {
        return Err(bad_meta(format!("store revision {} outside 1..={REVISION_MAX}", meta.current_revision)));
    }
    if !(-1..=meta.current_revision).contains(&meta.compact_revision) {
        return Err(bad_meta(format!(
            "compaction revision {} outside -1..={}",
            meta.compact_revision, meta.current_revision
        )));
    }
    Ok(())
}

/// One write request in progress: etcd's `storeTxnWrite`.
struct WriteTxn<'a, B> {
    index: &'a mut TreeIndex,
    leases: &'a mut Leases,
    backend: &'a mut B,
    begin: i64,
    compacted: i64,
    changes: i64,
}

impl<B: RevisionWrite> WriteTxn<'_, B> {
    /// The revision reads inside this write see: its own changes included.
    fn read_revision(&self) -> i64 {
        if self.changes > 0 { self.begin + 1 } else { self.begin }
    }

    /// Ends the write and returns the new store revision.
    fn end(self) -> i64 {
        self.read_revision()
    }

    fn next_rev(&mut self) -> Rev {
        let rev = Rev::new(self.begin + 1, self.changes);
        self.changes += 1;
        rev
    }

    fn latest(&self, key: &[u8]) -> Result<Option<KeyValue>, BackendError> {
        let at = self.read_revision();
        let kvs = range::kvs_at(self.index, &*self.backend, &KeyRange::Single(key), at)?;
        Ok(kvs.into_iter().next())
    }

    fn range(&self, request: &RangeRequest) -> Result<RangeResponse, BackendError> {
        let plan = range::plan(self.index, request, self.read_revision(), self.compacted)
            .expect("range revisions were checked before the txn ran");
        plan.execute(&*self.backend)
    }

    fn put(&mut self, request: &PutRequest) -> Result<Result<PutResponse, EtcdError>, BackendError> {
        let previous = if request.ignore_value || request.ignore_lease || request.prev_kv {
            self.latest(&request.key)?
        } else {
            None
        };
        if (request.ignore_value || request.ignore_lease) && previous.is_none() {
            return Ok(Err(EtcdError::KeyNotFound));
        }
        let value = match (&previous, request.ignore_value) {
            (Some(p), true) => p.value.clone(),
            _ => request.value.clone(),
        };
        let lease = match (&previous, request.ignore_lease) {
            (Some(p), true) => p.lease,
            _ => request.lease,
        };
        let revision = self.put_kv(&request.key, value, lease)?;
        Ok(Ok(PutResponse {
            header: Some(ResponseHeader { revision, ..Default::default() }),
            prev_kv: if request.prev_kv { previous } else { None },
        }))
    }

    fn put_kv(&mut self, key: &[u8], value: Vec<u8>, lease: i64) -> Result<i64, BackendError> {
        let rev = self.next_rev();
        let (create_revision, version) = match self.index.get(key, rev.main) {
            Some(visible) => (visible.created.main, visible.version + 1),
            None => (rev.main, 1),
        };
        let kv =
            KeyValue { key: key.to_vec(), create_revision, mod_revision: rev.main, version, value, lease };
        self.backend.put(rev, &StoredKv { kv, tombstone: false })?;
        self.index.put(key, rev);
        self.leases.attach(key, lease);
        Ok(rev.main)
    }

    fn delete_range(&mut self, request: &DeleteRangeRequest) -> Result<DeleteRangeResponse, BackendError> {
        let range = KeyRange::new(&request.key, &request.range_end);
        let at = self.read_revision();
        let prev_kvs =
            if request.prev_kv { range::kvs_at(self.index, &*self.backend, &range, at)? } else { Vec::new() };
        let keys = self.index.keys(&range, at);
        for key in &keys {
            let rev = self.next_rev();
            let kv = KeyValue { key: key.clone(), ..Default::default() };
            self.backend.put(rev, &StoredKv { kv, tombstone: true })?;
            self.index.tombstone(key, rev);
            self.leases.detach(key);
        }
        let revision = self.read_revision();
        Ok(DeleteRangeResponse {
            header: Some(ResponseHeader { revision, ..Default::default() }),
            deleted: keys.len() as i64,
            prev_kvs,
        })
    }

    /// Runs the ops on `path`, whose checks have passed, so nothing here can fail for the
    /// client.
    fn txn(&mut self, request: &TxnRequest, path: &[bool]) -> Result<TxnResponse, BackendError> {
        let mut responses = Vec::new();
        let mut rest = &path[1..];
        for op in branch(request, path[0]) {
            responses.push(self.txn_op(op, &mut rest)?);
        }
        Ok(TxnResponse { header: Some(ResponseHeader::default()), succeeded: path[0], responses })
    }

    fn txn_op(&mut self, op: &RequestOp, rest: &mut &[bool]) -> Result<ResponseOp, BackendError> {
        let response = match &op.request {
            Some(request_op::Request::RequestRange(r)) => {
                response_op::Response::ResponseRange(self.range(r)?)
            }
            Some(request_op::Request::RequestPut(r)) => {
                let response = self.put(r)?.expect("put preconditions were checked before the txn ran");
                response_op::Response::ResponsePut(response)
            }
            Some(request_op::Request::RequestDeleteRange(r)) => {
                response_op::Response::ResponseDeleteRange(self.delete_range(r)?)
            }
            Some(request_op::Request::RequestTxn(nested)) => {
                let response = self.txn(nested, rest)?;
                *rest = &rest[path_len(nested, rest)..];
                response_op::Response::ResponseTxn(response)
            }
            None => unreachable!("empty ops are rejected by the txn checks"),
        };
        Ok(ResponseOp { response: Some(response) })
    }
}

#[cfg(test)]
mod tests {
    use synod_api::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest};
    use synod_base::limits::COMPACTION_PASS_KEYS;

    use super::*;
    use crate::MemBackend;

    fn apply(store: &mut KvStore, backend: &mut MemBackend, op: command::Op) {
        let command = Command { op: Some(op), ..Default::default() };
        store.apply(backend, &command).unwrap().unwrap();
    }

    fn put(key: usize, value: &str) -> command::Op {
        let key = format!("k{key:06}").into_bytes();
        command::Op::Put(PutRequest { key, value: value.into(), ..Default::default() })
    }

    fn delete(key: usize) -> command::Op {
        command::Op::DeleteRange(DeleteRangeRequest {
            key: format!("k{key:06}").into_bytes(),
            ..Default::default()
        })
    }

    fn compact(revision: i64) -> command::Op {
        command::Op::Compaction(CompactionRequest { revision, physical: false })
    }

    /// Every key-value at `revision`, as a Range over the whole keyspace.
    fn everything(store: &KvStore, backend: &MemBackend, revision: i64) -> Vec<KeyValue> {
        let range = RangeRequest { key: vec![0], range_end: vec![0], revision, ..Default::default() };
        let request = TxnRequest {
            success: vec![RequestOp { request: Some(request_op::Request::RequestRange(range)) }],
            ..Default::default()
        };
        let response = store.read_txn(backend, &request).unwrap().unwrap();
        match &response.responses[0].response {
            Some(response_op::Response::ResponseRange(r)) => r.kvs.clone(),
            other => panic!("not a range: {other:?}"),
        }
    }

    /// A compaction of more keys than one slice leaves the rest of its pass over the index
    /// to later steps. Meanwhile reads at and after the compaction revision answer as they
    /// do once it is done, the backend check accounts for every record, and a second
    /// compaction carries the pass on and wraps round; when the pass ends it has dropped exactly what a
    /// compaction of the whole index at once drops.
    #[test]
    fn a_compaction_passes_over_a_large_index_a_slice_at_a_time() {
        let keys = 2 * COMPACTION_PASS_KEYS + 500;
        let (mut store, mut backend) = (KvStore::new(), MemBackend::default());
        // Every key written, every third written again, every seventh deleted.
        for key in 0..keys {
            apply(&mut store, &mut backend, put(key, "a"));
        }
        for key in (0..keys).step_by(3) {
            apply(&mut store, &mut backend, put(key, "b"));
        }
        for key in (0..keys).step_by(7) {
            apply(&mut store, &mut backend, delete(key));
        }
        let first = store.current_revision() - 100;
        let mut at_once = store.clone();
        let mut dropped = at_once.index.compact(first);
        dropped.sort_unstable();

        let mut done = (store.clone(), backend.clone());
        apply(&mut done.0, &mut done.1, compact(first));
        done.0.finish_index_pass();
        assert_eq!(done.0.unreclaimed().batch(usize::MAX), dropped.as_slice(), "a whole pass at once");

        apply(&mut store, &mut backend, compact(first));
        assert!(store.index_pass_pending(), "{keys} keys are more than one slice");
        for revision in [first, 0] {
            assert_eq!(everything(&store, &backend, revision), everything(&done.0, &done.1, revision));
        }
        store.check_backend(&backend, backend.records().count()).unwrap();

        // Writes go on during the pass, then a second compaction starts it over.
        for key in (0..keys).step_by(5) {
            apply(&mut store, &mut backend, put(key, "c"));
            apply(&mut done.0, &mut done.1, put(key, "c"));
        }
        assert!(store.compact_index(COMPACTION_PASS_KEYS), "a second slice leaves a third");
        let second = store.current_revision() - 10;
        apply(&mut store, &mut backend, compact(second));
        apply(&mut done.0, &mut done.1, compact(second));
        done.0.finish_index_pass();
        assert!(store.index_pass_pending(), "the pass goes on, and wraps round to the keys it passed");
        loop {
            assert_eq!(everything(&store, &backend, second), everything(&done.0, &done.1, second));
            store.check_backend(&backend, backend.records().count()).unwrap();
            if !store.compact_index(COMPACTION_PASS_KEYS) {
                break;
            }
        }
        assert_eq!(store.index, done.0.index);
        assert_eq!(store.unreclaimed().batch(usize::MAX), done.0.unreclaimed().batch(usize::MAX));
        while store.reclaim(&mut backend, 1000).unwrap() > 0 {}
        store.check_backend(&backend, backend.records().count()).unwrap();
    }
}
