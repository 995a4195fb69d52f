//! The command line: etcdctl 3.5's verbs, flags, names and defaults.
//!
//! Positional arguments are taken as lists and checked by the commands themselves, so that
//! a missing key fails with etcdctl's message and exit status 128 rather than clap's.
//! Boolean flags accept pflag's `--flag=false` form as well as the bare `--flag`.

use std::ffi::OsString;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use synod_base::go_fmt;

fn go_bool(text: &str) -> Result<bool, String> {
    go_fmt::parse_bool(text)
}

fn go_duration(text: &str) -> Result<Duration, String> {
    go_fmt::parse_duration(text)
}

/// synodctl: a command-line client for synod and etcd, a drop-in for `etcdctl` (API v3).
#[derive(Debug, Parser)]
#[command(name = "synodctl", version, infer_subcommands = true, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalFlags,

    #[command(subcommand)]
    pub command: Command,
}

/// The command line with etcdctl's environment variables applied: each global flag the
/// command line does not give is read from `ETCDCTL_<FLAG>` (upper case, `-` as `_`). A
/// variable whose flag is also given is an error with etcdctl's words, and an `ETCDCTL_`
/// variable that names no global flag is reported and not used, as etcdctl does.
/// `ETCDCTL_API` picks etcdctl's API version: only 3 is spoken.
pub fn with_environment(
    args: Vec<OsString>,
    env: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<Vec<OsString>, String> {
    use clap::CommandFactory;
    let command = Cli::command();
    let matches = command.clone().try_get_matches_from(&args).ok();
    let globals: Vec<&str> =
        command.get_arguments().filter(|a| a.is_global_set()).filter_map(|a| a.get_long()).collect();
    let mut extra = Vec::new();
    for (name, value) in env {
        let Some(name) = name.to_str().filter(|n| n.starts_with("ETCDCTL_")) else { continue };
        // The watch verb's own variables (see `commands::watch`).
        if matches!(name, "ETCDCTL_WATCH_KEY" | "ETCDCTL_WATCH_RANGE_END") {
            continue;
        }
        let shown = value.to_string_lossy();
        if name == "ETCDCTL_API" {
            if shown != "3" {
                return Err(format!("ETCDCTL_API={shown}: synodctl speaks etcd's v3 API only"));
            }
            continue;
        }
        let Some(flag) =
            globals.iter().find(|flag| format!("ETCDCTL_{}", flag.to_uppercase().replace('-', "_")) == name)
        else {
            eprintln!("synodctl: unrecognized environment variable {name}={shown}");
            continue;
        };
        let id = command
            .get_arguments()
            .find(|a| a.get_long() == Some(flag))
            .map(|a| a.get_id().as_str().to_string())
            .expect("a global flag of the command");
        if matches.as_ref().is_some_and(|m| given(m, &id)) {
            return Err(format!(
                "conflicting environment variable {name:?} is shadowed by corresponding command-line flag \
                 (either unset environment variable or disable flag)"
            ));
        }
        if value.is_empty() {
            continue;
        }
        let mut arg = OsString::from(format!("--{flag}="));
        arg.push(&value);
        extra.push(arg);
    }
    let mut args = args.into_iter();
    Ok(args.next().into_iter().chain(extra).chain(args).collect())
}

/// Whether the command line gave the argument `id`, at the top or in a subcommand.
fn given(matches: &clap::ArgMatches, id: &str) -> bool {
    matches!(matches.try_get_raw(id), Ok(Some(_)))
        && matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine)
        || matches.subcommand().is_some_and(|(_, sub)| given(sub, id))
}

