//! The workloads: what each client sends, and the set-up and checks around a run.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use rand::rngs::SmallRng;
use rand::{Rng as _, RngCore as _, SeedableRng as _};
use synod_api::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use synod_api::etcdserverpb::kv_client::KvClient;
use synod_api::etcdserverpb::lease_client::LeaseClient;
use synod_api::etcdserverpb::request_op::Request;
use synod_api::etcdserverpb::response_op::Response;
use synod_api::etcdserverpb::watch_client::WatchClient;
use synod_api::etcdserverpb::watch_request::RequestUnion;
use synod_api::etcdserverpb::{
    Compare, LeaseGrantRequest, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseRevokeRequest,
    PutRequest, RangeRequest, RequestOp, TxnRequest, WatchCreateRequest, WatchRequest,
};
use synod_api::synod::v1::AddRequest;
use synod_api::synod::v1::counter_client::CounterClient;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;

use crate::load::{self, LoadShape, Merged, Progress, REQUEST_TIMEOUT, Shared};
use crate::report::Report;

/// The key the compare-and-swap counter increments.
pub const COUNTER_KEY: &[u8] = b"synod-bench/counter";

/// The key synod's native counter adds to.
pub const NATIVE_COUNTER_KEY: &[u8] = b"synod-bench/native-counter";

/// The TTL of a native-counter client's session lease, in seconds: longer than any run's
/// pauses, and revoked at the end of the run anyway.
const SESSION_TTL: i64 = 600;
/// The prefix of the keys the watch workload writes and watches.
const WATCH_PREFIX: &[u8] = b"synod-bench/watch/";
/// How long watchers may take, after the last put, to deliver the events still owed.
const WATCH_DRAIN: Duration = Duration::from_secs(10);
/// Leases granted to stand for a keep-alive client live this long.
const KEEPALIVE_TTL: i64 = 60;

/// Which keys and values a workload writes and reads.
#[derive(Clone, Debug)]
pub struct Data {
    pub key_size: usize,
    pub val_size: usize,
    pub key_space: u64,
    pub sequential: bool,
}

impl Data {
    /// The key of request `n`: a zero-padded decimal of `key_size` digits (more when the key
    /// space needs them), the `n`th in turn or a random one of the key space.
    pub fn key(&self, n: u64, rng: &mut SmallRng) -> Vec<u8> {
        self.key_at(self.index(n, rng))
    }

    fn index(&self, n: u64, rng: &mut SmallRng) -> u64 {
        if self.sequential { n % self.key_space } else { rng.random_range(0..self.key_space) }
    }

    pub fn key_at(&self, index: u64) -> Vec<u8> {
        format!("{index:0width$}", width = self.key_size).into_bytes()
    }
}

#[derive(Clone, Debug)]
pub enum Workload {
    Put(Data),
    Get {
        data: Data,
        serializable: bool,
    },
    TxnPut {
        data: Data,
        puts: usize,
    },
    Mixed {
        data: Data,
        read_percent: u8,
        serializable: bool,
    },
    /// Latency from a put to the event each watcher receives for it.
    Watch {
        val_size: usize,
    },
    LeaseGrant {
        ttl: i64,
    },
    LeaseKeepalive,
    /// etcd's way of counting: read the counter, then compare-and-swap it in a Txn, again and
    /// again until the swap wins.
    CounterCas,
    /// synod's native counter: each client adds 1 in its own session (exactly-once adds).
    CounterNative,
}

impl Workload {
    pub fn name(&self) -> &'static str {
        match self {
            Workload::Put(_) => "put",
            Workload::Get { serializable: false, .. } => "get-linearizable",
            Workload::Get { serializable: true, .. } => "get-serializable",
            Workload::TxnPut { .. } => "txn-put",
            Workload::Mixed { .. } => "mixed",
            Workload::Watch { .. } => "watch-latency",
            Workload::LeaseGrant { .. } => "lease-grant",
            Workload::LeaseKeepalive => "lease-keepalive",
            Workload::CounterCas => "counter-cas",
            Workload::CounterNative => "counter-native",
        }
    }

    /// The key a counter workload counts on.
    fn counter_key(&self) -> Option<&'static [u8]> {
        match self {
            Workload::CounterCas => Some(COUNTER_KEY),
            Workload::CounterNative => Some(NATIVE_COUNTER_KEY),
            _ => None,
        }
    }
}

