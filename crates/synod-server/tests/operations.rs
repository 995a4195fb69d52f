//! Operating synod where etcd is operated, on real processes: members configured only by
//! etcd's environment variables, only by an etcd config file, and by kubeadm's exact command
//! line; probes on the metrics port of a mutual-TLS member; probes and gRPC health that
//! follow the leader; systemd's readiness protocol; the initial corruption check; the log on
//! its own directory; `--force-new-cluster`; SIGTERM draining requests in flight; the gRPC
//! keepalive flags; and logs in etcd's layout.

mod support;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Duration;

use support::pki::Pki;
use support::{ClientTls, Cluster, START_DEADLINE, Server, free_port, http, interop_program, wait_for};
use synod_api::etcdserverpb::cluster_client::ClusterClient;
use synod_api::etcdserverpb::kv_client::KvClient;
use synod_api::etcdserverpb::{
    MemberAddRequest, MemberListRequest, MemberPromoteRequest, PutRequest, RangeRequest, RequestOp,
    TxnRequest, request_op,
};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

fn text(path: &Path) -> String {
    path.display().to_string()
}

/// etcd's flags for a one-member cluster on loopback ports, as `(name, value)` pairs.
fn one_member(name: &str, dir: &Path, client: u16, peer: u16) -> Vec<(&'static str, String)> {
    vec![
        ("name", name.to_string()),
        ("data-dir", text(&dir.join(format!("{name}.synod")))),
        ("listen-client-urls", format!("http://127.0.0.1:{client}")),
        ("advertise-client-urls", format!("http://127.0.0.1:{client}")),
        ("listen-peer-urls", format!("http://127.0.0.1:{peer}")),
        ("initial-advertise-peer-urls", format!("http://127.0.0.1:{peer}")),
        ("initial-cluster", format!("{name}=http://127.0.0.1:{peer}")),
    ]
}

async fn put(server: &Server, key: &str, value: &str) {
    let mut kv = KvClient::new(server.channel().await);
    kv.put(PutRequest { key: key.into(), value: value.into(), ..Default::default() }).await.expect("put");
}

async fn get(server: &Server, key: &str) -> Option<Vec<u8>> {
    let mut kv = KvClient::new(server.channel().await);
    let response = kv.range(RangeRequest { key: key.into(), ..Default::default() }).await.expect("get");
    response.into_inner().kvs.first().map(|kv| kv.value.clone())
}

