//! etcd's server flags, with etcd's names, defaults and checks, from every place etcd reads
//! them: the command line, `ETCD_*` variables and a YAML file ([`sources`]).
//!
//! Flags that people and tools pass to etcd work the same way here. A flag nobody knows is an
//! error that names it (clap exits with status 2); so is a malformed URL, and so is an etcd
//! flag whose feature synod does not have, unless its value asks for nothing synod does
//! not do ([`unsupported`]): nothing is silently ignored.

mod sources;
mod unsupported;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgAction, CommandFactory, FromArgMatches, Parser};

pub use sources::Notice;

use crate::compactor::Retention;
use crate::tls::TlsFiles;
use synod_base::{bootstrap, limits};

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

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MetricsLevel {
    /// etcd's basic set.
    Basic,
    /// Also the gRPC handling-time histograms.
    Extensive,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Logger {
    /// Structured JSON lines in zap's layout.
    Zap,
    /// etcd 3.4's text logger, which synod does not have.
    Capnslog,
}

/// Where log lines go (`--log-outputs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogOutput {
    Stderr,
    Stdout,
    /// Appended to this file.
    File(PathBuf),
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

    /// Read the configuration from this YAML file, in etcd's layout; the other flags and the
    /// ETCD_* variables are then not used, as in etcd.
    #[arg(long, value_name = "FILE")]
    pub config_file: Option<PathBuf>,

    /// Path to a dedicated directory for the replicated log (etcd's WAL), for example on a
    /// separate disk [default: <data-dir>/member].
    #[arg(long, value_name = "DIR")]
    pub wal_dir: Option<PathBuf>,

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

    /// Maximum number of operations permitted in each list of a transaction.
    #[arg(long, default_value_t = limits::TXN_OPS_DEFAULT, value_name = "COUNT")]
    pub max_txn_ops: u32,

    /// Maximum concurrent streams each client connection may open; synod caps it at
    /// 1024, its bound on what one connection may hold.
    #[arg(long, default_value_t = u32::MAX, value_name = "COUNT")]
    pub max_concurrent_streams: u32,

    /// How often the server pings an idle client connection to check it is alive (a Go
    /// duration; 0 turns the pings off).
    #[arg(long, default_value = "2h", value_parser = go_duration, value_name = "DURATION")]
    pub grpc_keepalive_interval: Duration,

    /// How long the server waits for a ping's answer before it closes the connection.
    #[arg(long, default_value = "20s", value_parser = go_duration, value_name = "DURATION")]
    pub grpc_keepalive_timeout: Duration,

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

    /// Check this member's data against its peers' (their hashes at this member's
    /// revision) before serving, and refuse to start on a mismatch.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set,
          require_equals = true, value_parser = go_bool, default_value = "false", value_name = "BOOL")]
    pub experimental_initial_corrupt_check: bool,

    /// Restart this member as a one-member cluster with all its data, to recover from a lost
    /// quorum; add the other members back afterwards. Remove the flag once it has started:
    /// every start with it removes the other members again.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set,
          require_equals = true, value_parser = go_bool, default_value = "false", value_name = "BOOL")]
    pub force_new_cluster: bool,

    /// URLs to listen on for /metrics and the health probes (/health, /livez, /readyz),
    /// which need no client certificate there.
    #[arg(long, value_parser = url, value_delimiter = ',', value_name = "URLS")]
    pub listen_metrics_urls: Vec<Url>,

    /// Detail of the exported metrics: basic, or extensive for the gRPC handling-time
    /// histograms too.
    #[arg(long, value_enum, default_value = "basic", value_name = "LEVEL")]
    pub metrics: MetricsLevel,

    /// The logger: zap (JSON lines in etcd's layout) is the only one.
    #[arg(long, value_enum, default_value = "zap", value_name = "LOGGER")]
    pub logger: Logger,

    /// Where logs go: stderr (also `default`), stdout, or file paths, comma-separated.
    #[arg(long, default_value = "default", value_delimiter = ',', value_name = "OUTPUTS")]
    pub log_outputs: Vec<String>,

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
pub type InitialMember = bootstrap::InitialMember<Url>;

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
    pub log_outputs: Vec<LogOutput>,
    /// Where the log lives when not in the data dir (`--wal-dir`).
    pub wal_dir: Option<PathBuf>,
    /// Operations allowed in each list of a Txn (`--max-txn-ops`).
    pub txn_ops_max: usize,
    /// HTTP/2 streams one client connection may have open at once.
    pub streams_per_connection_max: u32,
    /// How often an idle client connection is pinged (`None`: never), and how long the
    /// answer may take.
    pub keepalive_interval: Option<Duration>,
    pub keepalive_timeout: Duration,
    pub listen_metrics_urls: Vec<Url>,
    /// The certificate an `https` metrics URL serves (the client one), asking for none.
    pub metrics_tls: Option<TlsFiles>,
    pub metrics: MetricsLevel,
    /// Compare this member's data with its peers' before serving.
    pub initial_corrupt_check: bool,
    /// Restart as a one-member cluster with this member's data (`--force-new-cluster`).
    pub force_new_cluster: bool,
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

