//! What monitors and orchestrators ask a member: `/health` (etcd's), `/livez` and `/readyz`
//! (etcd 3.5's), `/version`, `/metrics`, and the gRPC health service's status.
//!
//! They are served on every client URL and on `--listen-metrics-urls`, where no client
//! certificate is needed, so kubelets and Prometheus can reach a member whose client port
//! requires one.
//!
//! `/livez` asks whether the process should be restarted: can it serve a local read?
//! `/readyz` asks whether it should get traffic: no corruption alarm, and both local and
//! linearizable reads work (so a member without a leader is not ready). Both answer `ok`, or
//! with `?verbose` one `[+]check ok` line per check and `livez check passed`; a failure is
//! always verbose, with status 503. `?exclude=check` skips a check, and `/livez/<check>` or
//! `/readyz/<check>` runs one, as etcd's handlers do.

use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{StatusCode, header};
use serde::Serialize;
use synod_api::etcdserverpb::{AlarmType, RangeRequest};
use tonic::Status;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::api::{Api, ETCD_VERSION};

/// The probe routes, for the client port and the metrics port.
pub fn routes() -> Router<Api> {
    Router::new()
        .route("/health", get(health))
        .route("/livez", get(|api, query| probe(api, Probe::Livez, None, query)))
        .route("/livez/{check}", get(|api, Path(check), query| probe(api, Probe::Livez, Some(check), query)))
        .route("/readyz", get(|api, query| probe(api, Probe::Readyz, None, query)))
        .route(
            "/readyz/{check}",
            get(|api, Path(check), query| probe(api, Probe::Readyz, Some(check), query)),
        )
        .route("/version", get(version))
        .route("/metrics", get(metrics))
}

#[derive(Serialize)]
struct Health {
    health: &'static str,
    reason: String,
}

/// etcd's `/health`: alarms (minus `?exclude=`), then a leader (unless
/// `?serializable=true`), then a one-key read.
async fn health(State(api): State<Api>, Query(query): Query<Vec<(String, String)>>) -> Response {
    let excluded: Vec<&str> = query.iter().filter(|(k, _)| k == "exclude").map(|(_, v)| v.as_str()).collect();
    let serializable = query.iter().any(|(k, v)| k == "serializable" && v == "true");
    let reason = check_health(&api, &excluded, serializable).await.err();
    let (status, health) = match reason {
        None => (StatusCode::OK, Health { health: "true", reason: String::new() }),
        Some(reason) => {
            tracing::warn!(reason = %reason, "serving /health false");
            (StatusCode::SERVICE_UNAVAILABLE, Health { health: "false", reason })
        }
    };
    count(&api, "health", status);
    (status, axum::Json(health)).into_response()
}

fn count(api: &Api, kind: &str, status: StatusCode) {
    api.metrics()
        .health_checks
        .get_or_create(&vec![("type", kind.to_string()), ("status", status.as_u16().to_string())])
        .inc();
}

async fn check_health(api: &Api, excluded: &[&str], serializable: bool) -> Result<(), String> {
    let alarms = api.state().alarms().map_err(|e| format!("STORAGE ERROR:{e}"))?;
    for alarm in alarms {
        let name = AlarmType::try_from(alarm.alarm).map_or("UNKNOWN", |a| a.as_str_name());
        if !excluded.contains(&name) {
            return Err(format!("ALARM {name}"));
        }
    }
    if !serializable && api.consensus().leader().is_none() {
        return Err("RAFT NO LEADER".into());
    }
    read_check(api, serializable).await.map_err(|e| format!("RANGE ERROR:{}", e.message()))
}

async fn read_check(api: &Api, serializable: bool) -> Result<(), Status> {
    let probe = RangeRequest { key: vec![0], keys_only: true, limit: 1, serializable, ..Default::default() };
    api.range(probe).await.map(drop)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Probe {
    Livez,
    Readyz,
}

impl Probe {
    fn name(self) -> &'static str {
        match self {
            Probe::Livez => "livez",
            Probe::Readyz => "readyz",
        }
    }

    /// etcd 3.5's checks for each probe, in its order.
    fn checks(self) -> &'static [&'static str] {
        match self {
            Probe::Livez => &["serializable_read"],
            Probe::Readyz => &["data_corruption", "serializable_read", "linearizable_read"],
        }
    }
}