/// Runs `workload` with `shape` and reports what it measured; `label` names it on the
/// progress bar.
pub async fn run(workload: &Workload, shape: &LoadShape, label: &str) -> anyhow::Result<Report> {
    anyhow::ensure!(shape.clients > 0 && shape.conns > 0, "--clients and --conns must be at least 1");
    let channels = load::connect(&shape.endpoints, shape.conns).await?;
    if let Workload::Watch { val_size } = workload {
        return run_watch(*val_size, shape, &channels, label).await;
    }
    let mut clients = Vec::with_capacity(shape.clients);
    for i in 0..shape.clients {
        clients.push(Client::new(&channels[i % channels.len()], i as u64));
    }
    let counter_before = match workload.counter_key() {
        Some(key) => Some(read_counter(&mut clients[0].kv, key).await?),
        None => None,
    };
    if matches!(workload, Workload::CounterNative) {
        for client in &mut clients {
            tokio::time::timeout(REQUEST_TIMEOUT, client.open_session())
                .await
                .context("opening a counter session timed out")??;
        }
    }
    if matches!(workload, Workload::LeaseKeepalive) {
        for client in &mut clients {
            tokio::time::timeout(REQUEST_TIMEOUT, client.open_keepalive())
                .await
                .context("opening a keep-alive stream timed out")??;
        }
    }

    let shared = Shared::new(shape);
    let merged: Merged = Arc::new(tokio::sync::Mutex::new(load::histogram()));
    let progress = Progress::start(&shared, shape, label);
    let mut tasks = Vec::with_capacity(clients.len());
    for mut client in clients {
        let shared = Arc::clone(&shared);
        let merged = Arc::clone(&merged);
        let workload = workload.clone();
        tasks.push(tokio::spawn(async move {
            let mut histogram = load::histogram();
            while let Some((n, started)) = shared.ticket().await {
                match tokio::time::timeout(REQUEST_TIMEOUT, client.request(&workload, n)).await {
                    Ok(Ok(())) => {
                        load::record(&mut histogram, started.elapsed());
                        shared.done.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Err(error)) => shared.failed(error).await,
                    Err(_) => shared.failed("request timed out".to_string()).await,
                }
            }
            merged.lock().await.add(&histogram).expect("histograms share their bounds");
            client
        }));
    }
    let mut finished = Vec::with_capacity(tasks.len());
    for task in tasks {
        finished.push(task.await.context("client task failed")?);
    }
    let elapsed = shared.start.elapsed();
    let timeline = progress.finish().await;
    let histogram = merged.lock().await;
    let mut report = load::report(workload.name(), shape, &shared, &histogram, elapsed);
    report.timeline = timeline;

    if let Some(key) = workload.counter_key() {
        if matches!(workload, Workload::CounterCas) {
            let retries: u64 = finished.iter().map(|c| c.retries).sum();
            let ops = report.ops.max(1);
            report
                .extra
                .insert("retries_per_increment".into(), serde_json::json!(retries as f64 / ops as f64));
        }
        {
            let after = read_counter(&mut finished[0].kv, key).await?;
            let before = counter_before.unwrap_or(0);
            // A request that failed may still have been applied, so only a clean run can be
            // checked exactly.
            let check = if report.errors > 0 {
                "not checked (requests failed)".to_string()
            } else if after.checked_sub(before) == Some(report.ops) {
                format!("passed: {} increments, counter {before} -> {after}", report.ops)
            } else {
                format!("FAILED: {} increments acknowledged, counter {before} -> {after}", report.ops)
            };
            report.extra.insert("check".into(), serde_json::json!(check));
            anyhow::ensure!(!check.starts_with("FAILED"), "counter check {check}");
        }
    }
    if matches!(workload, Workload::LeaseGrant { .. } | Workload::LeaseKeepalive | Workload::CounterNative) {
        for client in &mut finished {
            client.revoke_all().await;
        }
    }
    Ok(report)
}

/// One client: its share of a connection, its random keys, and what its workload keeps.
struct Client {
    kv: KvClient<Channel>,
    lease: LeaseClient<Channel>,
    counter_service: CounterClient<Channel>,
    /// The native counter session: its lease and the next add's sequence number.
    session: Option<(i64, u64)>,
    rng: SmallRng,
    value: Vec<u8>,
    keepalive: Option<KeepAlive>,
    /// The counter as this client last saw it: `(mod_revision, value)`.
    counter: Option<(i64, u64)>,
    retries: u64,
    granted: Vec<i64>,
}

struct KeepAlive {
    id: i64,
    requests: mpsc::Sender<LeaseKeepAliveRequest>,
    responses: Streaming<LeaseKeepAliveResponse>,
}

