//! The `synod` binary: parse etcd's flags, set up logging, run the member.

use std::process::ExitCode;

use clap::Parser;
use synod_server::config::{Flags, LogLevel};
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

fn main() -> ExitCode {
    let config = match Flags::parse().into_config() {
        Ok(config) => config,
        Err(message) => {
            eprintln!("synod: {message}");
            return ExitCode::from(2);
        }
    };
    let level = match config.log_level {
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
    // One JSON object per line on stderr, as etcd logs.
    let format = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_writer(std::io::stderr);
    tracing_subscriber::registry().with(format.with_filter(filter)).init();

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("synod: start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(synod_server::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "synod failed");
            ExitCode::FAILURE
        }
    }
}
