//! `lease grant|revoke|timetolive|list|keep-alive`, printed in each format as etcdctl
//! prints them.

use synod_api::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseLeasesRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest,
};

use super::{Context, emit};
use crate::cli::{LeaseArgs, LeaseCommand};
use crate::exit::CtlError;
use crate::printer::Reply;

/// A lease id as etcdctl reads it: hexadecimal.
fn lease_id(text: &str) -> Result<i64, CtlError> {
    u64::from_str_radix(text, 16)
        .map(|id| id as i64)
        .map_err(|e| CtlError::bad_args(format!("bad lease ID arg ({e}), expecting ID in Hex")))
}

pub async fn run(context: &Context, args: &LeaseArgs) -> anyhow::Result<()> {
    let printer = context.printer()?;
    match &args.command {
        LeaseCommand::Grant { args } => {
            let [ttl] = args.as_slice() else {
                return Err(CtlError::bad_args("lease grant command needs TTL argument").into());
            };
            let ttl: i64 = ttl.parse().map_err(|e| CtlError::bad_args(format!("bad TTL ({e})")))?;
            let client = context.connect().await?;
            let response = client
                .call(client.lease().lease_grant(LeaseGrantRequest { ttl, id: 0 }))
                .await
                .map_err(|e| wrap(e, "failed to grant lease"))?;
            emit(printer.reply(Reply::LeaseGrant(&response), |out| {
                out.extend(
                    format!("lease {:016x} granted with TTL({}s)\n", response.id, response.ttl).bytes(),
                )
            })?)?;
        }
        LeaseCommand::Revoke { args } => {
            let [id] = args.as_slice() else {
                return Err(CtlError::bad_args("lease revoke command needs 1 argument").into());
            };
            let id = lease_id(id)?;
            let client = context.connect().await?;
            let response = client
                .call(client.lease().lease_revoke(LeaseRevokeRequest { id }))
                .await
                .map_err(|e| wrap(e, "failed to revoke lease"))?;
            emit(printer.reply(Reply::LeaseRevoke(&response.header), |out| {
                out.extend(format!("lease {id:016x} revoked\n").bytes())
            })?)?;
        }
        LeaseCommand::Timetolive { keys, args } => {
            let [id] = args.as_slice() else {
                return Err(CtlError::bad_args("lease timetolive command needs lease ID as argument").into());
            };
            let id = lease_id(id)?;
            let client = context.connect().await?;
            let response = client
                .call(client.lease().lease_time_to_live(LeaseTimeToLiveRequest { id, keys: *keys }))
                .await?;
            emit(printer.reply(Reply::LeaseTimeToLive(&response), |out| {
                out.extend(time_to_live(&response, *keys).bytes())
            })?)?;
        }
        LeaseCommand::List => {
            let client = context.connect().await?;
            let response = client
                .call(client.lease().lease_leases(LeaseLeasesRequest {}))
                .await
                .map_err(|e| wrap(e, "failed to list leases"))?;
            emit(printer.reply(Reply::LeaseList(&response), |out| {
                out.extend(format!("found {} leases\n", response.leases.len()).bytes());
                for lease in &response.leases {
                    out.extend(format!("{:016x}\n", lease.id).bytes());
                }
            })?)?;
        }
        LeaseCommand::KeepAlive { once, args } => {
            let [id] = args.as_slice() else {
                return Err(CtlError::bad_args("lease keep-alive command needs lease ID as argument").into());
            };
            let id = lease_id(id)?;
            let client = context.connect().await?;
            // One renewal every TTL/3, as etcd's client keeps a lease alive, on one stream.
            // The first is queued before the stream opens: etcd sends the response headers
            // only with the first answer.
            let (sender, requests) = tokio::sync::mpsc::channel(1);
            let mut renewal = sender.send(LeaseKeepAliveRequest { id }).await;
            let mut stream = client
                .call(client.lease().lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(requests)))
                .await?;
            while renewal.is_ok() {
                let answer = stream
                    .message()
                    .await
                    .map_err(|s| CtlError::request(crate::client::request_error(&s)))?;
                let Some(answer) = answer.filter(|a| a.ttl > 0) else {
                    println!("lease {id:016x} expired or revoked.");
                    return Ok(());
                };
                emit(printer.reply(Reply::LeaseKeepAlive(&answer), |out| {
                    out.extend(
                        format!("lease {:016x} keepalived with TTL({})\n", answer.id, answer.ttl).bytes(),
                    )
                })?)?;
                if *once {
                    return Ok(());
                }
                tokio::time::sleep(std::time::Duration::from_millis((answer.ttl.max(1) as u64) * 1000 / 3))
                    .await;
                renewal = sender.send(LeaseKeepAliveRequest { id }).await;
            }
        }
    }
    Ok(())
}

/// etcdctl's simple `TimeToLive`.
fn time_to_live(response: &synod_api::etcdserverpb::LeaseTimeToLiveResponse, keys: bool) -> String {
    if response.granted_ttl == 0 && response.ttl == -1 {
        return format!("lease {:016x} already expired\n", response.id);
    }
    let mut line = format!(
        "lease {:016x} granted with TTL({}s), remaining({}s)",
        response.id, response.granted_ttl, response.ttl
    );
    if keys {
        let names: Vec<String> =
            response.keys.iter().map(|k| String::from_utf8_lossy(k).into_owned()).collect();
        line.push_str(&format!(", attached keys([{}])", names.join(" ")));
    }
    line + "\n"
}

/// etcdctl's `failed to ... (reason)` wrapping of a request error.
fn wrap(error: CtlError, what: &str) -> CtlError {
    match error.message {
        Some(message) => CtlError::new(error.code, format!("{what} ({message})")),
        None => error,
    }
}
