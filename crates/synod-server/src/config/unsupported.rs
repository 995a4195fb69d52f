//! etcd's server flags whose feature synod does not have, each with the reason.
//!
//! A flag here is accepted only with a value that asks for what synod does anyway (etcd's
//! default, nearly always), so that Debian's defaults and the command lines tools generate
//! (kubeadm's, charts') start unchanged. Any other value stops the start with the flag's
//! name and the reason, etcd's own sample configuration file included where it turns a
//! feature on (`enable-v2: true`, `enable-pprof: true`, `strict-reconfig-check: false`): a
//! setting that is accepted and then ignored is how a cluster comes up other than its
//! operator meant.

use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches, Command};

/// The value of an unsupported flag that changes nothing.
#[derive(Clone, Copy, Debug)]
pub enum Harmless {
    /// A boolean flag (Go's `--flag`, `--flag=true`, `--flag=false`) at this value.
    Bool(bool),
    /// Any of these texts; the empty text is a flag given nothing.
    Text(&'static [&'static str]),
    /// A Go duration equal to this one.
    Duration(Duration),
    /// A whole number equal to this one.
    Number(i64),
}

/// One flag etcd takes that synod does not implement.
pub struct Unsupported {
    pub flag: &'static str,
    pub harmless: Harmless,
    pub reason: &'static str,
}

const fn entry(flag: &'static str, harmless: Harmless, reason: &'static str) -> Unsupported {
    Unsupported { flag, harmless, reason }
}

const EMPTY: Harmless = Harmless::Text(&[""]);
const NO_DISCOVERY: &str = "bootstrap by a discovery service or DNS SRV records is not supported; \
                            list the members in --initial-cluster";
const NO_V2: &str = "the v2 API is not served (etcd 3.6 removed it too); synod serves the v3 API";
const NO_PROXY: &str = "synod has no v2 proxy mode; run a member, or point clients at the members";
const NO_BBOLT: &str = "synod's state is not in bbolt; it is checkpointed every ~100 ms on its own";