/// Flags every command takes, as etcdctl's persistent flags.
#[derive(Debug, Args)]
pub struct GlobalFlags {
    /// gRPC endpoints, comma-separated (`host:port` or `http://host:port`).
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "127.0.0.1:2379",
        value_name = "ENDPOINTS"
    )]
    pub endpoints: Vec<String>,

    /// Output format: simple, json, table, fields or protobuf.
    #[arg(short = 'w', long, global = true, default_value = "simple", value_name = "FORMAT")]
    pub write_out: String,

    /// Print byte strings as hex encoded strings.
    #[arg(long, global = true, num_args = 0..=1, require_equals = true, default_value = "false",
          default_missing_value = "true", value_parser = go_bool)]
    pub hex: bool,

    /// Dial timeout for client connections.
    #[arg(long, global = true, default_value = "2s", value_parser = go_duration, value_name = "DURATION")]
    pub dial_timeout: Duration,

    /// Timeout for short running commands (excluding dial timeout).
    #[arg(long, global = true, default_value = "5s", value_parser = go_duration, value_name = "DURATION")]
    pub command_timeout: Duration,

    /// Keepalive time for client connections.
    #[arg(long, global = true, default_value = "2s", value_parser = go_duration, value_name = "DURATION")]
    pub keepalive_time: Duration,

    /// Keepalive timeout for client connections.
    #[arg(long, global = true, default_value = "6s", value_parser = go_duration, value_name = "DURATION")]
    pub keepalive_timeout: Duration,

    /// Disable transport security for client connections without TLS files: false needs
    /// --cacert.
    #[arg(long, global = true, num_args = 0..=1, require_equals = true, default_value = "true",
          default_missing_value = "true", value_parser = go_bool)]
    pub insecure_transport: bool,

    /// Verify certificates of TLS-enabled secure servers using this CA bundle (PEM).
    #[arg(long, global = true, value_name = "FILE")]
    pub cacert: Option<std::path::PathBuf>,

    /// Identify secure client using this TLS certificate file (PEM).
    #[arg(long, global = true, value_name = "FILE", requires = "key")]
    pub cert: Option<std::path::PathBuf>,

    /// Identify secure client using this TLS key file (PEM).
    #[arg(long, global = true, value_name = "FILE", requires = "cert")]
    pub key: Option<std::path::PathBuf>,

    /// username[:password] for authentication (synodctl does not prompt: give the password
    /// after a colon or with --password).
    #[arg(long, global = true, value_name = "USER")]
    pub user: Option<String>,

    /// Password for authentication (with --user).
    #[arg(long, global = true, value_name = "PASSWORD", requires = "user")]
    pub password: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Gets the key or a range of keys.
    Get(GetArgs),
    /// Puts the given key into the store (the value can also come from stdin).
    Put(PutArgs),
    /// Removes the specified key or range of keys [key, range_end).
    Del(DelArgs),
    /// Txn processes all the requests in one transaction.
    Txn(TxnArgs),
    /// Compacts the event history.
    Compaction(CompactionArgs),
    /// Endpoint related commands.
    Endpoint(EndpointArgs),
    /// Membership related commands.
    Member(MemberArgs),
    /// Starts a cluster of synod members on this machine's loopback, for trying it out:
    /// prints their endpoints and stops them all on Ctrl-C. (synod's own; not in etcdctl.)
    LocalCluster(LocalClusterArgs),
    /// Saves a member's state to a file, or restores a data directory from one (also from
    /// a snapshot saved from etcd).
    Snapshot(SnapshotArgs),
    /// synod's native counter: adds applied exactly once, retried on other endpoints when a
    /// member fails. (synod's own; not in etcdctl.)
    Counter(CounterArgs),
    /// Acquires a named lock: prints its key and fencing token and holds it until
    /// interrupted, or runs a command while holding it (with ETCD_LOCK_KEY and ETCD_LOCK_REV
    /// set, as etcdctl does).
    Lock(LockArgs),
    /// Lease related commands.
    Lease(LeaseArgs),
    /// Alarm related commands.
    Alarm(AlarmArgs),
    /// Defragments the storage of the etcd members with given endpoints.
    Defrag {
        /// Use all endpoints from the cluster member list (followers first, the leader last).
        #[arg(long, num_args = 0..=1, require_equals = true, default_value = "false",
              default_missing_value = "true", value_parser = go_bool)]
        cluster: bool,
    },
    /// Transfers leadership to another etcd cluster member.
    MoveLeader {
        /// <transferee-member-id>
        args: Vec<String>,
    },
    /// Prints the version of synodctl.
    Version,
    /// Watches events stream on keys or prefixes.
    Watch(WatchArgs),
    /// Observes and participates in leader election.
    Elect(ElectArgs),
    /// Makes a mirror at the destination etcd cluster.
    MakeMirror(MirrorArgs),
    /// Commands for checking properties of the etcd cluster.
    Check {
        #[command(subcommand)]
        command: CheckCommand,
    },
    /// Enable or disable authentication.
    Auth {
        #[command(subcommand)]
        command: AuthCommand,
    },
    /// User related commands.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Role related commands.
    Role {
        #[command(subcommand)]
        command: RoleCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum CheckCommand {
    /// Checks the performance of the etcd cluster.
    Perf(CheckPerfArgs),
}

/// `check perf [options]`
#[derive(Debug, Args)]
pub struct CheckPerfArgs {
    /// The performance check's workload model: s (small), m (medium), l (large), xl.
    #[arg(long, default_value = "s")]
    pub load: String,
    /// The prefix for writing the performance check's keys.
    #[arg(long, default_value = "/etcdctl-check-perf/")]
    pub prefix: String,
    /// Compact storage with the last revision after the test is finished.
    #[arg(long, num_args = 0..=1, require_equals = true, default_value = "false",
          default_missing_value = "true", value_parser = go_bool)]
    pub auto_compact: bool,
    /// Defragment storage after the test is finished.
    #[arg(long, num_args = 0..=1, require_equals = true, default_value = "false",
          default_missing_value = "true", value_parser = go_bool)]
    pub auto_defrag: bool,
    /// How long the load runs (etcdctl's is a minute; shorter for tests).
    #[arg(long, default_value = "60s", value_parser = go_duration, hide = true)]
    pub duration: Duration,
}