impl Client {
    fn new(channel: &Channel, seed: u64) -> Client {
        Client {
            kv: KvClient::new(channel.clone()),
            lease: LeaseClient::new(channel.clone()),
            counter_service: CounterClient::new(channel.clone()),
            session: None,
            rng: SmallRng::seed_from_u64(seed),
            value: Vec::new(),
            keepalive: None,
            counter: None,
            retries: 0,
            granted: Vec::new(),
        }
    }

    fn value(&mut self, size: usize) -> Vec<u8> {
        if self.value.len() != size {
            self.value = vec![0; size];
            self.rng.fill_bytes(&mut self.value);
        }
        self.value.clone()
    }

    async fn request(&mut self, workload: &Workload, n: u64) -> Result<(), String> {
        match workload {
            Workload::Put(data) => {
                let key = data.key(n, &mut self.rng);
                let value = self.value(data.val_size);
                self.kv.put(PutRequest { key, value, ..Default::default() }).await.map_err(status_text)?;
            }
            Workload::Get { data, serializable } => {
                let key = data.key(n, &mut self.rng);
                self.get(key, *serializable).await?;
            }
            Workload::TxnPut { data, puts } => {
                let value = self.value(data.val_size);
                // Consecutive keys from the chosen one: etcd refuses a txn that puts a key twice.
                let first = data.index(n.wrapping_mul(*puts as u64), &mut self.rng);
                let success = (0..*puts as u64)
                    .map(|i| RequestOp {
                        request: Some(Request::RequestPut(PutRequest {
                            key: data.key_at((first + i) % data.key_space),
                            value: value.clone(),
                            ..Default::default()
                        })),
                    })
                    .collect();
                self.kv.txn(TxnRequest { success, ..Default::default() }).await.map_err(status_text)?;
            }
            Workload::Mixed { data, read_percent, serializable } => {
                let key = data.key(n, &mut self.rng);
                if self.rng.random_range(0..100u8) < *read_percent {
                    self.get(key, *serializable).await?;
                } else {
                    let value = self.value(data.val_size);
                    self.kv
                        .put(PutRequest { key, value, ..Default::default() })
                        .await
                        .map_err(status_text)?;
                }
            }
            Workload::LeaseGrant { ttl } => {
                let granted = self
                    .lease
                    .lease_grant(LeaseGrantRequest { ttl: *ttl, id: 0 })
                    .await
                    .map_err(status_text)?;
                self.granted.push(granted.into_inner().id);
            }
            Workload::LeaseKeepalive => {
                let keepalive = self.keepalive.as_mut().ok_or("no keep-alive stream")?;
                keepalive
                    .requests
                    .send(LeaseKeepAliveRequest { id: keepalive.id })
                    .await
                    .map_err(|_| "keep-alive stream closed".to_string())?;
                match keepalive.responses.message().await {
                    Ok(Some(response)) if response.ttl > 0 => {}
                    Ok(Some(_)) => return Err("lease expired".into()),
                    Ok(None) => return Err("keep-alive stream ended".into()),
                    Err(status) => return Err(status_text(status)),
                }
            }
            Workload::CounterCas => self.increment().await?,
            Workload::CounterNative => self.add().await?,
            Workload::Watch { .. } => unreachable!("the watch workload has its own runner"),
        }
        Ok(())
    }

    async fn get(&mut self, key: Vec<u8>, serializable: bool) -> Result<(), String> {
        self.kv.range(RangeRequest { key, serializable, ..Default::default() }).await.map_err(status_text)?;
        Ok(())
    }

    /// Adds one to the counter by compare-and-swap on its mod revision, retrying with the
    /// value the failed swap read until a swap wins.
    async fn increment(&mut self) -> Result<(), String> {
        let (mut revision, mut value) = match self.counter {
            Some(seen) => seen,
            None => counter_of(&mut self.kv, COUNTER_KEY).await?,
        };
        loop {
            let request = TxnRequest {
                compare: vec![Compare {
                    result: CompareResult::Equal as i32,
                    target: CompareTarget::Mod as i32,
                    key: COUNTER_KEY.to_vec(),
                    target_union: Some(TargetUnion::ModRevision(revision)),
                    ..Default::default()
                }],
                success: vec![RequestOp {
                    request: Some(Request::RequestPut(PutRequest {
                        key: COUNTER_KEY.to_vec(),
                        value: (value + 1).to_string().into_bytes(),
                        ..Default::default()
                    })),
                }],
                failure: vec![RequestOp {
                    request: Some(Request::RequestRange(RangeRequest {
                        key: COUNTER_KEY.to_vec(),
                        ..Default::default()
                    })),
                }],
            };
            let response = self.kv.txn(request).await.map_err(status_text)?.into_inner();
            if response.succeeded {
                let revision = response.header.map_or(0, |h| h.revision);
                self.counter = Some((revision, value + 1));
                return Ok(());
            }
            self.retries += 1;
            let kv = response.responses.into_iter().find_map(|r| match r.response {
                Some(Response::ResponseRange(range)) => Some(range.kvs.into_iter().next()),
                _ => None,
            });
            (revision, value) = match kv.flatten() {
                Some(kv) => (kv.mod_revision, parse_counter(&kv.value)?),
                None => (0, 0),
            };
        }
    }

