//! Shared pieces of synod-server's integration tests: real `synod` and `etcd` processes on
//! loopback ports, waited on with deadlines, killed when dropped.

#![allow(dead_code)] // each test binary uses a different part of this module

pub mod pki;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use synod_api::etcdserverpb::cluster_client::ClusterClient;
use synod_api::etcdserverpb::kv_client::KvClient;
use synod_api::etcdserverpb::maintenance_client::MaintenanceClient;
use synod_api::etcdserverpb::{MemberListRequest, RangeRequest, StatusRequest, StatusResponse};
use tonic::transport::Channel;

/// How long a process gets to start answering.
pub const START_DEADLINE: Duration = Duration::from_secs(30);

/// How many of a server's last log lines a failing test prints.
const LOG_TAIL_LINES: usize = 40;

/// A loopback port that was free a moment ago, for a server to listen on.
///
/// It comes from below Linux's ephemeral range (32768 and up), where no outgoing connection
/// of this or another test can take it between this check and the server's bind; the
/// counter keeps the tests of one binary apart, and the process id spreads binaries.
pub fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    const FIRST: u32 = 10_000;
    const SPAN: u32 = 20_000;
    let start = std::process::id() * 97 % SPAN;
    loop {
        let offset = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert!(offset < SPAN, "no free loopback port left below the ephemeral range");
        let port = (FIRST + (start + offset) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Whether tests that need etcd or etcdctl must run (CI sets this) rather than skip.
pub fn interop_required() -> bool {
    std::env::var_os("SYNOD_REQUIRE_INTEROP").is_some_and(|v| v == "1")
}

/// Finds an external program for interoperability tests. Without it the test is skipped,
/// unless `SYNOD_REQUIRE_INTEROP=1`, when its absence is a failure.
pub fn interop_program(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths).map(|dir| dir.join(name)).find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        assert!(
            !interop_required(),
            "SYNOD_REQUIRE_INTEROP=1 but `{name}` is not on PATH (apt-get install etcd-server etcd-client)"
        );
        eprintln!("skipping: `{name}` is not on PATH (set SYNOD_REQUIRE_INTEROP=1 to make this a failure)");
    }
    found
}