/// `make-mirror [options] <destination>`
#[derive(Debug, Args)]
pub struct MirrorArgs {
    /// Key-value prefix to mirror.
    #[arg(long)]
    pub prefix: Option<String>,
    /// Destination prefix to mirror a prefix to a different prefix in the destination cluster.
    #[arg(long)]
    pub dest_prefix: Option<String>,
    /// Mirror key-values to the root of the destination cluster.
    #[arg(long, num_args = 0..=1, require_equals = true, default_value = "false",
          default_missing_value = "true", value_parser = go_bool)]
    pub no_dest_prefix: bool,
    /// Verify certificates of TLS enabled secure servers using this CA bundle.
    #[arg(long, value_name = "FILE")]
    pub dest_cacert: Option<std::path::PathBuf>,
    /// Identify secure client using this TLS certificate file for the destination cluster.
    #[arg(long, value_name = "FILE", requires = "dest_key")]
    pub dest_cert: Option<std::path::PathBuf>,
    /// Identify secure client using this TLS key file.
    #[arg(long, value_name = "FILE", requires = "dest_cert")]
    pub dest_key: Option<std::path::PathBuf>,
    /// <destination>
    pub args: Vec<String>,
}

/// `elect [-l] <election-name> [proposal]`
#[derive(Debug, Args)]
pub struct ElectArgs {
    /// Observation mode: print the leader at each change.
    #[arg(short = 'l', long, num_args = 0..=1, require_equals = true, default_value = "false",
          default_missing_value = "true", value_parser = go_bool)]
    pub listen: bool,
    /// Timeout for the session's lease, in seconds.
    #[arg(long, default_value_t = 60)]
    pub ttl: i64,
    /// <election-name> [proposal]
    pub args: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Enables authentication.
    Enable,
    /// Disables authentication.
    Disable,
    /// Returns authentication status.
    Status,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Adds a new user (the password after a colon, with --new-user-password, or asked for).
    Add {
        /// Create a user without password (CN based auth only).
        #[arg(long, num_args = 0..=1, require_equals = true, default_value = "false",
              default_missing_value = "true", value_parser = go_bool)]
        no_password: bool,
        /// Supply password from the command line flag.
        #[arg(long)]
        new_user_password: Option<String>,
        /// Read password from stdin instead of interactive terminal.
        #[arg(long, num_args = 0..=1, require_equals = true, default_value = "true",
              default_missing_value = "true", value_parser = go_bool)]
        interactive: bool,
        /// <user name or user:password>
        args: Vec<String>,
    },
    /// Deletes a user.
    Delete {
        /// <user name>
        args: Vec<String>,
    },
    /// Gets detailed information of a user.
    Get {
        /// Show permissions of roles granted to the user.
        #[arg(long, num_args = 0..=1, require_equals = true, default_value = "false",
              default_missing_value = "true", value_parser = go_bool)]
        detail: bool,
        /// <user name>
        args: Vec<String>,
    },
    /// Lists all users.
    List,
    /// Changes password of user.
    Passwd {
        /// Read password from stdin instead of interactive terminal.
        #[arg(long, num_args = 0..=1, require_equals = true, default_value = "true",
              default_missing_value = "true", value_parser = go_bool)]
        interactive: bool,
        /// <user name>
        args: Vec<String>,
    },
    /// Grants a role to a user.
    GrantRole {
        /// <user name> <role name>
        args: Vec<String>,
    },
    /// Revokes a role from a user.
    RevokeRole {
        /// <user name> <role name>
        args: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum RoleCommand {
    /// Adds a new role.
    Add {
        /// <role name>
        args: Vec<String>,
    },
    /// Deletes a role.
    Delete {
        /// <role name>
        args: Vec<String>,
    },
    /// Gets detailed information of a role.
    Get {
        /// <role name>
        args: Vec<String>,
    },
    /// Lists all roles.
    List,
    /// Grants a key to a role: <role name> <permission type> <key> [endkey].
    GrantPermission(PermissionArgs),
    /// Revokes a key from a role: <role name> <key> [endkey].
    RevokePermission(PermissionArgs),
}

/// A permission's key and range, as etcdctl's `role grant-permission` takes them.
#[derive(Debug, Args)]
pub struct PermissionArgs {
    /// Grant (or revoke) a prefix permission.
    #[arg(long, num_args = 0..=1, require_equals = true, default_value = "false",
          default_missing_value = "true", value_parser = go_bool)]
    pub prefix: bool,
    /// Grant (or revoke) a permission of keys greater than or equal to the key.
    #[arg(long, num_args = 0..=1, require_equals = true, default_value = "false",
          default_missing_value = "true", value_parser = go_bool)]
    pub from_key: bool,
    pub args: Vec<String>,
}

