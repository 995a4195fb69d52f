//! synod-fuzz: what the fuzz targets in `fuzz_targets/` and the seed generator in
//! `examples/seeds.rs` share.
//!
//! - [`frames`]: how one fuzz input carries several requests (a kind byte, a length, the
//!   bytes), so that a run builds up state before the request that breaks it.
//! - [`kinds`]: the kind byte of each target's frames.
//! - [`kv`]: an etcd key-value store as a member runs it, on synod-mvcc's `KvStore` and
//!   `MemBackend`, with the invariants checked after every request.
//! - [`round_trip`]: decode, re-encode and decode again, for protobuf and proto3 JSON.
//! - [`state_stream`]: synod's state snapshot stream with its checksums filled in.
//! - [`authority`]: the client port's `:authority` shim, from synod-server's source file.
//! - [`gateway`]: the JSON gateway's request decoding, step by step as synod-server's
//!   `gateway` module does it.
//!
//! Every target asserts only properties synod promises (no panic on any input, a decoded
//! message survives re-encoding, a store restarts into the state it had); an assertion
//! that fires is a bug in synod, not in the input.

pub mod authority;
pub mod frames;
pub mod gateway;
pub mod kinds;
pub mod kv;
pub mod log_ops;
pub mod round_trip;
pub mod state_stream;
