//! etcd's users, roles and key permissions, and the tokens Authenticate issued: the auth
//! part of the replicated state, applied as etcd's auth store applies it (`auth/store.go`),
//! with etcd's errors.
//!
//! Users, roles and whether auth is on are persisted with the rest of the state and travel
//! in snapshots. Tokens are not: like etcd's simple tokens, each member keeps the tokens it
//! applied in memory, so a member that restarts forgets them and clients authenticate
//! again. Passwords never reach this module, only their hashes (made by the server).
//!
//! A permission grants READ, WRITE or READWRITE on one key (`range_end` empty) or on the
//! keys in `[key, range_end)` (`range_end` of `\0`: every key from `key` on). A request on a
//! range is allowed only if the union of the user's granted ranges covers all of it. The
//! `root` role allows everything.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use synod_api::EtcdError;
use synod_api::authpb::{Permission, Role, User, permission::Type as PermType};
use synod_api::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest, TxnRequest, request_op};
use synod_api::synodpb::{AuthCommand, AuthState, AuthToken, auth_command::Op};

/// The user and role that may do anything; auth can only be enabled with this user in place.
pub const ROOT: &str = "root";

/// Tokens a member holds at most. Past this, issuing one drops the one that expires first,
/// whose client then authenticates again: memory stays bounded however often clients log in.
/// Expired tokens are dropped only this way, by count, never by a clock: when tokens go is
/// the same on every member whatever their clocks say.
pub const TOKENS_MAX: usize = 65_536;

/// Tokens one user holds at most; past this the user's own token that expires first goes,
/// so one user logging in without end cannot push everyone else's tokens out.
pub const TOKENS_PER_USER_MAX: usize = 1_024;

/// A token's SHA-256: what the log and the members hold instead of the token.
pub type TokenHash = [u8; 32];

/// What a request does to a key range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Issued {
    user: String,
    expires_unix_ms: i64,
}

#[derive(Clone, Debug, Default)]
pub struct Auth {
    enabled: bool,
    revision: u64,
    users: BTreeMap<String, User>,
    roles: BTreeMap<String, Role>,
    tokens: HashMap<TokenHash, Issued>,
    /// The tokens by expiry, to drop the first to expire when there are too many.
    expiry: BTreeSet<(i64, TokenHash)>,
    /// Each user's tokens by expiry.
    by_user: HashMap<String, BTreeSet<(i64, TokenHash)>>,
}

/// The end of the key range of a request or permission, as an exclusive bound: `None` means
/// no end. A single key `k` is the range `[k, k\0)`.
fn range_end(key: &[u8], range_end: &[u8]) -> Option<Vec<u8>> {
    match range_end {
        [] => {
            let mut end = key.to_vec();
            end.push(0);
            Some(end)
        }
        [0] => None,
        end if end <= key => {
            // An empty range names no key; it needs the permission of its first key.
            let mut end = key.to_vec();
            end.push(0);
            Some(end)
        }
        end => Some(end.to_vec()),
    }
}

impl Auth {
    /// The auth state as persisted, checked: it may come from another member's snapshot.
    pub fn restore(state: AuthState) -> Result<Auth, String> {
        let mut auth = Auth { enabled: state.enabled, revision: state.revision, ..Auth::default() };
        for user in state.users {
            let name = String::from_utf8(user.name.clone()).map_err(|_| "a user name that is not UTF-8")?;
            if auth.users.insert(name.clone(), user).is_some() {
                return Err(format!("user {name:?} stored twice"));
            }
        }
        for role in state.roles {
            let name = String::from_utf8(role.name.clone()).map_err(|_| "a role name that is not UTF-8")?;
            if auth.roles.insert(name.clone(), role).is_some() {
                return Err(format!("role {name:?} stored twice"));
            }
        }
        if auth.enabled && !auth.users.get(ROOT).is_some_and(has_root_role) {
            return Err("auth is enabled without a root user that has the root role".into());
        }
        Ok(auth)
    }

