//! synod-chaos end to end: a real three-member cluster of `target/debug/synod` under every
//! fault keeps its history (registers, the native counter, a fencing lock) linearizable, and the same run with the negative control
//! (`--unsafe-local-reads`, stale reads on purpose) is caught.
//!
//! These runs need root and nftables. Without them the tests say why and pass, unless
//! `SYNOD_REQUIRE_INTEROP=1` (CI) makes that a failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long the clients run under faults in each test.
const RUN_DURATION: &str = "30s";
/// How long a whole run may take: start, faults, recovery, check and teardown.
const RUN_DEADLINE: Duration = Duration::from_secs(300);

/// The two runs share the test network's names; the binary's lock would serialize them
/// too, but then one test's deadline would include the other's run.
static SERIAL: Mutex<()> = Mutex::new(());

/// A cluster under kill, pause, partitions (majority/minority, one-way, bridge) and delay
/// answers its clients linearizably, and its members end with equal hashes.
#[test]
fn history_under_all_faults_is_linearizable() {
    let _serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let Some(synod) = prerequisites() else { return };
    let out = tempfile::tempdir().expect("create a temporary directory");
    let run = chaos(&synod, out.path(), &[]);
    assert_eq!(run.code, Some(0), "expected no violation\n{}", run.output);
    assert!(run.output.contains("no violation found"), "{}", run.output);
    assert!(!out.path().join("report.html").exists(), "a clean run wrote report.html\n{}", run.output);
    let history = std::fs::read_to_string(out.path().join("history.jsonl")).expect("read history.jsonl");
    assert!(history.lines().count() > 100, "too few calls were recorded\n{}", run.output);
    // The counter and the lock were exercised too, and answered.
    for answered in
        ["\"reply\":\"add\"", "\"reply\":\"read_counter\"", "\"reply\":\"acquire\"", "\"released\":true"]
    {
        assert!(history.contains(answered), "no call answered with {answered}\n{}", run.output);
    }
    let faults = std::fs::read_to_string(out.path().join("faults.log")).expect("read faults.log");
    let healed = ["heal", "restart", "resume", "delays removed"];
    assert!(
        faults.lines().any(|line| healed.iter().any(|step| line.contains(step))),
        "no fault was injected and healed\n{}",
        run.output
    );
}

/// With `--unsafe-local-reads` members answer linearizable reads from local state, so a
/// lagging or cut-off member returns values already overwritten: the run must say so.
#[test]
fn negative_control_stale_reads_are_caught() {
    let _serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let Some(synod) = prerequisites() else { return };
    let out = tempfile::tempdir().expect("create a temporary directory");
    let run = chaos(&synod, out.path(), &["--unsafe-local-reads"]);
    assert_eq!(run.code, Some(1), "expected the stale reads to be reported as a violation\n{}", run.output);
    assert!(run.output.contains("VIOLATION"), "{}", run.output);
    assert!(out.path().join("report.html").exists(), "no report.html for the violation\n{}", run.output);
}

struct Run {
    code: Option<i32>,
    /// stdout and stderr, for the failure messages.
    output: String,
}

/// Runs synod-chaos against `synod` with its output in `out`, within [`RUN_DEADLINE`].
fn chaos(synod: &Path, out: &Path, extra: &[&str]) -> Run {
    let seed = std::env::var("SYNOD_SEED").unwrap_or_else(|_| "20261126".to_string());
    let log_path = out.join("synod-chaos.out");
    let log = std::fs::File::create(&log_path).expect("create the output file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_synod-chaos"))
        .args(["--members", "3", "--duration", RUN_DURATION, "--faults", "all", "--seed", &seed])
        .arg("--out")
        .arg(out)
        .arg("--synod")
        .arg(synod)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("duplicate the output file"))
        .stderr(log)
        .spawn()
        .expect("start synod-chaos");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll synod-chaos") {
            break Some(status);
        }
        if started.elapsed() > RUN_DEADLINE {
            // SIGTERM lets the harness tear its network down before it exits.
            // SAFETY: kill has no memory-safety preconditions; the child is not reaped yet.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = std::fs::read_to_string(&log_path).unwrap_or_default();
    let Some(status) = status else {
        panic!("synod-chaos did not finish within {RUN_DEADLINE:?}\n{output}");
    };
    println!("{output}");
    Run { code: status.code(), output }
}

/// The synod binary, if this machine can run the chaos tests; otherwise says why and
/// returns None, or fails when `SYNOD_REQUIRE_INTEROP=1`.
fn prerequisites() -> Option<PathBuf> {
    let required = std::env::var_os("SYNOD_REQUIRE_INTEROP").is_some_and(|v| v == "1");
    let skip = |why: String| {
        assert!(!required, "SYNOD_REQUIRE_INTEROP=1 but {why}");
        eprintln!("skipping: {why} (set SYNOD_REQUIRE_INTEROP=1 to make this a failure)");
        None
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return skip("the chaos tests need root (network namespaces, nftables)".to_string());
    }
    let nft = Command::new("nft").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status();
    if !nft.is_ok_and(|status| status.success()) {
        return skip("`nft` is missing (apt-get install nftables)".to_string());
    }
    // This test runs from target/<profile>/deps; `cargo test --workspace` builds synod
    // into target/<profile>.
    let exe = std::env::current_exe().expect("find the test executable");
    let synod = exe.parent().and_then(Path::parent).map(|dir| dir.join("synod"));
    match synod {
        Some(synod) if synod.is_file() => Some(synod),
        _ => skip(format!(
            "no synod binary next to {} (build it with cargo build -p synod-server --bin synod)",
            exe.display()
        )),
    }
}
