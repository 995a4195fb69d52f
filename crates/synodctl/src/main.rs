//! synodctl: synod's command-line client, a drop-in for etcdctl (API v3).
//!
//! It speaks etcd's gRPC API, so it works against synod and etcd alike, and it reproduces
//! etcdctl 3.5's flags, output formats (byte for byte), error texts and exit statuses for
//! the verbs it has, and reads its global flags from `ETCDCTL_*` variables as etcdctl does.
//! Scripts written for etcdctl keep working when `etcdctl` becomes `synodctl`.
//!
//! The code is laid out by concern: [`cli`] (flags), [`requests`] and [`txn_parser`]
//! (arguments to requests), [`client`] (connections and error texts), [`printer`] (output
//! formats), [`commands`] (the verbs), [`progress`] (bars on a terminal), [`limits`] and
//! [`exit`] (etcdctl's exit statuses).
//! The Go text formats etcdctl's output is made of are `synod_base::go_fmt`.

mod cli;
mod client;
mod commands;
mod exit;
mod limits;
mod printer;
mod progress;
mod requests;
mod txn_parser;

use std::process::ExitCode;

use clap::Parser;

use crate::exit::CtlError;

fn main() -> ExitCode {
    let args = match cli::with_environment(std::env::args_os().collect(), std::env::vars_os()) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("Error: {message}");
            return ExitCode::FAILURE;
        }
    };
    let cli = match cli::Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => {
            let usage_error = error.use_stderr();
            // Help and version go to stdout with status 0; usage mistakes exit 1, as
            // etcdctl's do (cobra's errors end in `cobrautl.ExitError`).
            let _ = error.print();
            return ExitCode::from(u8::from(usage_error));
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("Error: start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => match error.downcast_ref::<CtlError>() {
            Some(failure) => {
                if let Some(message) = &failure.message {
                    eprintln!("Error: {message}");
                }
                ExitCode::from(failure.code as u8)
            }
            None => {
                eprintln!("Error: {error:#}");
                ExitCode::FAILURE
            }
        },
    }
}
