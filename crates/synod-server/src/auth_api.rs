//! etcd's Auth service: enabling auth, Authenticate, and users and roles.
//!
//! Changes are replicated commands, applied by synod-mvcc's `auth` with etcd's errors;
//! reads (UserGet, RoleList, AuthStatus, ...) wait for a read barrier and answer from this
//! member's state. Who may call what is in `auth::guards`.

use synod_api::EtcdError;
use synod_api::etcdserverpb::{
    AuthDisableRequest, AuthDisableResponse, AuthEnableRequest, AuthEnableResponse, AuthRoleAddRequest,
    AuthRoleAddResponse, AuthRoleDeleteRequest, AuthRoleDeleteResponse, AuthRoleGetRequest,
    AuthRoleGetResponse, AuthRoleGrantPermissionRequest, AuthRoleGrantPermissionResponse,
    AuthRoleListRequest, AuthRoleListResponse, AuthRoleRevokePermissionRequest,
    AuthRoleRevokePermissionResponse, AuthStatusRequest, AuthStatusResponse, AuthUserAddRequest,
    AuthUserAddResponse, AuthUserChangePasswordRequest, AuthUserChangePasswordResponse,
    AuthUserDeleteRequest, AuthUserDeleteResponse, AuthUserGetRequest, AuthUserGetResponse,
    AuthUserGrantRoleRequest, AuthUserGrantRoleResponse, AuthUserListRequest, AuthUserListResponse,
    AuthUserRevokeRoleRequest, AuthUserRevokeRoleResponse, AuthenticateRequest, AuthenticateResponse,
    ResponseHeader, auth_server,
};
use synod_api::synodpb::{AuthCommand, AuthToken, Command, auth_command::Op, command};
use synod_mvcc::Response;
use tonic::{Request, Status};

use crate::api::{Api, Reply, ServedByLearner};
use crate::errors;

impl Api {
    /// Proposes one auth change; the header of its reply.
    async fn auth_change(&self, op: Op) -> Result<Option<ResponseHeader>, Status> {
        match self
            .propose(Command {
                op: Some(command::Op::Auth(AuthCommand { op: Some(op) })),
                ..Default::default()
            })
            .await?
        {
            Response::Auth(_) => Ok(Some(self.header(0))),
            _ => Err(errors::unexpected("auth")),
        }
    }

    /// Reads the auth state after a read barrier, so a change acknowledged anywhere is seen.
    async fn auth_read<T>(&self, read: impl FnOnce(&synod_mvcc::auth::Auth) -> T) -> Result<T, Status> {
        self.linearizable(false).await?;
        self.state().auth(read).map_err(errors::storage)
    }

    /// A password hashed for the log. Clients' own hashes (etcd's `hashedPassword`, bcrypt
    /// there) are not taken: synod stores Argon2id hashes it made itself.
    async fn hashed(&self, password: String, hashed: &str) -> Result<String, Status> {
        if password.is_empty() && !hashed.is_empty() {
            return Err(Status::invalid_argument(
                "synod: pre-hashed passwords are not accepted; send the password itself (over TLS)",
            ));
        }
        Ok(self.gate().hash(password).await?)
    }

    pub async fn auth_enable(&self, request: AuthEnableRequest) -> Result<AuthEnableResponse, Status> {
        Ok(AuthEnableResponse { header: self.auth_change(Op::Enable(request)).await? })
    }

    pub async fn auth_disable(&self, request: AuthDisableRequest) -> Result<AuthDisableResponse, Status> {
        Ok(AuthDisableResponse { header: self.auth_change(Op::Disable(request)).await? })
    }

    pub async fn auth_status(&self, _request: AuthStatusRequest) -> Result<AuthStatusResponse, Status> {
        let (enabled, auth_revision) = self.auth_read(|auth| (auth.enabled(), auth.revision())).await?;
        Ok(AuthStatusResponse { header: Some(self.header(0)), enabled, auth_revision })
    }

    /// Checks the password on this member, then registers a new token on every member
    /// through the log, so it works wherever the client goes next.
    pub async fn authenticate(&self, request: AuthenticateRequest) -> Result<AuthenticateResponse, Status> {
        let (enabled, stored) = self
            .auth_read(|auth| {
                let stored =
                    auth.user(&request.name).map(|user| user.password.clone()).filter(|p| !p.is_empty());
                (auth.enabled(), stored)
            })
            .await?;
        if !enabled {
            return Err(EtcdError::AuthNotEnabled.into());
        }
        let password_hash = stored.clone().unwrap_or_default();
        let stored = stored.and_then(|hash| String::from_utf8(hash).ok());
        self.gate().verify(&request.name, stored, request.password).await?;
        let (token, token_sha256, expires_unix_ms) = self.gate().new_token();
        let issue = AuthToken {
            user: request.name,
            token_sha256: token_sha256.to_vec(),
            expires_unix_ms,
            password_hash,
        };
        let header = self.auth_change(Op::IssueToken(issue)).await?;
        Ok(AuthenticateResponse { header, token })
    }

