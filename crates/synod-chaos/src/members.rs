//! The `synod` processes: started inside their namespaces, killed, paused, resumed and
//! restarted by the nemesis, and never outliving the harness.
//!
//! Each member is forked with a `pre_exec` hook that enters its network namespace and asks
//! the kernel to SIGKILL it when its parent dies (`PR_SET_PDEATHSIG`). That signal fires
//! when the *thread* that forked the child ends, not the process, so members are only ever
//! forked from the thread that runs the harness's single-threaded runtime (asserted in
//! [`Cluster::start`]); a worker thread that retired would take its members with it.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{netns, proxy};

/// Where synod serves clients, inside its namespace.
pub const CLIENT_PORT: u16 = 2379;

/// How members are started: the same for every start of every member.
#[derive(Clone, Debug)]
pub struct Settings {
    pub synod: PathBuf,
    pub out_dir: PathBuf,
    pub cluster_token: String,
    /// Flags added to every member's command line (the negative control's).
    pub extra_flags: Vec<String>,
}

/// One member process and what the harness did to it.
#[derive(Debug)]
struct Process {
    child: Option<Child>,
    /// Stopped with SIGSTOP and not yet continued.
    paused: bool,
    /// Killed by the harness: a member that is down without this flag exited by itself.
    killed: bool,
}

/// A member: its fixed identity and its current process.
#[derive(Debug)]
pub struct Member {
    pub name: String,
    pub index: usize,
    args: Vec<String>,
    log_path: PathBuf,
    process: Mutex<Process>,
}

impl Member {
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub fn client_url(&self) -> String {
        format!("http://{}:{CLIENT_PORT}", netns::member_ip(self.index))
    }

