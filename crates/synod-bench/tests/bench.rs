//! synod-bench as a user runs it: every workload against a real synod member, and `compare`
//! against real synod and etcd clusters (Debian's etcd-server), which must leave no process
//! behind, also when interrupted.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const SYNOD_BENCH: &str = env!("CARGO_BIN_EXE_synod-bench");
const DEADLINE: Duration = Duration::from_secs(120);

/// `cargo test --workspace` builds synod next to synod-bench.
fn synod_binary() -> PathBuf {
    let synod = PathBuf::from(SYNOD_BENCH).with_file_name("synod");
    assert!(synod.is_file(), "{} is missing; run the tests with `cargo test --workspace`", synod.display());
    synod
}

/// Whether etcd is on PATH for `compare`. Without it the test is skipped, unless
/// `SYNOD_REQUIRE_INTEROP=1` (CI), when its absence is a failure.
fn etcd_available() -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join("etcd").is_file()));
    if !found {
        let required = std::env::var_os("SYNOD_REQUIRE_INTEROP").is_some_and(|v| v == "1");
        assert!(!required, "SYNOD_REQUIRE_INTEROP=1 but `etcd` is not on PATH (apt-get install etcd-server)");
        eprintln!("skipping: `etcd` is not on PATH (set SYNOD_REQUIRE_INTEROP=1 to make this a failure)");
    }
    found
}

/// Two distinct free ports: both are bound at once, then released.
fn free_ports() -> (u16, u16) {
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let b = TcpListener::bind("127.0.0.1:0").unwrap();
    (a.local_addr().unwrap().port(), b.local_addr().unwrap().port())
}

/// The tests run one at a time: each starts clusters and loads them, and two at once on a
/// small machine would time each other out.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One synod member on loopback, killed when dropped.
struct Member {
    child: Child,
    endpoint: String,
    _dir: tempfile::TempDir,
}

