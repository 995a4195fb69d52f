//! The command line: etcd's server flags, with etcd's names, defaults and checks.
//!
//! Flags that people and tools pass to etcd work the same way here. A flag synod does not
//! know is an error that names it (clap exits with status 2); so is a malformed URL, and so
//! is a flag whose feature synod does not have yet: nothing is silently ignored.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser};

use crate::compactor::Retention;
use crate::tls::TlsFiles;
use synod_base::limits;

/// A URL from a `--*-urls` or `--initial-cluster` flag: `http://host:port` or
/// `https://host:port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    pub host: String,
    pub port: u16,
    /// `https`: the port speaks TLS.
    pub tls: bool,
}

impl Url {
    /// Parses an etcd-style URL; unix sockets are refused with a message that says so.
    pub fn parse(text: &str) -> Result<Url, String> {
        let uri: http::Uri = text.parse().map_err(|e| format!("malformed URL {text:?}: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(other) => return Err(format!("URL {text:?} has scheme {other:?}; expected http or https")),
            None => return Err(format!("URL {text:?} has no scheme; expected http://host:port")),
        };
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!("URL {text:?} must not have a path or query"));
        }
        let authority = uri.authority().ok_or_else(|| format!("URL {text:?} has no host"))?;
        let port = authority
            .port_u16()
            .ok_or_else(|| format!("URL {text:?} has no port; expected http://host:port"))?;
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_string();
        if host.is_empty() {
            return Err(format!("URL {text:?} has no host"));
        }
        Ok(Url { host, port, tls })
    }

    /// The address to bind: `localhost` means the IPv4 loopback, as it does for etcd.
    pub fn bind_addr(&self) -> String {
        match self.host.as_str() {
            "localhost" => format!("127.0.0.1:{}", self.port),
            host if host.contains(':') => format!("[{host}]:{}", self.port),
            host => format!("{host}:{}", self.port),
        }
    }
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

fn url(text: &str) -> Result<Url, String> {
    Url::parse(text.trim())
}

/// Parses a Go duration as etcd's flags take them (`10m`, `1h30m`, `1.5s`).
fn go_duration(text: &str) -> Result<Duration, String> {
    synod_base::go_fmt::parse_duration(text.trim())
}

/// etcd's reading of `--auto-compaction-retention`: in periodic mode a duration, or a
/// whole number of hours; in revision mode a number of revisions. 0 turns it off.
fn auto_compaction(mode: AutoCompactionMode, retention: &str) -> Result<Option<Retention>, String> {
    let retention = retention.trim();
    let bad = |what: &str| format!("--auto-compaction-retention={retention:?} is not {what}");
    let retention = match mode {
        AutoCompactionMode::Periodic => match retention.parse::<u64>() {
            Ok(hours) => Retention::Period(Duration::from_secs(hours.saturating_mul(3600))),
            Err(_) => {
                Retention::Period(go_duration(retention).map_err(|_| bad("a duration (1h, 30m) or hours"))?)
            }
        },
        AutoCompactionMode::Revision => Retention::Revisions(
            retention.parse::<i64>().ok().filter(|r| *r >= 0).ok_or_else(|| bad("a number of revisions"))?,
        ),
    };
    Ok(match retention {
        Retention::Period(period) if period.is_zero() => None,
        Retention::Revisions(0) => None,
        Retention::Period(period) if period < Duration::from_secs(1) => {
            return Err(format!("--auto-compaction-retention={period:?} is shorter than a second"));
        }
        retention => Some(retention),
    })
}

/// Parses a size in bytes; etcd takes plain integers.
fn bytes(text: &str) -> Result<i64, String> {
    text.parse::<i64>().map_err(|_| format!("{text:?} is not a number of bytes"))
}

/// The longest `--auth-token-ttl`: a week. A stolen token should not outlive that.
const AUTH_TOKEN_TTL_MAX_SECS: u64 = 7 * 24 * 3600;

/// Parses a boolean flag value as Go's `strconv.ParseBool` does.
fn go_bool(text: &str) -> Result<bool, String> {
    synod_base::go_fmt::parse_bool(text.trim())
}

