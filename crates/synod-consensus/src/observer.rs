//! [`Observer`]: what the consensus layer tells about itself as it happens, for metrics
//! (the server turns it into etcd's series). Calls come from hot paths: an observer must
//! be quick and never block.

use std::time::Duration;

/// Every method does nothing by default, so a test or the simulator can observe nothing.
pub trait Observer: Send + Sync + 'static {
    /// A durable log write of `entries` entries took `elapsed` (one fsync).
    fn log_flushed(&self, _elapsed: Duration, _entries: usize) {}
    /// A durable checkpoint of the applied state took `elapsed`.
    fn state_committed(&self, _elapsed: Duration) {}
    /// This member now follows a new leader (or is it).
    fn leader_changed(&self, _leader: u64) {}
    /// `bytes` of a request went to member `to`.
    fn peer_sent(&self, _to: u64, _bytes: u64) {}
    /// `bytes` of an answer came from member `from`.
    fn peer_received(&self, _from: u64, _bytes: u64) {}
    /// A message to member `to` could not be delivered.
    fn peer_send_failed(&self, _to: u64) {}
    /// A probe of member `to` came back after `elapsed`.
    fn peer_round_trip(&self, _to: u64, _elapsed: Duration) {}
    /// The leader wrote one log entry carrying `adds` native counter adds to one key.
    fn counter_entry(&self, _adds: usize) {}
}

/// Observes nothing.
pub struct NoObserver;

impl Observer for NoObserver {}
