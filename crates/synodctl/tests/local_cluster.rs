//! `synodctl local-cluster` as a user runs it: it starts real synod processes, prints their
//! endpoints and pids, the members replicate, and SIGTERM (as Ctrl-C) stops every one.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use synod_api::etcdserverpb::kv_client::KvClient;
use synod_api::etcdserverpb::{PutRequest, RangeRequest};

const SYNODCTL: &str = env!("CARGO_BIN_EXE_synodctl");
const DEADLINE: Duration = Duration::from_secs(60);

/// A base port whose member ports (BASE + 10000*i and the port after) are all free now,
/// all below Linux's ephemeral range (32768 and up), so no outgoing connection takes one.
fn free_base_port(members: u16) -> u16 {
    (10_000..32_767 - 10_000 * (members - 1))
        .step_by(7)
        .find(|base| {
            (0..members).all(|i| {
                let client = base + 10_000 * i;
                [client, client + 1].iter().all(|port| TcpListener::bind(("127.0.0.1", *port)).is_ok())
            })
        })
        .expect("free ports for the local cluster")
}

/// What the test started: synodctl and the members it printed. Dropping it (when the test
/// fails half-way) kills them all.
struct Started {
    synodctl: std::process::Child,
    members: Vec<u32>,
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.synodctl.kill();
        let _ = self.synodctl.wait();
        for pid in &self.members {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).stderr(Stdio::null()).status();
        }
    }
}

fn alive(pid: u32) -> bool {
    Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .expect("kill -0")
        .success()
}

#[test]
fn local_cluster_starts_replicates_and_stops_on_sigterm() {
    // `cargo test --workspace` builds synod next to synodctl.
    let synod = PathBuf::from(SYNODCTL).with_file_name("synod");
    assert!(synod.is_file(), "{} is missing; run the tests with `cargo test --workspace`", synod.display());
    let dir = tempfile::tempdir().expect("tempdir");
    let base = free_base_port(3);
    let child = Command::new(SYNODCTL)
        .args(["local-cluster", "--members", "3", "--base-port", &base.to_string(), "--synod"])
        .arg(&synod)
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start synodctl local-cluster");
    let mut started = Started { synodctl: child, members: Vec::new() };

    // Read what it prints until it says how to stop it.
    let (lines, printed) = mpsc::channel();
    let stdout = started.synodctl.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if lines.send(line.expect("read stdout")).is_err() {
                return;
            }
        }
    });
    let mut rows = Vec::new();
    loop {
        let line = printed.recv_timeout(DEADLINE).expect("local-cluster printed its members in time");
        if line.contains("Ctrl-C stops every member") {
            break;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() == 5 && fields[0].starts_with('m') && fields[1].starts_with("http://") {
            let pid = fields[3].parse::<u32>().expect("a pid");
            started.members.push(pid);
            rows.push((fields[1].to_string(), pid));
        }
    }
    assert_eq!(rows.len(), 3, "three members printed");
    assert_eq!(rows[0].0, format!("http://127.0.0.1:{base}"));
    assert_eq!(rows[2].0, format!("http://127.0.0.1:{}", base + 20_000));
    assert!(rows.iter().all(|(_, pid)| alive(*pid)), "every member runs");

    // A write through one member is read through another.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let mut first = KvClient::connect(rows[0].0.clone()).await.expect("connect m0");
        let put = PutRequest { key: b"hello".to_vec(), value: b"cluster".to_vec(), ..Default::default() };
        first.put(put).await.expect("put through m0");
        let mut last = KvClient::connect(rows[2].0.clone()).await.expect("connect m2");
        let kvs =
            last.range(RangeRequest { key: b"hello".to_vec(), ..Default::default() }).await.expect("get");
        assert_eq!(kvs.into_inner().kvs[0].value, b"cluster");
    });

    let sent =
        Command::new("kill").args(["-TERM", &started.synodctl.id().to_string()]).status().expect("kill");
    assert!(sent.success());
    let deadline = std::time::Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = started.synodctl.try_wait().expect("wait") {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "local-cluster did not stop in time");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "local-cluster exited with {status}");
    for (url, pid) in &rows {
        assert!(!alive(*pid), "the member at {url} (pid {pid}) still runs");
    }
}