    /// Adds one to the native counter in this client's session; one add at a time, so every
    /// earlier add has had its reply.
    async fn add(&mut self) -> Result<(), String> {
        let (lease, sequence) = self.session.as_mut().ok_or("no counter session")?;
        let request = AddRequest {
            key: NATIVE_COUNTER_KEY.to_vec(),
            delta: 1,
            session: *lease,
            sequence: *sequence,
            answered_below: *sequence,
        };
        *sequence += 1;
        self.counter_service.add(request).await.map_err(status_text)?;
        Ok(())
    }

    async fn open_session(&mut self) -> anyhow::Result<()> {
        let granted =
            self.lease.lease_grant(LeaseGrantRequest { ttl: SESSION_TTL, id: 0 }).await?.into_inner();
        self.granted.push(granted.id);
        self.session = Some((granted.id, 1));
        Ok(())
    }

    async fn open_keepalive(&mut self) -> anyhow::Result<()> {
        let granted =
            self.lease.lease_grant(LeaseGrantRequest { ttl: KEEPALIVE_TTL, id: 0 }).await?.into_inner();
        self.granted.push(granted.id);
        // The first keep-alive goes in before the call (etcd sends the response headers only
        // with its first message), and its answer is not measured.
        let (requests, receiver) = mpsc::channel(1);
        requests.send(LeaseKeepAliveRequest { id: granted.id }).await?;
        let mut responses = self.lease.lease_keep_alive(ReceiverStream::new(receiver)).await?.into_inner();
        responses.message().await?.context("the keep-alive stream ended at once")?;
        self.keepalive = Some(KeepAlive { id: granted.id, requests, responses });
        Ok(())
    }

    /// Revokes the leases this client granted; one that expired already is no matter.
    async fn revoke_all(&mut self) {
        self.keepalive = None;
        for id in std::mem::take(&mut self.granted) {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, self.lease.lease_revoke(LeaseRevokeRequest { id }))
                .await;
        }
    }
}

async fn counter_of(kv: &mut KvClient<Channel>, key: &[u8]) -> Result<(i64, u64), String> {
    let response = kv
        .range(RangeRequest { key: key.to_vec(), ..Default::default() })
        .await
        .map_err(status_text)?
        .into_inner();
    match response.kvs.into_iter().next() {
        Some(kv) => Ok((kv.mod_revision, parse_counter(&kv.value)?)),
        None => Ok((0, 0)),
    }
}

async fn read_counter(kv: &mut KvClient<Channel>, key: &[u8]) -> anyhow::Result<u64> {
    match tokio::time::timeout(REQUEST_TIMEOUT, counter_of(kv, key)).await {
        Ok(read) => read.map(|(_, value)| value).map_err(|e| anyhow::anyhow!("read the counter: {e}")),
        Err(_) => anyhow::bail!("reading the counter timed out"),
    }
}

fn parse_counter(value: &[u8]) -> Result<u64, String> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| format!("the counter key holds {:?}, not a number", String::from_utf8_lossy(value)))
}