    /// The persisted part of the state.
    pub fn state(&self) -> AuthState {
        AuthState {
            enabled: self.enabled,
            revision: self.revision,
            users: self.users.values().cloned().collect(),
            roles: self.roles.values().cloned().collect(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Bumped by every change to users, roles or the enabled flag (etcd's auth revision).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    pub fn role(&self, name: &str) -> Option<&Role> {
        self.roles.get(name)
    }

    pub fn user_names(&self) -> Vec<String> {
        self.users.keys().cloned().collect()
    }

    pub fn role_names(&self) -> Vec<String> {
        self.roles.keys().cloned().collect()
    }

    /// The user the token with this hash stands for, if it is known here and not expired at
    /// `now_unix_ms`.
    pub fn token_user(&self, token: &TokenHash, now_unix_ms: i64) -> Option<&str> {
        let issued = self.tokens.get(token)?;
        (now_unix_ms < issued.expires_unix_ms).then_some(issued.user.as_str())
    }

    /// Tokens held, for tests and metrics.
    pub fn token_count(&self) -> usize {
        self.tokens.len()
    }

    /// Whether `user` exists and has the root role: it may do anything.
    pub fn is_admin(&self, user: &str) -> bool {
        self.users.get(user).is_some_and(has_root_role)
    }

    /// Whether `user` may do all of `needs`.
    pub fn permits(&self, user: &str, needs: &Needs) -> bool {
        self.is_admin(user) || needs.iter().all(|(access, key, end)| self.permitted(user, *access, key, end))
    }

    /// Whether `user` may `access` every key in `[key, range_end)` (etcd's range rules:
    /// `range_end` empty is one key, `\0` is every key from `key` on).
    pub fn permitted(&self, user: &str, access: Access, key: &[u8], end: &[u8]) -> bool {
        let Some(record) = self.users.get(user) else { return false };
        if has_root_role(record) {
            return true;
        }
        let mut granted: Vec<(&[u8], Option<Vec<u8>>)> = record
            .roles
            .iter()
            .filter_map(|name| self.roles.get(name))
            .flat_map(|role| &role.key_permission)
            .filter(|perm| allows(perm, access))
            .map(|perm| (perm.key.as_slice(), range_end(&perm.key, &perm.range_end)))
            .collect();
        granted.sort();
        let wanted_end = range_end(key, end);
        // Walk the granted ranges in order, extending how far from `key` they cover.
        let mut covered_to = key.to_vec();
        for (start, end) in granted {
            if start > covered_to.as_slice() {
                break;
            }
            match end {
                None => return true,
                Some(end) if end > covered_to => covered_to = end,
                Some(_) => {}
            }
            if wanted_end.as_ref().is_some_and(|wanted| covered_to >= *wanted) {
                return true;
            }
        }
        false
    }

    /// Applies one auth change; returns the auth revision after it. A failed change
    /// changes nothing. `changed` tells the caller whether the persisted state moved.
    pub fn apply(&mut self, command: &AuthCommand) -> Result<Applied, EtcdError> {
        let Some(op) = &command.op else { return Err(EtcdError::NotCapable) };
        match op {
            Op::IssueToken(token) => return self.issue(token).map(|()| Applied { changed: false }),
            Op::Enable(_) => {
                if self.enabled {
                    return Ok(Applied { changed: false });
                }
                let root = self.users.get(ROOT).ok_or(EtcdError::RootUserNotExist)?;
                if !has_root_role(root) {
                    return Err(EtcdError::RootRoleNotExist);
                }
                self.enabled = true;
                // Tokens from an earlier enabled period must not come back.
                self.clear_tokens(|_| true);
            }
            Op::Disable(_) => {
                if !self.enabled {
                    return Ok(Applied { changed: false });
                }
                self.enabled = false;
                self.clear_tokens(|_| true);
            }
            Op::UserAdd(r) => {
                if r.name.is_empty() {
                    return Err(EtcdError::UserEmpty);
                }
                if self.users.contains_key(&r.name) {
                    return Err(EtcdError::UserAlreadyExist);
                }
                let user = User {
                    name: r.name.clone().into_bytes(),
                    password: r.hashed_password.clone().into_bytes(),
                    roles: Vec::new(),
                    options: r.options,
                };
                self.users.insert(r.name.clone(), user);
            }
            Op::UserDelete(r) => {
                if self.enabled && r.name == ROOT {
                    return Err(EtcdError::InvalidAuthMgmt);
                }
                self.users.remove(&r.name).ok_or(EtcdError::UserNotFound)?;
                self.clear_tokens(|user| user == r.name);
            }
            Op::UserChangePassword(r) => {
                let user = self.users.get_mut(&r.name).ok_or(EtcdError::UserNotFound)?;
                user.password = r.hashed_password.clone().into_bytes();
                self.clear_tokens(|user| user == r.name);
            }
            Op::UserGrantRole(r) => {
                if r.role != ROOT && !self.roles.contains_key(&r.role) {
                    if !self.users.contains_key(&r.user) {
                        return Err(EtcdError::UserNotFound);
                    }
                    return Err(EtcdError::RoleNotFound);
                }
                let user = self.users.get_mut(&r.user).ok_or(EtcdError::UserNotFound)?;
                match user.roles.binary_search(&r.role) {
                    // Granting a role twice is not an error in etcd 3.5.
                    Ok(_) => return Ok(Applied { changed: false }),
                    Err(at) => user.roles.insert(at, r.role.clone()),
                }
            }
            Op::UserRevokeRole(r) => {
                if self.enabled && r.name == ROOT && r.role == ROOT {
                    return Err(EtcdError::InvalidAuthMgmt);
                }
                let user = self.users.get_mut(&r.name).ok_or(EtcdError::UserNotFound)?;
                let at = user.roles.binary_search(&r.role).map_err(|_| EtcdError::RoleNotGranted)?;
                user.roles.remove(at);
            }
            Op::RoleAdd(r) => {
                if r.name.is_empty() {
                    return Err(EtcdError::RoleEmpty);
                }
                if self.roles.contains_key(&r.name) {
                    return Err(EtcdError::RoleAlreadyExist);
                }
                self.roles.insert(
                    r.name.clone(),
                    Role { name: r.name.clone().into_bytes(), key_permission: vec![] },
                );
            }
            Op::RoleDelete(r) => {
                if self.enabled && r.role == ROOT {
                    return Err(EtcdError::InvalidAuthMgmt);
                }
                self.roles.remove(&r.role).ok_or(EtcdError::RoleNotFound)?;
                for user in self.users.values_mut() {
                    user.roles.retain(|role| *role != r.role);
                }
            }
            Op::RoleGrantPermission(r) => {
                let role = self.roles.get_mut(&r.name).ok_or(EtcdError::RoleNotFound)?;
                let perm = r.perm.as_ref().ok_or(EtcdError::PermissionNotGiven)?;
                if PermType::try_from(perm.perm_type).is_err() {
                    return Err(EtcdError::PermissionNotGiven);
                }
                // etcd's isValidPermissionRange: a key, and a range that is not empty.
                let valid_range = match perm.range_end.as_slice() {
                    [] | [0] => true,
                    end => perm.key.as_slice() < end,
                };
                if perm.key.is_empty() || !valid_range {
                    return Err(EtcdError::InvalidAuthMgmt);
                }
                let place = role
                    .key_permission
                    .binary_search_by(|p| (&p.key, &p.range_end).cmp(&(&perm.key, &perm.range_end)));
                match place {
                    Ok(at) => role.key_permission[at].perm_type = perm.perm_type,
                    Err(at) => role.key_permission.insert(at, perm.clone()),
                }
            }
            Op::RoleRevokePermission(r) => {
                let role = self.roles.get_mut(&r.role).ok_or(EtcdError::RoleNotFound)?;
                let at = role
                    .key_permission
                    .iter()
                    .position(|p| p.key == r.key && p.range_end == r.range_end)
                    .ok_or(EtcdError::PermissionNotGranted)?;
                role.key_permission.remove(at);
            }
        }
        self.revision += 1;
        Ok(Applied { changed: true })
    }

    fn issue(&mut self, token: &AuthToken) -> Result<(), EtcdError> {
        if !self.enabled {
            return Err(EtcdError::AuthNotEnabled);
        }
        let hash: TokenHash = token.token_sha256.as_slice().try_into().map_err(|_| EtcdError::AuthFailed)?;
        // The password checked must still be the user's: it may have changed, or the user
        // been deleted (and made again), since it was checked.
        match self.users.get(&token.user) {
            Some(user) if !user.password.is_empty() && user.password == token.password_hash => {}
            _ => return Err(EtcdError::AuthFailed),
        }
        self.forget_token(&hash);
        let user_tokens = self.by_user.get(&token.user).map_or(0, BTreeSet::len);
        if user_tokens >= TOKENS_PER_USER_MAX {
            let first = self.by_user.get(&token.user).and_then(|t| t.first().copied());
            if let Some((_, dropped)) = first {
                self.forget_token(&dropped);
            }
        }
        if self.tokens.len() >= TOKENS_MAX
            && let Some(&(_, dropped)) = self.expiry.first()
        {
            self.forget_token(&dropped);
        }
        let issued = Issued { user: token.user.clone(), expires_unix_ms: token.expires_unix_ms };
        self.tokens.insert(hash, issued);
        self.expiry.insert((token.expires_unix_ms, hash));
        self.by_user.entry(token.user.clone()).or_default().insert((token.expires_unix_ms, hash));
        Ok(())
    }

    fn forget_token(&mut self, hash: &TokenHash) {
        if let Some(issued) = self.tokens.remove(hash) {
            self.expiry.remove(&(issued.expires_unix_ms, *hash));
            if let Some(tokens) = self.by_user.get_mut(&issued.user) {
                tokens.remove(&(issued.expires_unix_ms, *hash));
                if tokens.is_empty() {
                    self.by_user.remove(&issued.user);
                }
            }
        }
    }

    fn clear_tokens(&mut self, of_user: impl Fn(&str) -> bool) {
        let doomed: Vec<TokenHash> =
            self.tokens.iter().filter(|(_, issued)| of_user(&issued.user)).map(|(hash, _)| *hash).collect();
        for hash in doomed {
            self.forget_token(&hash);
        }
    }
}

/// Key ranges a request touches and how: `(access, key, range_end)` as etcd's requests
/// spell ranges.
pub type Needs = Vec<(Access, Vec<u8>, Vec<u8>)>;

/// What a Range needs: reading its range.
pub fn range_needs(needs: &mut Needs, request: &RangeRequest) {
    needs.push((Access::Read, request.key.clone(), request.range_end.clone()));
}

/// What a Put needs: writing its key, and reading it for `prev_kv`.
pub fn put_needs(needs: &mut Needs, request: &PutRequest) {
    needs.push((Access::Write, request.key.clone(), Vec::new()));
    if request.prev_kv {
        needs.push((Access::Read, request.key.clone(), Vec::new()));
    }
}

/// What a DeleteRange needs: writing its range, and reading it for `prev_kv`.
pub fn delete_needs(needs: &mut Needs, request: &DeleteRangeRequest) {
    needs.push((Access::Write, request.key.clone(), request.range_end.clone()));
    if request.prev_kv {
        needs.push((Access::Read, request.key.clone(), request.range_end.clone()));
    }
}

/// What a Txn needs: reading every compare, and every op of both branches, nested txns
/// too, whichever branch runs (etcd's `checkTxnReqsPermission`, which before 3.4.26 and
/// 3.5.8 skipped nested txns).
pub fn txn_needs(needs: &mut Needs, request: &TxnRequest) {
    for compare in &request.compare {
        needs.push((Access::Read, compare.key.clone(), compare.range_end.clone()));
    }
    for op in request.success.iter().chain(&request.failure) {
        match &op.request {
            Some(request_op::Request::RequestRange(r)) => range_needs(needs, r),
            Some(request_op::Request::RequestPut(r)) => put_needs(needs, r),
            Some(request_op::Request::RequestDeleteRange(r)) => delete_needs(needs, r),
            Some(request_op::Request::RequestTxn(r)) => txn_needs(needs, r),
            None => {}
        }
    }
}

/// What an auth change did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Applied {
    /// Whether users, roles or the enabled flag changed (and must be stored).
    pub changed: bool,
}

fn has_root_role(user: &User) -> bool {
    user.roles.iter().any(|role| role == ROOT)
}

fn allows(perm: &Permission, access: Access) -> bool {
    match PermType::try_from(perm.perm_type) {
        Ok(PermType::Readwrite) => true,
        Ok(PermType::Read) => access == Access::Read,
        Ok(PermType::Write) => access == Access::Write,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_api::etcdserverpb::{
        AuthEnableRequest, AuthRoleAddRequest, AuthRoleGrantPermissionRequest, AuthUserAddRequest,
        AuthUserChangePasswordRequest, AuthUserGrantRoleRequest,
    };

    fn run(auth: &mut Auth, op: Op) -> Result<Applied, EtcdError> {
        auth.apply(&AuthCommand { op: Some(op) })
    }

    fn user(auth: &mut Auth, name: &str, roles: &[&str]) {
        run(
            auth,
            Op::UserAdd(AuthUserAddRequest {
                name: name.into(),
                hashed_password: "h".into(),
                ..Default::default()
            }),
        )
        .unwrap();
        for role in roles {
            if *role != ROOT && auth.role(role).is_none() {
                run(auth, Op::RoleAdd(AuthRoleAddRequest { name: role.to_string() })).unwrap();
            }
            run(
                auth,
                Op::UserGrantRole(AuthUserGrantRoleRequest { user: name.into(), role: role.to_string() }),
            )
            .unwrap();
        }
    }

    fn grant(auth: &mut Auth, role: &str, perm: PermType, key: &[u8], end: &[u8]) {
        let perm = Permission { perm_type: perm as i32, key: key.to_vec(), range_end: end.to_vec() };
        run(
            auth,
            Op::RoleGrantPermission(AuthRoleGrantPermissionRequest { name: role.into(), perm: Some(perm) }),
        )
        .unwrap();
    }

    /// Auth needs a root user with the root role, as in etcd.
    #[test]
    fn enable_needs_root() {
        let mut auth = Auth::default();
        assert_eq!(run(&mut auth, Op::Enable(AuthEnableRequest {})), Err(EtcdError::RootUserNotExist));
        user(&mut auth, ROOT, &[]);
        assert_eq!(run(&mut auth, Op::Enable(AuthEnableRequest {})), Err(EtcdError::RootRoleNotExist));
        run(&mut auth, Op::UserGrantRole(AuthUserGrantRoleRequest { user: ROOT.into(), role: ROOT.into() }))
            .unwrap();
        run(&mut auth, Op::Enable(AuthEnableRequest {})).unwrap();
        assert!(auth.enabled());
        assert!(auth.is_admin(ROOT));
        let restored = Auth::restore(auth.state()).unwrap();
        assert!(restored.enabled() && restored.is_admin(ROOT));
    }

    /// A range is allowed only if the granted ranges cover all of it, possibly together.
    #[test]
    fn ranges_must_be_covered() {
        let mut auth = Auth::default();
        user(&mut auth, "u", &["r"]);
        grant(&mut auth, "r", PermType::Read, b"a", b"c");
        grant(&mut auth, "r", PermType::Readwrite, b"c", b"e");
        grant(&mut auth, "r", PermType::Write, b"x", b"");
        grant(&mut auth, "r", PermType::Read, b"z", b"\0");
        let read = |key: &[u8], end: &[u8]| auth.permitted("u", Access::Read, key, end);
        assert!(read(b"a", b""));
        assert!(read(b"b", b"e"), "two grants cover [b, e) together");
        assert!(!read(b"b", b"f"), "[e, f) is not granted");
        assert!(!read(b"x", b""), "write-only");
        assert!(read(b"zz", b"\0"));
        assert!(!read(b"y", b"\0"));
        assert!(!read(b"\0", b"\0"), "not every key");
        let write = |key: &[u8], end: &[u8]| auth.permitted("u", Access::Write, key, end);
        assert!(write(b"x", b""));
        assert!(!write(b"x", b"y"), "x alone, not [x, y)");
        assert!(write(b"c", b"e"));
        assert!(!write(b"a", b""));
        assert!(!auth.permitted("nobody", Access::Read, b"a", b""));
    }

    /// A client write names its user, and applying it checks the user's permissions as
    /// they are in the log's order: a permission revoked before the write refuses it and
    /// changes nothing; the member's own writes (no user) are not checked.
    #[test]
    fn writes_are_checked_again_when_applied() {
        use crate::{KvStore, MemBackend, Response};
        use synod_api::etcdserverpb::{AuthRoleRevokePermissionRequest, PutRequest};
        use synod_api::synodpb::{Command, command};

        let mut store = KvStore::new();
        let mut backend = MemBackend::default();
        // A client's command names its user ("" while auth was off); the member's own, none.
        let mut apply = |op: command::Op, user: Option<&str>| {
            let command = Command {
                op: Some(op),
                auth_user: user.unwrap_or_default().to_string(),
                from_client: user.is_some(),
            };
            let applied = store.apply(&mut backend, &command).expect("backend");
            (applied, store.current_revision())
        };
        let auth = |op: Op| command::Op::Auth(AuthCommand { op: Some(op) });
        let put = |key: &[u8]| command::Op::Put(PutRequest { key: key.to_vec(), ..Default::default() });
        for (name, role) in [(ROOT, ROOT), ("u", "k")] {
            let add =
                AuthUserAddRequest { name: name.into(), hashed_password: "h".into(), ..Default::default() };
            apply(auth(Op::UserAdd(add)), None).0.unwrap();
            if role != ROOT {
                apply(auth(Op::RoleAdd(AuthRoleAddRequest { name: role.into() })), None).0.unwrap();
            }
            let grant = AuthUserGrantRoleRequest { user: name.into(), role: role.into() };
            apply(auth(Op::UserGrantRole(grant)), None).0.unwrap();
        }
        let perm =
            Permission { perm_type: PermType::Readwrite as i32, key: b"k".to_vec(), range_end: vec![] };
        let grant = AuthRoleGrantPermissionRequest { name: "k".into(), perm: Some(perm) };
        apply(auth(Op::RoleGrantPermission(grant)), None).0.unwrap();
        apply(auth(Op::Enable(AuthEnableRequest {})), None).0.unwrap();

        assert!(matches!(apply(put(b"k"), Some("u")).0, Ok(Response::Put(_))));
        assert_eq!(apply(put(b"other"), Some("u")).0, Err(EtcdError::PermissionDenied));
        // Managing auth needs root, checked again as it applies.
        let escalate = AuthUserGrantRoleRequest { user: "u".into(), role: ROOT.into() };
        assert_eq!(apply(auth(Op::UserGrantRole(escalate)), Some("u")).0, Err(EtcdError::PermissionDenied));
        // A write admitted while auth was off, applied after it was enabled.
        assert_eq!(apply(put(b"k"), Some("")).0, Err(EtcdError::UserEmpty));
        let revoke =
            AuthRoleRevokePermissionRequest { role: "k".into(), key: b"k".to_vec(), range_end: vec![] };
        let (_, revision) = apply(auth(Op::RoleRevokePermission(revoke)), Some(ROOT));
        let (refused, after) = apply(put(b"k"), Some("u"));
        assert_eq!(refused, Err(EtcdError::PermissionDenied));
        assert_eq!(after, revision, "a refused write changed the store");
        assert!(matches!(apply(put(b"k"), Some(ROOT)).0, Ok(Response::Put(_))));
        assert!(
            matches!(apply(put(b"k"), None).0, Ok(Response::Put(_))),
            "the member's own writes are not checked"
        );
    }

    /// A password change or deletion ends the user's tokens; others' stay. A token is
    /// refused if the password it was checked against is no longer the user's, and one user
    /// cannot hold more than its share of tokens.
    #[test]
    fn tokens_end_with_the_password() {
        let mut auth = Auth::default();
        user(&mut auth, ROOT, &[ROOT]);
        user(&mut auth, "u", &[]);
        run(&mut auth, Op::Enable(AuthEnableRequest {})).unwrap();
        let issue = |auth: &mut Auth, user: &str, token: u8, password: &str| {
            let token = AuthToken {
                user: user.into(),
                token_sha256: vec![token; 32],
                expires_unix_ms: 1000,
                password_hash: password.as_bytes().to_vec(),
            };
            run(auth, Op::IssueToken(token))
        };
        issue(&mut auth, "u", 1, "h").unwrap();
        issue(&mut auth, ROOT, 2, "h").unwrap();
        assert_eq!(auth.token_user(&[1; 32], 500), Some("u"));
        assert_eq!(auth.token_user(&[1; 32], 1000), None, "expired");
        assert_eq!(issue(&mut auth, "u", 3, "wrong"), Err(EtcdError::AuthFailed));
        let change = AuthUserChangePasswordRequest {
            name: "u".into(),
            hashed_password: "h2".into(),
            ..Default::default()
        };
        run(&mut auth, Op::UserChangePassword(change)).unwrap();
        assert_eq!(auth.token_user(&[1; 32], 500), None);
        assert_eq!(auth.token_user(&[2; 32], 500), Some(ROOT));
        // Checked against the old password, applied after the change: refused.
        assert_eq!(issue(&mut auth, "u", 4, "h"), Err(EtcdError::AuthFailed));
        assert_eq!(issue(&mut auth, "ghost", 5, "h"), Err(EtcdError::AuthFailed));
        // One user's logins push out only that user's oldest tokens.
        for i in 0..=TOKENS_PER_USER_MAX {
            let token = AuthToken {
                user: "u".into(),
                token_sha256: (i as u64).to_le_bytes().repeat(4),
                expires_unix_ms: i as i64,
                password_hash: b"h2".to_vec(),
            };
            run(&mut auth, Op::IssueToken(token)).unwrap();
        }
        assert_eq!(auth.token_count(), TOKENS_PER_USER_MAX + 1, "u's share plus root's token");
        assert_eq!(auth.token_user(&[2; 32], 500), Some(ROOT));
        assert_eq!(
            auth.token_user(&0u64.to_le_bytes().repeat(4).try_into().unwrap(), -1),
            None,
            "u's first went"
        );
    }
}
