//! The JSON gateway's request decoding, as `crates/synod-server/src/gateway.rs` does it.
//!
//! The gateway's `call` and `stream_requests` are private to synod-server and run only
//! inside an axum router with a started member behind it, so the steps are repeated here:
//! an all-whitespace body is the default request; otherwise the body is read as a JSON
//! value, its `null` members are dropped (grpc-gateway reads them as unset), and the value
//! is read as the request with synod-api's pbjson impls. Keep this in step with the
//! gateway.

use serde::de::DeserializeOwned;
use serde_json::Value;

/// Requests read from one streaming body at most (watch, keep-alive), to bound a run.
pub const STREAM_REQUESTS_MAX: usize = 64;

/// A unary call's body as the gateway decodes it.
pub fn unary<Req: DeserializeOwned + Default>(body: &[u8]) -> Result<Req, serde_json::Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Req::default());
    }
    let mut value = serde_json::from_slice::<Value>(body)?;
    drop_nulls(&mut value);
    serde_json::from_value::<Req>(value)
}

/// A streaming call's body as the gateway decodes it: JSON values one after another.
pub fn stream<Req: DeserializeOwned + Default>(body: &[u8]) -> Result<Vec<Req>, serde_json::Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(vec![Req::default()]);
    }
    serde_json::Deserializer::from_slice(body)
        .into_iter::<Value>()
        .take(STREAM_REQUESTS_MAX)
        .map(|value| {
            let mut value = value?;
            drop_nulls(&mut value);
            serde_json::from_value::<Req>(value)
        })
        .collect()
}

/// The gateway's `drop_nulls`: removes object members whose value is `null`.
fn drop_nulls(value: &mut Value) {
    match value {
        Value::Object(members) => {
            members.retain(|_, v| !v.is_null());
            members.values_mut().for_each(drop_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}