/// Every unsupported flag of etcd 3.4 and 3.5, in `etcd --help` order.
pub const UNSUPPORTED: &[Unsupported] = &[
    entry(
        "initial-election-tick-advance",
        Harmless::Bool(false),
        "a starting member waits out a whole election timeout before it campaigns; it does not \
         fast-forward its election ticks",
    ),
    entry(
        "max-snapshots",
        Harmless::Number(5),
        "synod keeps one snapshot file per member and purges its log itself (--snapshot-count)",
    ),
    entry(
        "max-wals",
        Harmless::Number(5),
        "synod's log is one file, purged behind snapshots (--snapshot-count)",
    ),
    entry("backend-batch-interval", Harmless::Duration(Duration::ZERO), NO_BBOLT),
    entry("backend-batch-limit", Harmless::Number(0), NO_BBOLT),
    entry(
        "grpc-keepalive-min-time",
        Harmless::Duration(Duration::from_secs(5)),
        "synod's HTTP/2 server answers every client ping; it cannot enforce another minimum ping interval",
    ),
    entry("discovery", EMPTY, NO_DISCOVERY),
    entry("discovery-fallback", Harmless::Text(&["proxy", "exit"]), NO_DISCOVERY),
    entry("discovery-proxy", EMPTY, NO_DISCOVERY),
    entry("discovery-srv", EMPTY, NO_DISCOVERY),
    entry("discovery-srv-name", EMPTY, NO_DISCOVERY),
    entry(
        "strict-reconfig-check",
        Harmless::Bool(true),
        "synod always refuses membership changes that could lose quorum, as etcd's strict check does",
    ),
    entry("pre-vote", Harmless::Bool(true), "synod always runs a pre-vote before an election"),
    entry("enable-v2", Harmless::Bool(false), NO_V2),
    entry("experimental-enable-v2v3", EMPTY, NO_V2),
    entry(
        "v2-deprecation",
        Harmless::Text(&["", "not-yet", "write-only", "write-only-drop-data", "gone"]),
        NO_V2,
    ),
    entry(
        "enable-grpc-gateway",
        Harmless::Bool(true),
        "the JSON gateway is always served on the client URLs, beside gRPC",
    ),
    entry(
        "listen-client-http-urls",
        EMPTY,
        "every client URL serves gRPC and HTTP together; there are no HTTP-only client URLs",
    ),
    entry("client-crl-file", EMPTY, "certificate revocation lists are not checked"),
    entry("peer-crl-file", EMPTY, "certificate revocation lists are not checked"),
    entry(
        "client-cert-allowed-hostname",
        EMPTY,
        "client certificates are not matched against host names; use auth and certificate common names",
    ),
    entry(
        "peer-cert-allowed-hostname",
        EMPTY,
        "peer certificates are not matched against host names; use --peer-cert-allowed-cn",
    ),
    entry(
        "auto-tls",
        Harmless::Bool(false),
        "self-signed certificates are not generated; pass --cert-file and --key-file",
    ),
    entry(
        "peer-auto-tls",
        Harmless::Bool(false),
        "self-signed certificates are not generated; pass --peer-cert-file and --peer-key-file",
    ),
    entry(
        "self-signed-cert-validity",
        Harmless::Number(1),
        "self-signed certificates are not generated (no --auto-tls)",
    ),
    entry(
        "cipher-suites",
        EMPTY,
        "synod uses rustls' default cipher suites: TLS 1.2 and 1.3 with AEAD ciphers only",
    ),
    entry("tls-min-version", Harmless::Text(&["", "TLS1.2"]), "synod speaks TLS 1.2 and 1.3"),
    entry("tls-max-version", Harmless::Text(&["", "TLS1.3"]), "synod speaks TLS 1.2 and 1.3"),
    entry("cors", Harmless::Text(&["", "*"]), "the JSON gateway sets no CORS headers"),
    entry("host-whitelist", Harmless::Text(&["", "*"]), "HTTP Host headers are not filtered"),
    entry(
        "bcrypt-cost",
        Harmless::Number(10),
        "passwords are hashed with Argon2id at a fixed cost, not with bcrypt",
    ),
    entry("enable-pprof", Harmless::Bool(false), "synod is not a Go program; profile it with perf"),
    entry("proxy", Harmless::Text(&["", "off"]), NO_PROXY),
    entry("proxy-failure-wait", Harmless::Number(5000), NO_PROXY),
    entry("proxy-refresh-interval", Harmless::Number(30000), NO_PROXY),
    entry("proxy-dial-timeout", Harmless::Number(1000), NO_PROXY),
    entry("proxy-write-timeout", Harmless::Number(5000), NO_PROXY),
    entry("proxy-read-timeout", Harmless::Number(0), NO_PROXY),
    entry(
        "experimental-corrupt-check-time",
        Harmless::Duration(Duration::ZERO),
        "periodic corruption checks do not run; --experimental-initial-corrupt-check does, at start",
    ),
    entry(
        "experimental-enable-lease-checkpoint",
        Harmless::Bool(true),
        "synod always checkpoints leases; tune it with --experimental-lease-checkpoint-interval",
    ),
    entry(
        "experimental-enable-lease-checkpoint-persist",
        Harmless::Bool(true),
        "synod's lease checkpoints always go through the log",
    ),
    entry("experimental-backend-bbolt-freelist-type", Harmless::Text(&["", "map"]), NO_BBOLT),
    entry(
        "experimental-compaction-batch-limit",
        Harmless::Number(1000),
        "a compaction is one entry in the log and is applied at once",
    ),
    entry(
        "experimental-compaction-sleep-interval",
        Harmless::Duration(Duration::from_millis(10)),
        "a compaction is one entry in the log and is applied at once",
    ),
    entry(
        "experimental-peer-skip-client-san-verification",
        Harmless::Bool(false),
        "peers' certificates are always verified in full",
    ),
    entry(
        "experimental-warning-apply-duration",
        Harmless::Duration(Duration::from_millis(100)),
        "slow applies are not logged; etcd_disk_backend_commit_duration_seconds shows them",
    ),
    entry(
        "experimental-enable-distributed-tracing",
        Harmless::Bool(false),
        "OpenTelemetry tracing is not built in",
    ),
    entry("experimental-memory-mlock", Harmless::Bool(false), "memory is not locked"),
    entry(
        "experimental-txn-mode-write-with-shared-buffer",
        Harmless::Bool(true),
        "synod's read-write txns always read the state they write",
    ),
    entry("experimental-bootstrap-defrag-threshold-megabytes", Harmless::Number(0), NO_BBOLT),
    entry(
        "experimental-max-learners",
        Harmless::Number(1),
        "a cluster has at most one learner at a time, as etcd's default",
    ),
    entry(
        "experimental-stop-grpc-service-on-defrag",
        Harmless::Bool(false),
        "defragmentation does not stop serving",
    ),
    entry("unsafe-no-fsync", Harmless::Bool(false), "synod always fsyncs its log before it answers"),
    entry("debug", Harmless::Bool(false), "use --log-level=debug"),
    entry("log-package-levels", EMPTY, "use --log-level; levels per package are not offered"),
    entry(
        "enable-log-rotation",
        Harmless::Bool(false),
        "log files are not rotated; use logrotate with copytruncate",
    ),
    entry("log-rotation-config-json", Harmless::Text(&[""]), "log files are not rotated"),
    entry("socket-reuse-port", Harmless::Bool(false), "listening sockets are not shared"),
    entry("socket-reuse-address", Harmless::Bool(false), "listening sockets are not shared"),
];

