//! Every bound synod enforces, with the reason for its value.
//!
//! Defaults that etcd users know (request size, txn ops, quota) have etcd's values so that a
//! workload that runs on etcd runs on synod. Relations between limits are checked at compile
//! time at the bottom of this file.

/// Largest request a client may send, after decoding: etcd's `--max-request-bytes` default
/// (1.5 MiB). Larger requests get "etcdserver: request is too large".
pub const REQUEST_BYTES_DEFAULT: u64 = 1536 * 1024;

/// Extra room the gRPC layer allows on top of the request limit for framing, so that a
/// slightly oversized request reaches synod and gets etcd's error instead of a transport
/// error (etcd's `grpcOverheadBytes`).
pub const GRPC_OVERHEAD_BYTES: u64 = 512 * 1024;

/// Largest request size an operator may configure: a single log entry has to fit
/// comfortably in memory on every member, and in the budget of pending proposals.
pub const REQUEST_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// Operations allowed in each of a Txn's compare, success and failure lists (etcd's
/// `--max-txn-ops` default; the flag may raise it, and the request size still bounds it).
pub const TXN_OPS_DEFAULT: u32 = 128;

/// Size of the MVCC state file at which writes are refused with NOSPACE: etcd's
/// `--quota-backend-bytes` default (2 GiB).
pub const QUOTA_BACKEND_BYTES_DEFAULT: u64 = 2 * 1024 * 1024 * 1024;

/// A quota above this draws a startup warning, as in etcd ("8 GiB is a suggested maximum").
pub const QUOTA_BACKEND_BYTES_WARN: u64 = 8 * 1024 * 1024 * 1024;

/// The quota cost charged per put on top of its key and value (etcd's `kvOverhead`), so that
/// a stream of empty puts still runs into the quota.
pub const QUOTA_KV_OVERHEAD_BYTES: u64 = 256;

/// Proposals waiting for the log writer. Past this, a write gets "etcdserver: too many
/// requests" at once instead of queueing without bound.
pub const PROPOSALS_PENDING_MAX: usize = 4096;

/// Bytes of encoded commands waiting for the log writer. With requests of up to
/// `REQUEST_BYTES_MAX`, a count limit alone would let queued proposals take gigabytes.
pub const PROPOSALS_PENDING_BYTES_MAX: u64 = 128 * 1024 * 1024;

/// Entries the log writer folds into one durable commit (one fsync). Bounds the memory and
/// latency of a single batch while still amortising the fsync under load.
pub const LOG_BATCH_ENTRIES_MAX: usize = 1024;

/// Bytes the log writer folds into one durable commit.
pub const LOG_BATCH_BYTES_MAX: u64 = 16 * 1024 * 1024;

/// How often applied state is made durable (one fsync of the state file). Between
/// checkpoints the state is rebuilt from the log after a crash, so this bounds replay work,
/// never durability: the log is always fsynced before a client hears success.
pub const STATE_CHECKPOINT_INTERVAL_MS: u64 = 100;

/// Records a compaction dropped that one reclaim transaction deletes, and the pause between
/// two such transactions while more are left: etcd's compaction batch limit and sleep
/// interval. Writes wait for at most one batch; a million dropped revisions are 1,000
/// batches, each followed by the pause (how long a batch itself takes is not measured).
pub const RECLAIM_BATCH: usize = 1000;
pub const RECLAIM_PAUSE_MS: u64 = 10;

/// Keys whose history a compaction drops from the key index at a time, under the index's
/// write lock: the compaction's apply does the first slice, and a slice follows every
/// `RECLAIM_PAUSE_MS` until every key is done (then the deletions begin). About a
/// millisecond each here; done at once, a million keys held every write and read for
/// 80-100 ms (etcd, too, compacts its index outside the apply, a key at a time).
pub const COMPACTION_PASS_KEYS: usize = 10_000;

