//! One simulated run: a cluster, a workload, a nemesis, and the checks, all from one seed.
//!
//! The run has two phases, as TigerBeetle's VOPR does:
//! - **safety**: clients write, compare-and-set and read a few keys through random members
//!   while the nemesis partitions (both ways and one way), clogs and restores links one by
//!   one, delays, reorders and duplicates messages, and cuts members' power (losing what
//!   they had not synced) and restarts them;
//! - **healing**: every link is restored and every member restarted; every pending client
//!   call must end, every member must serve a linearizable read of every key, and all
//!   members must converge on the same applied index and the same HashKV.
//!
//! Everything runs on one thread, on tokio's paused clock, with every random choice drawn
//! from the seed: a seed replays the same run, which the trace hash shows.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use synod_api::etcdserverpb::{LeaseGrantRequest, LeaseRevokeRequest};
use synod_base::GroupId;
use synod_check::{Call, Op, Outcome, Reply};
use synod_consensus::{Bootstrap, Consensus, ConsensusOptions, DiskIo, MemberChange, MemberNode};
use synod_server::api::Api;
use synod_server::metrics::Metrics;
use synod_storage::sim_disk::{SimDir, SimDisk};
use synod_storage::{LogStore, StateStore};
use tokio::time::Instant;

use crate::net::{PeerServer, SimDialer, SimNet, Weather};
use crate::requests;

const CLUSTER_ID: u64 = 0x5157;
/// How long a client waits for a reply before it counts the call's outcome as unknown.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long after the faults heal the cluster has to serve every member's reads again.
const RECOVERY: Duration = Duration::from_secs(30);

/// What a run is asked to do.
#[derive(Clone, Debug)]
pub struct Options {
    pub seed: u64,
    /// Simulated seconds of faults.
    pub safety_secs: u64,
    /// The negative control: members serve linearizable reads without ReadIndex.
    pub unsafe_local_reads: bool,
}

/// The key of the run's native counter, and the name of its lock.
const COUNTER_KEY: &str = "counter";
const LOCK_NAME: &str = "lock";

/// The TTL of a client's session lease, in seconds: longer than any run.
const SESSION_TTL: i64 = 3600;

/// The cluster and workload a seed chose.
#[derive(Clone, Debug)]
pub struct Setup {
    pub members: Vec<u64>,
    pub heartbeat_ms: u64,
    pub election_ms: u64,
    pub snapshot_count: u64,
    pub catchup_entries: u64,
    pub keys: Vec<String>,
    pub clients: u32,
}

impl Setup {
    fn draw(rng: &mut StdRng) -> Setup {
        let size = if rng.random_bool(0.3) { 5 } else { 3 };
        let heartbeat_ms = rng.random_range(20..=150);
        Setup {
            members: (1..=size).collect(),
            heartbeat_ms,
            election_ms: heartbeat_ms * rng.random_range(5..=12),
            snapshot_count: rng.random_range(10..=300),
            catchup_entries: rng.random_range(1..=50),
            // At least two keys, so that no single key's history grows too long to check.
            keys: (0..rng.random_range(2..=4)).map(|k| format!("k{k}")).collect(),
            clients: rng.random_range(3..=6),
        }
    }
}

/// What a run found.
pub struct RunOutcome {
    pub setup: Setup,
    pub history: Vec<Op>,
    pub faults: Vec<String>,
    pub report: synod_check::Report,
    /// Failures the history cannot show: a cluster that did not recover, members that
    /// disagree at the end, a member that could not restart.
    pub problems: Vec<String>,
    /// A hash of everything the run did, to show that a seed replays exactly.
    pub trace: String,
}

impl RunOutcome {
    pub fn ok(&self) -> bool {
        self.report.is_ok() && self.problems.is_empty()
    }
}

struct Disks {
    log: SimDir,
    state: SimDisk,
    snapshots: PathBuf,
}

impl Disks {
    /// Empty disks for member `name`, its snapshots in a directory of its own under `dir`.
    fn new(dir: &Path, name: &str) -> Disks {
        Disks { log: SimDir::new(), state: SimDisk::new(), snapshots: dir.join(name) }
    }
}

struct Running {
    api: Api,
    boot: u64,
}