/// Polls `check` until it returns `Some`, or panics with `what` at the deadline.
pub fn wait_for<T>(what: &str, deadline: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(start.elapsed() < deadline, "timed out after {deadline:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A server process (synod or etcd) that is killed when dropped.
pub struct Server {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    log_path: PathBuf,
    program: PathBuf,
    pub args: Vec<String>,
    child: Option<Child>,
    /// How a client reaches it when its client URL is `https`: the CA to trust, and the
    /// certificate and key to present.
    pub client_tls: Option<ClientTls>,
    /// Environment variables the process gets on top of the test's.
    pub env: Vec<(String, String)>,
}

/// PEM files a test client uses to reach a TLS client port.
#[derive(Clone, Debug)]
pub struct ClientTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ClientTls {
    /// tonic's client settings for these files, for a server at 127.0.0.1.
    pub fn config(&self) -> tonic::transport::ClientTlsConfig {
        let read =
            |path: &Path| std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(read(&self.ca)))
            .identity(tonic::transport::Identity::from_pem(read(&self.cert), read(&self.key)))
    }
}

impl Server {
    /// Starts synod with its data in `dir/synod` and waits until it serves.
    pub fn synod(dir: &Path) -> Server {
        Server::synod_with(dir, &[])
    }

    /// Starts synod with extra flags.
    pub fn synod_with(dir: &Path, extra: &[&str]) -> Server {
        let program = PathBuf::from(env!("CARGO_BIN_EXE_synod"));
        let mut server = Server::new("synod", program, dir.join("synod"), dir.join("synod.log"));
        server.args.extend(extra.iter().map(|s| s.to_string()));
        server.start();
        server
    }

    /// A cluster member named `name` with its data and log in `dir`, not started yet: its
    /// flags are etcd's, with `initial_cluster` and `cluster_state` ("new" or "existing").
    pub fn member(
        dir: &Path,
        name: &str,
        ports: (u16, u16),
        initial_cluster: &str,
        cluster_state: &str,
        extra: &[&str],
    ) -> Server {
        let (client_port, peer_port) = ports;
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        Server::member_at(dir, name, (&client, &peer), initial_cluster, cluster_state, extra)
    }

    /// A member like [`Server::member`] whose client and peer URLs are given in full
    /// (`https://127.0.0.1:port` for TLS).
    pub fn member_at(
        dir: &Path,
        name: &str,
        (client, peer): (&str, &str),
        initial_cluster: &str,
        cluster_state: &str,
        extra: &[&str],
    ) -> Server {
        let program = PathBuf::from(env!("CARGO_BIN_EXE_synod"));
        let port =
            |url: &str| url.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()).expect("URL with a port");
        let (client_port, peer_port) = (port(client), port(peer));
        let data_dir = dir.join(format!("{name}.synod"));
        let mut args: Vec<String> = [
            "--name",
            name,
            "--data-dir",
            &data_dir.display().to_string(),
            "--listen-client-urls",
            client,
            "--advertise-client-urls",
            client,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            initial_cluster,
            "--initial-cluster-state",
            cluster_state,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        Server {
            name: name.to_string(),
            client_port,
            peer_port,
            data_dir,
            log_path: dir.join(format!("{name}.log")),
            program,
            args,
            child: None,
            client_tls: None,
            env: Vec::new(),
        }
    }

    /// A synod member named `name` in `dir` run with exactly `args` and `env` (no flags of
    /// the harness's own), serving clients on `client_port`; not started yet.
    pub fn configured(
        dir: &Path,
        name: &str,
        client_port: u16,
        args: Vec<String>,
        env: Vec<(String, String)>,
    ) -> Server {
        Server {
            name: name.to_string(),
            client_port,
            peer_port: 0,
            data_dir: dir.join(format!("{name}.synod")),
            log_path: dir.join(format!("{name}.log")),
            program: PathBuf::from(env!("CARGO_BIN_EXE_synod")),
            args,
            child: None,
            client_tls: None,
            env,
        }
    }

    /// `http://127.0.0.1:port` of the peer listener.
    pub fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Whether the process is still alive (it has not exited by itself).
    pub fn still_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Starts the etcd found on PATH, if any.
    pub fn etcd(dir: &Path) -> Option<Server> {
        let program = interop_program("etcd")?;
        let mut server = Server::new("etcd", program, dir.join("etcd"), dir.join("etcd.log"));
        server.start();
        Some(server)
    }

    fn new(name: &str, program: PathBuf, data_dir: PathBuf, log_path: PathBuf) -> Server {
        let (client_port, peer_port) = (free_port(), free_port());
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let args = vec![
            "--name".into(),
            "member".into(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--listen-client-urls".into(),
            client.clone(),
            "--advertise-client-urls".into(),
            client,
            "--listen-peer-urls".into(),
            peer.clone(),
            "--initial-advertise-peer-urls".into(),
            peer.clone(),
            "--initial-cluster".into(),
            format!("member={peer}"),
        ];
        Server {
            name: name.to_string(),
            client_port,
            peer_port,
            data_dir,
            log_path,
            program,
            args,
            child: None,
            client_tls: None,
            env: Vec::new(),
        }
    }

    /// Spawns the process (again, after a kill) and waits until it answers a Range.
    pub fn start(&mut self) {
        self.spawn();
        self.wait_serving(false);
    }

    /// Spawns the process without waiting for it.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open server log");
        let child = Command::new(&self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.program.display()));
        self.child = Some(child);
    }

    /// Waits until the process answers a Range: a linearizable one (so a leader is known
    /// and the member is caught up with it), or a serializable one if `serializable`. With
    /// auth enabled, a refusal of the anonymous probe counts as an answer.
    pub fn wait_serving(&mut self, serializable: bool) {
        let endpoint = self.endpoint();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let name = self.name.clone();
        let tls = self.client_tls.clone();
        wait_for(&format!("{name} to serve on {endpoint}"), START_DEADLINE, || {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("{name} exited during startup with {status}; log:\n{}", self.log());
            }
            runtime.block_on(async {
                let mut target = tonic::transport::Endpoint::from_shared(endpoint.clone()).ok()?;
                if let Some(tls) = &tls {
                    target = target.tls_config(tls.config()).ok()?;
                }
                let mut client = KvClient::new(target.connect().await.ok()?);
                let probe = RangeRequest { key: b"probe".to_vec(), serializable, ..Default::default() };
                match client.range(probe).await {
                    Ok(_) => Some(()),
                    Err(status) if status.message() == "etcdserver: user name is empty" => Some(()),
                    Err(_) => None,
                }
            })
        });
    }

    /// Spawns the process and waits for it to exit by itself; returns its exit code.
    pub fn start_expecting_exit(&mut self) -> Option<i32> {
        self.spawn();
        self.wait_exit(START_DEADLINE)
    }

    /// The gRPC endpoint, `http://127.0.0.1:port` (`https` with client TLS).
    pub fn endpoint(&self) -> String {
        let scheme = if self.client_tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// A gRPC channel to the client port, over TLS when it has client TLS.
    pub async fn channel(&self) -> Channel {
        let mut target = tonic::transport::Endpoint::from_shared(self.endpoint()).expect("endpoint");
        if let Some(tls) = &self.client_tls {
            target = target.tls_config(tls.config()).expect("TLS config");
        }
        target.connect().await.expect("connect to server")
    }

    /// `127.0.0.1:port`, as etcdctl's `--endpoints` takes it.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is running").id()
    }

    /// Waits for the process to exit by itself; returns its exit code. If it does not, the
    /// test fails and the process is killed with the server (when dropped).
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<i32> {
        let name = self.name.clone();
        let child = self.child.as_mut().expect("server is running");
        let status = wait_for(&format!("{name} to exit"), deadline, || child.try_wait().ok().flatten());
        self.child = None;
        status.code()
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the process with SIGTERM and waits for it to exit; returns its exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let sent = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("run kill");
        assert!(sent.success(), "kill -TERM failed");
        let status = wait_for("server to exit after SIGTERM", Duration::from_secs(20), || {
            child.try_wait().ok().flatten()
        });
        status.code()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        // A failing test is read from CI's output alone: show what each of its servers
        // logged last.
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
            eprintln!(
                "--- the last {} lines of {}'s log ({}):\n{}",
                tail.len(),
                self.name,
                self.log_path.display(),
                tail.join("\n")
            );
        }
    }
}