/// `--auth-token`: etcd's `simple`, or `jwt,...`, which synod does not offer.
fn auth_token_kind(text: &str) -> Result<String, String> {
    match text.split(',').next().unwrap_or_default() {
        "simple" => Ok(text.to_string()),
        "jwt" => Err("--auth-token=jwt is not supported: synod issues simple tokens".into()),
        other => Err(format!("unknown token type {other:?}; expected simple")),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ClusterState {
    New,
    Existing,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AutoCompactionMode {
    Periodic,
    Revision,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
    Panic,
    Fatal,
}

/// synod: a strongly consistent key-value and coordination store that speaks etcd's v3 API.
///
/// With no flags it serves clients on http://localhost:2379 and peers on
/// http://localhost:2380 and keeps its data in ./default.synod, as etcd does.
#[derive(Debug, Parser)]
#[command(name = "synod", version, max_term_width = 100)]
pub struct Flags {
    /// Human-readable name for this member.
    #[arg(long, default_value = "default", value_name = "NAME")]
    pub name: String,

    /// Path to the data directory [default: <name>.synod].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// URLs to listen on for client traffic (gRPC and the JSON API share each port).
    #[arg(long, default_value = "http://localhost:2379", value_parser = url, value_delimiter = ',', value_name = "URLS")]
    pub listen_client_urls: Vec<Url>,

    /// This member's client URLs to advertise to the cluster and to clients.
    #[arg(long, default_value = "http://localhost:2379", value_parser = url, value_delimiter = ',', value_name = "URLS")]
    pub advertise_client_urls: Vec<Url>,

    /// URLs to listen on for peer traffic.
    #[arg(long, default_value = "http://localhost:2380", value_parser = url, value_delimiter = ',', value_name = "URLS")]
    pub listen_peer_urls: Vec<Url>,

    /// This member's peer URLs to advertise to the rest of the cluster.
    #[arg(long, default_value = "http://localhost:2380", value_parser = url, value_delimiter = ',', value_name = "URLS")]
    pub initial_advertise_peer_urls: Vec<Url>,

    /// Initial cluster configuration for bootstrapping, as name=peerURL pairs separated by
    /// commas [default: <name>=<initial-advertise-peer-urls>].
    #[arg(long, value_name = "NAME=URL,...")]
    pub initial_cluster: Option<String>,

    /// Whether this member starts a new cluster or joins an existing one.
    #[arg(long, value_enum, default_value = "new", value_name = "STATE")]
    pub initial_cluster_state: ClusterState,

    /// Token that keeps clusters bootstrapped from the same flags apart (it feeds the ids).
    #[arg(long, default_value = "etcd-cluster", value_name = "TOKEN")]
    pub initial_cluster_token: String,

    /// Path to the client server TLS certificate file (PEM; the chain, leaf first).
    #[arg(long, value_name = "FILE")]
    pub cert_file: Option<PathBuf>,

    /// Path to the client server TLS key file (PEM).
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,

    /// Path to the client server TLS trusted CA certificate file, for client certificates.
    #[arg(long, value_name = "FILE")]
    pub trusted_ca_file: Option<PathBuf>,

    /// Require client certificates signed by the trusted CA.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set,
          value_parser = go_bool, default_value = "false", value_name = "BOOL")]
    pub client_cert_auth: bool,

    /// Path to the peer server TLS certificate file; also the certificate this member
    /// presents when it connects to its peers.
    #[arg(long, value_name = "FILE")]
    pub peer_cert_file: Option<PathBuf>,

    /// Path to the peer server TLS key file.
    #[arg(long, value_name = "FILE")]
    pub peer_key_file: Option<PathBuf>,

    /// Path to the peer server TLS trusted CA file: the CA peers' certificates must chain to.
    #[arg(long, value_name = "FILE")]
    pub peer_trusted_ca_file: Option<PathBuf>,

    /// Require peer certificates signed by the peer trusted CA.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set,
          value_parser = go_bool, default_value = "false", value_name = "BOOL")]
    pub peer_client_cert_auth: bool,

    /// The common name every peer's certificate must carry: with one CA for clients and
    /// members, this keeps client certificates off the peer port.
    #[arg(long, value_name = "NAME")]
    pub peer_cert_allowed_cn: Option<String>,

    /// Type of auth tokens: only `simple` (random tokens with a TTL) is supported.
    #[arg(long, default_value = "simple", value_parser = auth_token_kind, value_name = "TYPE")]
    pub auth_token: String,

    /// How long an auth token stays valid after it is issued, in seconds.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub auth_token_ttl: u64,

    /// Maximum client request size in bytes the server will accept.
    #[arg(long, default_value_t = limits::REQUEST_BYTES_DEFAULT, value_name = "BYTES")]
    pub max_request_bytes: u64,

    /// Raise the NOSPACE alarm (and refuse writes) when the state file exceeds this many
    /// bytes. 0 means the default of 2 GiB; a negative value disables the quota.
    #[arg(long, default_value = "0", value_parser = bytes, allow_negative_numbers = true, value_name = "BYTES")]
    pub quota_backend_bytes: i64,

    /// Interpret --auto-compaction-retention as an hour-based period or as a revision count.
    #[arg(long, value_enum, default_value = "periodic", value_name = "MODE")]
    pub auto_compaction_mode: AutoCompactionMode,

    /// Auto compaction retention for the mvcc key value store; 0 means off.
    #[arg(long, default_value = "0", value_name = "RETENTION")]
    pub auto_compaction_retention: String,

    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, default_value_t = 100, value_name = "MS")]
    pub heartbeat_interval: u64,

    /// Time (in milliseconds) for an election to timeout.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub election_timeout: u64,

    /// Number of committed entries after which the log is purged behind the durable state.
    #[arg(long, default_value_t = limits::SNAPSHOT_COUNT_DEFAULT, value_name = "COUNT")]
    pub snapshot_count: u64,

    /// Number of entries kept behind a snapshot for a slow follower to catch up from the
    /// log; a follower further behind receives the snapshot.
    #[arg(long, default_value_t = limits::LOG_CATCHUP_ENTRIES, value_name = "COUNT")]
    pub experimental_snapshot_catchup_entries: u64,

    /// Interval between a watch's progress notifications (a Go duration: 10m, 30s, 500ms).
    #[arg(long, default_value = "10m", value_parser = go_duration, value_name = "DURATION")]
    pub experimental_watch_progress_notify_interval: Duration,

    /// How often the leader checkpoints the remaining time of leases nobody renewed, so a
    /// new leader does not give them a fresh TTL. A lease outlives its deadline after a
    /// leader change by about this much at most (etcd checkpoints every 5m, and only
    /// with --experimental-enable-lease-checkpoint; synod always does).
    #[arg(long, default_value = "5s", value_parser = go_duration, value_name = "DURATION")]
    pub experimental_lease_checkpoint_interval: Duration,

    /// Log level: debug, info, warn, error, panic or fatal.
    #[arg(long, value_enum, default_value = "info", value_name = "LEVEL")]
    pub log_level: LogLevel,

    /// Breaks linearizability on purpose: linearizable reads are served from local state
    /// without ReadIndex, so a lagging or partitioned member answers stale data. It exists
    /// only so the test harnesses can show that they catch a safety bug (the negative
    /// control of synod-sim and synod-chaos); never use it otherwise.
    #[arg(long, hide = true)]
    pub unsafe_local_reads: bool,
}