/// Every line the member logged is one JSON object in etcd's layout: `level`, `ts`,
/// `caller` and `msg` first.
fn assert_etcd_log_layout(log: &str) {
    assert!(!log.trim().is_empty(), "nothing was logged");
    for line in log.lines() {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        let keys: Vec<&String> = value.as_object().expect("an object").keys().collect();
        assert!(line.starts_with("{\"level\":"), "{line}");
        for key in ["level", "ts", "caller", "msg"] {
            assert!(keys.iter().any(|k| *k == key), "no {key} in {line}");
        }
        assert!(["debug", "info", "warn", "error"].contains(&value["level"].as_str().unwrap()), "{line}");
        let ts = value["ts"].as_str().unwrap();
        assert!(ts.len() == 27 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{line}");
    }
}

/// A member configured by nothing but ETCD_* variables serves as they say, logs that it
/// used them in etcd's layout, and refuses to start when a variable and its flag are both
/// set, with etcd's words (compared with the etcd installed here).
#[test]
fn a_member_starts_from_etcd_variables_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (client, peer, metrics) = (free_port(), free_port(), free_port());
    let log_file = dir.path().join("env-member.json.log");
    let mut env: Vec<(String, String)> = one_member("env-member", dir.path(), client, peer)
        .into_iter()
        .map(|(flag, value)| (format!("ETCD_{}", flag.to_uppercase().replace('-', "_")), value))
        .collect();
    env.extend([
        ("ETCD_LISTEN_METRICS_URLS".into(), format!("http://127.0.0.1:{metrics}")),
        ("ETCD_MAX_TXN_OPS".into(), "2".into()),
        ("ETCD_LOG_OUTPUTS".into(), format!("stderr,{}", text(&log_file))),
        ("ETCD_ENABLE_V2".into(), "false".into()),
        ("ETCD_UNKNOWN_SETTING".into(), "1".into()),
    ]);
    let mut member = Server::configured(dir.path(), "env-member", client, Vec::new(), env.clone());
    member.start();
    runtime().block_on(async {
        let mut cluster = ClusterClient::new(member.channel().await);
        let list = cluster.member_list(MemberListRequest::default()).await.unwrap().into_inner();
        assert_eq!(list.members.len(), 1);
        assert_eq!(list.members[0].name, "env-member");
        let op = || RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: b"k".to_vec(),
                ..Default::default()
            })),
        };
        let mut kv = KvClient::new(member.channel().await);
        let refused = kv.txn(TxnRequest { success: vec![op(), op(), op()], ..Default::default() }).await;
        assert_eq!(refused.unwrap_err().message(), "etcdserver: too many operations in txn request");
    });
    assert!(dir.path().join("env-member.synod/member/state.redb").exists());
    let (status, body) = http(&format!("127.0.0.1:{metrics}"), "GET", "/health", "", "");
    assert_eq!((status, body.as_str()), (200, "{\"health\":\"true\",\"reason\":\"\"}"));
    let logged = std::fs::read_to_string(&log_file).expect("the log file of --log-outputs");
    assert_etcd_log_layout(&logged);
    assert!(logged.contains("recognized and used environment variable ETCD_NAME=env-member"), "{logged}");
    assert!(logged.contains("unrecognized environment variable ETCD_UNKNOWN_SETTING=1"), "{logged}");
    assert_etcd_log_layout(&member.log());
    assert_eq!(member.terminate(), Some(0));

    // A variable shadowed by its flag stops the start, as it stops etcd's.
    let conflict = "conflicting environment variable \"ETCD_NAME\" is shadowed by corresponding \
                    command-line flag (either unset environment variable or disable flag)";
    let mut shadowed = Server::configured(dir.path(), "shadowed", client, vec!["--name=other".into()], env);
    assert_eq!(shadowed.start_expecting_exit(), Some(2));
    assert!(shadowed.log().contains(conflict), "{}", shadowed.log());
    if let Some(etcd) = interop_program("etcd") {
        let output = std::process::Command::new(etcd)
            .args(["--name=other", &format!("--data-dir={}", text(&dir.path().join("etcd")))])
            .env("ETCD_NAME", "env-member")
            .output()
            .expect("run etcd");
        assert!(!output.status.success());
        let said = String::from_utf8_lossy(&output.stderr);
        assert!(said.contains(conflict), "etcd said otherwise: {said}");
    }
}

/// A member configured by nothing but an etcd config file serves as it says, TLS section
/// included; flags beside it are ignored with a warning, as etcd ignores them, and a key
/// nobody knows stops the start with its name.
#[test]
fn a_member_starts_from_an_etcd_config_file_alone() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "ca");
    let (cert, key) = pki.issue("file-member");
    let (client_cert, client_key) = pki.issue("root");
    let (client, peer, metrics) = (free_port(), free_port(), free_port());
    let mut yaml = String::from("# etcd.conf.yml, in etcd's layout\n");
    for (flag, value) in one_member("file-member", dir.path(), client, peer) {
        let value =
            value.replace(&format!("http://127.0.0.1:{client}"), &format!("https://127.0.0.1:{client}"));
        yaml.push_str(&format!("{flag}: '{value}'\n"));
    }
    yaml.push_str(&format!(
        "listen-metrics-urls: http://127.0.0.1:{metrics}\nsnapshot-count: 10000\nheartbeat-interval: 100\n\
         election-timeout: 1000\nenable-v2: false\nproxy: 'off'\ndiscovery:\nlog-outputs: [stderr]\n\
         client-transport-security:\n  cert-file: {}\n  key-file: {}\n  client-cert-auth: true\n  \
         trusted-ca-file: {}\n  auto-tls: false\npeer-transport-security:\n  auto-tls: false\n",
        text(&cert),
        text(&key),
        text(&pki.ca("ca")),
    ));
    let config = dir.path().join("etcd.conf.yml");
    std::fs::write(&config, &yaml).unwrap();
    let args = vec![format!("--config-file={}", text(&config)), "--name=ignored".into()];
    let mut member = Server::configured(dir.path(), "file-member", client, args, Vec::new());
    member.client_tls = Some(ClientTls { ca: pki.ca("ca"), cert: client_cert, key: client_key });
    member.start();
    runtime().block_on(async {
        put(&member, "from", "file").await;
        assert_eq!(get(&member, "from").await.as_deref(), Some(&b"file"[..]));
        let mut cluster = ClusterClient::new(member.channel().await);
        let list = cluster.member_list(MemberListRequest::default()).await.unwrap().into_inner();
        assert_eq!(list.members[0].name, "file-member");
    });
    let (status, body) = http(&format!("127.0.0.1:{metrics}"), "GET", "/livez", "", "");
    assert_eq!((status, body.as_str()), (200, "ok"));
    assert!(member.log().contains("ignoring --name"), "{}", member.log());
    assert_eq!(member.terminate(), Some(0));

    std::fs::write(&config, yaml.replace("snapshot-count:", "snapshot-cuont:")).unwrap();
    let mut misspelt = Server::configured(
        dir.path(),
        "misspelt",
        client,
        vec![format!("--config-file={}", text(&config))],
        Vec::new(),
    );
    assert_eq!(misspelt.start_expecting_exit(), Some(2));
    assert!(misspelt.log().contains("unknown key \"snapshot-cuont\""), "{}", misspelt.log());
}