/// A gRPC KV client for `server`.
pub async fn kv(server: &Server) -> KvClient<Channel> {
    KvClient::connect(server.endpoint()).await.expect("connect to server")
}

/// A Maintenance client for `server`.
pub async fn maintenance(server: &Server) -> MaintenanceClient<Channel> {
    MaintenanceClient::connect(server.endpoint()).await.expect("connect to server")
}

/// The member's Status, or the error it answers with.
pub async fn status(server: &Server) -> Result<StatusResponse, tonic::Status> {
    let mut client = MaintenanceClient::connect(server.endpoint())
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    client.status(StatusRequest {}).await.map(tonic::Response::into_inner)
}

/// Members started together with etcd's bootstrap flags, each a `synod` process.
pub struct Cluster {
    pub members: Vec<Server>,
    pub dir: PathBuf,
}

impl Cluster {
    /// Starts `size` members named m0, m1, ... in `dir` and waits until each serves a
    /// linearizable read (a leader is elected and every member follows it).
    pub fn start(dir: &Path, size: usize, extra: &[&str]) -> Cluster {
        let ports: Vec<(u16, u16)> = (0..size).map(|_| (free_port(), free_port())).collect();
        let initial_cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members: Vec<Server> = ports
            .iter()
            .enumerate()
            .map(|(i, ports)| Server::member(dir, &format!("m{i}"), *ports, &initial_cluster, "new", extra))
            .collect();
        members.iter_mut().for_each(Server::spawn);
        members.iter_mut().for_each(|m| m.wait_serving(false));
        let cluster = Cluster { members, dir: dir.to_path_buf() };
        cluster.wait_started();
        cluster
    }