async fn run_check(api: &Api, check: &str) -> Result<(), String> {
    match check {
        "data_corruption" => {
            let alarms = api.state().alarms().map_err(|e| e.to_string())?;
            match alarms.iter().any(|a| a.alarm == AlarmType::Corrupt as i32) {
                true => Err("alarm activated".into()),
                false => Ok(()),
            }
        }
        "serializable_read" => read_check(api, true).await.map_err(|e| e.message().to_string()),
        "linearizable_read" => read_check(api, false).await.map_err(|e| e.message().to_string()),
        other => unreachable!("{other} is not one of the probes' checks"),
    }
}

/// `/livez` and `/readyz`, in the layout of etcd's (and Kubernetes') check handlers.
async fn probe(
    State(api): State<Api>,
    probe: Probe,
    only: Option<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let checks: Vec<&str> = match &only {
        None => probe.checks().to_vec(),
        Some(check) => match probe.checks().iter().find(|c| **c == check) {
            Some(check) => vec![*check],
            None => return (StatusCode::NOT_FOUND, "404 page not found\n").into_response(),
        },
    };
    let mut excluded: Vec<&str> =
        query.iter().filter(|(k, _)| k == "exclude").map(|(_, v)| v.as_str()).collect();
    let verbose = query.iter().any(|(k, _)| k == "verbose");
    let mut output = String::new();
    let mut failed = false;
    for check in checks {
        if let Some(at) = excluded.iter().position(|e| *e == check) {
            excluded.remove(at);
            output.push_str(&format!("[+]{check} excluded: ok\n"));
            continue;
        }
        match run_check(&api, check).await {
            Ok(()) => output.push_str(&format!("[+]{check} ok\n")),
            Err(reason) => {
                failed = true;
                output.push_str(&format!("[-]{check} failed: {reason}\n"));
            }
        }
    }
    if !excluded.is_empty() {
        let names: Vec<String> = excluded.iter().map(|e| format!("{e:?}")).collect();
        output.push_str(&format!(
            "warn: some health checks cannot be excluded: no matches for {}\n",
            names.join(", ")
        ));
    }
    let name = probe.name();
    let status = if failed { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    count(&api, name, status);
    let body = if failed {
        tracing::warn!(probe = name, checks = %output.trim_end(), "probe failed");
        format!("{output}{name} check failed\n")
    } else if verbose {
        format!("{output}{name} check passed\n")
    } else {
        "ok".to_string()
    };
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

async fn version() -> Response {
    axum::Json(serde_json::json!({ "etcdserver": ETCD_VERSION, "etcdcluster": ETCD_VERSION })).into_response()
}

async fn metrics(State(api): State<Api>) -> Response {
    api.refresh_metrics();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], api.metrics().render())
        .into_response()
}

/// How often the gRPC health status is brought up to date. Having a leader is a matter of
/// time (a leader that stops hearing from its quorum loses it after an election timeout),
/// so it is looked at, not waited on; a heartbeat interval is as fine as it can change.
pub const GRPC_HEALTH_INTERVAL: Duration = Duration::from_millis(100);

/// Keeps the gRPC health service's status (for the whole server, `""`) at SERVING while
/// the member knows a leader and NOT_SERVING while it does not, as etcd does, and calls
/// `first_serving` the first time it serves. Runs until the task is dropped.
pub async fn follow_leader(api: Api, reporter: HealthReporter, first_serving: Box<dyn FnOnce() + Send>) {
    let mut first_serving = Some(first_serving);
    let mut serving = None;
    let mut tick = tokio::time::interval(GRPC_HEALTH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = api.consensus().leader().is_some();
        if serving != Some(now) {
            serving = Some(now);
            let status = if now { ServingStatus::Serving } else { ServingStatus::NotServing };
            tracing::info!(?status, "gRPC health status");
            reporter.set_service_status("", status).await;
            if now && let Some(first_serving) = first_serving.take() {
                first_serving();
            }
        }
    }
}