struct Slot {
    name: String,
    disks: Disks,
    running: Option<Running>,
    /// A start is under way (a restart and the healing phase must not both start it).
    starting: bool,
}

struct Sim {
    setup: Setup,
    /// The members now, as membership changes replace them.
    members: Mutex<Vec<u64>>,
    /// Names given to members so far (new members get the next one).
    named: Mutex<u64>,
    dir: PathBuf,
    config: synod_server::config::Config,
    net: SimNet,
    slots: Mutex<BTreeMap<u64, Slot>>,
    history: Mutex<Vec<Op>>,
    faults: Mutex<Vec<String>>,
    problems: Mutex<Vec<String>>,
    start: Instant,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs one seed like [`run`], on a thread of its own, and gives up after `limit` of real
/// time: a task that spins without ever waiting would stop the simulated clock, and with it
/// every deadline inside the simulation. (The spinning thread is left behind.)
pub fn run_within(options: &Options, limit: Duration) -> anyhow::Result<RunOutcome> {
    let (done, outcome) = std::sync::mpsc::channel();
    let thread_options = options.clone();
    std::thread::Builder::new()
        .name(format!("synod-sim-{}", options.seed))
        .spawn(move || {
            let _ = done.send(run(&thread_options));
        })
        .context("start the simulation thread")?;
    match outcome.recv_timeout(limit) {
        Ok(outcome) => outcome,
        Err(_) => anyhow::bail!(
            "seed {} did not finish within {}s of real time: something spins without letting simulated time pass",
            options.seed,
            limit.as_secs()
        ),
    }
}

/// Runs one seed to the end on a fresh single-threaded runtime.
pub fn run(options: &Options) -> anyhow::Result<RunOutcome> {
    if !cfg!(tokio_unstable) {
        anyhow::bail!(
            "synod-sim was built without --cfg tokio_unstable (set in .cargo/config.toml; a RUSTFLAGS \
             variable replaces it), so tokio's RNG is unseeded and seeds would not replay"
        );
    }
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_time().start_paused(true);
    // tokio draws select! branch order and watch wake order from its RNG; seeding it is
    // what makes a seed replay exactly (decision 0006).
    #[cfg(tokio_unstable)]
    builder.rng_seed(tokio::runtime::RngSeed::from_bytes(&options.seed.to_le_bytes()));
    let runtime = builder.build().context("build the simulator's runtime")?;
    synod_consensus::seed_thread_rng(options.seed);
    let dir = tempfile::tempdir().context("a directory for snapshots")?;
    // Every wait inside is bounded; this bounds the whole run in simulated time as well.
    let bound = Duration::from_secs(options.safety_secs) + RECOVERY * 4;
    let outcome = runtime.block_on(async {
        match tokio::time::timeout(bound, simulate(options.clone(), dir.path())).await {
            Ok(outcome) => outcome,
            Err(_) => anyhow::bail!("the run did not end within {}s of simulated time", bound.as_secs()),
        }
    });
    runtime.shutdown_background();
    outcome
}

fn member_node(name: &str) -> MemberNode {
    MemberNode {
        name: name.to_string(),
        peer_urls: vec![format!("http://{name}:2380")],
        client_urls: vec![format!("http://{name}:2379")],
    }
}

/// How a member starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Start {
    /// One of the first members, on empty disks.
    New,
    /// A member added to the running cluster, on empty disks.
    Join,
    /// After a power cut, on what its disks had synced.
    Restart,
}

