//! `counter add|get`: synod's native counter, through synod-client, which retries an add
//! on the other endpoints until it is applied exactly once (or the retry timeout passes).

use std::time::Duration;

use synod_base::go_fmt;
use synod_client::{Client, Error, Options};

use super::Context;
use crate::client::endpoint_url;
use crate::exit::CtlError;

/// `counter add <key> <delta>`: prints the value right after the add.
pub async fn add(context: &Context, retry_timeout: Duration, args: &[String]) -> anyhow::Result<()> {
    let [key, delta] = args else {
        return Err(CtlError::bad_args("counter add command needs 2 arguments: <key> <delta>").into());
    };
    let delta =
        go_fmt::parse_int(delta, 10).map_err(|e| CtlError::bad_args(format!("bad delta {delta:?}: {e}")))?;
    let format = output_format(context)?;
    let client = connect(context, retry_timeout)?;
    let session = client.session().await.map_err(failure)?;
    let added = session.add(key.as_bytes(), delta).await;
    session.close().await;
    let added = added.map_err(failure)?;
    print(format, key, added.value, added.revision);
    Ok(())
}

/// `counter get <key>`: prints the counter's value.
pub async fn get(context: &Context, args: &[String]) -> anyhow::Result<()> {
    let [key] = args else {
        return Err(CtlError::bad_args("counter get command needs 1 argument: <key>").into());
    };
    let format = output_format(context)?;
    let client = connect(context, context.client_config.command_timeout)?;
    let value = client.get(key.as_bytes()).await.map_err(failure)?;
    print(format, key, value.value, value.revision);
    Ok(())
}

#[derive(Clone, Copy)]
enum Format {
    Simple,
    Json,
}

fn output_format(context: &Context) -> Result<Format, CtlError> {
    match context.write_out.as_str() {
        "simple" => Ok(Format::Simple),
        "json" => Ok(Format::Json),
        other => Err(CtlError::bad_feature(format!("counter prints simple or json output, not {other:?}"))),
    }
}

fn print(format: Format, key: &str, value: i64, revision: i64) {
    match format {
        Format::Simple => println!("{value}"),
        Format::Json => {
            println!("{}", serde_json::json!({ "key": key, "value": value, "revision": revision }))
        }
    }
}

/// A synod-client for the endpoints, with the global flags' TLS and user, as synodctl's
/// other commands: `https://` endpoints are dialed with --cacert (and --cert/--key), and
/// --user authenticates.
fn connect(context: &Context, retry_timeout: Duration) -> Result<Client, CtlError> {
    let config = &context.client_config;
    let endpoints = context.endpoints.iter().map(|e| endpoint_url(e)).collect::<Result<Vec<_>, _>>()?;
    let options = Options {
        retry_timeout,
        connect_timeout: config.dial_timeout,
        tls: config.tls.clone(),
        credentials: config.login.clone(),
        ..Options::default()
    };
    Client::with_options(endpoints, options).map_err(|e| CtlError::bad_args(e.to_string()))
}

fn failure(error: Error) -> CtlError {
    match error {
        Error::Refused(status) => CtlError::request(status.message().to_string()),
        other => CtlError::request(other.to_string()),
    }
}