impl Member {
    fn start() -> Member {
        let dir = tempfile::tempdir().unwrap();
        let (client, peer) = free_ports();
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new(synod_binary())
            .args(["--name", "m0", "--data-dir"])
            .arg(dir.path().join("m0"))
            .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("m0={peer_url}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let member = Member { child, endpoint: client_url, _dir: dir };
        let deadline = Instant::now() + DEADLINE;
        // A put through the bench itself tells when the member serves.
        while !bench(&["put", "--endpoints", &member.endpoint, "--total", "1", "--no-progress"])
            .status
            .success()
        {
            assert!(Instant::now() < deadline, "synod did not start serving");
            std::thread::sleep(Duration::from_millis(100));
        }
        member
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bench(args: &[&str]) -> std::process::Output {
    let mut command = Command::new(SYNOD_BENCH);
    command.args(args);
    output_within(command, DEADLINE)
}

/// Runs `command` to its end and returns what it printed, killing it (and failing) if it
/// runs past `deadline`.
fn output_within(mut command: Command, deadline: Duration) -> std::process::Output {
    let (stdout, stderr) = (tempfile::tempfile().unwrap(), tempfile::tempfile().unwrap());
    let mut child =
        command.stdout(stdout.try_clone().unwrap()).stderr(stderr.try_clone().unwrap()).spawn().unwrap();
    let until = Instant::now() + deadline;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} ran past {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |mut file: std::fs::File| {
        use std::io::{Read as _, Seek as _};
        let mut bytes = Vec::new();
        file.rewind().unwrap();
        file.read_to_end(&mut bytes).unwrap();
        bytes
    };
    std::process::Output { status, stdout: read(stdout), stderr: read(stderr) }
}

/// Runs one workload for `total` requests and returns its JSON report.
fn run_workload(member: &Member, args: &[&str], total: u64) -> Value {
    let json = tempfile::NamedTempFile::new().unwrap();
    let total = total.to_string();
    let mut all = args.to_vec();
    all.extend([
        "--endpoints",
        member.endpoint.as_str(),
        "--clients",
        "8",
        "--conns",
        "2",
        "--total",
        &total,
        "--key-space",
        "50",
        "--no-progress",
        "--json",
        json.path().to_str().unwrap(),
    ]);
    let output = bench(&all);
    assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("| workload |"), "{args:?} printed no table: {stdout}");
    serde_json::from_str(&std::fs::read_to_string(json.path()).unwrap()).unwrap()
}

/// Every workload completes its requests without errors, and its report says so; the
/// counter's increments all land (the bench checks the counter's final value).
#[test]
fn every_workload_runs_against_synod() {
    let _serial = serial();
    let member = Member::start();
    for args in [
        &["put"][..],
        &["get", "--preload"],
        &["get", "--consistency", "s"],
        &["txn-put", "--txn-puts", "3"],
        &["mixed", "--read-percent", "50"],
        &["lease-grant"],
        &["lease-keepalive"],
        &["counter"],
        &["counter", "--method", "native"],
    ] {
        let report = run_workload(&member, args, 200);
        assert_eq!(report["ops"], 200, "{args:?}: {report}");
        assert_eq!(report["errors"], 0, "{args:?}: {report}");
        let latency = &report["latency_us"];
        let (p50, p99, max) = (
            latency["p50"].as_u64().unwrap(),
            latency["p99"].as_u64().unwrap(),
            latency["max"].as_u64().unwrap(),
        );
        assert!(1 <= p50 && p50 <= p99 && p99 <= max, "{args:?}: {report}");
        // Throughput is the successful requests over the run's time.
        let (seconds, throughput) =
            (report["seconds"].as_f64().unwrap(), report["throughput"].as_f64().unwrap());
        assert!(seconds > 0.0 && (throughput * seconds - 200.0).abs() < 1.0, "{args:?}: {report}");
    }
    let counter = run_workload(&member, &["counter"], 100);
    let check = counter["extra"]["check"].as_str().unwrap();
    // The first run left 200 on the counter.
    assert_eq!(check, "passed: 100 increments, counter 200 -> 300", "{counter}");

    // Watch latency: 8 watchers each see every one of 50 puts.
    let watch = run_workload(&member, &["watch-latency", "--rate", "500"], 50);
    assert_eq!(watch["ops"], 400, "{watch}");
    assert_eq!(watch["extra"]["events_missing"], 0, "{watch}");

    let native = run_workload(&member, &["counter", "--method", "native"], 100);
    let check = native["extra"]["check"].as_str().unwrap();
    assert_eq!(check, "passed: 100 increments, counter 200 -> 300", "{native}");

    // A run whose requests fail says so in its exit status: the server refuses puts larger
    // than its request limit (1.5 MiB).
    let refused = bench(&["put", "--val-size", "2000000", "--endpoints", &member.endpoint, "--total", "2"]);
    assert!(!refused.status.success(), "{}", String::from_utf8_lossy(&refused.stdout));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("2 requests failed"), "{refused:?}");
}

/// Processes whose command line mentions `dir`, other than synod-bench itself.
fn processes_under(dir: &Path) -> Vec<String> {
    let needle = dir.to_str().unwrap();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) && !cmdline.starts_with(SYNOD_BENCH) {
                found.push(cmdline);
            }
        }
    }
    found
}

/// Directories `compare` made for the clusters under `out`, found anywhere below it.
fn cluster_dirs(out: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![out.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                if path.file_name().unwrap().to_string_lossy().starts_with("synod-bench-") {
                    found.push(path.clone());
                }
                stack.push(path);
            }
        }
    }
    found
}