fn status_text(status: tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

/// The watch workload: `clients` watchers of one prefix, spread over one stream per
/// connection, and one putter writing at the rate limit; each event's latency is the time from
/// the put's send (carried in the value) to the event's arrival.
async fn run_watch(
    val_size: usize,
    shape: &LoadShape,
    channels: &[Channel],
    label: &str,
) -> anyhow::Result<Report> {
    let mut range_end = WATCH_PREFIX.to_vec();
    *range_end.last_mut().expect("the prefix is not empty") += 1;
    let streams = channels.len().min(shape.clients);
    let mut opened = Vec::with_capacity(streams);
    for (s, channel) in channels.iter().take(streams).enumerate() {
        let watchers = shape.clients / streams + usize::from(s < shape.clients % streams);
        // The requests go in before the call: etcd sends the response headers only with its
        // first message.
        let (requests, receiver) = mpsc::channel(watchers.max(1));
        for _ in 0..watchers {
            let create = WatchCreateRequest {
                key: WATCH_PREFIX.to_vec(),
                range_end: range_end.clone(),
                ..Default::default()
            };
            requests.send(WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) }).await?;
        }
        let mut client = WatchClient::new(channel.clone());
        let call = client.watch(ReceiverStream::new(receiver));
        let mut responses = tokio::time::timeout(REQUEST_TIMEOUT, call)
            .await
            .context("opening a watch stream timed out")??
            .into_inner();
        let created = async {
            for _ in 0..watchers {
                let response = responses
                    .message()
                    .await?
                    .context("the watch stream ended before its watchers were created")?;
                anyhow::ensure!(response.created, "expected a created response, got {response:?}");
            }
            Ok(())
        };
        tokio::time::timeout(REQUEST_TIMEOUT, created).await.context("creating the watchers timed out")??;
        opened.push((watchers as u64, requests, responses));
    }

    let shared = Shared::new(shape);
    let (expected_tx, expected_rx) = tokio::sync::watch::channel(None::<u64>);
    let merged: Merged = Arc::new(tokio::sync::Mutex::new(load::histogram()));
    let progress = Progress::start(&shared, shape, label);
    let mut readers = Vec::with_capacity(opened.len());
    for (watchers, requests, mut responses) in opened {
        let shared = Arc::clone(&shared);
        let merged = Arc::clone(&merged);
        let mut expected_rx = expected_rx.clone();
        readers.push(tokio::spawn(async move {
            let _keep_open = requests;
            let mut histogram = load::histogram();
            let mut received = 0u64;
            let mut drain_until = None;
            loop {
                if let Some(puts) = *expected_rx.borrow() {
                    if received >= puts * watchers {
                        break;
                    }
                    drain_until.get_or_insert(Instant::now() + WATCH_DRAIN);
                }
                let message = async {
                    match drain_until {
                        Some(at) => tokio::time::timeout_at(at, responses.message()).await.ok(),
                        None => Some(responses.message().await),
                    }
                };
                tokio::select! {
                    message = message => match message {
                        Some(Ok(Some(response))) => {
                            let now = Instant::now();
                            for event in response.events {
                                let Some(kv) = event.kv else { continue };
                                let Some(sent) = kv.value.get(..8) else { continue };
                                let sent = u64::from_be_bytes(sent.try_into().expect("eight bytes"));
                                load::record(&mut histogram, now.saturating_duration_since(shared.start + Duration::from_nanos(sent)));
                                received += 1;
                                shared.done.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Some(Ok(None)) | Some(Err(_)) | None => break,
                    },
                    _ = expected_rx.changed() => {}
                }
            }
            merged.lock().await.add(&histogram).expect("histograms share their bounds");
            received
        }));
    }

    let mut kv = KvClient::new(channels[0].clone());
    let mut rng = SmallRng::seed_from_u64(0);
    let mut puts = 0u64;
    let mut padding = vec![0; val_size.saturating_sub(8)];
    rng.fill_bytes(&mut padding);
    while let Some((n, due)) = shared.ticket().await {
        let sent = due.saturating_duration_since(shared.start).as_nanos() as u64;
        let mut value = sent.to_be_bytes().to_vec();
        value.extend_from_slice(&padding);
        let key = [WATCH_PREFIX, format!("{:08}", n % 1000).as_bytes()].concat();
        match tokio::time::timeout(REQUEST_TIMEOUT, kv.put(PutRequest { key, value, ..Default::default() }))
            .await
        {
            Ok(Ok(_)) => puts += 1,
            Ok(Err(status)) => shared.failed(status_text(status)).await,
            Err(_) => shared.failed("put timed out".into()).await,
        }
    }
    let put_seconds = shared.start.elapsed();
    let _ = expected_tx.send(Some(puts));
    let mut received = 0;
    for reader in readers {
        received += reader.await.context("watch reader failed")?;
    }
    let timeline = progress.finish().await;
    let histogram = merged.lock().await;
    let mut report = load::report("watch-latency", shape, &shared, &histogram, put_seconds);
    report.timeline = timeline;
    report.extra.insert("puts".into(), serde_json::json!(puts));
    report.extra.insert(
        "events_missing".into(),
        serde_json::json!((puts * shape.clients as u64).saturating_sub(received)),
    );
    Ok(report)
}