/// `watch [options] [key or prefix] [range_end] [--] [exec-command arg1 arg2 ...]`
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Interactive mode.
    #[arg(short = 'i', long, num_args = 0..=1, require_equals = true, default_value = "false",
          default_missing_value = "true", value_parser = go_bool)]
    pub interactive: bool,

    /// Watch on a prefix if prefix is set.
    #[arg(long, num_args = 0..=1, require_equals = true, default_value = "false",
          default_missing_value = "true", value_parser = go_bool)]
    pub prefix: bool,

    /// Revision to start watching.
    #[arg(long, default_value_t = 0)]
    pub rev: i64,

    /// Get the previous key-value pair before the event happens.
    #[arg(long, num_args = 0..=1, require_equals = true, default_value = "false",
          default_missing_value = "true", value_parser = go_bool)]
    pub prev_kv: bool,

    /// Get periodic watch progress notification from server.
    #[arg(long, num_args = 0..=1, require_equals = true, default_value = "false",
          default_missing_value = "true", value_parser = go_bool)]
    pub progress_notify: bool,

    /// [key or prefix] [range_end]
    pub args: Vec<String>,

    /// A command to run for each event (after `--`).
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// `lease <subcommand>`
#[derive(Debug, Args)]
pub struct LeaseArgs {
    #[command(subcommand)]
    pub command: LeaseCommand,
}

#[derive(Debug, Subcommand)]
pub enum LeaseCommand {
    /// Creates leases.
    Grant {
        /// <ttl>
        args: Vec<String>,
    },
    /// Revokes leases.
    Revoke {
        /// <leaseID>
        args: Vec<String>,
    },
    /// Get lease information.
    Timetolive {
        /// Get keys attached to this lease.
        #[arg(long, num_args = 0..=1, require_equals = true, default_value = "false",
              default_missing_value = "true", value_parser = go_bool)]
        keys: bool,
        /// <leaseID>
        args: Vec<String>,
    },
    /// List all active leases.
    List,
    /// Keeps leases alive (renew).
    KeepAlive {
        /// Resets the keep-alive time to its original value and exits immediately.
        #[arg(long, num_args = 0..=1, require_equals = true, default_value = "false",
              default_missing_value = "true", value_parser = go_bool)]
        once: bool,
        /// <leaseID>
        args: Vec<String>,
    },
}