/// A member of the initial cluster: its name and peer URLs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitialMember {
    pub name: String,
    pub peer_urls: Vec<Url>,
}

/// The validated configuration the server runs with.
#[derive(Clone, Debug)]
pub struct Config {
    pub name: String,
    pub data_dir: PathBuf,
    pub listen_client_urls: Vec<Url>,
    pub advertise_client_urls: Vec<Url>,
    pub listen_peer_urls: Vec<Url>,
    pub initial_advertise_peer_urls: Vec<Url>,
    pub initial_cluster: Vec<InitialMember>,
    pub initial_cluster_state: ClusterState,
    pub initial_cluster_token: String,
    pub max_request_bytes: u64,
    /// `None` when the quota is disabled.
    pub quota_backend_bytes: Option<u64>,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_ms: u64,
    pub snapshot_count: u64,
    pub snapshot_catchup_entries: u64,
    pub log_level: LogLevel,
    /// What automatic compaction keeps; `None` when it is off.
    pub auto_compaction: Option<Retention>,
    pub watch_progress_notify_interval: Duration,
    pub lease_checkpoint_interval: Duration,
    /// The negative control of the test harnesses (`--unsafe-local-reads`).
    pub unsafe_local_reads: bool,
    /// TLS on the `https` client URLs; `None` when none is `https`.
    pub client_tls: Option<TlsFiles>,
    /// TLS on the `https` peer URLs, and this member's certificate and trusted CA when it
    /// connects to `https` peers.
    pub peer_tls: Option<TlsFiles>,
    /// The common name peers' certificates must carry, if any.
    pub peer_cert_allowed_cn: Option<String>,
    /// How long an auth token stays valid after it is issued.
    pub auth_token_ttl: Duration,
    /// What the flags set that has no effect, for the log once it is set up.
    pub warnings: Vec<String>,
}

