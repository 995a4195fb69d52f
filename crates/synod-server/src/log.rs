//! Logs in etcd's layout: one JSON object per line, as etcd's zap logger writes them, with
//! `level`, `ts`, `caller` and `msg` first and then the event's own fields, so that one log
//! pipeline parses etcd's and synod's lines alike:
//!
//! ```text
//! {"level":"info","ts":"2026-12-07T03:57:39.216817Z","caller":"synod-server/lib.rs:120","msg":"listening for peers","address":"http://127.0.0.1:2380"}
//! ```
//!
//! Lines go to every `--log-outputs` target; a target that fails to take a line does not stop
//! the others (there is nowhere left to report it).

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

use crate::config::{LogLevel, LogOutput};

/// Where one output's lines go.
enum Sink {
    Stderr,
    Stdout,
    File(std::fs::File),
}

/// The layer that writes etcd's layout to the outputs.
pub struct ZapLayer {
    sinks: Mutex<Vec<Sink>>,
}

impl ZapLayer {
    /// Opens the outputs; a file is created if needed and appended to.
    pub fn open(outputs: &[LogOutput]) -> Result<ZapLayer, String> {
        let mut sinks = Vec::new();
        for output in outputs {
            sinks.push(match output {
                LogOutput::Stderr => Sink::Stderr,
                LogOutput::Stdout => Sink::Stdout,
                LogOutput::File(path) => Sink::File(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .map_err(|e| format!("--log-outputs: cannot open {}: {e}", path.display()))?,
                ),
            });
        }
        Ok(ZapLayer { sinks: Mutex::new(sinks) })
    }
}

impl<S: Subscriber> Layer<S> for ZapLayer {
    fn on_event(&self, event: &Event<'_>, _context: Context<'_, S>) {
        let line = format_line(event, SystemTime::now());
        let mut sinks = self.sinks.lock().unwrap_or_else(|p| p.into_inner());
        for sink in sinks.iter_mut() {
            let _ = match sink {
                Sink::Stderr => std::io::stderr().lock().write_all(line.as_bytes()),
                Sink::Stdout => std::io::stdout().lock().write_all(line.as_bytes()),
                Sink::File(file) => file.write_all(line.as_bytes()),
            };
        }
    }
}

/// Sets up the process's logging: `level` and above, in etcd's layout, to `outputs`.
pub fn init(level: LogLevel, outputs: &[LogOutput]) -> Result<(), String> {
    let level = match level {
        LogLevel::Debug => Level::DEBUG,
        LogLevel::Info => Level::INFO,
        LogLevel::Warn => Level::WARN,
        LogLevel::Error | LogLevel::Panic | LogLevel::Fatal => Level::ERROR,
    };
    // openraft narrates every state change at INFO; at etcd's default level only its
    // warnings are worth a line. --log-level=debug shows its INFO lines too.
    let openraft_level = if level == Level::DEBUG { Level::INFO } else { level.min(Level::WARN) };
    // Its per-heartbeat complaints about a member that is down are left out below debug:
    // the peer transport logs once when a member becomes unreachable and once when it is back.
    let retry_noise = if level == Level::DEBUG { Level::WARN } else { level.min(Level::ERROR) };
    let filter = Targets::new()
        .with_default(level)
        .with_target("openraft", openraft_level)
        .with_target("openraft::core::heartbeat", retry_noise)
        .with_target("openraft::replication", retry_noise)
        .with_target("openraft::engine::handler::replication_handler", retry_noise)
        .with_target("openraft::core::raft_core", retry_noise);
    let layer = ZapLayer::open(outputs)?;
    tracing_subscriber::registry()
        .with(layer.with_filter(filter))
        .try_init()
        .map_err(|e| format!("set up logging: {e}"))
}

