//! Shared pieces of synodctl's integration tests: synod members run in this process.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use clap::Parser;
use synod_api::etcdserverpb::StatusRequest;
use synod_api::etcdserverpb::maintenance_client::MaintenanceClient;
use synod_server::config::Flags;
use tokio::sync::oneshot;

/// How long a member gets to start answering.
pub const START_DEADLINE: Duration = Duration::from_secs(30);

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("read the bound address").port()
}

/// A synod member served by `synod_server::run_until` on its own runtime thread; dropping
/// it stops the member and waits until it has let go of its ports.
pub struct Member {
    /// `127.0.0.1:port`, as `--endpoints` takes it.
    pub endpoint: String,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl Member {
    /// A member that is a cluster of its own.
    pub fn start(data_dir: &Path, client_port: u16, peer_port: u16) -> Member {
        let cluster = format!("default=http://127.0.0.1:{peer_port}");
        Member::start_in(data_dir, "default", (client_port, peer_port), &cluster)
    }

    /// Member `name` of the cluster `initial_cluster` lists; returns once it answers.
    pub fn start_in(data_dir: &Path, name: &str, ports: (u16, u16), initial_cluster: &str) -> Member {
        Member::start_with(data_dir, name, ports, initial_cluster, &[])
    }

    /// A member like [`Member::start_in`] with more flags (`--listen-client-urls` in them adds
    /// to its plaintext client URL, which the member is probed on).
    pub fn start_with(
        data_dir: &Path,
        name: &str,
        ports: (u16, u16),
        initial_cluster: &str,
        extra: &[String],
    ) -> Member {
        let client = format!("http://127.0.0.1:{}", ports.0);
        let peer = format!("http://127.0.0.1:{}", ports.1);
        let data_dir = data_dir.display().to_string();
        let mut args: Vec<String> = [
            "synod",
            "--name",
            name,
            "--data-dir",
            &data_dir,
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
            "--initial-cluster",
            initial_cluster,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().cloned());
        let flags = Flags::try_parse_from(args).expect("parse the member's flags");
        let config = flags.into_config().expect("check the member's flags");
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            runtime.block_on(synod_server::run_until(config, async {
                let _ = stopped.await;
            }))
        });
        let member =
            Member { endpoint: format!("127.0.0.1:{}", ports.0), stop: Some(stop), thread: Some(thread) };
        member.wait_until_serving();
        member
    }

    /// `http://127.0.0.1:port`, as gRPC clients take it.
    pub fn url(&self) -> String {
        format!("http://{}", self.endpoint)
    }

    /// Polls the member with a raw gRPC call (not with synodctl, which is under test) until
    /// it answers or the deadline passes.
    fn wait_until_serving(&self) {
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("build a runtime");
        let url = self.url();
        let start = Instant::now();
        loop {
            let answered = runtime.block_on(async {
                let mut client = MaintenanceClient::connect(url.clone()).await.ok()?;
                client.status(StatusRequest {}).await.ok()
            });
            if answered.is_some() {
                return;
            }
            let finished = self.thread.as_ref().is_some_and(|t| t.is_finished());
            assert!(!finished, "the member exited during startup");
            assert!(start.elapsed() < START_DEADLINE, "the member did not serve within {START_DEADLINE:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) if !std::thread::panicking() => panic!("the member failed: {e:#}"),
                Err(_) if !std::thread::panicking() => panic!("the member's thread panicked"),
                _ => {}
            }
        }
    }
}