/// `alarm <subcommand>`
#[derive(Debug, Args)]
pub struct AlarmArgs {
    #[command(subcommand)]
    pub command: AlarmCommand,
}

#[derive(Debug, Subcommand)]
pub enum AlarmCommand {
    /// Lists all alarms.
    List,
    /// Disarms all alarms.
    Disarm,
}

/// `lock [options] <lockname> [exec-command arg1 arg2 ...]`
#[derive(Debug, Args)]
pub struct LockArgs {
    /// Timeout for the session's lease, in seconds.
    #[arg(long, default_value_t = 10)]
    pub ttl: i64,

    /// <lockname> [exec-command arg1 arg2 ...]
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// `counter <subcommand>`
#[derive(Debug, Args)]
pub struct CounterArgs {
    #[command(subcommand)]
    pub command: CounterCommand,
}

#[derive(Debug, Subcommand)]
pub enum CounterCommand {
    /// Adds DELTA (an integer, negative to subtract) to the counter at KEY, exactly once,
    /// and prints the counter's value right after this add.
    Add {
        /// How long to keep retrying on other endpoints before giving up (the add's
        /// outcome is then unknown).
        #[arg(long, default_value = "30s", value_parser = go_duration, value_name = "DURATION")]
        retry_timeout: Duration,

        /// <key> <delta>
        #[arg(allow_negative_numbers = true)]
        args: Vec<String>,
    },
    /// Prints the counter's value (0 for a key that does not exist): a linearizable read.
    Get {
        /// <key>
        args: Vec<String>,
    },
}

/// `snapshot <subcommand>`
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    pub command: SnapshotCommand,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Stores a snapshot of one member's state (exactly one endpoint) to the given file.
    Save {
        /// <filename>
        args: Vec<String>,
    },
    /// Gets backend snapshot status of a given file (synod's or etcd's).
    Status {
        /// <filename>
        args: Vec<String>,
    },
    /// Creates a data directory from a snapshot file, synod's or etcd's, keeping keys,
    /// revisions and leases; start each member of the new cluster on its own restored
    /// directory with `--initial-cluster-state new`.
    Restore(SnapshotRestoreArgs),
}

/// `snapshot restore <filename> [--data-dir DIR] [--wal-dir DIR] [--name NAME]
/// [--initial-cluster ...] [--initial-cluster-token ...] [--initial-advertise-peer-urls ...]
/// [--skip-hash-check]`
#[derive(Debug, Args)]
pub struct SnapshotRestoreArgs {
    /// Path to the data directory to create [default: <name>.synod].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<std::path::PathBuf>,

    /// Path to the directory of the member's log, when not in the data directory.
    #[arg(long, value_name = "DIR")]
    pub wal_dir: Option<std::path::PathBuf>,

    /// The member's name: the default data directory, and its entry in --initial-cluster.
    #[arg(long, default_value = "default")]
    pub name: String,

    /// The new cluster's members, name=peer-URL,...; the member's first start then uses
    /// these bootstrap settings rather than its own flags, as etcd's does [default:
    /// default=http://localhost:2380 when either of the next two is given; when none of
    /// the three is, the member's start flags decide].
    #[arg(long, value_name = "NAME=URL,...")]
    pub initial_cluster: Option<String>,

    /// The new cluster's token [default: etcd-cluster].
    #[arg(long, value_name = "TOKEN")]
    pub initial_cluster_token: Option<String>,

    /// This member's peer URLs, as listed in --initial-cluster [default: http://localhost:2380].
    #[arg(long, value_name = "URLS")]
    pub initial_advertise_peer_urls: Option<String>,

    /// Restore a file without the SHA-256 trailer (copied from a data dir).
    #[arg(long, num_args = 0..=1, require_equals = true, default_value = "false",
          default_missing_value = "true", value_parser = go_bool)]
    pub skip_hash_check: bool,

    /// <filename>
    pub args: Vec<String>,
}

/// `local-cluster [--members N] [--dir DIR] [--base-port PORT] [-- synod flags...]`
#[derive(Debug, Clone, Args)]
pub struct LocalClusterArgs {
    /// How many members to start (1 to 7).
    #[arg(long, default_value_t = 3)]
    pub members: usize,

    /// Where the members keep their data directories and logs. Starting again on the same
    /// directory restarts the same cluster.
    #[arg(long, default_value = "synod-local-cluster")]
    pub dir: std::path::PathBuf,