async fn simulate(options: Options, dir: &Path) -> anyhow::Result<RunOutcome> {
    let mut rng = StdRng::seed_from_u64(options.seed);
    let setup = Setup::draw(&mut rng);
    let mut args = vec!["synod".to_string(), "--name".into(), "sim".into()];
    if options.unsafe_local_reads {
        args.push("--unsafe-local-reads".into());
    }
    let flags = <synod_server::config::Flags as clap::Parser>::try_parse_from(args)?;
    let config = flags.into_config().map_err(anyhow::Error::msg)?;
    let mut slots = BTreeMap::new();
    for &id in &setup.members {
        let name = format!("m{id}");
        let disks = Disks::new(dir, &name);
        slots.insert(id, Slot { name, disks, running: None, starting: false });
    }
    let sim = Arc::new(Sim {
        net: SimNet::new(rng.random()),
        setup: setup.clone(),
        members: Mutex::new(setup.members.clone()),
        named: Mutex::new(setup.members.len() as u64),
        dir: dir.to_path_buf(),
        config,
        slots: Mutex::new(slots),
        history: Mutex::new(Vec::new()),
        faults: Mutex::new(Vec::new()),
        problems: Mutex::new(Vec::new()),
        start: Instant::now(),
    });
    for &id in &setup.members {
        sim.start_member(id, Start::New).await;
    }

    let until = Instant::now() + Duration::from_secs(options.safety_secs);
    let mut clients = Vec::new();
    for client in 0..setup.clients {
        let seed = rng.random();
        clients.push(tokio::spawn(sim.clone().client(client, seed, until)));
    }
    let nemesis = tokio::spawn(sim.clone().nemesis(rng.random(), until));
    let _ = nemesis.await;

    sim.fault("heal: every link restored, every member restarted, calm weather");
    sim.net.heal();
    sim.net.set_weather(Weather::calm());
    let healed = Instant::now();
    for id in sim.members() {
        if !sim.is_running(id) {
            sim.start_member(id, Start::Restart).await;
        }
    }
    for client in clients {
        let _ = client.await;
    }
    sim.reconcile_membership(healed + RECOVERY).await;
    sim.final_reads(healed + RECOVERY).await;
    sim.converge(healed + RECOVERY).await;

    let mut history = lock(&sim.history).clone();
    sim.resolve_unknown_writes(&mut history);
    let report = synod_check::check(&history, Duration::from_secs(60));
    let faults = lock(&sim.faults).clone();
    let problems = lock(&sim.problems).clone();
    for slot in lock(&sim.slots).values_mut() {
        slot.running = None;
    }
    let trace = trace_hash(&options, &history, &faults, &problems);
    Ok(RunOutcome { setup, history, faults, report, problems, trace })
}