impl Config {
    /// This configuration with the bootstrap settings `synodctl snapshot restore` recorded
    /// in the data dir in place of the flags' (as etcd's first start after a restore takes
    /// them from the WAL the restore wrote), checked as the flags are.
    pub fn with_restored_cluster(
        &self,
        restored: &synod_api::synodpb::RestoredCluster,
    ) -> Result<Config, String> {
        let advertised = restored
            .initial_advertise_peer_urls
            .split(',')
            .filter(|u| !u.trim().is_empty())
            .map(url)
            .collect::<Result<Vec<_>, _>>()?;
        let initial_cluster = bootstrap::parse_initial_cluster(&restored.initial_cluster, url)?;
        bootstrap::check_own_entry(&restored.name, &initial_cluster, &advertised)?;
        Ok(Config {
            name: restored.name.clone(),
            initial_advertise_peer_urls: advertised,
            initial_cluster,
            initial_cluster_state: ClusterState::New,
            initial_cluster_token: restored.initial_cluster_token.clone(),
            ..self.clone()
        })
    }
}

/// The configuration a member runs with, and what reading it had to say.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    /// For the log once it is set up.
    pub notices: Vec<Notice>,
}

/// Why the configuration could not be read.
#[derive(Debug)]
pub enum LoadError {
    /// A flag clap refused, or `--help` and `--version`, which clap prints.
    Flags(clap::Error),
    /// A setting that is malformed, conflicting or refused, in etcd's words where etcd has them.
    Invalid(String),
}

impl From<clap::Error> for LoadError {
    fn from(error: clap::Error) -> Self {
        LoadError::Flags(error)
    }
}

impl From<String> for LoadError {
    fn from(message: String) -> Self {
        LoadError::Invalid(message)
    }
}

