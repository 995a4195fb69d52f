//! synod-api: the protobuf contract synod speaks, as Rust types.
//!
//! It holds the etcd v3 messages and services (`etcdserverpb`, `mvccpb`, `authpb`) exactly as
//! etcd defines them on the wire, synod's own replicated command (`synodpb`), and the catalog of
//! etcd errors with their gRPC codes and exact message texts ([`EtcdError`]).
//!
//! The gRPC service code (feature `grpc`) and the proto3 JSON mapping (feature `json`) are
//! optional, so that the deterministic state machine can use the messages without pulling in
//! tonic. This crate must never depend on server, storage or state-machine code.

#[cfg(feature = "grpc")]
pub mod body;
#[cfg(feature = "grpc")]
pub mod codec;
pub mod etcd_error;

pub use etcd_error::EtcdError;

/// etcd's `mvccpb` package: the stored key-value record and the watch event.
pub mod mvccpb {
    include!(concat!(env!("OUT_DIR"), "/mvccpb.rs"));
    #[cfg(feature = "json")]
    include!(concat!(env!("OUT_DIR"), "/mvccpb.serde.rs"));
}

/// etcd's `authpb` package: users, roles and permissions.
pub mod authpb {
    include!(concat!(env!("OUT_DIR"), "/authpb.rs"));
    #[cfg(feature = "json")]
    include!(concat!(env!("OUT_DIR"), "/authpb.serde.rs"));
}

/// etcd's `etcdserverpb` package: the client API services and their messages.
pub mod etcdserverpb {
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
    #[cfg(feature = "json")]
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.serde.rs"));
}

/// etcd's `v3lockpb` package: the Lock service.
pub mod v3lockpb {
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.rs"));
    #[cfg(feature = "json")]
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.serde.rs"));
}

/// etcd's `v3electionpb` package: the Election service.
pub mod v3electionpb {
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.rs"));
    #[cfg(feature = "json")]
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.serde.rs"));
}

/// synod's own client API (`synod.v1`): the native counter.
pub mod synod {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/synod.v1.rs"));
        #[cfg(feature = "json")]
        include!(concat!(env!("OUT_DIR"), "/synod.v1.serde.rs"));
    }
}

/// synod's own messages: the replicated command.
pub mod synodpb {
    include!(concat!(env!("OUT_DIR"), "/synodpb.rs"));
    #[cfg(feature = "json")]
    include!(concat!(env!("OUT_DIR"), "/synodpb.serde.rs"));
}