    pub async fn user_add(&self, mut request: AuthUserAddRequest) -> Result<AuthUserAddResponse, Status> {
        if request.name.is_empty() {
            return Err(EtcdError::UserEmpty.into());
        }
        let no_password = request.options.is_some_and(|o| o.no_password);
        let password = std::mem::take(&mut request.password);
        request.hashed_password =
            if no_password { String::new() } else { self.hashed(password, &request.hashed_password).await? };
        Ok(AuthUserAddResponse { header: self.auth_change(Op::UserAdd(request)).await? })
    }

    pub async fn user_get(&self, request: AuthUserGetRequest) -> Result<AuthUserGetResponse, Status> {
        let roles = self.auth_read(|auth| auth.user(&request.name).map(|user| user.roles.clone())).await?;
        let roles = roles.ok_or(EtcdError::UserNotFound)?;
        Ok(AuthUserGetResponse { header: Some(self.header(0)), roles })
    }

    pub async fn user_list(&self, _request: AuthUserListRequest) -> Result<AuthUserListResponse, Status> {
        let users = self.auth_read(|auth| auth.user_names()).await?;
        Ok(AuthUserListResponse { header: Some(self.header(0)), users })
    }

    pub async fn user_delete(
        &self,
        request: AuthUserDeleteRequest,
    ) -> Result<AuthUserDeleteResponse, Status> {
        Ok(AuthUserDeleteResponse { header: self.auth_change(Op::UserDelete(request)).await? })
    }

    pub async fn user_change_password(
        &self,
        mut request: AuthUserChangePasswordRequest,
    ) -> Result<AuthUserChangePasswordResponse, Status> {
        // etcd checks the user before it hashes; so does synod, to fail fast and cheaply.
        if !self.auth_read(|auth| auth.user(&request.name).is_some()).await? {
            return Err(EtcdError::UserNotFound.into());
        }
        let password = std::mem::take(&mut request.password);
        request.hashed_password = self.hashed(password, &request.hashed_password).await?;
        Ok(AuthUserChangePasswordResponse {
            header: self.auth_change(Op::UserChangePassword(request)).await?,
        })
    }

    pub async fn user_grant_role(
        &self,
        request: AuthUserGrantRoleRequest,
    ) -> Result<AuthUserGrantRoleResponse, Status> {
        Ok(AuthUserGrantRoleResponse { header: self.auth_change(Op::UserGrantRole(request)).await? })
    }

    pub async fn user_revoke_role(
        &self,
        request: AuthUserRevokeRoleRequest,
    ) -> Result<AuthUserRevokeRoleResponse, Status> {
        Ok(AuthUserRevokeRoleResponse { header: self.auth_change(Op::UserRevokeRole(request)).await? })
    }

    pub async fn role_add(&self, request: AuthRoleAddRequest) -> Result<AuthRoleAddResponse, Status> {
        Ok(AuthRoleAddResponse { header: self.auth_change(Op::RoleAdd(request)).await? })
    }

    pub async fn role_get(&self, request: AuthRoleGetRequest) -> Result<AuthRoleGetResponse, Status> {
        let perm =
            self.auth_read(|auth| auth.role(&request.role).map(|role| role.key_permission.clone())).await?;
        let perm = perm.ok_or(EtcdError::RoleNotFound)?;
        Ok(AuthRoleGetResponse { header: Some(self.header(0)), perm })
    }

    pub async fn role_list(&self, _request: AuthRoleListRequest) -> Result<AuthRoleListResponse, Status> {
        let roles = self.auth_read(|auth| auth.role_names()).await?;
        Ok(AuthRoleListResponse { header: Some(self.header(0)), roles })
    }

    pub async fn role_delete(
        &self,
        request: AuthRoleDeleteRequest,
    ) -> Result<AuthRoleDeleteResponse, Status> {
        Ok(AuthRoleDeleteResponse { header: self.auth_change(Op::RoleDelete(request)).await? })
    }

    pub async fn role_grant_permission(
        &self,
        request: AuthRoleGrantPermissionRequest,
    ) -> Result<AuthRoleGrantPermissionResponse, Status> {
        Ok(AuthRoleGrantPermissionResponse {
            header: self.auth_change(Op::RoleGrantPermission(request)).await?,
        })
    }

    pub async fn role_revoke_permission(
        &self,
        request: AuthRoleRevokePermissionRequest,
    ) -> Result<AuthRoleRevokePermissionResponse, Status> {
        Ok(AuthRoleRevokePermissionResponse {
            header: self.auth_change(Op::RoleRevokePermission(request)).await?,
        })
    }
}

