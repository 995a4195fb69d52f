//! Shared pieces of synod-server's integration tests: real `synod` and `etcd` processes on
//! loopback ports, waited on with deadlines, killed when dropped.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use synod_api::etcdserverpb::RangeRequest;
use synod_api::etcdserverpb::kv_client::KvClient;
use tonic::transport::Channel;

/// How long a process gets to start answering.
pub const START_DEADLINE: Duration = Duration::from_secs(30);

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port").local_addr().expect("local addr").port()
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
    pub name: &'static str,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    log_path: PathBuf,
    program: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
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

    /// Starts the etcd found on PATH, if any.
    pub fn etcd(dir: &Path) -> Option<Server> {
        let program = interop_program("etcd")?;
        let mut server = Server::new("etcd", program, dir.join("etcd"), dir.join("etcd.log"));
        server.start();
        Some(server)
    }

    fn new(name: &'static str, program: PathBuf, data_dir: PathBuf, log_path: PathBuf) -> Server {
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
        Server { name, client_port, peer_port, data_dir, log_path, program, args, child: None }
    }

    /// Spawns the process (again, after a kill) and waits until it answers a Range.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open server log");
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.program.display()));
        self.child = Some(child);
        let endpoint = self.endpoint();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        wait_for(&format!("{} to serve on {endpoint}", self.name), START_DEADLINE, || {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("{} exited during startup with {status}; log:\n{}", self.name, self.log());
            }
            runtime.block_on(async {
                let mut client = KvClient::connect(endpoint.clone()).await.ok()?;
                let probe = RangeRequest { key: b"probe".to_vec(), ..Default::default() };
                client.range(probe).await.ok().map(drop)
            })
        });
    }

    /// Spawns the process and waits for it to exit by itself; returns its exit code.
    pub fn start_expecting_exit(&mut self) -> Option<i32> {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open server log");
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.program.display()));
        let status =
            wait_for(&format!("{} to exit", self.name), START_DEADLINE, || child.try_wait().ok().flatten());
        status.code()
    }

    /// The gRPC endpoint, `http://127.0.0.1:port`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
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
    }
}

/// A gRPC KV client for `server`.
pub async fn kv(server: &Server) -> KvClient<Channel> {
    KvClient::connect(server.endpoint()).await.expect("connect to server")
}