    /// Waits until every member has published its client URLs (etcd's "started" member),
    /// which `--cluster` commands of etcdctl dial.
    pub fn wait_started(&self) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let endpoint = self.members[0].endpoint();
        wait_for("every member to publish its client URLs", START_DEADLINE, || {
            runtime.block_on(async {
                let mut client = ClusterClient::connect(endpoint.clone()).await.ok()?;
                let list =
                    client.member_list(MemberListRequest { linearizable: true }).await.ok()?.into_inner();
                list.members.iter().all(|m| !m.client_ur_ls.is_empty()).then_some(())
            })
        });
    }

    /// `--initial-cluster` for the running members plus `extra` (`name=peerURL`).
    pub fn initial_cluster_with(&self, extra: &str) -> String {
        let mut parts: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.is_running())
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect();
        parts.push(extra.to_string());
        parts.join(",")
    }

    /// The running members' addresses, comma-separated, as etcdctl's `--endpoints` takes them.
    pub fn addresses(&self) -> String {
        self.members.iter().filter(|m| m.is_running()).map(Server::address).collect::<Vec<_>>().join(",")
    }

    /// Waits until every running member names the same leader, one of them, and returns its
    /// position in `members`.
    pub fn leader(&self) -> usize {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        wait_for("the running members to agree on a leader", START_DEADLINE, || {
            runtime.block_on(async {
                let mut ids = Vec::new();
                let mut leaders = Vec::new();
                for member in self.members.iter().filter(|m| m.is_running()) {
                    let status = status(member).await.ok()?;
                    ids.push(status.header?.member_id);
                    leaders.push(status.leader);
                }
                let leader = *leaders.first()?;
                if leader == 0 || leaders.iter().any(|l| *l != leader) {
                    return None;
                }
                let position = ids.iter().position(|id| *id == leader)?;
                self.members.iter().enumerate().filter(|(_, m)| m.is_running()).nth(position).map(|(i, _)| i)
            })
        })
    }

    /// The cluster id, as `members[index]` reports it.
    pub fn cluster_id(&self, index: usize) -> u64 {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(status(&self.members[index])).expect("status").header.expect("header").cluster_id
    }

    /// The member id of `members[index]`.
    pub fn member_id(&self, index: usize) -> u64 {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(status(&self.members[index])).expect("status").header.expect("header").member_id
    }
}

/// Runs etcdctl (v3 API) with `args`; returns stdout, or panics with what it printed.
pub fn etcdctl(program: &Path, args: &[&str]) -> String {
    etcdctl_output(program, args).0
}

/// Runs etcdctl (v3 API) with `args`; returns stdout and stderr (etcdctl 3.4 prints some
/// results, `endpoint health`'s among them, on stderr), or panics if it failed.
pub fn etcdctl_output(program: &Path, args: &[&str]) -> (String, String) {
    let output = Command::new(program)
        .env("ETCDCTL_API", "3")
        .args(["--dial-timeout=5s", "--command-timeout=10s"])
        .args(args)
        .output()
        .expect("run etcdctl");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    );
    assert!(output.status.success(), "etcdctl {} failed: {stdout}{stderr}", args.join(" "));
    (stdout, stderr)
}

/// One plain HTTP/1.1 request to `address` (`headers` are whole lines, each ending in
/// CRLF); returns the status and the body.
pub fn http(address: &str, method: &str, path: &str, headers: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect(address).unwrap_or_else(|e| panic!("connect to {address}: {e}"));
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("send head");
    stream.write_all(body.as_bytes()).expect("send body");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status line");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let chunked = head.lines().any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding: chunked"));
    (status, if chunked { dechunk(body) } else { body.to_string() })
}

/// A chunked HTTP/1.1 body's content (etcd sends /metrics chunked).
fn dechunk(mut body: &str) -> String {
    let mut content = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
        if size == 0 {
            break;
        }
        content.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    content
}

/// The server's `/metrics` page.
pub fn metrics(server: &Server) -> String {
    http(&server.address(), "GET", "/metrics", "", "").1
}

/// The value of an unlabelled metric on the server's `/metrics` page.
pub fn metric(server: &Server, name: &str) -> i64 {
    let page = metrics(server);
    page.lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map(|value| value as i64)
        .unwrap_or_else(|| panic!("{name} is not on /metrics"))
}

/// Removes the fields that differ between any two clusters, wherever they appear.
pub fn normalize(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for field in ["cluster_id", "member_id", "raft_term"] {
                map.remove(field);
            }
            map.values_mut().for_each(normalize);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(normalize),
        _ => {}
    }
}