    fn process(&self) -> std::sync::MutexGuard<'_, Process> {
        // A panic while holding this lock leaves a consistent Process (every field is
        // written in one step), so a poisoned lock is still usable.
        self.process.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The members of one run.
#[derive(Debug)]
pub struct Cluster {
    pub members: Vec<Member>,
    synod: PathBuf,
    start: Instant,
    /// The only thread allowed to fork members (see the module comment).
    forker: ThreadId,
    /// Set at teardown: no member may be started after it.
    closed: AtomicBool,
    /// Members found exited that the harness had not killed.
    crashes: Mutex<Vec<String>>,
}

impl Cluster {
    /// Describes members named `names`; nothing is started yet. `start` is the run's clock.
    pub fn new(names: &[String], settings: &Settings, start: Instant) -> Result<Cluster> {
        let initial_cluster = names
            .iter()
            .enumerate()
            .map(|(index, name)| format!("{name}={}", proxy::advertised_peer_url(index)))
            .collect::<Vec<_>>()
            .join(",");
        let data_root = settings.out_dir.join("data");
        std::fs::create_dir_all(&data_root).with_context(|| format!("create {}", data_root.display()))?;
        let members = names
            .iter()
            .enumerate()
            .map(|(index, name)| {
                let client_url = format!("http://{}:{CLIENT_PORT}", netns::member_ip(index));
                let mut args: Vec<String> = [
                    "--name",
                    name,
                    "--data-dir",
                    &data_root.join(name).display().to_string(),
                    "--listen-client-urls",
                    &client_url,
                    "--advertise-client-urls",
                    &client_url,
                    "--listen-peer-urls",
                    &proxy::listen_peer_url(index),
                    "--initial-advertise-peer-urls",
                    &proxy::advertised_peer_url(index),
                    "--initial-cluster",
                    &initial_cluster,
                    "--initial-cluster-state",
                    "new",
                    "--initial-cluster-token",
                    &settings.cluster_token,
                    "--heartbeat-interval",
                    "100",
                    "--election-timeout",
                    "1000",
                    "--log-level",
                    "info",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                args.extend(settings.extra_flags.iter().cloned());
                Member {
                    name: name.clone(),
                    index,
                    args,
                    log_path: settings.out_dir.join(format!("{name}.log")),
                    process: Mutex::new(Process { child: None, paused: false, killed: false }),
                }
            })
            .collect();
        Ok(Cluster {
            members,
            synod: settings.synod.clone(),
            start,
            forker: std::thread::current().id(),
            closed: AtomicBool::new(false),
            crashes: Mutex::new(Vec::new()),
        })
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Starts member `index` from its data directory, unless it runs already. A restart
    /// uses the first start's flags: synod restarts from what its data directory holds.
    pub fn start(&self, index: usize) -> Result<()> {
        assert_eq!(
            std::thread::current().id(),
            self.forker,
            "members must be forked from the harness's main thread (PR_SET_PDEATHSIG is per thread)"
        );
        let member = &self.members[index];
        let mut process = member.process();
        if self.closed.load(Ordering::SeqCst) {
            bail!("member {} not started: the run is tearing down", member.name);
        }
        self.reap_crash(member, &mut process);
        if running(&mut process) {
            return Ok(());
        }
        let mut log = File::options()
            .create(true)
            .append(true)
            .open(&member.log_path)
            .with_context(|| format!("open {}", member.log_path.display()))?;
        writeln!(
            log,
            "=== synod-chaos: starting {} at {:.3}s",
            member.name,
            self.start.elapsed().as_secs_f64()
        )
        .with_context(|| format!("write {}", member.log_path.display()))?;
        let namespace = File::open(netns::netns_path(&member.name))
            .with_context(|| format!("open the network namespace of {}", member.name))?;
        let namespace_fd = namespace.as_raw_fd();
        // SAFETY: getpid has no preconditions.
        let parent = unsafe { libc::getpid() };
        let mut command = Command::new(&self.synod);
        command
            .args(&member.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("duplicate the log file handle")?)
            .stderr(log);
        // SAFETY: the hook runs in the child between fork and exec and calls only
        // async-signal-safe system calls on values copied in before the fork.
        unsafe {
            command.pre_exec(move || {
                if libc::setns(namespace_fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The harness may have died before the prctl above took effect.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .with_context(|| format!("start member {} ({})", member.name, self.synod.display()))?;
        drop(namespace);
        *process = Process { child: Some(child), paused: false, killed: false };
        Ok(())
    }

    /// Kills member `index` with SIGKILL and reaps it.
    pub fn kill(&self, index: usize) -> Result<()> {
        let member = &self.members[index];
        let mut process = member.process();
        self.reap_crash(member, &mut process);
        if let Some(mut child) = process.child.take() {
            signal(&child, libc::SIGKILL);
            signal(&child, libc::SIGCONT);
            child.wait().with_context(|| format!("reap member {}", member.name))?;
        }
        process.paused = false;
        process.killed = true;
        Ok(())
    }

    /// Stops member `index` with SIGSTOP: it keeps its sockets but answers nothing.
    pub fn pause(&self, index: usize) {
        let mut process = self.members[index].process();
        if let Some(child) = process.child.as_ref() {
            signal(child, libc::SIGSTOP);
            process.paused = true;
        }
    }

    /// Continues member `index` after [`Cluster::pause`].
    pub fn resume(&self, index: usize) {
        let mut process = self.members[index].process();
        if let Some(child) = process.child.as_ref() {
            signal(child, libc::SIGCONT);
        }
        process.paused = false;
    }

    /// Whether member `index` runs and is not paused.
    pub fn is_up(&self, index: usize) -> bool {
        let mut process = self.members[index].process();
        let paused = process.paused;
        process.child.as_mut().is_some_and(|child| matches!(child.try_wait(), Ok(None))) && !paused
    }

    /// Looks for members that exited although the harness did not kill them (a crash: a
    /// failed assertion, a panic, a refused restart), reaps them, and returns what it found
    /// (one line per crash); [`Cluster::crashes`] keeps all of them.
    pub fn find_crashes(&self) -> Vec<String> {
        self.members.iter().filter_map(|member| self.reap_crash(member, &mut member.process())).collect()
    }

    /// What [`Cluster::find_crashes`] found: one line per crash.
    pub fn crashes(&self) -> Vec<String> {
        self.crashes.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    fn reap_crash(&self, member: &Member, process: &mut Process) -> Option<String> {
        if process.killed {
            return None;
        }
        let status = process.child.as_mut().and_then(|child| child.try_wait().ok().flatten())?;
        process.child = None;
        let line = format!(
            "member {} exited by itself ({status}), found at {:.3}s; see {}",
            member.name,
            self.start.elapsed().as_secs_f64(),
            member.log_path.display()
        );
        self.crashes.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(line.clone());
        Some(line)
    }

    /// Stops every member: SIGTERM, then SIGKILL for those still running after `grace`.
    pub async fn stop_all(&self, grace: Duration) {
        for member in &self.members {
            let mut process = member.process();
            self.reap_crash(member, &mut process);
            if let Some(child) = process.child.as_ref() {
                signal(child, libc::SIGCONT);
                signal(child, libc::SIGTERM);
            }
            process.killed = true;
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && self.members.iter().any(|m| running(&mut m.process())) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.kill_all();
    }

    /// Kills every member at once and forbids new starts; used at teardown, also on panic
    /// and interruption. Never leaves a member stopped.
    pub fn kill_all(&self) {
        self.closed.store(true, Ordering::SeqCst);
        for member in &self.members {
            let mut process = member.process();
            if let Some(mut child) = process.child.take() {
                signal(&child, libc::SIGKILL);
                signal(&child, libc::SIGCONT);
                let _ = child.wait();
            }
            process.paused = false;
        }
    }
}

/// Kills the cluster's members when dropped: declared after the network in `main`, so that
/// the namespaces are removed only once nothing runs in them.
pub struct KillOnDrop(pub Arc<Cluster>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.0.kill_all();
    }
}

fn running(process: &mut Process) -> bool {
    process.child.as_mut().is_some_and(|child| matches!(child.try_wait(), Ok(None)))
}

fn signal(child: &Child, signal: libc::c_int) {
    // A child that was not reaped yet keeps its pid, so this cannot hit another process.
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(child.id() as libc::pid_t, signal);
    }
}