/// kubeadm's etcd command line, flag for flag (loopback addresses and this test's files
/// in place of its own), starts a member that serves mutual TLS, runs the initial
/// corruption check, and answers every probe on the metrics port without a client
/// certificate.
#[test]
fn kubeadms_etcd_command_line_serves_with_probes_on_the_metrics_port() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "ca");
    let (server_cert, server_key) = pki.issue_as("server", "node");
    let (peer_cert, peer_key) = pki.issue_as("peer", "node");
    let (client_cert, client_key) = pki.issue("kube-apiserver-etcd-client");
    let (client, peer, metrics) = (free_port(), free_port(), free_port());
    let ca = text(&pki.ca("ca"));
    let args: Vec<String> = [
        format!("--advertise-client-urls=https://127.0.0.1:{client}"),
        format!("--cert-file={}", text(&server_cert)),
        "--client-cert-auth=true".into(),
        format!("--data-dir={}", text(&dir.path().join("etcd"))),
        "--experimental-initial-corrupt-check=true".into(),
        "--experimental-watch-progress-notify-interval=5s".into(),
        format!("--initial-advertise-peer-urls=https://127.0.0.1:{peer}"),
        format!("--initial-cluster=node=https://127.0.0.1:{peer}"),
        format!("--key-file={}", text(&server_key)),
        format!("--listen-client-urls=https://127.0.0.1:{client}"),
        format!("--listen-metrics-urls=http://127.0.0.1:{metrics}"),
        format!("--listen-peer-urls=https://127.0.0.1:{peer}"),
        "--name=node".into(),
        format!("--peer-cert-file={}", text(&peer_cert)),
        "--peer-client-cert-auth=true".into(),
        format!("--peer-key-file={}", text(&peer_key)),
        format!("--peer-trusted-ca-file={ca}"),
        "--snapshot-count=10000".into(),
        format!("--trusted-ca-file={ca}"),
    ]
    .into();
    let mut member = Server::configured(dir.path(), "node", client, args, Vec::new());
    member.client_tls = Some(ClientTls { ca: pki.ca("ca"), cert: client_cert, key: client_key });
    member.start();
    runtime().block_on(async {
        put(&member, "/registry/pods/default/a", "pod").await;
        assert!(get(&member, "/registry/pods/default/a").await.is_some());
    });
    assert!(member.log().contains("initial corruption checking passed"), "{}", member.log());

    let metrics = format!("127.0.0.1:{metrics}");
    let probe = |path: &str| http(&metrics, "GET", path, "", "");
    assert_eq!(probe("/health"), (200, "{\"health\":\"true\",\"reason\":\"\"}".into()));
    assert_eq!(probe("/livez"), (200, "ok".into()));
    assert_eq!(probe("/readyz"), (200, "ok".into()));
    assert_eq!(
        probe("/readyz?verbose"),
        (
            200,
            "[+]data_corruption ok\n[+]serializable_read ok\n[+]linearizable_read ok\nreadyz check passed\n"
                .into()
        )
    );
    assert_eq!(
        probe("/livez?verbose&exclude=serializable_read&exclude=nonsense"),
        (
            200,
            "[+]serializable_read excluded: ok\nwarn: some health checks cannot be excluded: no matches for \
             \"nonsense\"\nlivez check passed\n"
                .into()
        )
    );
    assert_eq!(probe("/readyz/linearizable_read"), (200, "ok".into()));
    assert_eq!(probe("/readyz/nonsense").0, 404);
    let (status, page) = probe("/metrics");
    assert_eq!(status, 200);
    assert!(page.lines().any(|l| l == "etcd_server_has_leader 1"), "{page}");
    // The client port still requires a certificate: a plain connection gets no answer.
    let plain = std::panic::catch_unwind(|| http(&format!("127.0.0.1:{client}"), "GET", "/health", "", ""));
    assert!(plain.is_err(), "the client port answered without TLS");
}

