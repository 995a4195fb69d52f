//! `lease grant|revoke|timetolive|list|keep-alive`, printed as etcdctl 3.4's simple
//! printer prints them. Other output formats are not offered for these verbs yet.

use synod_api::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseLeasesRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest,
};

use super::Context;
use crate::cli::{LeaseArgs, LeaseCommand};
use crate::exit::CtlError;

/// A lease id as etcdctl reads it: hexadecimal.
fn lease_id(text: &str) -> Result<i64, CtlError> {
    u64::from_str_radix(text, 16)
        .map(|id| id as i64)
        .map_err(|e| CtlError::bad_args(format!("bad lease ID arg ({e}), expecting ID in Hex")))
}

pub async fn run(context: &Context, args: &LeaseArgs) -> anyhow::Result<()> {
    context.simple_printer("lease commands")?;
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
            println!("lease {:016x} granted with TTL({}s)", response.id, response.ttl);
        }
        LeaseCommand::Revoke { args } => {
            let [id] = args.as_slice() else {
                return Err(CtlError::bad_args("lease revoke command needs 1 argument").into());
            };
            let id = lease_id(id)?;
            let client = context.connect().await?;
            client
                .call(client.lease().lease_revoke(LeaseRevokeRequest { id }))
                .await
                .map_err(|e| wrap(e, "failed to revoke lease"))?;
            println!("lease {id:016x} revoked");
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
            if response.granted_ttl == 0 && response.ttl == -1 {
                println!("lease {id:016x} already expired");
                return Ok(());
            }
            let mut line = format!(
                "lease {:016x} granted with TTL({}s), remaining({}s)",
                response.id, response.granted_ttl, response.ttl
            );
            if *keys {
                let names: Vec<String> =
                    response.keys.iter().map(|k| String::from_utf8_lossy(k).into_owned()).collect();
                line.push_str(&format!(", attached keys([{}])", names.join(" ")));
            }
            println!("{line}");
        }
        LeaseCommand::List => {
            let client = context.connect().await?;
            let response = client
                .call(client.lease().lease_leases(LeaseLeasesRequest {}))
                .await
                .map_err(|e| wrap(e, "failed to list leases"))?;
            println!("found {} leases", response.leases.len());
            for lease in response.leases {
                println!("{:016x}", lease.id);
            }
        }
        LeaseCommand::KeepAlive { once, args } => {
            let [id] = args.as_slice() else {
                return Err(CtlError::bad_args("lease keep-alive command needs lease ID as argument").into());
            };
            let id = lease_id(id)?;
            let client = context.connect().await?;
            // One renewal every TTL/3, as etcd's client keeps a lease alive, on one stream.
            let (sender, requests) = tokio::sync::mpsc::channel(1);
            let mut stream = client
                .call(client.lease().lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(requests)))
                .await?;
            loop {
                if sender.send(LeaseKeepAliveRequest { id }).await.is_err() {
                    break;
                }
                let answer = stream
                    .message()
                    .await
                    .map_err(|s| CtlError::request(crate::client::request_error(&s)))?;
                let Some(answer) = answer.filter(|a| a.ttl > 0) else {
                    println!("lease {id:016x} expired or revoked.");
                    return Ok(());
                };
                println!("lease {:016x} keepalived with TTL({})", answer.id, answer.ttl);
                if *once {
                    return Ok(());
                }
                tokio::time::sleep(std::time::Duration::from_millis((answer.ttl.max(1) as u64) * 1000 / 3))
                    .await;
            }
        }
    }
    Ok(())
}

/// etcdctl's `failed to ... (reason)` wrapping of a request error.
fn wrap(error: CtlError, what: &str) -> CtlError {
    match error.message {
        Some(message) => CtlError::new(error.code, format!("{what} ({message})")),
        None => error,
    }
}