/// Log entries kept behind the durable applied index after a purge, so that a lagging
/// follower can catch up from the log instead of a snapshot (etcd's
/// `SnapshotCatchUpEntries`).
pub const LOG_CATCHUP_ENTRIES: u64 = 5000;

/// etcd's `--snapshot-count` default in 3.5: applied entries between log purges.
pub const SNAPSHOT_COUNT_DEFAULT: u64 = 100_000;

/// How long a client request may wait for the consensus layer before it fails with
/// "etcdserver: request timed out".
pub const REQUEST_TIMEOUT_MS: u64 = 7_000;

const _: () = assert!(REQUEST_BYTES_DEFAULT <= REQUEST_BYTES_MAX);
const _: () = assert!(REQUEST_BYTES_MAX + GRPC_OVERHEAD_BYTES <= u32::MAX as u64);
const _: () = assert!(LOG_BATCH_ENTRIES_MAX <= PROPOSALS_PENDING_MAX);
// The largest configurable request must fit in the pending budget, or it could never be
// proposed; one of the default size many times over.
const _: () = assert!(REQUEST_BYTES_MAX <= PROPOSALS_PENDING_BYTES_MAX);
const _: () = assert!(REQUEST_BYTES_DEFAULT * 64 <= PROPOSALS_PENDING_BYTES_MAX);
// The budget is counted in KiB permits of a tokio semaphore (u32).
const _: () = assert!(PROPOSALS_PENDING_BYTES_MAX / 1024 <= u32::MAX as u64);
const _: () = assert!(QUOTA_BACKEND_BYTES_DEFAULT <= QUOTA_BACKEND_BYTES_WARN);

/// The most bytes of one HTTP/2 header block (HEADERS and CONTINUATION frames) the client
/// port holds while it rewrites `:authority`. hyper advertises a 16 KiB header list
/// limit, so only a broken or hostile client comes near this.
pub const HTTP2_HEADER_BLOCK_BYTES_MAX: usize = 256 * 1024;

/// Watchers one Watch stream may hold. etcd has no bound; each watcher costs memory and a
/// filter check per event, so a client that opens them without end is refused past this.
pub const WATCHERS_PER_STREAM_MAX: usize = 10_000;

/// Requests on one Watch or LeaseKeepAlive stream per second, with a burst of as many: past
/// this a stream's requests wait, so one client cannot keep a member's cores busy with
/// create/cancel or renewal floods. A Go client renews every lease on one stream every
/// TTL/3, so this carries over 10,000 leases of 3 s.
pub const STREAM_REQUESTS_PER_SECOND: u32 = 10_000;

/// Requests (gRPC calls and HTTP requests) one client connection may start per second,
/// with a burst of as many; past this they wait. Far above what one connection needs (a
/// benchmark client multiplexes thousands of requests a second over one), it keeps one
/// connection from taking a member's whole capacity.
pub const CONNECTION_REQUESTS_PER_SECOND: u32 = 50_000;

/// Client connections a member holds at once; more are closed as they arrive, so file
/// descriptors and per-connection memory stay bounded.
pub const CLIENT_CONNECTIONS_MAX: usize = 20_000;

/// Peer connections a member holds at once: a handful per member is normal.
pub const PEER_CONNECTIONS_MAX: usize = 1_024;

/// Connections the metrics port (`--listen-metrics-urls`) holds at once: scrapers and
/// probes, a handful in practice.
pub const METRICS_CONNECTIONS_MAX: usize = 256;

/// HTTP/2 streams one client connection may have open at once (`--max-concurrent-streams`
/// may lower it); more wait for the client's turn rather than taking unbounded memory.
pub const STREAMS_PER_CONNECTION_MAX: u32 = 1024;

/// HTTP/2 streams a client may reset before the server has processed them (the "rapid
/// reset" attack, CVE-2023-44487) and streams the server may reset for a client's errors
/// before it closes the connection.
pub const HTTP2_RESETS_MAX: usize = 1_024;

/// How long a TLS client has to complete its handshake.
pub const TLS_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