/// With no leader, /health and /readyz fail and gRPC health says NOT_SERVING, while /livez
/// still passes: a member cut off from its quorum is alive but must get no traffic. With
/// a leader back, all recover.
#[test]
fn probes_and_grpc_health_follow_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), 3, &[]);
    let runtime = runtime();
    let health = |member: &Server| {
        runtime.block_on(async {
            let mut client = HealthClient::new(member.channel().await);
            let response = client.check(HealthCheckRequest { service: String::new() }).await.ok()?;
            Some(response.into_inner().status)
        })
    };
    wait_for("gRPC health SERVING", START_DEADLINE, || {
        (health(&cluster.members[0]) == Some(ServingStatus::Serving as i32)).then_some(())
    });
    cluster.members[1].kill();
    cluster.members[2].kill();
    let survivor = &cluster.members[0];
    wait_for("gRPC health NOT_SERVING without a leader", START_DEADLINE, || {
        (health(survivor) == Some(ServingStatus::NotServing as i32)).then_some(())
    });
    let address = survivor.address();
    let (status, body) = http(&address, "GET", "/health", "", "");
    assert_eq!((status, body.as_str()), (503, "{\"health\":\"false\",\"reason\":\"RAFT NO LEADER\"}"));
    assert_eq!(http(&address, "GET", "/livez", "", ""), (200, "ok".into()));
    let (status, body) = http(&address, "GET", "/readyz", "", "");
    assert_eq!(status, 503);
    assert!(
        body.starts_with("[+]data_corruption ok\n[+]serializable_read ok\n[-]linearizable_read failed: "),
        "{body}"
    );
    assert!(body.ends_with("\nreadyz check failed\n"), "{body}");
    let (status, _) = http(&address, "GET", "/health?serializable=true", "", "");
    assert_eq!(status, 200);

    cluster.members[1].start();
    wait_for("gRPC health SERVING again", START_DEADLINE, || {
        (health(&cluster.members[0]) == Some(ServingStatus::Serving as i32)).then_some(())
    });
    assert_eq!(http(&cluster.members[0].address(), "GET", "/readyz", "", ""), (200, "ok".into()));
}

/// systemd's notify protocol: READY=1 reaches NOTIFY_SOCKET once the member serves, and
/// STOPPING=1 when SIGTERM starts its shutdown, which then ends cleanly. The unit in
/// `deploy/` passes `systemd-analyze verify` without a word.
#[test]
fn systemd_hears_ready_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    if let Some(analyze) = interop_program("systemd-analyze") {
        let unit =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/synod.service"))
                .expect("deploy/synod.service");
        assert!(unit.contains("Type=notify") && unit.contains("EnvironmentFile=-/etc/default/synod"));
        let copy = dir.path().join("synod.service");
        std::fs::write(&copy, unit.replace("/usr/local/bin/synod", env!("CARGO_BIN_EXE_synod"))).unwrap();
        let output = std::process::Command::new(analyze).arg("verify").arg(&copy).output().unwrap();
        let said =
            format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");
    }
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    socket.set_read_timeout(Some(START_DEADLINE)).unwrap();
    let (client, peer) = (free_port(), free_port());
    let args =
        one_member("unit", dir.path(), client, peer).into_iter().map(|(f, v)| format!("--{f}={v}")).collect();
    let env = vec![("NOTIFY_SOCKET".to_string(), text(&socket_path))];
    let mut member = Server::configured(dir.path(), "unit", client, args, env);
    member.spawn();
    let mut buffer = [0u8; 256];
    let n = socket.recv(&mut buffer).expect("READY=1 within the start deadline");
    assert_eq!(String::from_utf8_lossy(&buffer[..n]).trim(), "READY=1");
    member.wait_serving(false);
    runtime().block_on(put(&member, "before", "stop"));
    let pid = member.pid();
    let sent = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    assert!(sent.success());
    let n = socket.recv(&mut buffer).expect("STOPPING=1 after SIGTERM");
    assert_eq!(String::from_utf8_lossy(&buffer[..n]).trim(), "STOPPING=1");
    assert_eq!(member.wait_exit(Duration::from_secs(20)), Some(0));
}

