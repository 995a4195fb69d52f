//! `local-cluster`: N synod members on loopback in one command, for trying replication and
//! failover by hand. Each member is a real `synod` process started with etcd's bootstrap
//! flags; the command prints where they serve, reports members that exit (with the command
//! that restarts them), and stops them all on Ctrl-C or SIGTERM.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use synod_api::etcdserverpb::StatusRequest;
use synod_api::etcdserverpb::maintenance_client::MaintenanceClient;

use crate::cli::LocalClusterArgs;
use crate::exit::CtlError;

/// Most members the port scheme fits below 65536 from etcd's 2379.
const MEMBERS_MAX: usize = 7;
/// How long the members get to elect a leader.
const READY_DEADLINE: Duration = Duration::from_secs(30);
/// How long members get to stop after SIGTERM before they are killed.
const STOP_DEADLINE: Duration = Duration::from_secs(10);

struct Member {
    name: String,
    client_url: String,
    peer_url: String,
    log: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl Member {
    fn restart_command(&self, synod: &Path) -> String {
        format!("{} {} 2>>{}", synod.display(), self.args.join(" "), self.log.display())
    }
}

pub async fn run(args: &LocalClusterArgs) -> anyhow::Result<()> {
    if args.members == 0 || args.members > MEMBERS_MAX {
        return Err(CtlError::bad_args(format!("--members must be between 1 and {MEMBERS_MAX}")).into());
    }
    let last_port = u32::from(args.base_port) + 10_000 * (args.members as u32 - 1) + 1;
    if last_port > u32::from(u16::MAX) {
        return Err(CtlError::bad_args(format!(
            "--base-port {} leaves no room for {} members (member i uses BASE + 10000*i and the port after)",
            args.base_port, args.members
        ))
        .into());
    }
    let synod = find_synod(args.synod.as_deref())?;
    fs::create_dir_all(&args.dir).with_context(|| format!("create {}", args.dir.display()))?;
    let dir = args.dir.canonicalize().with_context(|| format!("resolve {}", args.dir.display()))?;

    let ports: Vec<(u16, u16)> = (0..args.members)
        .map(|i| {
            let client = args.base_port + 10_000 * i as u16;
            (client, client + 1)
        })
        .collect();
    let initial_cluster = ports
        .iter()
        .enumerate()
        .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut members: Vec<Member> = ports
        .iter()
        .enumerate()
        .map(|(i, (client, peer))| {
            let name = format!("m{i}");
            let client_url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let data_dir = dir.join(format!("{name}.synod"));
            let mut member_args: Vec<String> = vec![
                "--name".into(),
                name.clone(),
                "--data-dir".into(),
                data_dir.display().to_string(),
                "--listen-client-urls".into(),
                client_url.clone(),
                "--advertise-client-urls".into(),
                client_url.clone(),
                "--listen-peer-urls".into(),
                peer_url.clone(),
                "--initial-advertise-peer-urls".into(),
                peer_url.clone(),
                "--initial-cluster".into(),
                initial_cluster.clone(),
                "--initial-cluster-state".into(),
                "new".into(),
            ];
            member_args.extend(args.synod_flags.iter().cloned());
            Member {
                log: dir.join(format!("{name}.log")),
                name,
                client_url,
                peer_url,
                args: member_args,
                child: None,
            }
        })
        .collect();

    for member in &mut members {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&member.log)
            .with_context(|| format!("open {}", member.log.display()))?;
        let child = Command::new(&synod)
            .args(&member.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", synod.display()));
        match child {
            Ok(child) => member.child = Some(child),
            Err(error) => {
                stop_all(&mut members);
                return Err(error);
            }
        }
    }
    if let Err(error) = wait_ready(&mut members).await {
        stop_all(&mut members);
        return Err(error);
    }

    println!("synod local cluster of {} members in {}:", members.len(), dir.display());
    println!();
    println!("  {:<5} {:<24} {:<24} {:<8} log", "name", "client URL", "peer URL", "pid");
    for member in &members {
        let pid = member.child.as_ref().map_or(0, Child::id);
        println!(
            "  {:<5} {:<24} {:<24} {:<8} {}",
            member.name,
            member.client_url,
            member.peer_url,
            pid,
            member.log.display()
        );
    }
    let endpoints: Vec<&str> = members.iter().map(|m| m.client_url.as_str()).collect();
    println!();
    println!("Try:");
    println!("  etcdctl --endpoints={} endpoint status -w table", endpoints.join(","));
    println!("  kill -9 <pid of the leader>    # a new leader takes over in about a second");
    println!("Ctrl-C stops every member.");

    watch(&synod, &mut members).await;
    println!("stopping {} members", members.len());
    stop_all(&mut members);
    println!("stopped; the data stays in {}", dir.display());
    Ok(())
}

/// The synod binary: the flag, else the one next to this synodctl, else `synod` on PATH.
fn find_synod(flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = flag {
        if path.is_file() {
            return Ok(path.to_path_buf());
        }
        bail!("--synod {}: no such file", path.display());
    }
    let beside = std::env::current_exe().ok().map(|exe| exe.with_file_name("synod")).filter(|p| p.is_file());
    let on_path = || {
        std::env::var_os("PATH")
            .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("synod")).find(|p| p.is_file()))
    };
    beside.or_else(on_path).ok_or_else(|| {
        anyhow::anyhow!("cannot find the synod binary next to synodctl or on PATH; build it (`cargo build --release`) or pass --synod")
    })
}

/// Waits until every member answers Status and names a leader.
async fn wait_ready(members: &mut [Member]) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        for member in members.iter_mut() {
            if let Some(status) = member.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("{} exited at startup ({status}); see {}", member.name, member.log.display());
            }
        }
        let mut ready = 0;
        for member in members.iter() {
            if has_leader(&member.client_url).await {
                ready += 1;
            }
        }
        if ready == members.len() {
            return Ok(());
        }
        if started.elapsed() > READY_DEADLINE {
            bail!(
                "the members did not elect a leader within {READY_DEADLINE:?}; see the logs in the data directory"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn has_leader(url: &str) -> bool {
    let probe = async {
        let mut client = MaintenanceClient::connect(url.to_string()).await.ok()?;
        let status = client.status(StatusRequest {}).await.ok()?.into_inner();
        (status.leader != 0).then_some(())
    };
    tokio::time::timeout(Duration::from_secs(1), probe).await.ok().flatten().is_some()
}

/// Runs until Ctrl-C or SIGTERM, reporting members that exit.
async fn watch(synod: &Path, members: &mut [Member]) {
    let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(error) => {
            eprintln!("cannot watch for SIGTERM ({error}); stop with Ctrl-C");
            return;
        }
    };
    let mut poll = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            _ = terminate.recv() => return,
            _ = poll.tick() => {
                for member in members.iter_mut() {
                    let exited = member.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
                    if let Some(status) = exited {
                        member.child = None;
                        println!(
                            "{} exited ({status}); restart it with (it is then yours to stop):\n  {}",
                            member.name,
                            member.restart_command(synod)
                        );
                    }
                }
            }
        }
    }
}

/// Asks every member still running to stop (SIGTERM), and kills those that do not.
fn stop_all(members: &mut [Member]) {
    for member in members.iter() {
        if let Some(child) = &member.child {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        }
    }
    let deadline = Instant::now() + STOP_DEADLINE;
    for member in members.iter_mut() {
        let Some(mut child) = member.child.take() else { continue };
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    eprintln!("{} did not stop in {STOP_DEADLINE:?}; killing it", member.name);
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}
