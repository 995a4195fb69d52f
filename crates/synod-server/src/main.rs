//! The `synod` binary: read etcd's configuration, set up logging, run the member.

use std::process::ExitCode;

use synod_server::config::{self, LoadError, Notice};

fn main() -> ExitCode {
    let loaded = match config::load(std::env::args_os().collect(), &std::env::vars_os().collect::<Vec<_>>()) {
        Ok(loaded) => loaded,
        // --help and --version print and exit 0; a bad flag prints clap's message and exits 2.
        Err(LoadError::Flags(error)) => error.exit(),
        Err(LoadError::Invalid(message)) => {
            eprintln!("synod: {message}");
            return ExitCode::from(2);
        }
    };
    let config = loaded.config;
    if let Err(message) = synod_server::log::init(config.log_level, &config.log_outputs) {
        eprintln!("synod: {message}");
        return ExitCode::from(2);
    }
    for notice in &loaded.notices {
        match notice {
            Notice::Info(message) => tracing::info!("{message}"),
            Notice::Warn(message) => tracing::warn!("{message}"),
        }
    }

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
