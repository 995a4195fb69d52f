//! The verbs: each module turns parsed arguments into requests, sends them, and prints the
//! replies, in the order etcdctl does these things (so that, as in etcdctl, an argument
//! mistake is reported before any connection is tried, and an unsupported output format
//! after the request has been made).

mod auth;
mod check;
mod compaction;
mod counter;
mod del;
mod elect;
mod endpoint;
mod get;
mod lease;
mod local_cluster;
mod lock;
mod maintenance;
mod member;
mod mirror;
mod put;
mod snapshot;
mod txn;
mod watch;

use std::io::Write;

use anyhow::Context as _;

use crate::cli::{
    CheckCommand, Cli, Command, CounterCommand, EndpointCommand, GlobalFlags, MemberCommand, SnapshotCommand,
};
use crate::client::{Client, ClientConfig};
use crate::exit::CtlResult;
use crate::printer::{Format, Output, Printer};

/// What every command needs from the global flags.
pub struct Context {
    endpoints: Vec<String>,
    client_config: ClientConfig,
    write_out: String,
    hex: bool,
}

impl Context {
    fn new(flags: &GlobalFlags) -> CtlResult<Context> {
        Ok(Context {
            endpoints: flags.endpoints.iter().map(|e| e.trim().to_string()).collect(),
            client_config: ClientConfig::from_flags(flags)?,
            write_out: flags.write_out.clone(),
            hex: flags.hex,
        })
    }

    /// The printer for `--write-out`; an unknown format fails here (exit status 4).
    fn printer(&self) -> CtlResult<Printer> {
        Ok(Printer::new(Format::parse(&self.write_out)?, self.hex))
    }

    /// A connection to the first endpoint that answers.
    async fn connect(&self) -> CtlResult<Client> {
        Client::connect(&self.endpoints, &self.client_config).await
    }
}

/// Runs the command the user asked for.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let context = Context::new(&cli.global)?;
    match cli.command {
        Command::Get(args) => get::run(&context, &args).await,
        Command::Put(args) => put::run(&context, &args).await,
        Command::Del(args) => del::run(&context, &args).await,
        Command::Txn(args) => txn::run(&context, &args).await,
        Command::Compaction(args) => compaction::run(&context, &args).await,
        Command::Endpoint(args) => match args.command {
            EndpointCommand::Health => endpoint::health(&context, args.cluster).await,
            EndpointCommand::Status => endpoint::status(&context, args.cluster).await,
            EndpointCommand::Hashkv { rev } => maintenance::hashkv(&context, args.cluster, rev).await,
        },
        Command::Member(args) => match args.command {
            MemberCommand::List => member::list(&context).await,
        },
        Command::LocalCluster(args) => local_cluster::run(&args).await,
        Command::Snapshot(args) => match args.command {
            SnapshotCommand::Save { args } => snapshot::save(&context, &args).await,
            SnapshotCommand::Restore(args) => snapshot::restore(&args),
            SnapshotCommand::Status { args } => snapshot::status(&context, &args),
        },
        Command::Counter(args) => match args.command {
            CounterCommand::Add { retry_timeout, args } => counter::add(&context, retry_timeout, &args).await,
            CounterCommand::Get { args } => counter::get(&context, &args).await,
        },
        Command::Lock(args) => lock::run(&context, &args).await,
        Command::Lease(args) => lease::run(&context, &args).await,
        Command::Alarm(args) => maintenance::alarm(&context, &args).await,
        Command::Defrag { cluster } => maintenance::defrag(&context, cluster).await,
        Command::MoveLeader { args } => maintenance::move_leader(&context, &args).await,
        Command::Version => maintenance::version(),
        Command::Watch(args) => watch::run(&context, &args).await,
        Command::Elect(args) => elect::run(&context, &args).await,
        Command::MakeMirror(args) => mirror::run(&context, &args).await,
        Command::Check { command: CheckCommand::Perf(args) } => check::perf(&context, &args).await,
        Command::Auth { command } => auth::auth(&context, &command).await,
        Command::User { command } => auth::user(&context, &command).await,
        Command::Role { command } => auth::role(&context, &command).await,
    }
}

/// Writes a printer's output to stdout and stderr.
fn emit(output: Output) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&output.stdout).context("write to stdout")?;
    stdout.flush().context("write to stdout")?;
    std::io::stderr().write_all(&output.stderr).context("write to stderr")?;
    Ok(())
}