impl Flags {
    /// Checks the flags together, as etcd does at startup.
    pub fn into_config(self) -> Result<Config, String> {
        if self.name.is_empty() {
            return Err("--name must not be empty".into());
        }
        let data_dir = self.data_dir.unwrap_or_else(|| PathBuf::from(format!("{}.synod", self.name)));
        if self.max_request_bytes == 0 || self.max_request_bytes > limits::REQUEST_BYTES_MAX {
            return Err(format!(
                "--max-request-bytes={} must be between 1 and {}",
                self.max_request_bytes,
                limits::REQUEST_BYTES_MAX
            ));
        }
        let quota_backend_bytes = match self.quota_backend_bytes {
            q if q < 0 => None,
            0 => Some(limits::QUOTA_BACKEND_BYTES_DEFAULT),
            q => Some(q as u64),
        };
        if self.heartbeat_interval == 0 {
            return Err("--heartbeat-interval must be positive".into());
        }
        if self.election_timeout < 5 * self.heartbeat_interval {
            return Err(format!(
                "--election-timeout[{}ms] should be at least as 5 times as --heartbeat-interval[{}ms]",
                self.election_timeout, self.heartbeat_interval
            ));
        }
        if self.election_timeout > 50_000 {
            return Err(format!(
                "--election-timeout[{}ms] is too long, and should be set less than 50 seconds",
                self.election_timeout
            ));
        }
        let auto_compaction = auto_compaction(self.auto_compaction_mode, &self.auto_compaction_retention)?;
        if self.experimental_watch_progress_notify_interval < Duration::from_millis(100) {
            return Err("--experimental-watch-progress-notify-interval must be at least 100ms".into());
        }
        if self.experimental_lease_checkpoint_interval < Duration::from_millis(100) {
            return Err("--experimental-lease-checkpoint-interval must be at least 100ms".into());
        }
        let initial_cluster = match &self.initial_cluster {
            Some(text) => parse_initial_cluster(text)?,
            None => vec![InitialMember {
                name: self.name.clone(),
                peer_urls: self.initial_advertise_peer_urls.clone(),
            }],
        };
        let mut own: Vec<&Url> =
            initial_cluster.iter().filter(|m| m.name == self.name).flat_map(|m| &m.peer_urls).collect();
        if own.is_empty() {
            return Err(format!("--initial-cluster does not list this member's name {:?}", self.name));
        }
        let mut advertised: Vec<&Url> = self.initial_advertise_peer_urls.iter().collect();
        own.sort_by_key(|u| u.to_string());
        advertised.sort_by_key(|u| u.to_string());
        if own != advertised {
            return Err(format!(
                "--initial-cluster has {}={} but --initial-advertise-peer-urls is {}",
                self.name,
                join(&own),
                join(&advertised)
            ));
        }
        let mut warnings = Vec::new();
        let client_tls = tls_files(
            "client",
            ["--cert-file", "--key-file", "--trusted-ca-file", "--client-cert-auth"],
            (self.cert_file, self.key_file, self.trusted_ca_file, self.client_cert_auth),
            self.listen_client_urls.iter().any(|u| u.tls),
            &mut warnings,
        )?;
        let mut peer_urls =
            self.listen_peer_urls.iter().chain(initial_cluster.iter().flat_map(|m| &m.peer_urls));
        let peer_tls = tls_files(
            "peer",
            ["--peer-cert-file", "--peer-key-file", "--peer-trusted-ca-file", "--peer-client-cert-auth"],
            (self.peer_cert_file, self.peer_key_file, self.peer_trusted_ca_file, self.peer_client_cert_auth),
            peer_urls.any(|u| u.tls),
            &mut warnings,
        )?;
        if let Some(files) = &peer_tls
            && files.trusted_ca.is_none()
        {
            return Err("--peer-trusted-ca-file is required with https peer URLs: it is the CA this \
                        member checks its peers' certificates against"
                .into());
        }
        if self.peer_cert_allowed_cn.is_some() && peer_tls.is_none() {
            return Err("--peer-cert-allowed-cn needs TLS on the peer URLs".into());
        }
        if self.auth_token_ttl == 0 || self.auth_token_ttl > AUTH_TOKEN_TTL_MAX_SECS {
            return Err(format!("--auth-token-ttl must be between 1 and {AUTH_TOKEN_TTL_MAX_SECS} seconds"));
        }
        Ok(Config {
            name: self.name,
            data_dir,
            listen_client_urls: self.listen_client_urls,
            advertise_client_urls: self.advertise_client_urls,
            listen_peer_urls: self.listen_peer_urls,
            initial_advertise_peer_urls: self.initial_advertise_peer_urls,
            initial_cluster,
            initial_cluster_state: self.initial_cluster_state,
            initial_cluster_token: self.initial_cluster_token,
            max_request_bytes: self.max_request_bytes,
            quota_backend_bytes,
            heartbeat_interval_ms: self.heartbeat_interval,
            election_timeout_ms: self.election_timeout,
            snapshot_count: self.snapshot_count,
            snapshot_catchup_entries: self.experimental_snapshot_catchup_entries,
            log_level: self.log_level,
            auto_compaction,
            watch_progress_notify_interval: self.experimental_watch_progress_notify_interval,
            lease_checkpoint_interval: self.experimental_lease_checkpoint_interval,
            unsafe_local_reads: self.unsafe_local_reads,
            client_tls,
            peer_tls,
            peer_cert_allowed_cn: self.peer_cert_allowed_cn,
            auth_token_ttl: Duration::from_secs(self.auth_token_ttl),
            warnings,
        })
    }
}