/// A member whose data differs from its peers' at the same revision refuses to start with
/// --experimental-initial-corrupt-check, while a member whose data agrees starts.
///
/// The differing member is made honestly: a second cluster bootstrapped with the same
/// flags (so the same cluster and member ids) wrote another value at the same revision,
/// and its third member's data dir is started beside the first cluster's other two.
#[test]
fn the_initial_corruption_check_refuses_a_member_whose_data_differs() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let initial_cluster: String = ports
        .iter()
        .enumerate()
        .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
        .collect::<Vec<_>>()
        .join(",");
    let runtime = runtime();
    let written = |side: &str, value: &str| -> Vec<Server> {
        let side_dir = dir.path().join(side);
        std::fs::create_dir_all(&side_dir).unwrap();
        let mut members: Vec<Server> = (0..3)
            .map(|i| Server::member(&side_dir, &format!("m{i}"), ports[i], &initial_cluster, "new", &[]))
            .collect();
        members.iter_mut().for_each(Server::spawn);
        members.iter_mut().for_each(|m| m.wait_serving(false));
        runtime.block_on(async {
            put(&members[0], "k", value).await;
            for member in &members {
                assert_eq!(get(member, "k").await.as_deref(), Some(value.as_bytes()));
            }
        });
        for member in &mut members {
            assert_eq!(member.terminate(), Some(0));
        }
        members
    };
    let mut first = written("first", "a");
    let mut second = written("second", "b");

    first[0].spawn();
    first[1].spawn();
    first[0].wait_serving(false);
    let mut differing = second.remove(2);
    differing.args.push("--experimental-initial-corrupt-check".into());
    assert_ne!(differing.start_expecting_exit(), Some(0), "{}", differing.log());
    assert!(differing.log().contains("found data inconsistency with peers"), "{}", differing.log());

    let agreeing = &mut first[2];
    agreeing.args.push("--experimental-initial-corrupt-check".into());
    agreeing.start();
    assert!(agreeing.log().contains("initial corruption checking passed"), "{}", agreeing.log());
    assert_eq!(runtime.block_on(get(agreeing, "k")).as_deref(), Some(&b"a"[..]));
}

/// --wal-dir puts the log on its own directory and the member restarts from it; started
/// without it, or with another, the member refuses rather than start its old state on a
/// new, empty log.
#[test]
fn the_log_lives_in_wal_dir() {
    let dir = tempfile::tempdir().unwrap();
    let (client, peer) = (free_port(), free_port());
    let wal = dir.path().join("fast-disk/wal");
    let mut args: Vec<String> = one_member("walled", dir.path(), client, peer)
        .into_iter()
        .map(|(f, v)| format!("--{f}={v}"))
        .collect();
    let with_wal = |wal: &Path| {
        let mut args = args.clone();
        args.push(format!("--wal-dir={}", text(wal)));
        args
    };
    let mut member = Server::configured(dir.path(), "walled", client, with_wal(&wal), Vec::new());
    member.start();
    runtime().block_on(put(&member, "durable", "yes"));
    assert_eq!(member.terminate(), Some(0));
    assert!(wal.join("0000000000000001.log").exists(), "no log segment in the --wal-dir");
    assert!(!dir.path().join("walled.synod/member/log").exists());

    for (args, says) in [
        (args.clone(), "start with the --wal-dir this member used before"),
        (with_wal(&dir.path().join("elsewhere")), "start with the --wal-dir this member used before"),
    ] {
        let mut refused = Server::configured(dir.path(), "walled", client, args, Vec::new());
        assert_ne!(refused.start_expecting_exit(), Some(0));
        assert!(refused.log().contains(says), "{}", refused.log());
    }
    assert!(!dir.path().join("walled.synod/member/log").exists(), "a refused start made a log");

    args.push(format!("--wal-dir={}", text(&wal)));
    let mut member = Server::configured(dir.path(), "walled", client, args, Vec::new());
    member.start();
    assert_eq!(runtime().block_on(get(&member, "durable")).as_deref(), Some(&b"yes"[..]));
}

