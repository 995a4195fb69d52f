//! synod-base: the vocabulary every synod crate shares.
//!
//! Typed ids ([`Revision`], [`LeaseId`], [`MemberId`], [`ClusterId`], [`GroupId`],
//! [`LogIndex`], [`Term`]) so that a raft log index is never passed where a store revision is
//! expected, the one [`limits`] module that holds every bound synod enforces, and
//! [`go_fmt`], the Go text formats (durations, quoting) that etcd's flags and etcdctl's
//! output are made of, and [`bootstrap`], the reading of etcd's `--initial-cluster`.
//!
//! This crate must not depend on anything async, on I/O, or on any other synod crate.

pub mod bootstrap;
pub mod go_fmt;
pub mod ids;
pub mod limits;

pub use ids::{ClusterId, GroupId, LeaseId, LogIndex, MemberId, Revision, Term};
