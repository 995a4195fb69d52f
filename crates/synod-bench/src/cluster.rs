//! Local 3-member clusters of synod or etcd processes for `compare`, each in its own
//! temporary directory. Every process started here is killed when its `Cluster` is dropped,
//! and (through `PR_SET_PDEATHSIG`) when synod-bench itself dies.

use std::fs;
use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use synod_api::etcdserverpb::StatusRequest;
use synod_api::etcdserverpb::maintenance_client::MaintenanceClient;
use tokio::time::Instant;

/// How long a new cluster gets to elect a leader.
const READY_DEADLINE: Duration = Duration::from_secs(30);
/// How long members get to apply everything their leader has, before memory is read.
const SETTLE_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Synod,
    Etcd,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Synod => "synod",
            Kind::Etcd => "etcd",
        }
    }
}

struct Member {
    child: Child,
    command: Command,
    client_url: String,
    log: PathBuf,
}

pub struct Cluster {
    pub kind: Kind,
    members: Vec<Member>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `size` members of `binary` on free loopback ports in a new temporary
    /// directory under `parent`, and waits until they have a leader.
    ///
    /// Call it from the thread that stays alive for the whole run (the runtime's main
    /// thread): a member's parent-death signal fires when the thread that forked it ends.
    pub async fn start(kind: Kind, binary: &Path, size: usize, parent: &Path) -> anyhow::Result<Cluster> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("synod-bench-{}-", kind.name()))
            .tempdir_in(parent)
            .with_context(|| format!("create a temporary directory in {}", parent.display()))?;
        let ports = free_ports(size * 2)?;
        let peer_url = |i: usize| format!("http://127.0.0.1:{}", ports[2 * i + 1]);
        let initial_cluster =
            (0..size).map(|i| format!("m{i}={}", peer_url(i))).collect::<Vec<_>>().join(",");
        let mut cluster = Cluster { kind, members: Vec::with_capacity(size), _dir: dir };
        for i in 0..size {
            let name = format!("m{i}");
            let client_url = format!("http://127.0.0.1:{}", ports[2 * i]);
            let data_dir = cluster._dir.path().join(format!("{name}.data"));
            let log = cluster._dir.path().join(format!("{name}.log"));
            let mut command = Command::new(binary);
            command.args([
                "--name",
                &name,
                "--data-dir",
                &data_dir.display().to_string(),
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
                "--listen-peer-urls",
                &peer_url(i),
                "--initial-advertise-peer-urls",
                &peer_url(i),
                "--initial-cluster",
                &initial_cluster,
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                &format!("synod-bench-{}", kind.name()),
            ]);
            // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
            unsafe {
                command.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let child = spawn(&mut command, &log)?;
            cluster.members.push(Member { child, command, client_url, log });
        }
        cluster.wait_ready().await?;
        Ok(cluster)
    }

    /// Kills member `index` with SIGKILL and reaps it.
    pub fn kill(&mut self, index: usize) -> anyhow::Result<()> {
        let member = &mut self.members[index];
        member.child.kill().context("kill a member")?;
        member.child.wait().context("wait on a killed member")?;
        Ok(())
    }

    /// Starts member `index` again on its data, appending to its log, and waits until
    /// every member has a leader.
    pub async fn restart(&mut self, index: usize) -> anyhow::Result<()> {
        let member = &mut self.members[index];
        member.child = spawn(&mut member.command, &member.log)?;
        self.wait_ready().await
    }

    /// The index of the member that leads, as the members report it.
    pub async fn leader(&self) -> anyhow::Result<usize> {
        for (i, member) in self.members.iter().enumerate() {
            if let Some(status) = status(&member.client_url).await
                && status.header.is_some_and(|h| h.member_id == status.leader)
            {
                return Ok(i);
            }
        }
        bail!("no {} member reports itself leader", self.kind.name())
    }

    pub fn endpoint(&self, index: usize) -> &str {
        &self.members[index].client_url
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            self.check_running()?;
            let mut ready = 0;
            for member in &self.members {
                if status(&member.client_url).await.is_some_and(|s| s.leader != 0) {
                    ready += 1;
                }
            }
            if ready == self.members.len() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "the {} members did not elect a leader within {READY_DEADLINE:?}; see {}",
                    self.kind.name(),
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Fails if a member has exited, naming its log.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        for member in &mut self.members {
            if let Some(status) = member.child.try_wait().context("wait on a member")? {
                bail!("a {} member exited ({status}); see {}", self.kind.name(), member.log.display());
            }
        }
        Ok(())
    }

    fn logs(&self) -> String {
        self.members.iter().map(|m| m.log.display().to_string()).collect::<Vec<_>>().join(", ")
    }

    /// Waits until every member reports the same revision, so that followers have applied
    /// what the leader acknowledged.
    pub async fn settle(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + SETTLE_DEADLINE;
        loop {
            let mut revisions = Vec::new();
            for member in &self.members {
                revisions.push(status(&member.client_url).await.and_then(|s| s.header).map(|h| h.revision));
            }
            if revisions.iter().all(|r| r.is_some() && *r == revisions[0]) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} members did not reach the same revision within {SETTLE_DEADLINE:?}: {revisions:?}",
                    self.kind.name()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Each member's resident set size in bytes, from /proc.
    pub fn resident_bytes(&self) -> anyhow::Result<Vec<u64>> {
        self.members.iter().map(|m| resident_bytes(m.child.id())).collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            let _ = member.child.kill();
            let _ = member.child.wait();
        }
    }
}

fn spawn(command: &mut Command, log: &Path) -> anyhow::Result<Child> {
    let log_file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("open {}", log.display()))?;
    command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log_file);
    command.spawn().with_context(|| format!("start {}", command.get_program().to_string_lossy()))
}

async fn status(url: &str) -> Option<synod_api::etcdserverpb::StatusResponse> {
    let call = async {
        let mut client = MaintenanceClient::connect(url.to_string()).await.ok()?;
        client.status(StatusRequest {}).await.ok().map(|r| r.into_inner())
    };
    tokio::time::timeout(Duration::from_secs(2), call).await.ok().flatten()
}

/// `count` distinct free loopback ports: all are bound at once, then released.
fn free_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").context("find a free port"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    listeners.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

fn resident_bytes(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .with_context(|| format!("no VmRSS in {path}"))?;
    Ok(kib * 1024)
}