/// After a lost quorum, --force-new-cluster restarts the survivor as a one-member cluster
/// with all its data; it serves writes, a member added back catches up from it, and the
/// survivor restarted without the flag keeps the new membership.
#[test]
fn a_survivor_forces_a_new_cluster_and_members_are_added_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), 3, &[]);
    let runtime = runtime();
    runtime.block_on(put(&cluster.members[0], "before", "the loss"));
    for lost in [1, 2] {
        cluster.members[lost].kill();
        std::fs::remove_dir_all(&cluster.members[lost].data_dir).unwrap();
    }
    let survivor = &mut cluster.members[0];
    survivor.kill();
    survivor.args.push("--force-new-cluster".into());
    survivor.start();
    assert!(survivor.log().contains("forcing a new cluster"), "{}", survivor.log());
    let members = |server: &Server| {
        runtime.block_on(async {
            let mut client = ClusterClient::new(server.channel().await);
            let list =
                client.member_list(MemberListRequest { linearizable: true }).await.unwrap().into_inner();
            list.members.into_iter().map(|m| m.name).collect::<Vec<_>>()
        })
    };
    assert_eq!(members(survivor), ["m0"]);
    runtime.block_on(async {
        assert_eq!(get(survivor, "before").await.as_deref(), Some(&b"the loss"[..]));
        put(survivor, "after", "forcing").await;
    });

    // A member comes back as a learner, then is promoted once it has caught up (a voter
    // added to a one-member cluster directly would need to run before its addition commits).
    let (client, peer) = (free_port(), free_port());
    let peer_url = format!("http://127.0.0.1:{peer}");
    let added_id = runtime.block_on(async {
        let mut cluster_api = ClusterClient::new(survivor.channel().await);
        let add = MemberAddRequest { peer_ur_ls: vec![peer_url.clone()], is_learner: true };
        let added = cluster_api.member_add(add).await.expect("member add --learner").into_inner();
        assert_eq!(added.members.len(), 2);
        added.member.expect("the added member").id
    });
    let initial = format!("m0={},m3={peer_url}", survivor.peer_url());
    let mut added = Server::member(dir.path(), "m3", (client, peer), &initial, "existing", &[]);
    added.spawn();
    added.wait_serving(true);
    wait_for("the learner to be promoted", START_DEADLINE, || {
        runtime.block_on(async {
            let mut cluster_api = ClusterClient::new(survivor.channel().await);
            cluster_api.member_promote(MemberPromoteRequest { id: added_id }).await.ok()
        })
    });
    runtime.block_on(async {
        assert_eq!(get(&added, "before").await.as_deref(), Some(&b"the loss"[..]));
        assert_eq!(get(&added, "after").await.as_deref(), Some(&b"forcing"[..]));
    });

    let survivor = &mut cluster.members[0];
    survivor.kill();
    survivor.args.retain(|arg| arg != "--force-new-cluster");
    survivor.start();
    let mut names = members(survivor);
    names.sort();
    assert_eq!(names, ["m0", "m3"]);
}

