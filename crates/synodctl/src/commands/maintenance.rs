//! `version`, `alarm list|disarm`, `defrag`, `move-leader` and `endpoint hashkv`, printed
//! as etcdctl 3.4's simple printer prints them.

use synod_api::etcdserverpb::alarm_request::AlarmAction;
use synod_api::etcdserverpb::{
    AlarmRequest, AlarmType, DefragmentRequest, HashKvRequest, MoveLeaderRequest, StatusRequest,
};

use super::Context;
use crate::cli::{AlarmArgs, AlarmCommand};
use crate::client::Client;
use crate::exit::{CtlError, ExitCode};

/// `version`: synodctl's version and the API it speaks.
pub fn version() -> anyhow::Result<()> {
    println!("synodctl version: {}", env!("CARGO_PKG_VERSION"));
    println!("API version: 3.5");
    Ok(())
}

/// `alarm list` and `alarm disarm`: each alarm as etcd's `%+v` of an AlarmMember.
pub async fn alarm(context: &Context, args: &AlarmArgs) -> anyhow::Result<()> {
    context.simple_printer("alarm")?;
    let action = match args.command {
        AlarmCommand::List => AlarmAction::Get,
        AlarmCommand::Disarm => AlarmAction::Deactivate,
    };
    let client = context.connect().await?;
    let request = AlarmRequest { action: action as i32, member_id: 0, alarm: AlarmType::None as i32 };
    let response = client.call(client.maintenance().alarm(request)).await?;
    for alarm in response.alarms {
        let name = AlarmType::try_from(alarm.alarm).map_or("UNKNOWN", |a| a.as_str_name());
        println!("memberID:{} alarm:{name} ", alarm.member_id);
    }
    Ok(())
}

/// `defrag`: each endpoint in turn. With `--cluster` every member's client URL, followers
/// first and the leader last, so the member whose writes everyone waits on is
/// defragmented once the others serve again.
pub async fn defrag(context: &Context, cluster: bool) -> anyhow::Result<()> {
    let endpoints = super::endpoint::endpoints(context, cluster).await?;
    let endpoints = if cluster { leader_last(context, endpoints).await } else { endpoints };
    let mut failed = false;
    for endpoint in endpoints {
        let outcome = async {
            let client = Client::connect(std::slice::from_ref(&endpoint), &context.client_config).await?;
            // Defragmentation rewrites the whole state file: it gets more than the
            // command timeout, as etcdctl's defrag does with its own context.
            crate::client::with_timeout(
                context.client_config.command_timeout.max(std::time::Duration::from_secs(60)),
                client.maintenance().defragment(DefragmentRequest {}),
            )
            .await
        };
        match outcome.await {
            Ok(_) => println!("Finished defragmenting etcd member[{endpoint}]"),
            Err(e) => {
                eprintln!("Failed to defragment etcd member[{endpoint}] ({})", e.message.unwrap_or_default());
                failed = true;
            }
        }
    }
    if failed {
        return Err(CtlError::silent(ExitCode::Error).into());
    }
    Ok(())
}

/// `endpoints` with the leader's moved to the end (as Status reports who leads).
async fn leader_last(context: &Context, endpoints: Vec<String>) -> Vec<String> {
    let mut leaders = Vec::new();
    let mut others = Vec::new();
    for endpoint in endpoints {
        let status = async {
            let client = Client::connect(std::slice::from_ref(&endpoint), &context.client_config).await?;
            client.call(client.maintenance().status(StatusRequest {})).await
        };
        match status.await {
            Ok(status) if status.header.as_ref().is_some_and(|h| h.member_id == status.leader) => {
                leaders.push(endpoint)
            }
            _ => others.push(endpoint),
        }
    }
    others.extend(leaders);
    others
}

/// `move-leader <id>`: finds the leader among the endpoints and asks it to hand over.
pub async fn move_leader(context: &Context, args: &[String]) -> anyhow::Result<()> {
    let [target] = args else {
        return Err(CtlError::bad_args("move-leader command needs 1 argument").into());
    };
    let target = u64::from_str_radix(target, 16)
        .map_err(|e| CtlError::bad_args(format!("bad member ID arg ({e}), expecting ID in Hex")))?;
    let mut leader = None;
    for endpoint in &context.endpoints {
        let Ok(client) = Client::connect(std::slice::from_ref(endpoint), &context.client_config).await else {
            continue;
        };
        if let Ok(status) = client.call(client.maintenance().status(StatusRequest {})).await
            && status.header.as_ref().is_some_and(|h| h.member_id == status.leader)
        {
            leader = Some((client, status.leader));
            break;
        }
    }
    let Some((client, leader_id)) = leader else {
        return Err(CtlError::request(
            "no leader endpoint given at [".to_string() + &context.endpoints.join(" ") + "]",
        )
        .into());
    };
    client.call(client.maintenance().move_leader(MoveLeaderRequest { target_id: target })).await?;
    println!("Leadership transferred from {leader_id:x} to {target:x}");
    Ok(())
}

/// `endpoint hashkv [--rev N]`: each endpoint's hash of its keyspace.
pub async fn hashkv(context: &Context, cluster: bool, revision: i64) -> anyhow::Result<()> {
    context.simple_printer("endpoint hashkv")?;
    let endpoints = super::endpoint::endpoints(context, cluster).await?;
    for endpoint in endpoints {
        let client = Client::connect(std::slice::from_ref(&endpoint), &context.client_config).await?;
        let response = client.call(client.maintenance().hash_kv(HashKvRequest { revision })).await?;
        println!("{endpoint}, {}", response.hash);
    }
    Ok(())
}
