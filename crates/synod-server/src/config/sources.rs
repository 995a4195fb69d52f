//! Where a member's settings come from, read as etcd 3.4 reads them.
//!
//! - The command line.
//! - `ETCD_<FLAG>` environment variables (the flag's name in upper case, `-` as `_`), for
//!   every flag not on the command line. A variable whose flag is also on the command line
//!   stops the start with etcd's words; an empty variable is not used; an `ETCD_` variable
//!   that names no flag is logged as unrecognized, as etcd does.
//! - `--config-file` (or `ETCD_CONFIG_FILE`): etcd's YAML layout, keys named as the flags,
//!   TLS under `client-transport-security` and `peer-transport-security`. The file then
//!   replaces the command line and the variables, as in etcd, and a log line says so. Unlike
//!   etcd 3.4, an unknown key is refused by name: a misspelt key would otherwise be ignored.
//!
//! Every source becomes command-line arguments, parsed by the one definition of the flags,
//! so a setting has the same checks and meaning wherever it comes from.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::Path;

use clap::parser::ValueSource;
use clap::{ArgMatches, Command};
use yaml_rust2::{Yaml, YamlLoader};

/// Something the configuration sources say, logged once logging is set up (etcd logs the
/// same lines before its own logger exists).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    Info(String),
    Warn(String),
}

/// Flags that are synod's own test switches, not settings: never read from the environment
/// or a file.
const COMMAND_LINE_ONLY: &[&str] = &["unsafe-local-reads", "help", "version"];

/// The `ETCD_` variable etcd never reads, because `etcd --version` is no setting.
const SPECIAL_VARIABLE: &str = "ETCD_VERSION";

/// The flags `command` takes, by their long names.
fn long_flags(command: &Command) -> BTreeSet<String> {
    command
        .get_arguments()
        .filter_map(|arg| arg.get_long())
        .filter(|long| !COMMAND_LINE_ONLY.contains(long))
        .map(str::to_string)
        .collect()
}

/// The environment variable that sets `flag` (etcd's `FlagToEnv`).
pub fn variable_of(flag: &str) -> String {
    format!("ETCD_{}", flag.to_uppercase().replace('-', "_"))
}

/// Arguments for the `ETCD_*` variables in `env`, given what the command line already set.
pub fn from_env(
    command: &Command,
    command_line: &ArgMatches,
    env: &[(OsString, OsString)],
    notices: &mut Vec<Notice>,
) -> Result<Vec<OsString>, String> {
    let flags = long_flags(command);
    let mut args = Vec::new();
    for (name, value) in env {
        let Some(name) = name.to_str().filter(|n| n.starts_with("ETCD_")) else {
            continue;
        };
        let shown = value.to_string_lossy();
        if name == SPECIAL_VARIABLE {
            notices.push(Notice::Warn(format!("cannot set special environment variable {name}={shown}")));
            continue;
        }
        let Some(flag) = flags.iter().find(|flag| variable_of(flag) == name) else {
            notices.push(Notice::Warn(format!("unrecognized environment variable {name}={shown}")));
            continue;
        };
        let id = command
            .get_arguments()
            .find(|arg| arg.get_long() == Some(flag.as_str()))
            .map(|arg| arg.get_id().as_str())
            .expect("the flag was found among the command's arguments");
        if command_line.value_source(id) == Some(ValueSource::CommandLine) {
            return Err(format!(
                "conflicting environment variable {name:?} is shadowed by corresponding command-line flag \
                 (either unset environment variable or disable flag)"
            ));
        }
        if value.is_empty() {
            notices.push(Notice::Warn(format!("unrecognized environment variable {name}=")));
            continue;
        }
        notices.push(Notice::Info(format!("recognized and used environment variable {name}={shown}")));
        let mut arg = OsString::from(format!("--{flag}="));
        arg.push(value);
        args.push(arg);
    }
    Ok(args)
}

/// Arguments for the settings in the YAML file at `path`.
pub fn from_file(command: &Command, path: &Path) -> Result<Vec<OsString>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--config-file {}: cannot read it: {e}", path.display()))?;
    from_yaml(command, &text).map_err(|e| format!("--config-file {}: {e}", path.display()))
}