/// SIGTERM under load drains the requests in flight: each put either answered OK, and is
/// there after a restart, or failed without being applied (it was refused before it was
/// taken in). A put cut off mid-way, applied but answered with an error, would show up as a
/// failed put whose key survives.
#[test]
fn sigterm_drains_requests_in_flight() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = Server::synod(dir.path());
    let pid = server.pid();
    let runtime = runtime();
    let (succeeded, failed) = runtime.block_on(async {
        let channel = server.channel().await;
        let answered = Arc::new(AtomicUsize::new(0));
        let signalled = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..8)
            .map(|worker| {
                let (channel, answered, signalled) = (channel.clone(), answered.clone(), signalled.clone());
                tokio::spawn(async move {
                    let mut kv = KvClient::new(channel);
                    let (mut ok, mut failed) = (Vec::new(), Vec::new());
                    for i in 0..10_000 {
                        let key = format!("drain/{worker}/{i}");
                        let put = PutRequest {
                            key: key.clone().into(),
                            value: b"v".to_vec(),
                            ..Default::default()
                        };
                        let outcome = tokio::time::timeout(Duration::from_secs(20), kv.put(put)).await;
                        match outcome {
                            Ok(Ok(_)) => ok.push(key),
                            _ => failed.push(key),
                        }
                        // The member is stopped once the load is well under way.
                        if answered.fetch_add(1, Ordering::Relaxed) == 400
                            && !signalled.swap(true, Ordering::Relaxed)
                        {
                            let sent = std::process::Command::new("kill")
                                .args(["-TERM", &pid.to_string()])
                                .status()
                                .expect("run kill");
                            assert!(sent.success());
                        }
                        if failed.len() >= 3 {
                            break;
                        }
                    }
                    (ok, failed)
                })
            })
            .collect();
        let (mut ok, mut failed) = (Vec::new(), Vec::new());
        for worker in workers {
            let (o, f) = worker.await.expect("a worker");
            ok.extend(o);
            failed.extend(f);
        }
        (ok, failed)
    });
    assert_eq!(server.wait_exit(Duration::from_secs(20)), Some(0), "a clean exit on SIGTERM");
    assert!(succeeded.len() > 400 && !failed.is_empty(), "{} ok, {} failed", succeeded.len(), failed.len());

    server.start();
    runtime.block_on(async {
        for key in &succeeded {
            assert!(get(&server, key).await.is_some(), "{key} was acknowledged and is lost");
        }
        for key in &failed {
            assert!(
                get(&server, key).await.is_none(),
                "{key} failed, yet was applied: it was cut off in flight"
            );
        }
    });
}

/// `--grpc-keepalive-interval` and `--grpc-keepalive-timeout` reach the client port: the
/// member pings an idle connection every interval and closes one that does not answer
/// within the timeout, while a connection that answers stays open.
#[test]
fn grpc_keepalive_flags_close_a_silent_connection() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().expect("temp dir");
    let server =
        Server::synod_with(dir.path(), &["--grpc-keepalive-interval=1s", "--grpc-keepalive-timeout=1s"]);

    /// A raw HTTP/2 connection that acknowledges the member's settings and, if `answers`,
    /// its pings; it reports each ping, and the end of the connection.
    fn connection(address: &str, answers: bool) -> std::sync::mpsc::Receiver<&'static str> {
        let mut stream = std::net::TcpStream::connect(address).expect("connect");
        stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").expect("preface");
        stream.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).expect("settings");
        let (events, received) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            loop {
                let mut header = [0u8; 9];
                if stream.read_exact(&mut header).is_err() {
                    let _ = events.send("closed");
                    return;
                }
                let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
                let mut payload = vec![0u8; length];
                if stream.read_exact(&mut payload).is_err() {
                    let _ = events.send("closed");
                    return;
                }
                let (kind, flags) = (header[3], header[4]);
                if kind == 4 && flags & 1 == 0 {
                    let _ = stream.write_all(&[0, 0, 0, 4, 1, 0, 0, 0, 0]);
                }
                if kind == 6 && flags & 1 == 0 {
                    let _ = events.send("ping");
                    if answers {
                        let mut ack = vec![0, 0, 8, 6, 1, 0, 0, 0, 0];
                        ack.extend_from_slice(&payload);
                        let _ = stream.write_all(&ack);
                    }
                }
            }
        });
        received
    }

    let address = server.address();
    let silent = connection(&address, false);
    let answering = connection(&address, true);
    let next = |events: &std::sync::mpsc::Receiver<&'static str>| {
        events.recv_timeout(Duration::from_secs(15)).expect("an event within 15 s")
    };
    assert_eq!(next(&silent), "ping", "the member pings an idle connection");
    assert_eq!(next(&silent), "closed", "and closes it when the ping goes unanswered");
    // The answering connection was pinged too, and is open after the silent one closed.
    assert_eq!(next(&answering), "ping");
    while let Ok(event) = answering.try_recv() {
        assert_eq!(event, "ping", "the answering connection stays open");
    }
}