/// The TLS files of the client or the peer side, checked as etcd checks them: an `https`
/// URL needs a certificate and key, and a certificate requirement needs a CA to check
/// against. Without an `https` URL the files are not used, and etcd only warns.
fn tls_files(
    side: &str,
    [cert_flag, key_flag, ca_flag, auth_flag]: [&str; 4],
    (cert, key, trusted_ca, client_cert_auth): (Option<PathBuf>, Option<PathBuf>, Option<PathBuf>, bool),
    any_https: bool,
    warnings: &mut Vec<String>,
) -> Result<Option<TlsFiles>, String> {
    if !any_https {
        if cert.is_some() || key.is_some() || trusted_ca.is_some() || client_cert_auth {
            warnings.push(format!("{side} TLS flags are set but no {side} URL is https; they are not used"));
        }
        return Ok(None);
    }
    let (Some(cert), Some(key)) = (cert, key) else {
        return Err(format!(
            "TLS key/cert ({cert_flag}, {key_flag}) must be provided for {side} URLs with the https scheme"
        ));
    };
    if client_cert_auth && trusted_ca.is_none() {
        return Err(format!(
            "{auth_flag} needs {ca_flag}: the CA that {side} certificates must be signed by"
        ));
    }
    Ok(Some(TlsFiles { cert, key, trusted_ca, client_cert_auth }))
}

fn join(urls: &[&Url]) -> String {
    urls.iter().map(|u| u.to_string()).collect::<Vec<_>>().join(",")
}