/// What the keys under `client-transport-security` and `peer-transport-security` are as
/// flags: `(key, client flag, peer flag)`.
const TRANSPORT_KEYS: &[(&str, &str, &str)] = &[
    ("cert-file", "cert-file", "peer-cert-file"),
    ("key-file", "key-file", "peer-key-file"),
    ("client-cert-auth", "client-cert-auth", "peer-client-cert-auth"),
    ("trusted-ca-file", "trusted-ca-file", "peer-trusted-ca-file"),
    ("auto-tls", "auto-tls", "peer-auto-tls"),
    ("crl-file", "client-crl-file", "peer-crl-file"),
    ("allowed-cn", "", "peer-cert-allowed-cn"),
    ("allowed-hostname", "client-cert-allowed-hostname", "peer-cert-allowed-hostname"),
];

/// The arguments a YAML document in etcd's layout stands for.
pub fn from_yaml(command: &Command, text: &str) -> Result<Vec<OsString>, String> {
    let flags = long_flags(command);
    let documents = YamlLoader::load_from_str(text).map_err(|e| format!("not valid YAML: {e}"))?;
    let root = match documents.as_slice() {
        [] => return Ok(Vec::new()),
        [root] => root,
        _ => return Err("holds more than one YAML document".into()),
    };
    let map = match root {
        Yaml::Hash(map) => map,
        Yaml::Null => return Ok(Vec::new()),
        _ => return Err("is not a map of settings".into()),
    };
    let mut args = Vec::new();
    for (key, value) in map {
        let key = key.as_str().ok_or_else(|| format!("has a key that is not text: {key:?}"))?;
        let side = match key {
            "client-transport-security" => Some(false),
            "peer-transport-security" => Some(true),
            _ => None,
        };
        if let Some(peer) = side {
            let nested = match value {
                Yaml::Hash(nested) => nested,
                Yaml::Null => continue,
                _ => return Err(format!("{key} is not a map")),
            };
            for (inner, value) in nested {
                let inner = inner.as_str().ok_or_else(|| format!("{key} has a key that is not text"))?;
                let flag = TRANSPORT_KEYS
                    .iter()
                    .find(|(name, ..)| *name == inner)
                    .map(|(_, client, peer_flag)| if peer { *peer_flag } else { *client })
                    .filter(|flag| !flag.is_empty())
                    .ok_or_else(|| format!("unknown key {inner:?} under {key}"))?;
                push(&mut args, flag, value, &format!("{key}.{inner}"))?;
            }
            continue;
        }
        if key == "config-file" || !flags.contains(key) {
            return Err(format!("unknown key {key:?}"));
        }
        push(&mut args, key, value, key)?;
    }
    Ok(args)
}

/// Flags whose YAML value etcd reads as a Go `time.Duration`: a whole number of
/// nanoseconds (a text such as `5s` does not load in etcd either, and is taken here too).
const DURATION_FLAGS: &[&str] = &[
    "grpc-keepalive-min-time",
    "grpc-keepalive-interval",
    "grpc-keepalive-timeout",
    "experimental-watch-progress-notify-interval",
    "experimental-lease-checkpoint-interval",
    "experimental-corrupt-check-time",
    "experimental-compaction-sleep-interval",
    "experimental-warning-apply-duration",
    "backend-batch-interval",
];

/// Adds `--flag=value` for one setting; a setting left empty keeps the flag's default.
fn push(args: &mut Vec<OsString>, flag: &str, value: &Yaml, key: &str) -> Result<(), String> {
    if let Yaml::Integer(nanos) = value
        && DURATION_FLAGS.contains(&flag)
    {
        args.push(OsString::from(format!("--{flag}={nanos}ns")));
        return Ok(());
    }
    let scalar = |value: &Yaml| -> Result<Option<String>, String> {
        Ok(match value {
            Yaml::Null => None,
            Yaml::String(text) | Yaml::Real(text) => Some(text.clone()).filter(|t| !t.is_empty()),
            Yaml::Integer(n) => Some(n.to_string()),
            Yaml::Boolean(b) => Some(b.to_string()),
            _ => return Err(format!("{key} must be a single value or a list of them")),
        })
    };
    let text = match value {
        // Lists (`log-outputs: [stderr]`) are the flag's comma-separated form.
        Yaml::Array(items) => {
            let items: Vec<String> =
                items.iter().map(scalar).collect::<Result<Vec<_>, _>>()?.into_iter().flatten().collect();
            Some(items.join(",")).filter(|t| !t.is_empty())
        }
        value => scalar(value)?,
    };
    if let Some(text) = text {
        args.push(OsString::from(format!("--{flag}={text}")));
    }
    Ok(())
}
