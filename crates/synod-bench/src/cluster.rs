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
use synod_api::etcdserverpb::cluster_client::ClusterClient;
use synod_api::etcdserverpb::maintenance_client::MaintenanceClient;
use synod_api::etcdserverpb::{MemberAddRequest, MemberListRequest, MemberRemoveRequest, StatusRequest};
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
    name: String,
    child: Child,
    command: Command,
    client_url: String,
    peer_url: String,
    log: PathBuf,
}

pub struct Cluster {
    pub kind: Kind,
    binary: PathBuf,
    /// Flags every member gets besides the ones that place it.
    extra_args: Vec<String>,
    members: Vec<Member>,
    /// Members ever started, so that an added one gets a name never used before.
    started: usize,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `size` members of `binary` on free loopback ports in a new temporary
    /// directory under `parent`, and waits until they have a leader.
    ///
    /// Call it from the thread that stays alive for the whole run (the runtime's main
    /// thread): a member's parent-death signal fires when the thread that forked it ends.
    pub async fn start(kind: Kind, binary: &Path, size: usize, parent: &Path) -> anyhow::Result<Cluster> {
        Cluster::start_with(kind, binary, size, parent, &[]).await
    }

    /// As `start`, with `extra_args` given to every member.
    pub async fn start_with(
        kind: Kind,
        binary: &Path,
        size: usize,
        parent: &Path,
        extra_args: &[&str],
    ) -> anyhow::Result<Cluster> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("synod-bench-{}-", kind.name()))
            .tempdir_in(parent)
            .with_context(|| format!("create a temporary directory in {}", parent.display()))?;
        let ports = free_ports(size * 2)?;
        let urls: Vec<(String, String, String)> = (0..size)
            .map(|i| {
                let client = format!("http://127.0.0.1:{}", ports[2 * i]);
                let peer = format!("http://127.0.0.1:{}", ports[2 * i + 1]);
                (format!("m{i}"), client, peer)
            })
            .collect();
        let initial_cluster =
            urls.iter().map(|(name, _, peer)| format!("{name}={peer}")).collect::<Vec<_>>().join(",");
        let mut cluster = Cluster {
            kind,
            binary: binary.to_path_buf(),
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
            members: Vec::with_capacity(size),
            started: 0,
            dir,
        };
        for (name, client_url, peer_url) in urls {
            cluster.spawn_member(name, client_url, peer_url, &initial_cluster, "new")?;
        }
        cluster.wait_ready().await?;
        Ok(cluster)
    }

    /// Starts one member process and adds it to `members`.
    fn spawn_member(
        &mut self,
        name: String,
        client_url: String,
        peer_url: String,
        initial_cluster: &str,
        state: &str,
    ) -> anyhow::Result<()> {
        let data_dir = self.dir.path().join(format!("{name}.data"));
        let log = self.dir.path().join(format!("{name}.log"));
        let mut command = Command::new(&self.binary);
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
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
            "--initial-cluster",
            initial_cluster,
            "--initial-cluster-state",
            state,
            "--initial-cluster-token",
            &format!("synod-bench-{}", self.kind.name()),
        ]);
        command.args(&self.extra_args);
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
        self.members.push(Member { name, child, command, client_url, peer_url, log });
        self.started += 1;
        Ok(())
    }

    /// Adds a member the etcd way (MemberAdd through member 0, then a process started with
    /// `--initial-cluster-state existing`), without waiting for it to catch up. Returns its
    /// index.
    pub async fn add_member(&mut self) -> anyhow::Result<usize> {
        let ports = free_ports(2)?;
        let name = format!("m{}", self.started);
        let client_url = format!("http://127.0.0.1:{}", ports[0]);
        let peer_url = format!("http://127.0.0.1:{}", ports[1]);
        let mut client = ClusterClient::connect(self.members[0].client_url.clone())
            .await
            .context("connect to member 0 to add a member")?;
        // etcd refuses a voter ("unhealthy cluster") until every member has been connected
        // for a few seconds, as after a restart; an operator retries, and so does this.
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            let request = MemberAddRequest { peer_ur_ls: vec![peer_url.clone()], is_learner: false };
            match client.member_add(request).await {
                Ok(_) => break,
                Err(status) if status.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(status) => return Err(status).context("MemberAdd"),
            }
        }
        let initial_cluster = self
            .members
            .iter()
            .map(|m| (m.name.as_str(), m.peer_url.as_str()))
            .chain([(name.as_str(), peer_url.as_str())])
            .map(|(name, peer)| format!("{name}={peer}"))
            .collect::<Vec<_>>()
            .join(",");
        self.spawn_member(name, client_url, peer_url, &initial_cluster, "existing")?;
        Ok(self.members.len() - 1)
    }

    /// Removes member `index` (MemberRemove through another member), then stops its process.
    pub async fn remove_member(&mut self, index: usize) -> anyhow::Result<()> {
        let other = if index == 0 { 1 } else { 0 };
        let mut client = ClusterClient::connect(self.members[other].client_url.clone())
            .await
            .context("connect to remove a member")?;
        let list = client.member_list(MemberListRequest { linearizable: true }).await?.into_inner();
        let name = &self.members[index].name;
        let id = list
            .members
            .iter()
            .find(|m| &m.name == name)
            .map(|m| m.id)
            .with_context(|| format!("member {name} is not in the member list"))?;
        client.member_remove(MemberRemoveRequest { id }).await.context("MemberRemove")?;
        let mut member = self.members.remove(index);
        let _ = member.child.kill();
        let _ = member.child.wait();
        Ok(())
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
        self.respawn(index)?;
        self.wait_ready().await
    }

    /// Starts member `index` again on its data, appending to its log, and returns at once.
    pub fn respawn(&mut self, index: usize) -> anyhow::Result<()> {
        let member = &mut self.members[index];
        member.child = spawn(&mut member.command, &member.log)?;
        Ok(())
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

    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Member `index`'s log file.
    pub fn log(&self, index: usize) -> &Path {
        &self.members[index].log
    }

    /// Bytes of files under member `index`'s data directory.
    pub fn data_bytes(&self, index: usize) -> anyhow::Result<u64> {
        dir_bytes(&self.dir.path().join(format!("{}.data", self.members[index].name)))
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

    /// The CPU time (user and system) the running members have used, summed, in seconds.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        self.members.iter().map(|m| cpu_seconds(m.child.id())).sum()
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

pub async fn status(url: &str) -> Option<synod_api::etcdserverpb::StatusResponse> {
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

/// A process's user and system CPU time, all its threads together, from /proc/PID/stat.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    // The command name (field 2) is in parentheses and may hold spaces; utime and stime are
    // fields 14 and 15, the 12th and 13th after it.
    let after_name =
        stat.rsplit_once(')').map(|(_, rest)| rest).with_context(|| format!("no ')' in {path}"))?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    let (Some(user), Some(system)) = (ticks(11), ticks(12)) else {
        bail!("no utime and stime in {path}");
    };
    // SAFETY: sysconf reads a constant of the system.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    anyhow::ensure!(per_second > 0, "sysconf(_SC_CLK_TCK) failed");
    Ok((user + system) as f64 / per_second as f64)
}

/// Bytes of the regular files under `dir`, recursively.
fn dir_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            total += dir_bytes(&entry.path())?;
        } else if kind.is_file() {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
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