/// `compare` runs every chosen workload against both clusters, reports both raw results
/// and their ratio, writes plots and the documentation part, and leaves no process or
/// cluster directory behind.
#[test]
fn compare_reports_both_systems_and_cleans_up() {
    if !etcd_available() {
        return;
    }
    let _serial = serial();
    let out = tempfile::tempdir().unwrap();
    let docs = out.path().join("benchmarks.md");
    std::fs::write(
        &docs,
        "# Benchmarks\n\nbefore\n<!-- synod-bench compare: begin (generated; do not edit by hand) -->\nold\n<!-- synod-bench compare: end -->\nafter\n",
    )
    .unwrap();
    let synod = synod_binary();
    let mut command = Command::new(SYNOD_BENCH);
    command
        .args(["compare", "--duration", "1s", "--load-keys", "300", "--no-progress"])
        .args(["--only", "put,get-linearizable,watch-latency,counter-cas,counter-32,datascale"])
        .args(["--datascale-keys", "300"])
        .arg("--out")
        .arg(out.path())
        .arg("--synod")
        .arg(&synod)
        .arg("--write-docs")
        .arg(&docs);
    let output = output_within(command, Duration::from_secs(300));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    let run = std::fs::read_dir(out.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("compare-"))
        .expect("a run directory");
    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("results.json")).unwrap()).unwrap();
    let rows = results["rows"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["put", "get-linearizable", "watch-latency", "counter-cas", "counter-32"]);
    for row in rows {
        for system in ["synod", "etcd"] {
            let report = &row[system];
            assert!(report["ops"].as_u64().unwrap() > 0, "{system} {row}");
            assert_eq!(report["errors"], 0, "{system} {row}");
        }
    }
    assert!(results["etcd_version"].as_str().unwrap().contains("etcd"), "{results}");
    for system in ["synod_bytes", "etcd_bytes"] {
        let bytes = results["memory"][system].as_array().unwrap();
        assert_eq!(bytes.len(), 3, "{results}");
        assert!(bytes.iter().all(|b| b.as_u64().unwrap() > 1 << 20), "{results}");
    }
    for row in rows {
        for system in ["synod_cpu_seconds", "etcd_cpu_seconds"] {
            assert!(row[system].as_f64().unwrap() > 0.0, "{system} {row}");
        }
    }
    let datascale = &results["datascale"];
    for system in ["synod", "etcd"] {
        let scale = &datascale[system];
        for seconds in
            ["load_seconds", "restart_to_serving_seconds", "catch_up_seconds", "compaction_seconds"]
        {
            assert!(scale[seconds].as_f64().unwrap() > 0.0, "{system} {seconds}: {datascale}");
        }
        assert_eq!(scale["defrag_seconds"].as_array().unwrap().len(), 3, "{datascale}");
        assert!(scale["trickle_puts"].as_u64().unwrap() > 0, "{datascale}");
        assert_eq!(scale["trickle_errors"], 0, "{system}: {datascale}");
        assert!(scale["caught_up_disk_bytes"].as_u64().unwrap() > 0, "{datascale}");
    }
    for plot in ["throughput.svg", "latency-put.svg", "latency-counter-cas.svg"] {
        let svg = std::fs::read_to_string(run.join(plot)).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("synod"), "{plot}");
    }
    let markdown = std::fs::read_to_string(run.join("results.md")).unwrap();
    assert!(markdown.contains("| put | 100 clients, 10 conns |"), "{markdown}");
    assert!(
        markdown.contains("| counter-32 | 32 clients, 10 conns; synod counter-native, etcd counter-cas |"),
        "{markdown}"
    );
    assert!(markdown.contains("Resident memory per member after loading 300 keys"), "{markdown}");
    assert!(markdown.contains("CPU time per request"), "{markdown}");
    assert!(markdown.contains("Datascale: 300 keys of 1024-byte values"), "{markdown}");

    let docs = std::fs::read_to_string(&docs).unwrap();
    assert!(
        docs.starts_with("# Benchmarks\n\nbefore\n")
            && docs.ends_with("<!-- synod-bench compare: end -->\nafter\n")
    );
    assert!(!docs.contains("\nold\n") && docs.contains("| counter-cas |"), "{docs}");
    assert!(out.path().join("benchmarks/throughput.svg").is_file());

    assert_eq!(processes_under(out.path()), Vec::<String>::new(), "members left running");
    assert_eq!(cluster_dirs(out.path()), Vec::<PathBuf>::new(), "cluster directories left behind");
}

/// Interrupted while its clusters run, `compare` stops every member and removes their
/// directories before it exits.
#[test]
fn an_interrupted_compare_stops_every_member() {
    if !etcd_available() {
        return;
    }
    let _serial = serial();
    let out = tempfile::tempdir().unwrap();
    let mut child = Command::new(SYNOD_BENCH)
        .args(["compare", "--duration", "60s", "--load-keys", "0", "--only", "put", "--no-progress"])
        .arg("--out")
        .arg(out.path())
        .arg("--synod")
        .arg(synod_binary())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + DEADLINE;
    // Wait until all six members run.
    while processes_under(out.path()).len() < 6 {
        assert!(Instant::now() < deadline, "the clusters did not start");
        assert!(child.try_wait().unwrap().is_none(), "compare exited early");
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + DEADLINE;
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "compare did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!exit.success(), "an interrupted run must not report success");
    assert_eq!(processes_under(out.path()), Vec::<String>::new(), "members left running");
    assert_eq!(cluster_dirs(out.path()), Vec::<PathBuf>::new(), "cluster directories left behind");
}
