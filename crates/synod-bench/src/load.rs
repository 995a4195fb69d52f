//! The load runner: connections, client tasks, the stop condition, the rate limit, latency
//! histograms and the progress bar. What each request is lives in `workload`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use crate::report::{Latency, Report};

/// Latencies are recorded in microseconds, from 1 µs to a minute, to 3 significant digits.
const LATENCY_MAX_US: u64 = 60_000_000;
/// How long a request may take before it counts as failed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait after a failed request before the client tries again, so that a down
/// cluster is not hammered in a tight loop.
const ERROR_BACKOFF: Duration = Duration::from_millis(20);
/// Distinct error texts kept in a report; the rest are only counted.
const ERROR_KINDS_MAX: usize = 10;
/// How long connecting to an endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// When a run ends.
#[derive(Clone, Copy, Debug)]
pub enum Stop {
    After(Duration),
    Total(u64),
}

/// The shape of the load, common to every workload.
#[derive(Clone, Debug)]
pub struct LoadShape {
    pub endpoints: Vec<String>,
    pub clients: usize,
    pub conns: usize,
    pub stop: Stop,
    /// Requests per second over all clients; `None` is as fast as the clients go.
    pub rate: Option<u64>,
    pub progress: bool,
}

/// Opens `count` HTTP/2 connections, spread over the endpoints in turn.
pub async fn connect(endpoints: &[String], count: usize) -> anyhow::Result<Vec<Channel>> {
    anyhow::ensure!(!endpoints.is_empty(), "no endpoints given");
    let mut channels = Vec::with_capacity(count);
    for i in 0..count {
        let endpoint = &endpoints[i % endpoints.len()];
        let url = if endpoint.contains("://") { endpoint.clone() } else { format!("http://{endpoint}") };
        let channel = Endpoint::from_shared(url.clone())
            .with_context(|| format!("endpoint {endpoint}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("connect to {url}"))?;
        channels.push(channel);
    }
    Ok(channels)
}

/// What every client task shares: the clock, the stop condition and the counts.
pub struct Shared {
    pub start: Instant,
    deadline: Option<Instant>,
    total: Option<u64>,
    /// Nanoseconds between two requests under the rate limit.
    interval_ns: Option<u64>,
    issued: AtomicU64,
    pub done: AtomicU64,
    errors: AtomicU64,
    error_kinds: std::sync::Mutex<BTreeMap<String, u64>>,
}

impl Shared {
    pub fn new(shape: &LoadShape) -> Arc<Shared> {
        let start = Instant::now();
        let (deadline, total) = match shape.stop {
            Stop::After(duration) => (Some(start + duration), None),
            Stop::Total(total) => (None, Some(total)),
        };
        Arc::new(Shared {
            start,
            deadline,
            total,
            interval_ns: shape.rate.filter(|&r| r > 0).map(|r| 1_000_000_000 / r),
            issued: AtomicU64::new(0),
            done: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            error_kinds: std::sync::Mutex::new(BTreeMap::new()),
        })
    }

    /// Takes the next request's ticket, waiting for its turn under the rate limit; `None`
    /// once the run is over. Returns the ticket's number and the moment the request is due:
    /// under a rate limit its latency counts from then, so a server that falls behind the
    /// rate is charged for the wait (no coordinated omission).
    pub async fn ticket(&self) -> Option<(u64, Instant)> {
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        if self.total.is_some_and(|total| n >= total) {
            return None;
        }
        let mut due = None;
        if let Some(interval) = self.interval_ns {
            let at = self.start + Duration::from_nanos(n.saturating_mul(interval));
            if self.deadline.is_some_and(|deadline| at >= deadline) {
                return None;
            }
            tokio::time::sleep_until(at).await;
            due = Some(at);
        }
        let now = Instant::now();
        if self.deadline.is_some_and(|deadline| now >= deadline) {
            return None;
        }
        Some((n, due.unwrap_or(now)))
    }

    /// Counts a failed request and pauses the client briefly.
    pub async fn failed(&self, error: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        {
            let mut kinds = self.error_kinds.lock().unwrap_or_else(|e| e.into_inner());
            if kinds.len() < ERROR_KINDS_MAX || kinds.contains_key(&error) {
                *kinds.entry(error).or_default() += 1;
            }
        }
        tokio::time::sleep(ERROR_BACKOFF).await;
    }

    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}

/// A latency histogram in microseconds.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("static histogram bounds are valid")
}

/// Records one latency.
pub fn record(histogram: &mut Histogram<u64>, latency: Duration) {
    let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).clamp(1, LATENCY_MAX_US);
    histogram.record(us).expect("the value is clamped into the histogram's range");
}

/// The merged histogram of all clients.
pub type Merged = Arc<Mutex<Histogram<u64>>>;

/// Shows progress while a run goes, and samples the completed count once a second for the
/// throughput timeline.
pub struct Progress {
    task: tokio::task::JoinHandle<Vec<u64>>,
    stop: Arc<AtomicBool>,
}

impl Progress {
    pub fn start(shared: &Arc<Shared>, shape: &LoadShape, label: &str) -> Progress {
        let bar = if shape.progress {
            let bar = match shape.stop {
                Stop::Total(total) => ProgressBar::new(total),
                Stop::After(duration) => ProgressBar::new(duration.as_millis() as u64),
            };
            let template = match shape.stop {
                Stop::Total(_) => "{prefix:>16} [{bar:30}] {pos}/{len} {msg}",
                Stop::After(_) => "{prefix:>16} [{bar:30}] {elapsed}/{duration} {msg}",
            };
            bar.set_style(
                ProgressStyle::with_template(template)
                    .expect("static progress template")
                    .progress_chars("=> "),
            );
            bar.set_prefix(label.to_string());
            bar
        } else {
            ProgressBar::hidden()
        };
        let stop = Arc::new(AtomicBool::new(false));
        let task = {
            let shared = Arc::clone(shared);
            let stop = Arc::clone(&stop);
            let by_time = matches!(shape.stop, Stop::After(_));
            tokio::spawn(async move {
                let mut timeline = Vec::new();
                let mut last = 0;
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                let mut ticks = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    ticks += 1;
                    let done = shared.done.load(Ordering::Relaxed);
                    if by_time {
                        bar.set_position(shared.start.elapsed().as_millis() as u64);
                    } else {
                        bar.set_position(done);
                    }
                    if ticks.is_multiple_of(10) {
                        timeline.push(done - last);
                        bar.set_message(format!("{} ops/s, {} errors", done - last, shared.errors()));
                        last = done;
                    }
                }
                bar.finish_and_clear();
                timeline
            })
        };
        Progress { task, stop }
    }

    /// Stops the display and returns the completed requests of each whole second.
    pub async fn finish(self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}

/// Builds the report of a finished run.
pub fn report(
    workload: &str,
    shape: &LoadShape,
    shared: &Shared,
    histogram: &Histogram<u64>,
    elapsed: Duration,
) -> Report {
    let ops = histogram.len();
    let seconds = elapsed.as_secs_f64();
    let error_kinds = shared.error_kinds.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Report {
        workload: workload.to_string(),
        endpoints: shape.endpoints.clone(),
        clients: shape.clients,
        conns: shape.conns,
        ops,
        errors: shared.errors(),
        error_kinds,
        seconds,
        throughput: if seconds > 0.0 { ops as f64 / seconds } else { 0.0 },
        latency_us: Latency::of(histogram),
        extra: BTreeMap::new(),
        timeline: Vec::new(),
    }
}
