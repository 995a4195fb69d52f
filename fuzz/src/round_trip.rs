//! Round trips: a message that decodes must encode again, and decode to itself.
//!
//! synod stores and forwards what it decoded (a Command goes into the log as the client
//! sent it, a gateway request becomes a gRPC call), so a message that changes when it is
//! encoded again would reach other members or the disk as something else.

use std::fmt::Debug;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Decodes `bytes` as `M`; if that succeeds, checks that its encoding has the length prost
/// predicts and decodes to the same message.
pub fn proto<M: prost::Message + Default + PartialEq + Debug>(bytes: &[u8]) -> Option<M> {
    let message = M::decode(bytes).ok()?;
    let encoded = message.encode_to_vec();
    assert_eq!(encoded.len(), message.encoded_len(), "encoded_len disagrees with encode for {message:?}");
    let again = M::decode(encoded.as_slice()).expect("a message synod encoded decodes");
    assert_eq!(again, message, "protobuf round trip changed the message");
    Some(message)
}

/// Checks that `message` serializes to proto3 JSON that reads back as the same message.
pub fn json<M: Serialize + DeserializeOwned + PartialEq + Debug>(message: &M) {
    let text = serde_json::to_vec(message).expect("a message decoded from JSON serializes");
    let again: M = serde_json::from_slice(&text).unwrap_or_else(|e| {
        panic!("JSON synod wrote does not read back ({e}): {}", String::from_utf8_lossy(&text))
    });
    assert_eq!(&again, message, "JSON round trip changed the message: {}", String::from_utf8_lossy(&text));
}
