//! The `synod` binary: parse etcd's flags, set up logging, run the member.

use std::process::ExitCode;

use clap::Parser;
use synod_server::config::{Flags, LogLevel};
use tracing::Level;

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
    // One JSON object per line on stderr, as etcd logs.
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .init();

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