/// Parses `name=url,name=url`; a name listed twice gets both URLs, as in etcd.
fn parse_initial_cluster(text: &str) -> Result<Vec<InitialMember>, String> {
    let mut members: Vec<InitialMember> = Vec::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, url) = pair
            .split_once('=')
            .ok_or_else(|| format!("--initial-cluster entry {pair:?} is not name=URL"))?;
        let url = Url::parse(url).map_err(|e| format!("--initial-cluster: {e}"))?;
        match members.iter_mut().find(|m| m.name == name) {
            Some(member) => member.peer_urls.push(url),
            None => members.push(InitialMember { name: name.to_string(), peer_urls: vec![url] }),
        }
    }
    if members.is_empty() {
        return Err("--initial-cluster is empty".into());
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let mut argv = vec!["synod"];
        argv.extend_from_slice(args);
        Flags::try_parse_from(argv).map_err(|e| e.to_string())?.into_config()
    }

    /// No flags gives etcd's defaults, with the data in ./default.synod.
    #[test]
    fn defaults_match_etcd() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.name, "default");
        assert_eq!(config.data_dir, PathBuf::from("default.synod"));
        assert_eq!(config.listen_client_urls[0].bind_addr(), "127.0.0.1:2379");
        assert_eq!(config.listen_peer_urls[0].bind_addr(), "127.0.0.1:2380");
        assert_eq!(config.max_request_bytes, 1_572_864);
        assert_eq!(config.quota_backend_bytes, Some(2 * 1024 * 1024 * 1024));
        assert_eq!(config.initial_cluster[0].name, "default");
        assert_eq!(config.initial_cluster[0].peer_urls[0].to_string(), "http://localhost:2380");
    }

    /// Both `--flag value` and `--flag=value` work, and URL lists are comma-separated.
    #[test]
    fn flag_forms() {
        let config = parse(&[
            "--name=n1",
            "--listen-client-urls",
            "http://127.0.0.1:12379,http://[::1]:12379",
            "--initial-advertise-peer-urls=http://127.0.0.1:12380",
            "--initial-cluster=n1=http://127.0.0.1:12380",
        ])
        .unwrap();
        assert_eq!(config.data_dir, PathBuf::from("n1.synod"));
        assert_eq!(config.listen_client_urls.len(), 2);
        assert_eq!(config.listen_client_urls[1].bind_addr(), "[::1]:12379");
    }

    /// Unknown flags and malformed URLs are errors that name the culprit.
    #[test]
    fn bad_input_is_named() {
        let err = parse(&["--no-such-flag"]).unwrap_err();
        assert!(err.contains("--no-such-flag"), "{err}");
        let err = parse(&["--listen-client-urls", "localhost:2379"]).unwrap_err();
        assert!(err.contains("localhost:2379"), "{err}");
        let err = parse(&["--listen-client-urls", "http://localhost"]).unwrap_err();
        assert!(err.contains("no port"), "{err}");
        let err = parse(&["--listen-client-urls", "https://localhost:2379"]).unwrap_err();
        assert!(err.contains("--cert-file, --key-file"), "{err}");
        let err = parse(&[
            "--listen-client-urls=https://localhost:2379",
            "--cert-file=c.pem",
            "--key-file=k.pem",
            "--client-cert-auth",
        ])
        .unwrap_err();
        assert!(err.contains("--client-cert-auth needs --trusted-ca-file"), "{err}");
        let err = parse(&[
            "--listen-peer-urls=https://localhost:2380",
            "--peer-cert-file=c.pem",
            "--peer-key-file=k.pem",
        ])
        .unwrap_err();
        assert!(err.contains("--peer-trusted-ca-file is required"), "{err}");
        let err = parse(&["--auth-token", "jwt,pub-key=a.pem"]).unwrap_err();
        assert!(err.contains("simple"), "{err}");
        let err = parse(&["--election-timeout", "300"]).unwrap_err();
        assert!(err.contains("--election-timeout"), "{err}");
        let err =
            parse(&["--auto-compaction-mode", "revision", "--auto-compaction-retention", "1h"]).unwrap_err();
        assert!(err.contains("--auto-compaction-retention"), "{err}");
    }

    /// The initial cluster must list this member with its advertised peer URLs.
    #[test]
    fn initial_cluster_must_include_self() {
        let err = parse(&["--initial-cluster", "other=http://127.0.0.1:2380"]).unwrap_err();
        assert!(err.contains("does not list"), "{err}");
        let err = parse(&["--initial-cluster", "default=http://127.0.0.1:9999"]).unwrap_err();
        assert!(err.contains("--initial-advertise-peer-urls"), "{err}");
        let config =
            parse(&["--initial-cluster", "default=http://localhost:2380,b=http://10.0.0.2:2380"]).unwrap();
        assert_eq!(config.initial_cluster.len(), 2);
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(go_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(go_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(go_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(go_duration("0"), Ok(Duration::ZERO));
        for bad in ["", "10", "5x", "m", "1e400h", "-5s"] {
            assert!(go_duration(bad).is_err(), "{bad:?} parsed");
        }
        assert!(parse(&["--experimental-lease-checkpoint-interval", "10ms"]).is_err());
        let config = parse(&["--experimental-watch-progress-notify-interval", "2s"]).unwrap();
        assert_eq!(config.watch_progress_notify_interval, Duration::from_secs(2));
    }

    #[test]
    fn auto_compaction_retention() {
        let with = |mode: &str, retention: &str| {
            parse(&["--auto-compaction-mode", mode, "--auto-compaction-retention", retention])
                .map(|c| c.auto_compaction)
        };
        assert_eq!(with("periodic", "0"), Ok(None));
        assert_eq!(with("periodic", "2"), Ok(Some(Retention::Period(Duration::from_secs(7200)))));
        assert_eq!(with("periodic", "30m"), Ok(Some(Retention::Period(Duration::from_secs(1800)))));
        assert_eq!(with("revision", "1000"), Ok(Some(Retention::Revisions(1000))));
        assert_eq!(with("revision", "0"), Ok(None));
        assert!(with("revision", "1h").is_err());
        assert!(with("revision", "-5").is_err());
        assert!(with("periodic", "soon").is_err());
        assert!(with("periodic", "10ms").is_err());
    }
}
