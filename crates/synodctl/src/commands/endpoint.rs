//! `endpoint health` and `endpoint status`: each endpoint on its own connection.
//!
//! Health is what etcdctl checks: a linearizable read of the key `health` (a permission
//! error still proves the read went through consensus), then the alarm list, where any
//! raised alarm makes the endpoint unhealthy. `--cluster` replaces the endpoints with every
//! client URL in the member list.

use std::time::Instant;

use synod_api::EtcdError;
use synod_api::etcdserverpb::alarm_request::AlarmAction;
use synod_api::etcdserverpb::{AlarmRequest, AlarmType, MemberListRequest, RangeRequest, StatusRequest};

use super::{Context, emit};
use crate::client::{Client, DEADLINE_EXCEEDED};
use crate::exit::{CtlError, ExitCode};
use crate::printer::{EndpointHealth, EndpointStatus};
use synod_base::go_fmt;

pub async fn health(context: &Context, cluster: bool) -> anyhow::Result<()> {
    let printer = context.printer()?;
    let endpoints = endpoints(context, cluster).await?;
    let checks: Vec<_> = endpoints
        .into_iter()
        .map(|endpoint| {
            let config = context.client_config.clone();
            tokio::spawn(async move { check_health(endpoint, config).await })
        })
        .collect();
    let mut results = Vec::with_capacity(checks.len());
    for check in checks {
        results.push(check.await?);
    }
    let unhealthy = results.iter().any(|h| !h.error.is_empty());
    emit(printer.endpoint_health(&results)?)?;
    if unhealthy {
        return Err(CtlError::request("unhealthy cluster").into());
    }
    Ok(())
}

async fn check_health(endpoint: String, config: crate::client::ClientConfig) -> EndpointHealth {
    let start = Instant::now();
    let read = async {
        let client = Client::connect(std::slice::from_ref(&endpoint), &config).await?;
        let probe = RangeRequest { key: b"health".to_vec(), ..Default::default() };
        match client.call(client.kv().range(probe)).await {
            Err(e) if e.message.as_deref() != Some(EtcdError::PermissionDenied.message()) => Err(e),
            _ => Ok(client),
        }
    };
    let outcome = read.await;
    let took = go_fmt::format_duration(start.elapsed());
    let client = match outcome {
        Ok(client) => client,
        Err(e) => {
            let error = e.message.unwrap_or_else(|| DEADLINE_EXCEEDED.to_string());
            return EndpointHealth { endpoint, health: false, took, error };
        }
    };
    let alarms =
        AlarmRequest { action: AlarmAction::Get as i32, member_id: 0, alarm: AlarmType::None as i32 };
    let error = match client.call(client.maintenance().alarm(alarms)).await {
        Err(_) => "Unable to fetch the alarm list".to_string(),
        Ok(response) if response.alarms.is_empty() => String::new(),
        Ok(response) => {
            let mut error = "Active Alarm(s): ".to_string();
            for alarm in &response.alarms {
                error.push_str(match AlarmType::try_from(alarm.alarm) {
                    Ok(AlarmType::Nospace) => "NOSPACE ",
                    Ok(AlarmType::Corrupt) => "CORRUPT ",
                    _ => "UNKNOWN ",
                });
            }
            error
        }
    };
    EndpointHealth { endpoint, health: error.is_empty(), took, error }
}

pub async fn status(context: &Context, cluster: bool) -> anyhow::Result<()> {
    let printer = context.printer()?;
    let endpoints = endpoints(context, cluster).await?;
    let mut statuses = Vec::with_capacity(endpoints.len());
    let mut failed = false;
    for endpoint in endpoints {
        let status = async {
            let client = Client::connect(std::slice::from_ref(&endpoint), &context.client_config).await?;
            client.call(client.maintenance().status(StatusRequest {})).await
        };
        match status.await {
            Ok(status) => statuses.push(EndpointStatus { endpoint, status }),
            Err(e) => {
                failed = true;
                eprintln!("Failed to get the status of endpoint {endpoint} ({e})");
            }
        }
    }
    emit(printer.endpoint_status(&statuses)?)?;
    if failed {
        // etcdctl has already said why, endpoint by endpoint.
        return Err(CtlError::silent(ExitCode::Error).into());
    }
    Ok(())
}

/// The endpoints to check: `--endpoints`, or with `--cluster` every member's client URLs.
pub(super) async fn endpoints(context: &Context, cluster: bool) -> anyhow::Result<Vec<String>> {
    if !cluster {
        return Ok(context.endpoints.clone());
    }
    let fetch = async {
        let client = context.connect().await?;
        client.call(client.cluster().member_list(MemberListRequest { linearizable: true })).await
    };
    let members = fetch.await.map_err(|e| {
        CtlError::request(format!("failed to fetch endpoints from etcd cluster member list: {e}"))
    })?;
    Ok(members.members.into_iter().flat_map(|m| m.client_ur_ls).collect())
}