    /// Member i serves clients on BASE + 10000*i and peers on the port after it, as in
    /// etcd's Procfile (2379, 12379, 22379, ...).
    #[arg(long, default_value_t = 2379)]
    pub base_port: u16,

    /// The synod binary (default: the one next to synodctl, else `synod` on PATH).
    #[arg(long)]
    pub synod: Option<std::path::PathBuf>,

    /// More synod flags for every member, after `--` (for example `-- --snapshot-count 1000`).
    #[arg(last = true)]
    pub synod_flags: Vec<String>,
}

/// `get [options] <key> [range_end]`
#[derive(Debug, Clone, Args)]
pub struct GetArgs {
    /// Linearizable(l) or Serializable(s).
    #[arg(long, default_value = "l")]
    pub consistency: String,

    /// Order of results; ASCEND or DESCEND (ASCEND by default).
    #[arg(long, default_value = "")]
    pub order: String,

    /// Sort target; CREATE, KEY, MODIFY, VALUE, or VERSION.
    #[arg(long, default_value = "")]
    pub sort_by: String,

    /// Maximum number of results.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub limit: i64,

    /// Get keys with matching prefix.
    #[arg(long, num_args = 0..=1, require_equals = true, default_value = "false",
          default_missing_value = "true", value_parser = go_bool)]
    pub prefix: bool,

    /// Get keys that are greater than or equal to the given key using byte compare.
    #[arg(long, num_args = 0..=1, require_equals = true, default_value = "false",
          default_missing_value = "true", value_parser = go_bool)]
    pub from_key: bool,

    /// Specify the kv revision.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub rev: i64,

    /// Get only the keys.
    #[arg(long, num_args = 0..=1, require_equals = true, default_value = "false",
          default_missing_value = "true", value_parser = go_bool)]
    pub keys_only: bool,

    /// Get only the count (with `--write-out=fields`, as in etcdctl 3.5).
    #[arg(long, num_args = 0..=1, require_equals = true, default_value = "false",
          default_missing_value = "true", value_parser = go_bool)]
    pub count_only: bool,

    /// Only write values when using the "simple" output format.
    #[arg(long, num_args = 0..=1, require_equals = true, default_value = "false",
          default_missing_value = "true", value_parser = go_bool)]
    pub print_value_only: bool,

    /// <key> [range_end]
    #[arg(value_parser = clap::value_parser!(OsString))]
    pub args: Vec<OsString>,
}

/// `put [options] <key> <value>`
#[derive(Debug, Clone, Args)]
pub struct PutArgs {
    /// Lease ID (in hexadecimal) to attach to the key.
    #[arg(long, default_value = "0")]
    pub lease: String,

    /// Return the previous key-value pair before modification.
    #[arg(long, num_args = 0..=1, require_equals = true, default_value = "false",
          default_missing_value = "true", value_parser = go_bool)]
    pub prev_kv: bool,

    /// Updates the key using its current value.
    #[arg(long, num_args = 0..=1, require_equals = true, default_value = "false",
          default_missing_value = "true", value_parser = go_bool)]
    pub ignore_value: bool,

    /// Updates the key using its current lease.
    #[arg(long, num_args = 0..=1, require_equals = true, default_value = "false",
          default_missing_value = "true", value_parser = go_bool)]
    pub ignore_lease: bool,

    /// <key> [value]; without a value it is read from stdin.
    #[arg(value_parser = clap::value_parser!(OsString))]
    pub args: Vec<OsString>,
}

/// `del [options] <key> [range_end]`
#[derive(Debug, Clone, Args)]
pub struct DelArgs {
    /// Delete keys with matching prefix.
    #[arg(long, num_args = 0..=1, require_equals = true, default_value = "false",
          default_missing_value = "true", value_parser = go_bool)]
    pub prefix: bool,

    /// Return deleted key-value pairs.
    #[arg(long, num_args = 0..=1, require_equals = true, default_value = "false",
          default_missing_value = "true", value_parser = go_bool)]
    pub prev_kv: bool,

    /// Delete keys that are greater than or equal to the given key using byte compare.
    #[arg(long, num_args = 0..=1, require_equals = true, default_value = "false",
          default_missing_value = "true", value_parser = go_bool)]
    pub from_key: bool,

    /// Delete range of keys (silences etcdctl 3.5's warning about range deletes).
    #[arg(long, num_args = 0..=1, require_equals = true, default_value = "false",
          default_missing_value = "true", value_parser = go_bool)]
    pub range: bool,

    /// <key> [range_end]
    #[arg(value_parser = clap::value_parser!(OsString))]
    pub args: Vec<OsString>,
}

