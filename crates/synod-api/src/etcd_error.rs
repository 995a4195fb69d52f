//! The etcd errors synod returns, each with etcd's gRPC status code and exact message text.
//!
//! Clients match on the message string (the Go client's `rpctypes.errStringToError`,
//! python-etcd3, the Rust etcd-client), so these texts are public API: they are copied from
//! etcd 3.5 (`api/v3rpc/rpctypes/error.go`) and must not change. This module is the only place
//! in synod that spells them; everything else uses [`EtcdError`].

/// gRPC status codes, numbered as on the wire. Kept here so that crates without tonic (the
/// state machine) can still name the code of an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum GrpcCode {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

macro_rules! etcd_errors {
    ($( $(#[$doc:meta])* $variant:ident => ($code:ident, $text:literal), )*) => {
        /// An error etcd defines, returned to clients with its code and text.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
        pub enum EtcdError {
            $( $(#[$doc])* #[error($text)] $variant, )*
        }

        impl EtcdError {
            /// Every error, for tests and for decoding a status back into an error.
            pub const ALL: &'static [EtcdError] = &[$(EtcdError::$variant),*];

            /// The gRPC status code etcd uses for this error.
            pub fn code(self) -> GrpcCode {
                match self { $(EtcdError::$variant => GrpcCode::$code,)* }
            }

            /// The exact message text etcd sends.
            pub fn message(self) -> &'static str {
                match self { $(EtcdError::$variant => $text,)* }
            }
        }
    };
}

etcd_errors! {
    EmptyKey => (InvalidArgument, "etcdserver: key is not provided"),
    KeyNotFound => (InvalidArgument, "etcdserver: key not found"),
    ValueProvided => (InvalidArgument, "etcdserver: value is provided"),
    LeaseProvided => (InvalidArgument, "etcdserver: lease is provided"),
    TooManyOps => (InvalidArgument, "etcdserver: too many operations in txn request"),
    DuplicateKey => (InvalidArgument, "etcdserver: duplicate key given in txn request"),
    Compacted => (OutOfRange, "etcdserver: mvcc: required revision has been compacted"),
    FutureRev => (OutOfRange, "etcdserver: mvcc: required revision is a future revision"),
    NoSpace => (ResourceExhausted, "etcdserver: mvcc: database space exceeded"),

    LeaseNotFound => (NotFound, "etcdserver: requested lease not found"),
    LeaseExist => (FailedPrecondition, "etcdserver: lease already exists"),
    LeaseTtlTooLarge => (OutOfRange, "etcdserver: too large lease TTL"),

    WatchCanceled => (Cancelled, "etcdserver: watch canceled"),

    MemberExist => (FailedPrecondition, "etcdserver: member ID already exist"),
    PeerUrlExist => (FailedPrecondition, "etcdserver: Peer URLs already exists"),
    MemberNotEnoughStarted => (FailedPrecondition, "etcdserver: re-configuration failed due to not enough started members"),
    MemberBadUrls => (InvalidArgument, "etcdserver: given member URLs are invalid"),
    MemberNotFound => (NotFound, "etcdserver: member not found"),
    MemberNotLearner => (FailedPrecondition, "etcdserver: can only promote a learner member"),
    LearnerNotReady => (FailedPrecondition, "etcdserver: can only promote a learner member which is in sync with leader"),
    TooManyLearners => (FailedPrecondition, "etcdserver: too many learner members in cluster"),
    ClusterIdMismatch => (FailedPrecondition, "etcdserver: cluster ID mismatch"),

    RequestTooLarge => (InvalidArgument, "etcdserver: request is too large"),
    TooManyRequests => (ResourceExhausted, "etcdserver: too many requests"),

    RootUserNotExist => (FailedPrecondition, "etcdserver: root user does not exist"),
    RootRoleNotExist => (FailedPrecondition, "etcdserver: root user does not have root role"),
    UserAlreadyExist => (FailedPrecondition, "etcdserver: user name already exists"),
    UserEmpty => (InvalidArgument, "etcdserver: user name is empty"),
    UserNotFound => (FailedPrecondition, "etcdserver: user name not found"),
    RoleAlreadyExist => (FailedPrecondition, "etcdserver: role name already exists"),
    RoleNotFound => (FailedPrecondition, "etcdserver: role name not found"),
    RoleEmpty => (InvalidArgument, "etcdserver: role name is empty"),
    AuthFailed => (InvalidArgument, "etcdserver: authentication failed, invalid user ID or password"),
    PermissionNotGiven => (InvalidArgument, "etcdserver: permission not given"),
    PermissionDenied => (PermissionDenied, "etcdserver: permission denied"),
    RoleNotGranted => (FailedPrecondition, "etcdserver: role is not granted to the user"),
    PermissionNotGranted => (FailedPrecondition, "etcdserver: permission is not granted to the role"),
    AuthNotEnabled => (FailedPrecondition, "etcdserver: authentication is not enabled"),
    InvalidAuthToken => (Unauthenticated, "etcdserver: invalid auth token"),
    InvalidAuthMgmt => (InvalidArgument, "etcdserver: invalid auth management"),
    AuthOldRevision => (InvalidArgument, "etcdserver: revision of auth store is old"),

    NoLeader => (Unavailable, "etcdserver: no leader"),
    NotLeader => (FailedPrecondition, "etcdserver: not leader"),
    LeaderChanged => (Unavailable, "etcdserver: leader changed"),
    /// etcd 3.5 sends Unavailable here (rpctypes/error.go), not FailedPrecondition.
    NotCapable => (Unavailable, "etcdserver: not capable"),
    Stopped => (Unavailable, "etcdserver: server stopped"),
    Timeout => (Unavailable, "etcdserver: request timed out"),
    TimeoutDueToLeaderFail => (Unavailable, "etcdserver: request timed out, possibly due to previous leader failure"),
    TimeoutDueToConnectionLost => (Unavailable, "etcdserver: request timed out, possibly due to connection lost"),
    TimeoutWaitAppliedIndex => (Unavailable, "etcdserver: request timed out, waiting for the applied index took too long"),
    Unhealthy => (Unavailable, "etcdserver: unhealthy cluster"),
    Corrupt => (DataLoss, "etcdserver: corrupt cluster"),
    NotSupportedForLearner => (Unavailable, "etcdserver: rpc not supported for learner"),
    BadLeaderTransferee => (FailedPrecondition, "etcdserver: bad leader transferee"),

    Canceled => (Cancelled, "etcdserver: request canceled"),
    DeadlineExceeded => (DeadlineExceeded, "etcdserver: context deadline exceeded"),

    // The Lock and Election services' errors: etcd returns them as plain errors of its
    // concurrency package, so their code is Unknown.
    /// The lock's key vanished while its caller waited (its lease expired or was revoked).
    LockSessionExpired => (Unknown, "mutex: session is expired"),
    /// Proclaim by a campaigner that no longer leads.
    ElectionNotLeader => (Unknown, "election: not leader"),
    /// Leader of an election nobody leads.
    ElectionNoLeader => (Unknown, "election: no leader"),
    /// The campaign's key vanished while its caller waited (its lease expired or was
    /// revoked). etcd 3.5 answers such a campaign as won; synod refuses it.
    ElectionSessionExpired => (Unknown, "election: session is expired"),
    /// Proclaim or Resign without the leader key.
    ElectionMissingLeaderKey => (Unknown, "\"leader\" field must be provided"),

    // synod's own errors, for what etcd does not have (the native counter). Their texts are
    // public API too.
    /// A counter add whose result would not fit in an i64; nothing was added.
    CounterOverflow => (OutOfRange, "synod: counter: the add would overflow a 64-bit signed integer"),
    /// A counter add or get on a key whose value is not a decimal integer.
    CounterNotNumber => (FailedPrecondition, "synod: counter: the key's value is not a decimal integer"),
    /// A counter add with a session but without a sequence number.
    CounterNoSequence => (InvalidArgument, "synod: counter: an add with a session needs a sequence number from 1"),
    /// A retried add whose recorded result the session no longer holds (the client said it
    /// had the reply, or had more than 1024 adds unanswered): whether it was applied is
    /// unknown, and it is not applied again.
    CounterSequenceForgotten => (FailedPrecondition, "synod: counter: the session no longer holds this add's result"),
    /// An add whose session and sequence number were already used for another key.
    CounterSequenceReused => (InvalidArgument, "synod: counter: this session's sequence number was used for another key"),
}

impl EtcdError {
    /// The error a status with this exact message stands for, as etcd's Go client decodes
    /// it (by text, not by code).
    pub fn from_message(message: &str) -> Option<EtcdError> {
        EtcdError::ALL.iter().copied().find(|e| e.message() == message)
    }
}

#[cfg(feature = "grpc")]
impl From<EtcdError> for tonic::Status {
    fn from(error: EtcdError) -> Self {
        tonic::Status::new(tonic::Code::from_i32(error.code() as i32), error.message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The texts clients match on are etcd's, byte for byte, with etcd's codes.
    #[test]
    fn texts_and_codes_match_etcd() {
        let expected = [
            (EtcdError::EmptyKey, GrpcCode::InvalidArgument, "etcdserver: key is not provided"),
            (
                EtcdError::Compacted,
                GrpcCode::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted",
            ),
            (
                EtcdError::FutureRev,
                GrpcCode::OutOfRange,
                "etcdserver: mvcc: required revision is a future revision",
            ),
            (EtcdError::NoSpace, GrpcCode::ResourceExhausted, "etcdserver: mvcc: database space exceeded"),
            (EtcdError::RequestTooLarge, GrpcCode::InvalidArgument, "etcdserver: request is too large"),
            (
                EtcdError::TooManyOps,
                GrpcCode::InvalidArgument,
                "etcdserver: too many operations in txn request",
            ),
            (
                EtcdError::DuplicateKey,
                GrpcCode::InvalidArgument,
                "etcdserver: duplicate key given in txn request",
            ),
            (EtcdError::LeaseNotFound, GrpcCode::NotFound, "etcdserver: requested lease not found"),
            (EtcdError::NoLeader, GrpcCode::Unavailable, "etcdserver: no leader"),
            (EtcdError::LeaderChanged, GrpcCode::Unavailable, "etcdserver: leader changed"),
            (EtcdError::Timeout, GrpcCode::Unavailable, "etcdserver: request timed out"),
            (EtcdError::InvalidAuthToken, GrpcCode::Unauthenticated, "etcdserver: invalid auth token"),
            (EtcdError::PermissionDenied, GrpcCode::PermissionDenied, "etcdserver: permission denied"),
            (EtcdError::Corrupt, GrpcCode::DataLoss, "etcdserver: corrupt cluster"),
            (EtcdError::KeyNotFound, GrpcCode::InvalidArgument, "etcdserver: key not found"),
        ];
        for (error, code, text) in expected {
            assert_eq!(error.code(), code, "{error:?}");
            assert_eq!(error.message(), text, "{error:?}");
            assert_eq!(error.to_string(), text, "{error:?}");
        }
    }

    /// Every text is unique, so a client can always tell errors apart by text.
    #[test]
    fn every_message_decodes_back_to_its_error() {
        for &error in EtcdError::ALL {
            assert_eq!(EtcdError::from_message(error.message()), Some(error));
        }
        assert_eq!(EtcdError::from_message("etcdserver: something else"), None);
    }

    #[cfg(feature = "grpc")]
    /// The gRPC status carries the same code number and text.
    #[test]
    fn status_has_code_and_text() {
        let status = tonic::Status::from(EtcdError::Compacted);
        assert_eq!(status.code(), tonic::Code::OutOfRange);
        assert_eq!(status.message(), "etcdserver: mvcc: required revision has been compacted");
    }
}
