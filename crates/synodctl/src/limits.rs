//! synodctl's limits, each with the reason for its value.
//!
//! A client fed from stdin and from the network bounds both, so that a runaway pipe or a
//! huge reply fails with a message instead of exhausting memory.

/// Bytes read from stdin (a put's value, a txn's lines): no member accepts a larger request.
pub const STDIN_BYTES_MAX: u64 = synod_base::limits::REQUEST_BYTES_MAX;

/// Lines in one txn list: etcd's default `--max-txn-ops` is 128, so this is far above what
/// any server accepts while still bounding a runaway input.
pub const TXN_LINES_MAX: usize = 1 << 16;

/// Largest reply accepted: etcd's Go client allows `math.MaxInt32` bytes (tonic's default,
/// 4 MiB, would fail a large `get --prefix` that etcdctl prints).
pub const RESPONSE_BYTES_MAX: usize = i32::MAX as usize;

const _: () = assert!(STDIN_BYTES_MAX <= RESPONSE_BYTES_MAX as u64);