/// Reads the configuration as etcd does: the command line `args` (program name first), then
/// the `ETCD_*` variables in `env` for flags the command line does not set, or else the
/// file `--config-file` names alone ([`sources`]).
pub fn load(args: Vec<OsString>, env: &[(OsString, OsString)]) -> Result<Loaded, LoadError> {
    let command = unsupported::add_to(Flags::command());
    let command_line = command.clone().try_get_matches_from(&args)?;
    let mut notices = Vec::new();
    let program = args.first().cloned().unwrap_or_else(|| "synod".into());
    let mut all = args;
    all.extend(sources::from_env(&command, &command_line, env, &mut notices)?);
    let mut matches = command.clone().try_get_matches_from(&all)?;
    if let Some(path) = matches.get_one::<PathBuf>("config_file").cloned() {
        let ignored: Vec<String> = command
            .get_arguments()
            .filter(|arg| matches.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine))
            .filter_map(|arg| arg.get_long())
            .filter(|long| *long != "config-file")
            .map(|long| format!("--{long}"))
            .collect();
        let file_args = sources::from_file(&command, &path)?;
        notices.push(Notice::Info(format!(
            "loaded server configuration from {}; other configuration command line flags and environment \
             variables are ignored",
            path.display()
        )));
        if !ignored.is_empty() {
            notices.push(Notice::Warn(format!(
                "ignoring {} (from the command line or ETCD_* variables) because --config-file is set",
                ignored.join(" ")
            )));
        }
        matches = command.try_get_matches_from(std::iter::once(program).chain(file_args))?;
    }
    unsupported::check(&matches)?;
    let flags = Flags::from_arg_matches(&matches)?;
    Ok(Loaded { config: flags.into_config()?, notices })
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
            Some(text) => bootstrap::parse_initial_cluster(text, url)?,
            None => vec![InitialMember {
                name: self.name.clone(),
                peer_urls: self.initial_advertise_peer_urls.clone(),
            }],
        };
        bootstrap::check_own_entry(&self.name, &initial_cluster, &self.initial_advertise_peer_urls)?;
        let mut warnings = Vec::new();
        if self.max_concurrent_streams > limits::STREAMS_PER_CONNECTION_MAX
            && self.max_concurrent_streams != u32::MAX
        {
            warnings.push(format!(
                "--max-concurrent-streams={} is above synod's bound; each connection gets {}",
                self.max_concurrent_streams,
                limits::STREAMS_PER_CONNECTION_MAX
            ));
        }
        let metrics_tls =
            match (self.listen_metrics_urls.iter().any(|u| u.tls), &self.cert_file, &self.key_file) {
                (false, ..) => None,
                (true, Some(cert), Some(key)) => Some(TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    trusted_ca: None,
                    client_cert_auth: false,
                }),
                (true, ..) => {
                    return Err(
                        "an https --listen-metrics-urls needs --cert-file and --key-file: it serves the \
                            client certificate"
                            .into(),
                    );
                }
            };
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
        if self.logger == Logger::Capnslog {
            return Err("--logger=capnslog: synod logs in zap's JSON layout only; use --logger=zap".into());
        }
        let log_outputs = log_outputs(&self.log_outputs)?;

        if self.max_txn_ops == 0 {
            return Err("--max-txn-ops must be positive".into());
        }
        if self.max_concurrent_streams == 0 {
            return Err("--max-concurrent-streams must be positive".into());
        }
        if self.grpc_keepalive_timeout.is_zero() {
            return Err("--grpc-keepalive-timeout must be positive".into());
        }
        if let Some(wal_dir) = &self.wal_dir
            && wal_dir.as_os_str().is_empty()
        {
            return Err("--wal-dir must not be empty".into());
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
            log_outputs,
            wal_dir: self.wal_dir,
            txn_ops_max: self.max_txn_ops as usize,
            streams_per_connection_max: self.max_concurrent_streams.min(limits::STREAMS_PER_CONNECTION_MAX),
            keepalive_interval: Some(self.grpc_keepalive_interval).filter(|i| !i.is_zero()),
            keepalive_timeout: self.grpc_keepalive_timeout,
            listen_metrics_urls: self.listen_metrics_urls,
            metrics_tls,
            metrics: self.metrics,
            initial_corrupt_check: self.experimental_initial_corrupt_check,
            force_new_cluster: self.force_new_cluster,
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

/// `--log-outputs`: etcd's names for the standard streams, or files. etcd's `default`
/// means the journal under systemd; synod writes to stderr, which systemd's journal
/// captures, so its `journal` output is not offered.
fn log_outputs(names: &[String]) -> Result<Vec<LogOutput>, String> {
    let mut outputs = Vec::new();
    for name in names.iter().map(|n| n.trim()) {
        let output = match name {
            "default" | "stderr" => LogOutput::Stderr,
            "stdout" => LogOutput::Stdout,
            "journal" => {
                return Err("--log-outputs=journal: synod does not write to journald itself; use stderr, \
                            which systemd's journal captures"
                    .into());
            }
            "" => return Err("--log-outputs has an empty entry".into()),
            path => LogOutput::File(PathBuf::from(path)),
        };
        if !outputs.contains(&output) {
            outputs.push(output);
        }
    }
    if outputs.is_empty() {
        outputs.push(LogOutput::Stderr);
    }
    Ok(outputs)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        load_with(args, &[]).map(|loaded| loaded.config)
    }

    fn load_with(args: &[&str], env: &[(&str, &str)]) -> Result<Loaded, String> {
        let argv = std::iter::once("synod").chain(args.iter().copied()).map(OsString::from).collect();
        let env: Vec<(OsString, OsString)> = env.iter().map(|(k, v)| (k.into(), v.into())).collect();
        load(argv, &env).map_err(|e| match e {
            LoadError::Flags(e) => e.to_string(),
            LoadError::Invalid(message) => message,
        })
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

    /// Every flag is read from its ETCD_* variable; a variable whose flag is also given
    /// stops the start with etcd's words, and unknown or empty ones are reported, not used.
    #[test]
    fn environment_variables_as_etcd_reads_them() {
        let loaded = load_with(
            &["--initial-advertise-peer-urls=http://127.0.0.1:12380"],
            &[
                ("ETCD_NAME", "n1"),
                ("ETCD_INITIAL_CLUSTER", "n1=http://127.0.0.1:12380,n2=http://127.0.0.1:22380"),
                ("ETCD_LISTEN_CLIENT_URLS", "http://127.0.0.1:12379,http://127.0.0.1:12479"),
                ("ETCD_AUTO_COMPACTION_RETENTION", "1h"),
                ("ETCD_MAX_TXN_OPS", "256"),
                ("ETCD_EXPERIMENTAL_INITIAL_CORRUPT_CHECK", "true"),
                ("ETCD_BOGUS", "1"),
                ("ETCD_DATA_DIR", ""),
                ("ETCD_UNSAFE_LOCAL_READS", "true"),
                ("ETCDCTL_API", "3"),
                ("HOME", "/root"),
            ],
        )
        .unwrap();
        let config = &loaded.config;
        assert_eq!(config.name, "n1");
        assert_eq!(config.data_dir, PathBuf::from("n1.synod"));
        assert_eq!(config.initial_cluster.len(), 2);
        assert_eq!(config.listen_client_urls.len(), 2);
        assert_eq!(config.auto_compaction, Some(Retention::Period(Duration::from_secs(3600))));
        assert_eq!(config.txn_ops_max, 256);
        assert!(config.initial_corrupt_check);
        assert!(!config.unsafe_local_reads, "a test switch must not come from the environment");
        let notices = &loaded.notices;
        assert!(
            notices.contains(&Notice::Info("recognized and used environment variable ETCD_NAME=n1".into()))
        );
        assert!(notices.contains(&Notice::Warn("unrecognized environment variable ETCD_BOGUS=1".into())));
        assert!(notices.contains(&Notice::Warn("unrecognized environment variable ETCD_DATA_DIR=".into())));
        assert!(notices.contains(&Notice::Warn(
            "unrecognized environment variable ETCD_UNSAFE_LOCAL_READS=true".into()
        )));
        assert!(!notices.iter().any(|n| format!("{n:?}").contains("ETCDCTL_API")));

        let err = load_with(&["--name", "y"], &[("ETCD_NAME", "x")]).unwrap_err();
        assert_eq!(
            err,
            "conflicting environment variable \"ETCD_NAME\" is shadowed by corresponding command-line flag \
             (either unset environment variable or disable flag)"
        );
        let err = load_with(&[], &[("ETCD_ENABLE_V2", "true")]).unwrap_err();
        assert!(err.starts_with("--enable-v2=true: the v2 API is not served"), "{err}");
        let err = load_with(&[], &[("ETCD_HEARTBEAT_INTERVAL", "soon")]).unwrap_err();
        assert!(err.contains("soon") && err.contains("--heartbeat-interval"), "{err}");
        load_with(&[], &[("ETCD_ENABLE_V2", "false"), ("ETCD_LOGGER", "zap")]).unwrap();
    }

    /// A YAML file in etcd's layout, TLS sections included, replaces the flags and the
    /// variables; unknown keys are refused by name.
    #[test]
    fn config_file_in_etcds_layout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etcd.conf.yml");
        std::fs::write(
            &path,
            "# etcd.conf.yml\n\
             name: 'fromfile'\n\
             data-dir: /var/lib/etcd\n\
             wal-dir:\n\
             snapshot-count: 10000\n\
             heartbeat-interval: 100\n\
             election-timeout: 1000\n\
             quota-backend-bytes: 0\n\
             listen-peer-urls: http://localhost:2380\n\
             listen-client-urls: https://localhost:2379\n\
             listen-metrics-urls: http://127.0.0.1:2381\n\
             initial-cluster-state: 'new'\n\
             enable-v2: false\n\
             proxy: 'off'\n\
             discovery:\n\
             client-transport-security:\n  cert-file: /pki/server.crt\n  key-file: /pki/server.key\n  \
             client-cert-auth: true\n  trusted-ca-file: /pki/ca.crt\n  auto-tls: false\n\
             peer-transport-security:\n  client-cert-auth: false\n  auto-tls: false\n\
             log-outputs: [stderr]\n\
             logger: zap\n\
             auto-compaction-retention: \"1\"\n\
             experimental-watch-progress-notify-interval: 5000000000\n\
             grpc-keepalive-min-time: 5000000000\n",
        )
        .unwrap();
        let path_arg = format!("--config-file={}", path.display());
        let loaded = load_with(&[&path_arg, "--name=ignored"], &[("ETCD_SNAPSHOT_COUNT", "5")]).unwrap();
        let config = &loaded.config;
        assert_eq!(config.name, "fromfile");
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/etcd"));
        assert_eq!(config.wal_dir, None);
        assert_eq!(config.snapshot_count, 10_000);
        assert_eq!(config.watch_progress_notify_interval, Duration::from_secs(5));
        assert_eq!(config.listen_metrics_urls[0].to_string(), "http://127.0.0.1:2381");
        let tls = config.client_tls.as_ref().expect("client TLS from client-transport-security");
        assert_eq!(tls.cert, PathBuf::from("/pki/server.crt"));
        assert!(tls.client_cert_auth);
        assert_eq!(config.log_outputs, vec![LogOutput::Stderr]);
        assert!(
            loaded
                .notices
                .iter()
                .any(|n| matches!(n, Notice::Warn(w) if w.contains("--name --snapshot-count")))
        );

        for (text, named) in [
            ("name: a\nsnapshot-cuont: 5\n", "\"snapshot-cuont\""),
            ("client-transport-security:\n  cert-fiel: x\n", "\"cert-fiel\" under client-transport-security"),
            (
                "client-transport-security:\n  allowed-cn: x\n",
                "\"allowed-cn\" under client-transport-security",
            ),
            ("config-file: other.yml\n", "\"config-file\""),
            ("name: [a, [b]]\n", "name must be"),
            ("- a\n- b\n", "not a map"),
            ("name: 'a\n", "not valid YAML"),
            ("enable-v2: true\n", "--enable-v2=true"),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = load_with(&[&path_arg], &[]).unwrap_err();
            assert!(err.contains(named), "{text:?}: {err}");
        }
        let err = load_with(&["--config-file=/no/such/file.yml"], &[]).unwrap_err();
        assert!(err.contains("/no/such/file.yml"), "{err}");
    }

    /// The flags kubeadm writes into its etcd static pod parse as they are.
    #[test]
    fn kubeadms_command_line() {
        let config = parse(&[
            "--advertise-client-urls=https://192.168.0.10:2379",
            "--cert-file=/etc/kubernetes/pki/etcd/server.crt",
            "--client-cert-auth=true",
            "--data-dir=/var/lib/etcd",
            "--experimental-initial-corrupt-check=true",
            "--experimental-watch-progress-notify-interval=5s",
            "--initial-advertise-peer-urls=https://192.168.0.10:2380",
            "--initial-cluster=node=https://192.168.0.10:2380",
            "--key-file=/etc/kubernetes/pki/etcd/server.key",
            "--listen-client-urls=https://127.0.0.1:2379,https://192.168.0.10:2379",
            "--listen-metrics-urls=http://127.0.0.1:2381",
            "--listen-peer-urls=https://192.168.0.10:2380",
            "--name=node",
            "--peer-cert-file=/etc/kubernetes/pki/etcd/peer.crt",
            "--peer-client-cert-auth=true",
            "--peer-key-file=/etc/kubernetes/pki/etcd/peer.key",
            "--peer-trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt",
            "--snapshot-count=10000",
            "--trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt",
        ])
        .unwrap();
        assert!(config.initial_corrupt_check);
        assert_eq!(config.watch_progress_notify_interval, Duration::from_secs(5));
        assert_eq!(config.listen_metrics_urls.len(), 1);
    }

    /// Logging, keepalive, stream and txn flags are read and checked.
    #[test]
    fn operational_flags() {
        let config = parse(&[
            "--log-outputs=stdout,/var/log/synod.log,stdout",
            "--grpc-keepalive-interval=0",
            "--max-concurrent-streams=100000",
            "--metrics=extensive",
            "--wal-dir=/fast/wal",
        ])
        .unwrap();
        assert_eq!(config.log_outputs, vec![LogOutput::Stdout, LogOutput::File("/var/log/synod.log".into())]);
        assert_eq!(config.keepalive_interval, None);
        assert_eq!(config.streams_per_connection_max, limits::STREAMS_PER_CONNECTION_MAX);
        assert_eq!(config.metrics, MetricsLevel::Extensive);
        assert_eq!(config.wal_dir, Some(PathBuf::from("/fast/wal")));
        assert_eq!(parse(&[]).unwrap().keepalive_interval, Some(Duration::from_secs(7200)));
        for (args, named) in [
            (&["--logger=capnslog"][..], "--logger=capnslog"),
            (&["--log-outputs=journal"], "--log-outputs=journal"),
            (&["--max-txn-ops=0"], "--max-txn-ops"),
            (&["--grpc-keepalive-timeout=0s"], "--grpc-keepalive-timeout"),
            (&["--metrics=all"], "--metrics"),
        ] {
            let err = parse(args).unwrap_err();
            assert!(err.contains(named), "{args:?}: {err}");
        }
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