fn trace_hash(options: &Options, history: &[Op], faults: &[String], problems: &[String]) -> String {
    let mut hash = Sha256::new();
    hash.update(format!("{options:?}\n"));
    for op in history {
        hash.update(serde_json::to_string(op).unwrap_or_default());
        hash.update(b"\n");
    }
    for line in faults.iter().chain(problems) {
        hash.update(line);
        hash.update(b"\n");
    }
    hash.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

impl Sim {
    fn members(&self) -> Vec<u64> {
        lock(&self.members).clone()
    }

    fn name(&self, id: u64) -> String {
        lock(&self.slots).get(&id).map_or_else(|| format!("{id:x}"), |s| s.name.clone())
    }

    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn fault(&self, what: &str) {
        let line = format!("{:>9.3}s {what}", self.start.elapsed().as_secs_f64());
        lock(&self.faults).push(line);
    }

    fn problem(&self, what: String) {
        lock(&self.problems).push(what);
    }

    fn is_running(&self, id: u64) -> bool {
        lock(&self.slots).get(&id).is_some_and(|s| s.running.is_some() || s.starting)
    }

    /// Whether member `id` is up and serving (not down, not still starting).
    fn is_up(&self, id: u64) -> bool {
        lock(&self.slots).get(&id).is_some_and(|s| s.running.is_some())
    }

    fn running(&self, id: u64) -> Option<(Api, u64)> {
        lock(&self.slots).get(&id).and_then(|s| s.running.as_ref().map(|r| (r.api.clone(), r.boot)))
    }

    /// Starts member `id` on its disks.
    async fn start_member(self: &Arc<Self>, id: u64, start: Start) {
        let (log_disk, state_disk, snapshots) = {
            let mut slots = lock(&self.slots);
            let Some(slot) = slots.get_mut(&id) else { return };
            if slot.running.is_some() || slot.starting {
                return;
            }
            slot.starting = true;
            let d = &slot.disks;
            if start != Start::Restart {
                (d.log.clone(), d.state.clone(), d.snapshots.clone())
            } else {
                (d.log.reboot(), d.state.reboot(), d.snapshots.clone())
            }
        };
        let boot = self.net.boot_next(id);
        let started = self.open_member(id, start, boot, log_disk, state_disk, snapshots).await;
        let mut slots = lock(&self.slots);
        let Some(slot) = slots.get_mut(&id) else { return };
        slot.starting = false;
        match started {
            Ok((api, server)) => {
                self.net.serve(id, boot, server);
                slot.running = Some(Running { api, boot });
            }
            Err(e) => {
                let name = slot.name.clone();
                drop(slots);
                self.problem(format!("member {name} could not start: {e:#}"));
            }
        }
    }

    async fn open_member(
        &self,
        id: u64,
        start: Start,
        boot: u64,
        log_disk: SimDir,
        state_disk: SimDisk,
        snapshot_dir: PathBuf,
    ) -> anyhow::Result<(Api, PeerServer)> {
        let log = Arc::new(LogStore::open_on(log_disk, "log").context("open the log")?);
        let state =
            Arc::new(StateStore::open_on(state_disk, "state", GroupId::FIRST).context("open the state")?);
        let bootstrap = match start {
            Start::New => Bootstrap::New(
                self.setup.members.iter().map(|&m| (m, member_node(&format!("m{m}")))).collect(),
            ),
            Start::Join | Start::Restart => Bootstrap::Existing,
        };
        let name = self.name(id);
        let consensus = Consensus::start(ConsensusOptions {
            group: GroupId::FIRST,
            member_id: id,
            cluster_id: CLUSTER_ID,
            client_urls: member_node(&name).client_urls,
            name,
            bootstrap,
            heartbeat_interval_ms: self.setup.heartbeat_ms,
            election_timeout_ms: self.setup.election_ms,
            snapshot_count: self.setup.snapshot_count,
            snapshot_catchup_entries: self.setup.catchup_entries,
            max_request_bytes: self.config.max_request_bytes,
            snapshot_dir,
            snapshot_bytes_max: u64::MAX,
            log,
            state: state.clone(),
            observer: Arc::new(synod_consensus::NoObserver),
            probe_interval: None,
            dialer: Arc::new(SimDialer { net: self.net.clone(), member: id, boot }),
            disk_io: DiskIo::Inline,
        })
        .await
        .context("start consensus")?;
        let server = PeerServer::new(consensus.peer_service());
        let api = Api::new(&self.config, consensus, state, Arc::new(Metrics::default()))
            .context("start the API")?;
        Ok((api, server))
    }

    /// Cuts member `id`'s power: its unsynced writes are lost, it drops off the network, and
    /// what its dead process still runs can neither write nor send.
    fn crash(&self, id: u64) {
        let running = {
            let mut slots = lock(&self.slots);
            let Some(slot) = slots.get_mut(&id) else { return };
            slot.disks.log.power_cut(None);
            slot.disks.state.power_cut();
            slot.running.take()
        };
        self.net.boot_next(id);
        if let Some(running) = running {
            tokio::spawn(async move {
                let _ =
                    tokio::time::timeout(Duration::from_secs(5), running.api.consensus().shutdown()).await;
            });
        }
    }

    /// One client: one call at a time on random keys (and the counter) through random
    /// members, until `until`.
    async fn client(self: Arc<Self>, client: u32, seed: u64, until: Instant) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut seen: BTreeMap<String, Option<String>> = BTreeMap::new();
        let mut sequence = 0u64;
        // The client's session lease for the lock, and its token while it holds the lock.
        let mut lease = 0i64;
        let mut holding: Option<i64> = None;
        while Instant::now() < until {
            let members = self.members();
            let member = if rng.random_bool(0.6) {
                members[client as usize % members.len()]
            } else {
                members[rng.random_range(0..members.len())]
            };
            let key = self.setup.keys[rng.random_range(0..self.setup.keys.len())].clone();
            sequence += 1;
            let value = format!("c{client}-{sequence}");
            let call = match rng.random_range(0..100) {
                0..45 => Call::Get { key },
                45..70 => Call::Put { key, value },
                70..78 => Call::Delete { key },
                // The native counter, one for the run, added to by 1 to 3.
                78..84 => Call::Add { key: COUNTER_KEY.into(), delta: 1 + (sequence % 3) as i64 },
                84..87 => Call::ReadCounter { key: COUNTER_KEY.into() },
                // The lock, taken and given back in turn.
                87..91 => {
                    let owner = format!("c{client}");
                    match holding {
                        Some(token) => Call::Release { lock: LOCK_NAME.into(), owner, token },
                        None => Call::Acquire { lock: LOCK_NAME.into(), owner },
                    }
                }
                _ => {
                    let expect = seen.get(&key).cloned().flatten();
                    Call::Cas { key, expect, value }
                }
            };
            if matches!(call, Call::Acquire { .. }) && lease == 0 {
                lease = self.grant_session(member).await;
                if lease == 0 {
                    // No session: the Acquire is not sent.
                    tokio::time::sleep(Duration::from_millis(rng.random_range(0..40))).await;
                    continue;
                }
            }
            let op = self.perform(client, member, call, lease).await;
            match (&op.call, &op.outcome) {
                (Call::Acquire { .. }, Outcome::Ok { reply: Reply::Acquire { token }, .. }) => {
                    holding = Some(*token)
                }
                (Call::Release { .. }, Outcome::Ok { .. }) => holding = None,
                // A lock call with no answer may have left the lock held unseen: ending the
                // lease gives it back.
                (Call::Acquire { .. } | Call::Release { .. }, Outcome::Unknown { .. }) => {
                    holding = None;
                    self.end_session(member, lease).await;
                    lease = 0;
                }
                _ => {}
            }
            if let Outcome::Ok { reply, .. } = &op.outcome
                && let Some(value) = op.call.revealed(reply)
            {
                seen.insert(op.call.object().to_string(), value);
            }
            lock(&self.history).push(op);
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..40))).await;
        }
    }

    /// A session lease for a client's lock calls, granted through `member`; 0 if it could
    /// not be. Its TTL outlasts the run: the lock model knows of no expiry.
    async fn grant_session(&self, member: u64) -> i64 {
        let Some((api, _)) = self.running(member) else { return 0 };
        let grant = api.lease_grant(LeaseGrantRequest { ttl: SESSION_TTL, id: 0 });
        match tokio::time::timeout(CLIENT_TIMEOUT, grant).await {
            Ok(Ok(granted)) => granted.id,
            _ => 0,
        }
    }

    /// Revokes a client's session lease, releasing a lock it may hold unseen; best effort
    /// (a revocation that is lost leaves the lock held, and later Acquires wait in vain).
    async fn end_session(&self, member: u64, lease: i64) {
        if lease == 0 {
            return;
        }
        if let Some((api, _)) = self.running(member) {
            let _ = tokio::time::timeout(CLIENT_TIMEOUT, api.lease_revoke(LeaseRevokeRequest { id: lease }))
                .await;
        }
    }

    /// Makes one call through member `member` and records what the client saw.
    async fn perform(&self, client: u32, member: u64, call: Call, lease: i64) -> Op {
        let call_ns = self.now_ns();
        let outcome = match self.running(member) {
            // Nothing was sent: the call certainly did not take effect.
            None => Outcome::Fail { error: "connection refused: the member is down".into() },
            Some((api, boot)) => {
                let result =
                    tokio::time::timeout(CLIENT_TIMEOUT, requests::execute(&api, &call, lease)).await;
                // A member that crashed while the call ran never sent the reply.
                let crashed = self.running(member).is_none_or(|(_, now)| now != boot);
                match result {
                    Ok(Ok((reply, revision))) if !crashed => Outcome::Ok { reply, revision },
                    Ok(Ok(_)) => Outcome::Unknown { error: "the member crashed before it replied".into() },
                    Ok(Err(status)) => {
                        Outcome::Unknown { error: format!("{:?}: {}", status.code(), status.message()) }
                    }
                    Err(_) => Outcome::Unknown { error: "client timeout".into() },
                }
            }
        };
        Op { client, member: self.name(member), call_ns, return_ns: self.now_ns(), call, outcome }
    }

    /// Learns the outcome of membership changes that were in doubt (refused by a timeout,
    /// yet maybe committed), as an operator would from MemberList. Members that a view
    /// names but the simulation never started are started: the newest view (the longest
    /// log) may need them for a quorum before any leader can be elected. Members are retired
    /// only when a leader's view leaves them out. Done when a leader's view is ours.
    async fn reconcile_membership(self: &Arc<Self>, deadline: Instant) {
        loop {
            let mut views: Vec<(bool, u64, Vec<synod_consensus::MemberInfo>)> = Vec::new();
            for id in self.members() {
                if let Some((api, _)) = self.running(id) {
                    let consensus = api.consensus();
                    views.push((
                        consensus.leader() == Some(id),
                        consensus.status().last_log_index,
                        consensus.members(),
                    ));
                }
            }
            let leader_view = views.iter().find(|(leader, _, _)| *leader).map(|(_, _, view)| view.clone());
            let newest_view = views.iter().max_by_key(|(_, last, _)| *last).map(|(_, _, view)| view.clone());
            let ours: BTreeSet<u64> = self.members().into_iter().collect();
            if let Some(view) = &leader_view {
                let ids: BTreeSet<u64> = view.iter().map(|m| m.id).collect();
                if ids == ours {
                    return;
                }
                for gone in ours.difference(&ids) {
                    lock(&self.members).retain(|m| m != gone);
                    self.crash(*gone);
                    self.fault(&format!("reconcile: {gone:x} was removed after all"));
                }
            }
            for info in leader_view.or(newest_view).unwrap_or_default() {
                if ours.contains(&info.id) {
                    continue;
                }
                // The peer URL is http://NAME:2380.
                let name = info
                    .peer_urls
                    .first()
                    .and_then(|u| u.strip_prefix("http://"))
                    .and_then(|u| u.split(':').next());
                let Some(name) = name.map(str::to_string) else { continue };
                let disks = Disks::new(&self.dir, &name);
                lock(&self.slots).entry(info.id).or_insert(Slot {
                    name: name.clone(),
                    disks,
                    running: None,
                    starting: false,
                });
                lock(&self.members).push(info.id);
                self.fault(&format!("reconcile: {name} was added after all, as {:x}", info.id));
                self.start_member(info.id, Start::Join).await;
            }
            if Instant::now() >= deadline {
                return self.problem(format!(
                    "no leader settled the membership within {}s of healing",
                    RECOVERY.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// After healing, every member must serve a linearizable read of every key in time.
    async fn final_reads(&self, deadline: Instant) {
        let client = self.setup.clients;
        for member in self.members() {
            for key in &self.setup.keys {
                loop {
                    let op = self.perform(client, member, Call::Get { key: key.clone() }, 0).await;
                    let served = matches!(op.outcome, Outcome::Ok { .. });
                    lock(&self.history).push(op);
                    if served {
                        break;
                    }
                    if Instant::now() >= deadline {
                        self.problem(format!(
                            "member {} could not serve a linearizable read of {key} within {}s of healing",
                            self.name(member),
                            RECOVERY.as_secs()
                        ));
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Settles writes whose outcome the client never learned, as etcd's robustness tests
    /// do with the requests persisted in the WAL: a put or compare-and-set whose value (each
    /// written value is unique) is in no member's records never took effect, so it is
    /// recorded as failed. Those that did take effect stay unknown. Run after `converge`,
    /// when no entry is left that could still commit. It keeps the checker's search small:
    /// every unknown write may be placed anywhere after its call.
    fn resolve_unknown_writes(&self, history: &mut [Op]) {
        let mut written: BTreeSet<(Vec<u8>, Vec<u8>)> = BTreeSet::new();
        for id in self.members() {
            let Some((api, _)) = self.running(id) else { continue };
            match api.state().records() {
                Ok(records) => written.extend(
                    records.into_iter().filter(|(_, tombstone)| !tombstone).map(|(kv, _)| (kv.key, kv.value)),
                ),
                // Without a member's records nothing can be settled safely.
                Err(e) => return self.problem(format!("read the records of {}: {e}", self.name(id))),
            }
        }
        for op in history.iter_mut() {
            let (Call::Put { key, value } | Call::Cas { key, value, .. }) = &op.call else { continue };
            if let Outcome::Unknown { error } = &op.outcome
                && !written.contains(&(key.clone().into_bytes(), value.clone().into_bytes()))
            {
                op.outcome =
                    Outcome::Fail { error: format!("{error}; never applied (in no member's records)") };
            }
        }
    }

    /// All members must reach the same log, apply all of it, and then hold the same keyspace.
    async fn converge(&self, deadline: Instant) {
        loop {
            let expected = self.members();
            let members: Vec<(u64, Api)> =
                expected.iter().filter_map(|&m| self.running(m).map(|(api, _)| (m, api))).collect();
            let statuses: BTreeSet<(u64, u64, u64)> = members
                .iter()
                .map(|(_, api)| {
                    let status = api.consensus().status();
                    (status.last_log_index, status.commit_index, status.applied_index)
                })
                .collect();
            // Every member has applied its whole log, and all logs end at the same entry: no
            // entry is left that could still commit later.
            let settled = members.len() == expected.len()
                && statuses.len() == 1
                && statuses.iter().all(|(last, commit, applied)| last == commit && commit == applied);
            if settled {
                let hashes: BTreeMap<u64, String> = members
                    .iter()
                    .map(|(m, api)| {
                        let hash = match api.state().hash_kv(0) {
                            Ok(Ok((hash, _, revision))) => format!("hash {hash:08x} at revision {revision}"),
                            Ok(Err(e)) => format!("error {e}"),
                            Err(e) => format!("error {e}"),
                        };
                        (*m, hash)
                    })
                    .collect();
                let distinct: BTreeSet<&String> = hashes.values().collect();
                if distinct.len() != 1 {
                    self.problem(format!("members disagree at the end: {hashes:?}"));
                }
                self.fault(&format!("converged: {}", hashes.values().next().cloned().unwrap_or_default()));
                return;
            }
            if Instant::now() >= deadline {
                let detail: Vec<String> = members
                    .iter()
                    .map(|(m, api)| format!("{}: {:?}", self.name(*m), api.consensus().status()))
                    .collect();
                self.problem(format!(
                    "members did not converge within {}s of healing: {}; network: {}",
                    RECOVERY.as_secs(),
                    detail.join("; "),
                    self.net.describe()
                ));
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Removes a member through the Cluster API and adds a new one on empty disks in its
    /// place, as an operator replaces a machine. Only on a cluster whose members are all up.
    async fn replace_member(self: &Arc<Self>, rng: &mut StdRng) {
        let members = self.members();
        if members.len() < 3 || !members.iter().all(|&m| self.is_up(m)) {
            return;
        }
        let victim = members[rng.random_range(0..members.len())];
        let others: Vec<u64> = members.iter().copied().filter(|&m| m != victim).collect();
        let Some((api, _)) = self.running(others[rng.random_range(0..others.len())]) else { return };
        let removal = tokio::time::timeout(
            Duration::from_secs(10),
            api.consensus().change_membership(MemberChange::Remove(victim)),
        )
        .await;
        match removal {
            Ok(Ok(_)) => {}
            // Refused (no leader, unhealthy cluster) or in doubt: leave the cluster as it is.
            Ok(Err(e)) => return self.fault(&format!("remove {victim:x} refused: {e}")),
            Err(_) => return self.fault(&format!("remove {victim:x} timed out")),
        }
        lock(&self.members).retain(|&m| m != victim);
        self.crash(victim);
        self.fault(&format!("removed {victim:x}"));

        let name = {
            let mut named = lock(&self.named);
            *named += 1;
            format!("m{named}")
        };
        let Some((api, _)) = self.running(others[rng.random_range(0..others.len())]) else { return };
        let change = MemberChange::Add { peer_urls: member_node(&name).peer_urls, is_learner: false };
        let added =
            tokio::time::timeout(Duration::from_secs(10), api.consensus().change_membership(change)).await;
        let id = match added {
            Ok(Ok((Some(id), _))) => id,
            Ok(Ok((None, _))) => return self.problem("a member add reported no new member id".into()),
            Ok(Err(e)) => return self.fault(&format!("add {name} refused: {e}")),
            Err(_) => return self.fault(&format!("add {name} timed out")),
        };
        let disks = Disks::new(&self.dir, &name);
        lock(&self.slots).insert(id, Slot { name: name.clone(), disks, running: None, starting: false });
        lock(&self.members).push(id);
        self.fault(&format!("added {name} as {id:x}"));
        self.start_member(id, Start::Join).await;
    }

    /// Injects faults until `until`: partitions, one-way cuts, bridges, clogged links
    /// restored in random order, bad weather, power cuts with later restarts, and members
    /// replaced.
    async fn nemesis(self: Arc<Self>, seed: u64, until: Instant) {
        let mut rng = StdRng::seed_from_u64(seed);
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(rng.random_range(100..1500))).await;
            let members = self.members();
            let n = members.len();
            match rng.random_range(0..11) {
                0 => {
                    let mut shuffled = members.clone();
                    shuffled.shuffle(&mut rng);
                    let (minority, majority) = shuffled.split_at(rng.random_range(1..=n / 2));
                    for &a in minority {
                        for &b in majority {
                            self.net.cut(a, b);
                            self.net.cut(b, a);
                        }
                    }
                    self.fault(&format!("partition {minority:?} | {majority:?}"));
                }
                1 => {
                    for _ in 0..rng.random_range(1..=n) {
                        let a = members[rng.random_range(0..n)];
                        let b = members[rng.random_range(0..n)];
                        if a != b {
                            self.net.cut(a, b);
                            self.fault(&format!("one-way cut {a} -> {b}"));
                        }
                    }
                }
                2 => {
                    let mut shuffled = members.clone();
                    shuffled.shuffle(&mut rng);
                    let middle = shuffled[0];
                    let (left, right) = shuffled[1..].split_at((n - 1) / 2);
                    for &a in left {
                        for &b in right {
                            self.net.cut(a, b);
                            self.net.cut(b, a);
                        }
                    }
                    self.fault(&format!("bridge {left:?} | {middle} | {right:?}"));
                }
                3 => {
                    let mut links: Vec<(u64, u64)> = members
                        .iter()
                        .flat_map(|&a| members.iter().map(move |&b| (a, b)))
                        .filter(|(a, b)| a != b)
                        .collect();
                    links.shuffle(&mut rng);
                    links.truncate(rng.random_range(1..=links.len()));
                    self.fault(&format!("clog {} links one by one", links.len()));
                    for &(a, b) in &links {
                        self.net.cut(a, b);
                        tokio::time::sleep(Duration::from_millis(rng.random_range(10..300))).await;
                    }
                    tokio::time::sleep(Duration::from_millis(rng.random_range(100..2000))).await;
                    links.shuffle(&mut rng);
                    for &(a, b) in &links {
                        self.net.restore(a, b);
                        tokio::time::sleep(Duration::from_millis(rng.random_range(10..300))).await;
                    }
                    self.fault("unclogged in random order");
                }
                4 | 5 => {
                    let down = members.iter().filter(|&&m| !self.is_running(m)).count();
                    // A member still starting is left alone: its start would finish on
                    // dead disks.
                    let up: Vec<u64> = members.iter().copied().filter(|&m| self.is_up(m)).collect();
                    // At most a minority down at once, so the cluster can make progress.
                    if down < (n - 1) / 2 && !up.is_empty() {
                        let victim = up[rng.random_range(0..up.len())];
                        self.crash(victim);
                        let after = Duration::from_millis(rng.random_range(100..4000));
                        self.fault(&format!("power cut {victim}, restart in {}ms", after.as_millis()));
                        let sim = self.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(after).await;
                            if Instant::now() < until && sim.members().contains(&victim) {
                                sim.start_member(victim, Start::Restart).await;
                                sim.fault(&format!("restarted {victim}"));
                            }
                        });
                    }
                }
                6 => {
                    let high = rng.random_range(5..400);
                    let duplicate = rng.random_range(0.0..0.3);
                    self.net.set_weather(Weather { delay_ms: (0, high), duplicate });
                    self.fault(&format!("weather: delay 0..{high}ms, duplicate {duplicate:.2}"));
                }
                7 => {
                    self.net.set_weather(Weather::calm());
                    self.fault("weather: calm");
                }
                8 => self.replace_member(&mut rng).await,
                _ => {
                    self.net.heal();
                    self.fault("heal the links");
                }
            }
        }
    }
}