/// `txn [options]`: compares, success ops and failure ops from stdin.
#[derive(Debug, Args)]
pub struct TxnArgs {
    /// Input transaction in interactive mode.
    #[arg(short, long, num_args = 0..=1, require_equals = true, default_value = "false",
          default_missing_value = "true", value_parser = go_bool)]
    pub interactive: bool,

    /// txn takes no arguments; any given is an error.
    pub args: Vec<String>,
}

/// `compaction [options] <revision>`
#[derive(Debug, Args)]
pub struct CompactionArgs {
    /// Wait for compaction to physically remove all old revisions.
    #[arg(long, num_args = 0..=1, require_equals = true, default_value = "false",
          default_missing_value = "true", value_parser = go_bool)]
    pub physical: bool,

    /// <revision> (like pflag, a leading `-` makes it a flag, so `-1` is refused).
    pub args: Vec<String>,
}

/// `endpoint <subcommand>`
#[derive(Debug, Args)]
pub struct EndpointArgs {
    /// Use all endpoints from the cluster member list.
    #[arg(long, global = true, num_args = 0..=1, require_equals = true, default_value = "false",
          default_missing_value = "true", value_parser = go_bool)]
    pub cluster: bool,

    #[command(subcommand)]
    pub command: EndpointCommand,
}

#[derive(Debug, Subcommand)]
pub enum EndpointCommand {
    /// Checks the healthiness of endpoints specified in `--endpoints` flag.
    Health,
    /// Prints out the status of endpoints specified in `--endpoints` flag.
    Status,
    /// Prints the KV history hash for each endpoint in --endpoints.
    Hashkv {
        /// Maximum revision to hash (default: all revisions).
        #[arg(long, default_value_t = 0)]
        rev: i64,
    },
}

/// `member <subcommand>`
#[derive(Debug, Args)]
pub struct MemberArgs {
    #[command(subcommand)]
    pub command: MemberCommand,
}

#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// Lists all members in the cluster.
    List,
}

/// One request line of a txn (`get ...`, `put ...`, `del ...`), parsed with the same flags
/// as the commands, as etcdctl does.
#[derive(Debug, Parser)]
#[command(no_binary_name = true, infer_subcommands = true, disable_help_subcommand = true)]
pub enum TxnOp {
    Get(GetArgs),
    Put(PutArgs),
    Del(DelArgs),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The clap definition is consistent (clap's own debug checks).
    #[test]
    fn clap_definition_is_valid() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        TxnOp::command().debug_assert();
    }

    /// Defaults are etcdctl's, and pflag's `--flag=false` works for booleans.
    #[test]
    fn defaults_and_bool_forms() {
        let cli = Cli::try_parse_from(["synodctl", "get", "k", "--prefix=false", "--keys-only"]).unwrap();
        assert_eq!(cli.global.endpoints, ["127.0.0.1:2379"]);
        assert_eq!(cli.global.write_out, "simple");
        assert_eq!(cli.global.dial_timeout, Duration::from_secs(2));
        assert_eq!(cli.global.command_timeout, Duration::from_secs(5));
        let Command::Get(get) = cli.command else { panic!("expected get") };
        assert!(!get.prefix);
        assert!(get.keys_only);
        assert_eq!(get.args, [OsString::from("k")]);
    }

    /// Global flags go anywhere, endpoints split on commas, and verbs may be abbreviated
    /// as cobra's prefix matching allows.
    #[test]
    fn global_flags_anywhere() {
        let cli =
            Cli::try_parse_from(["synodctl", "g", "k", "-w", "json", "--endpoints=a:1,http://b:2"]).unwrap();
        assert_eq!(cli.global.endpoints, ["a:1", "http://b:2"]);
        assert_eq!(cli.global.write_out, "json");
        assert!(matches!(cli.command, Command::Get(_)));
    }
}