/// The help heading the unsupported flags are listed under.
const HEADING: &str = "etcd flags synod accepts only at their default (any other value is refused)";

/// `command` with every unsupported flag added, so that clap parses them in etcd's forms.
pub fn add_to(mut command: Command) -> Command {
    for unsupported in UNSUPPORTED {
        let arg = Arg::new(unsupported.flag)
            .long(unsupported.flag)
            .help(unsupported.reason)
            .help_heading(HEADING)
            .action(ArgAction::Set);
        let arg = match unsupported.harmless {
            // Go's boolean flags: `--flag` alone is true, and a value needs `=`.
            Harmless::Bool(_) => {
                arg.num_args(0..=1).require_equals(true).default_missing_value("true").value_name("BOOL")
            }
            _ => arg.value_name("VALUE").allow_hyphen_values(true),
        };
        command = command.arg(arg);
    }
    command
}

/// Refuses the first unsupported flag whose value asks for something synod does not do.
pub fn check(matches: &ArgMatches) -> Result<(), String> {
    for unsupported in UNSUPPORTED {
        let Some(value) = matches.get_one::<String>(unsupported.flag) else {
            continue;
        };
        if !harmless(unsupported.harmless, value.trim())? {
            return Err(format!("--{}={value}: {}", unsupported.flag, unsupported.reason));
        }
    }
    Ok(())
}

fn harmless(harmless: Harmless, value: &str) -> Result<bool, String> {
    Ok(match harmless {
        Harmless::Bool(expected) => synod_base::go_fmt::parse_bool(value)? == expected,
        Harmless::Text(texts) => texts.contains(&value),
        Harmless::Duration(expected) => {
            value.is_empty() || synod_base::go_fmt::parse_duration(value).is_ok_and(|d| d == expected)
        }
        Harmless::Number(expected) => value.is_empty() || value.parse::<i64>().is_ok_and(|n| n == expected),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_args(args: &[&str]) -> Result<(), String> {
        let command = add_to(Command::new("synod"));
        let matches = command.try_get_matches_from(std::iter::once("synod").chain(args.iter().copied()));
        check(&matches.map_err(|e| e.to_string())?)
    }

    /// etcd's defaults pass in every form Go's flags take; anything else names the flag and why.
    #[test]
    fn only_harmless_values_pass() {
        check_args(&["--enable-v2=false", "--pre-vote", "--max-wals", "5", "--proxy=off"]).unwrap();
        check_args(&["--grpc-keepalive-min-time=5000ms", "--cors=*", "--debug=0"]).unwrap();
        let err = check_args(&["--enable-v2"]).unwrap_err();
        assert!(err.starts_with("--enable-v2=true: the v2 API is not served"), "{err}");
        let err = check_args(&["--discovery", "https://discovery.etcd.io/x"]).unwrap_err();
        assert!(err.contains("--initial-cluster"), "{err}");
        let err = check_args(&["--grpc-keepalive-min-time=1s"]).unwrap_err();
        assert!(err.starts_with("--grpc-keepalive-min-time=1s"), "{err}");
        let err = check_args(&["--auto-tls=true"]).unwrap_err();
        assert!(err.contains("--cert-file"), "{err}");
        assert!(check_args(&["--pre-vote=maybe"]).unwrap_err().contains("ParseBool"));
    }

    /// Every entry's own harmless value passes, so etcd's defaults never stop a start.
    #[test]
    fn every_default_passes() {
        for unsupported in UNSUPPORTED {
            let value = match unsupported.harmless {
                Harmless::Bool(b) => b.to_string(),
                Harmless::Text(texts) => texts[0].to_string(),
                Harmless::Duration(d) => format!("{}ms", d.as_millis()),
                Harmless::Number(n) => n.to_string(),
            };
            check_args(&[&format!("--{}={value}", unsupported.flag)])
                .unwrap_or_else(|e| panic!("{}: {e}", unsupported.flag));
        }
    }
}