impl ServedByLearner for AuthEnableRequest {}
impl ServedByLearner for AuthDisableRequest {}
impl ServedByLearner for AuthStatusRequest {}
impl ServedByLearner for AuthenticateRequest {}
impl ServedByLearner for AuthUserAddRequest {}
impl ServedByLearner for AuthUserGetRequest {}
impl ServedByLearner for AuthUserListRequest {}
impl ServedByLearner for AuthUserDeleteRequest {}
impl ServedByLearner for AuthUserChangePasswordRequest {}
impl ServedByLearner for AuthUserGrantRoleRequest {}
impl ServedByLearner for AuthUserRevokeRoleRequest {}
impl ServedByLearner for AuthRoleAddRequest {}
impl ServedByLearner for AuthRoleGetRequest {}
impl ServedByLearner for AuthRoleListRequest {}
impl ServedByLearner for AuthRoleDeleteRequest {}
impl ServedByLearner for AuthRoleGrantPermissionRequest {}
impl ServedByLearner for AuthRoleRevokePermissionRequest {}

#[tonic::async_trait]
impl auth_server::Auth for Api {
    async fn auth_enable(&self, request: Request<AuthEnableRequest>) -> Reply<AuthEnableResponse> {
        self.unary(request, |r| Api::auth_enable(self, r)).await
    }

    async fn auth_disable(&self, request: Request<AuthDisableRequest>) -> Reply<AuthDisableResponse> {
        self.unary(request, |r| Api::auth_disable(self, r)).await
    }

    async fn auth_status(&self, request: Request<AuthStatusRequest>) -> Reply<AuthStatusResponse> {
        self.unary(request, |r| Api::auth_status(self, r)).await
    }

    async fn authenticate(&self, request: Request<AuthenticateRequest>) -> Reply<AuthenticateResponse> {
        self.unary(request, |r| Api::authenticate(self, r)).await
    }

    async fn user_add(&self, request: Request<AuthUserAddRequest>) -> Reply<AuthUserAddResponse> {
        self.unary(request, |r| Api::user_add(self, r)).await
    }

    async fn user_get(&self, request: Request<AuthUserGetRequest>) -> Reply<AuthUserGetResponse> {
        self.unary(request, |r| Api::user_get(self, r)).await
    }

    async fn user_list(&self, request: Request<AuthUserListRequest>) -> Reply<AuthUserListResponse> {
        self.unary(request, |r| Api::user_list(self, r)).await
    }

    async fn user_delete(&self, request: Request<AuthUserDeleteRequest>) -> Reply<AuthUserDeleteResponse> {
        self.unary(request, |r| Api::user_delete(self, r)).await
    }

    async fn user_change_password(
        &self,
        request: Request<AuthUserChangePasswordRequest>,
    ) -> Reply<AuthUserChangePasswordResponse> {
        self.unary(request, |r| Api::user_change_password(self, r)).await
    }

    async fn user_grant_role(
        &self,
        request: Request<AuthUserGrantRoleRequest>,
    ) -> Reply<AuthUserGrantRoleResponse> {
        self.unary(request, |r| Api::user_grant_role(self, r)).await
    }

    async fn user_revoke_role(
        &self,
        request: Request<AuthUserRevokeRoleRequest>,
    ) -> Reply<AuthUserRevokeRoleResponse> {
        self.unary(request, |r| Api::user_revoke_role(self, r)).await
    }

    async fn role_add(&self, request: Request<AuthRoleAddRequest>) -> Reply<AuthRoleAddResponse> {
        self.unary(request, |r| Api::role_add(self, r)).await
    }

    async fn role_get(&self, request: Request<AuthRoleGetRequest>) -> Reply<AuthRoleGetResponse> {
        self.unary(request, |r| Api::role_get(self, r)).await
    }

    async fn role_list(&self, request: Request<AuthRoleListRequest>) -> Reply<AuthRoleListResponse> {
        self.unary(request, |r| Api::role_list(self, r)).await
    }

    async fn role_delete(&self, request: Request<AuthRoleDeleteRequest>) -> Reply<AuthRoleDeleteResponse> {
        self.unary(request, |r| Api::role_delete(self, r)).await
    }

    async fn role_grant_permission(
        &self,
        request: Request<AuthRoleGrantPermissionRequest>,
    ) -> Reply<AuthRoleGrantPermissionResponse> {
        self.unary(request, |r| Api::role_grant_permission(self, r)).await
    }

    async fn role_revoke_permission(
        &self,
        request: Request<AuthRoleRevokePermissionRequest>,
    ) -> Reply<AuthRoleRevokePermissionResponse> {
        self.unary(request, |r| Api::role_revoke_permission(self, r)).await
    }
}
