//! synod-base: the vocabulary every synod crate shares.
//!
//! Typed ids ([`Revision`], [`LeaseId`], [`MemberId`], [`ClusterId`], [`GroupId`],
//! [`LogIndex`], [`Term`]) so that a raft log index is never passed where a store revision is
//! expected, and the one [`limits`] module that holds every bound synod enforces.
//!
//! This crate must not depend on anything async, on I/O, or on any other synod crate.

pub mod ids;
pub mod limits;

pub use ids::{ClusterId, GroupId, LeaseId, LogIndex, MemberId, Revision, Term};