/// One event as a line of etcd's layout, newline included.
fn format_line(event: &Event<'_>, now: SystemTime) -> String {
    let metadata = event.metadata();
    let level = match *metadata.level() {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG | Level::TRACE => "debug",
    };
    let caller = match (metadata.file(), metadata.line()) {
        (Some(file), Some(line)) => format!("{}:{line}", short_path(file)),
        _ => metadata.target().to_string(),
    };
    let mut fields = Fields::default();
    event.record(&mut fields);
    let mut line = String::with_capacity(160);
    line.push_str("{\"level\":");
    push_json(&mut line, level);
    line.push_str(",\"ts\":");
    push_json(&mut line, &timestamp(now));
    line.push_str(",\"caller\":");
    push_json(&mut line, &caller);
    line.push_str(",\"msg\":");
    push_json(&mut line, &fields.message);
    for (name, value) in &fields.rest {
        line.push(',');
        push_json(&mut line, name);
        line.push(':');
        line.push_str(&value.to_string());
    }
    line.push_str("}\n");
    line
}

fn push_json(line: &mut String, text: &str) {
    line.push_str(&serde_json::Value::from(text).to_string());
}

/// `crates/synod-server/src/lib.rs` as `synod-server/lib.rs`, the way zap names a caller by
/// its package directory and file.
fn short_path(file: &str) -> String {
    match file.rsplit_once("/src/") {
        Some((krate, rest)) => {
            let krate = krate.rsplit('/').next().unwrap_or(krate);
            format!("{krate}/{rest}")
        }
        None => file.to_string(),
    }
}

/// Fields of one event: its message, and the rest in the order they were recorded.
#[derive(Default)]
struct Fields {
    message: String,
    rest: Vec<(&'static str, serde_json::Value)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.rest.push((field.name(), value.into()));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.rest.push((field.name(), value.into()));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.rest.push((field.name(), value.into()));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.rest.push((field.name(), value.into()));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.rest.push((field.name(), value.into()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.rest.push((field.name(), text.into()));
        }
    }
}

/// `now` as RFC 3339 in UTC with microseconds, as etcd 3.5 writes `ts`.
fn timestamp(now: SystemTime) -> String {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_micros()
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Timestamps are UTC, with microseconds, across month, leap-day and year boundaries.
    #[test]
    fn timestamps_are_rfc3339_utc() {
        let at =
            |secs: u64, micros: u64| timestamp(UNIX_EPOCH + Duration::from_micros(secs * 1_000_000 + micros));
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.000005Z");
        assert_eq!(at(1_796_615_859, 216_817), "2026-12-07T03:57:39.216817Z");
        assert_eq!(at(4_102_444_799, 999_999), "2099-12-31T23:59:59.999999Z");
    }

    /// A caller is the crate's directory and the file, as zap's package/file.go.
    #[test]
    fn callers_are_short() {
        assert_eq!(short_path("crates/synod-server/src/lib.rs"), "synod-server/lib.rs");
        assert_eq!(
            short_path("/root/.cargo/registry/src/index/openraft-0.10.0/src/core/raft_core.rs"),
            "openraft-0.10.0/core/raft_core.rs"
        );
        assert_eq!(short_path("build.rs"), "build.rs");
    }

    /// A line has etcd's keys first, then the fields with their JSON types.
    #[test]
    fn lines_have_etcds_layout() {
        let lines = std::sync::Arc::new(Mutex::new(Vec::<String>::new()));
        struct Capture(std::sync::Arc<Mutex<Vec<String>>>);
        impl<S: Subscriber> Layer<S> for Capture {
            fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
                let line = format_line(event, UNIX_EPOCH);
                self.0.lock().unwrap().push(line);
            }
        }
        let subscriber = tracing_subscriber::registry().with(Capture(lines.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(member_id = %format!("{:x}", 255), term = 3u64, leader = true, "lost \"quorum\"");
        });
        let lines = lines.lock().unwrap();
        let line = &lines[0];
        assert!(
            line.starts_with(
                "{\"level\":\"warn\",\"ts\":\"1970-01-01T00:00:00.000000Z\",\"caller\":\"synod-server/log.rs:"
            ),
            "{line}"
        );
        assert!(
            line.ends_with(
                ",\"msg\":\"lost \\\"quorum\\\"\",\"member_id\":\"ff\",\"term\":3,\"leader\":true}\n"
            ),
            "{line}"
        );
        let parsed: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(parsed["term"], 3);
    }
}
