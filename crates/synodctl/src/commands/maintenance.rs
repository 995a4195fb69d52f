//! `version`, `alarm list|disarm`, `defrag`, `move-leader` and `endpoint hashkv`, printed
//! as etcdctl prints them (`version` and `defrag` print the same in every format).

use synod_api::etcdserverpb::alarm_request::AlarmAction;
use synod_api::etcdserverpb::{
    AlarmRequest, AlarmResponse, AlarmType, DefragmentRequest, HashKvRequest, MoveLeaderRequest,
    StatusRequest,
};

use super::{Context, emit};
use crate::cli::{AlarmArgs, AlarmCommand};
use crate::client::Client;
use crate::exit::{CtlError, ExitCode};
use crate::printer::{EndpointHash, Reply};

/// `version`: synodctl's version and the API it speaks.
pub fn version() -> anyhow::Result<()> {
    println!("synodctl version: {}", env!("CARGO_PKG_VERSION"));
    println!("API version: 3.5");
    Ok(())
}

/// `alarm list` and `alarm disarm`: each alarm as etcd's `%+v` of an AlarmMember.
/// Disarming works as clientv3's `AlarmDisarm` of every alarm: the alarms are listed, each
/// is deactivated on its own, and the reply is what those deactivations returned, with no
/// header.
pub async fn alarm(context: &Context, args: &AlarmArgs) -> anyhow::Result<()> {
    let printer = context.printer()?;
    let client = context.connect().await?;
    let list = AlarmRequest { action: AlarmAction::Get as i32, member_id: 0, alarm: AlarmType::None as i32 };
    let mut response = client.call(client.maintenance().alarm(list)).await?;
    if let AlarmCommand::Disarm = args.command {
        let mut disarmed = AlarmResponse::default();
        for alarm in response.alarms {
            let request = AlarmRequest {
                action: AlarmAction::Deactivate as i32,
                member_id: alarm.member_id,
                alarm: alarm.alarm,
            };
            disarmed.alarms.extend(client.call(client.maintenance().alarm(request)).await?.alarms);
        }
        response = disarmed;
    }
    emit(printer.reply(Reply::Alarm(&response), |out| {
        for alarm in &response.alarms {
            let name = AlarmType::try_from(alarm.alarm).map_or("UNKNOWN", |a| a.as_str_name());
            out.extend(format!("memberID:{} alarm:{name} \n", alarm.member_id).bytes());
        }
    })?)
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
        let spinner = crate::progress::spinner(format!("defragmenting {endpoint}"));
        let outcome = outcome.await;
        spinner.finish_and_clear();
        match outcome {
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
    let printer = context.printer()?;
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
    let response =
        client.call(client.maintenance().move_leader(MoveLeaderRequest { target_id: target })).await?;
    emit(printer.reply(Reply::MoveLeader(&response.header), |out| {
        out.extend(format!("Leadership transferred from {leader_id:x} to {target:x}\n").bytes())
    })?)
}

/// `endpoint hashkv [--rev N]`: each endpoint's hash of its keyspace.
pub async fn hashkv(context: &Context, cluster: bool, revision: i64) -> anyhow::Result<()> {
    let printer = context.printer()?;
    let endpoints = super::endpoint::endpoints(context, cluster).await?;
    // As etcdctl: an endpoint that fails is reported and skipped, the others are printed,
    // and the last failure is the command's.
    let mut hashes = Vec::new();
    let mut failure = None;
    for endpoint in endpoints {
        let hash = async {
            let client = Client::connect(std::slice::from_ref(&endpoint), &context.client_config).await?;
            client.call(client.maintenance().hash_kv(HashKvRequest { revision })).await
        };
        match hash.await {
            Ok(hash) => hashes.push(EndpointHash { endpoint, hash }),
            Err(e) => {
                eprintln!(
                    "Failed to get the hash of endpoint {endpoint} ({})",
                    e.message.as_deref().unwrap_or_default()
                );
                failure = Some(e);
            }
        }
    }
    emit(printer.endpoint_hashkv(&hashes)?)?;
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}
