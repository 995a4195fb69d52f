//! `watch [options] [key or prefix] [range_end] [--] [exec-command arg1 arg2 ...]`, as
//! etcdctl 3.4 and 3.5 run it.
//!
//! Events are printed in the chosen format as they come, until the server ends the watch.
//! After `--`, a command is run once per event, with `ETCD_WATCH_REVISION`,
//! `ETCD_WATCH_EVENT_TYPE`, `ETCD_WATCH_KEY` and `ETCD_WATCH_VALUE` set (the last three
//! quoted with Go's `%q`, as etcdctl sets them); a command that fails ends the watch.
//! `ETCDCTL_WATCH_KEY` and `ETCDCTL_WATCH_RANGE_END` give the key and range end.
//!
//! With `-i`, each line on stdin is a command: `watch [options] <key> [range_end] [--
//! command...]` adds a watch (all of them on one stream, as clientv3 shares it), and
//! `progress` asks the server for a progress notification. As in etcdctl, the end of stdin
//! ends the command.

use std::collections::{HashMap, VecDeque};
use std::io::Write;

use clap::Parser;
use synod_api::etcdserverpb::{
    WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse, watch_request,
};
use synod_api::mvccpb::event::EventType;
use synod_base::go_fmt::quote;
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

use super::{Context, emit};
use crate::cli::WatchArgs;
use crate::exit::{CtlError, CtlResult, ExitCode};
use crate::printer::{Printer, Reply, simple};
use crate::requests::prefix_end;

const BAD_ARGS_NUM: &str = "bad number of arguments";
const BAD_ARGS_CONFLICT_ENV: &str = "bad number of arguments (found conflicting environment key)";
const BAD_ARGS_SEPARATOR: &str = "bad number of arguments (found separator --, but no commands)";

/// `ETCDCTL_WATCH_KEY` and `ETCDCTL_WATCH_RANGE_END`, empty when unset.
struct EnvironmentKey {
    key: String,
    range_end: String,
}

impl EnvironmentKey {
    fn read() -> CtlResult<EnvironmentKey> {
        let get = |name| std::env::var(name).unwrap_or_default();
        let (key, range_end) = (get("ETCDCTL_WATCH_KEY"), get("ETCDCTL_WATCH_RANGE_END"));
        if key.is_empty() && !range_end.is_empty() {
            return Err(CtlError::bad_args(format!(
                "ETCDCTL_WATCH_KEY is empty but got ETCDCTL_WATCH_RANGE_END={}",
                quote(range_end.as_bytes())
            )));
        }
        Ok(EnvironmentKey { key, range_end })
    }

    /// The keys to watch: the variables' when set, else the arguments; both is a conflict.
    fn keys(&self, args: &[String]) -> CtlResult<Vec<String>> {
        if self.key.is_empty() {
            return Ok(args.to_vec());
        }
        if !args.is_empty() {
            return Err(CtlError::bad_args(BAD_ARGS_CONFLICT_ENV));
        }
        Ok([&self.key, &self.range_end].into_iter().filter(|k| !k.is_empty()).cloned().collect())
    }
}

/// One watch to create, and the command to run per event.
struct Spec {
    create: WatchCreateRequest,
    command: Vec<String>,
}

/// etcdctl's `getWatchChan`: the request for `keys` (a key, or a key and a range end) with
/// the flags given. Its errors are reported, in interactive mode, without ending the command.
fn spec(args: &WatchArgs, keys: &[String]) -> Result<Spec, String> {
    let (key, range_end) = match keys {
        [] => return Err(BAD_ARGS_NUM.to_string()),
        [key, end, ..] if keys.len() == 2 => {
            if args.prefix {
                return Err("`range_end` and `--prefix` are mutually exclusive".to_string());
            }
            (key.as_bytes().to_vec(), end.as_bytes().to_vec())
        }
        // etcdctl watches the first key alone when given more than two.
        [key, ..] => (key.as_bytes().to_vec(), Vec::new()),
    };
    let range_end = if args.prefix { prefix_end(&key) } else { range_end };
    let create = WatchCreateRequest {
        key,
        range_end,
        start_revision: args.rev,
        prev_kv: args.prev_kv,
        progress_notify: args.progress_notify,
        ..Default::default()
    };
    Ok(Spec { create, command: args.command.clone() })
}

/// A separator given with no command after it (clap keeps the words after `--` apart but
/// not whether `--` was there, so the raw words are looked at, as etcdctl does).
fn separator_without_command(words: &[String]) -> bool {
    words.last().is_some_and(|w| w == "--")
}

pub async fn run(context: &Context, args: &WatchArgs) -> anyhow::Result<()> {
    let environment = EnvironmentKey::read()?;
    let printer = context.printer()?;
    if args.interactive {
        let client = context.connect().await?;
        let mut lines = Lines { reader: tokio::io::BufReader::new(tokio::io::stdin()).lines(), environment };
        return Watcher::new(&client, printer).print(Some(&mut lines)).await;
    }
    let raw: Vec<String> = std::env::args().collect();
    if separator_without_command(&raw) {
        return Err(CtlError::bad_args(BAD_ARGS_SEPARATOR).into());
    }
    let keys = environment.keys(&args.args)?;
    if keys.len() > 2 {
        return Err(CtlError::bad_args(BAD_ARGS_NUM).into());
    }
    let spec = spec(args, &keys).map_err(CtlError::bad_args)?;
    let client = context.connect().await?;
    let mut watcher = Watcher::new(&client, printer);
    watcher.create(spec).await?;
    watcher.print(None).await
}

/// Watch requests waiting for the stream to take them.
const REQUESTS_QUEUED_MAX: usize = 64;

/// One watch stream, its watches, and what to run for each one's events.
struct Watcher<'c> {
    client: &'c crate::client::Client,
    printer: Printer,
    requests: mpsc::Sender<WatchRequest>,
    /// The stream's requests until it is opened, with its first request: an etcd member
    /// sends the response headers only with the first response.
    unopened: Option<mpsc::Receiver<WatchRequest>>,
    responses: Option<tonic::Streaming<WatchResponse>>,
    /// The commands of the watches asked for and not yet created, in order: the server
    /// answers creations in the order they were asked.
    creating: VecDeque<Vec<String>>,
    commands: HashMap<i64, Vec<String>>,
}

impl<'c> Watcher<'c> {
    fn new(client: &'c crate::client::Client, printer: Printer) -> Watcher<'c> {
        // Bounded: lines typed or piped in faster than the server takes them wait here.
        let (requests, receiver) = mpsc::channel(REQUESTS_QUEUED_MAX);
        Watcher {
            client,
            printer,
            requests,
            unopened: Some(receiver),
            responses: None,
            creating: VecDeque::new(),
            commands: HashMap::new(),
        }
    }

    /// Sends a request, opening the stream with the first one.
    async fn send(&mut self, request: watch_request::RequestUnion) -> CtlResult<()> {
        let _ = self.requests.send(WatchRequest { request_union: Some(request) }).await;
        if let Some(receiver) = self.unopened.take() {
            let responses = self
                .client
                .watch()
                .watch(tokio_stream::wrappers::ReceiverStream::new(receiver))
                .await
                .map_err(|s| CtlError::request(crate::client::request_error(&s)))?
                .into_inner();
            self.responses = Some(responses);
        }
        Ok(())
    }

    async fn create(&mut self, spec: Spec) -> CtlResult<()> {
        self.creating.push_back(spec.command);
        self.send(watch_request::RequestUnion::CreateRequest(spec.create)).await
    }

    /// Prints what the server sends until it ends the last watch. With `lines`, each line
    /// read from stdin is an interactive command.
    async fn print(&mut self, mut lines: Option<&mut Lines>) -> anyhow::Result<()> {
        loop {
            let next = async {
                match self.responses.as_mut() {
                    Some(responses) => responses.message().await,
                    None => std::future::pending().await,
                }
            };
            let response = match lines.as_deref_mut() {
                Some(lines) => tokio::select! {
                    line = lines.reader.next_line() => {
                        let line = line.ok().flatten().ok_or_else(|| {
                            CtlError::invalid_input("Error reading watch request line: EOF")
                        })?;
                        self.command(&line, &lines.environment).await?;
                        continue;
                    }
                    response = next => response,
                },
                None => next.await,
            };
            let response = match response {
                Ok(Some(response)) => response,
                Ok(None) => break,
                Err(status) => return Err(CtlError::request(crate::client::request_error(&status)).into()),
            };
            if response.created {
                let command = self.creating.pop_front().unwrap_or_default();
                self.commands.insert(response.watch_id, command);
                if !response.canceled {
                    continue;
                }
            }
            if !self.show(&response)? && lines.is_none() && self.commands.is_empty() {
                break;
            }
        }
        eprintln!("Error: watch is canceled by the server");
        Err(CtlError::silent(ExitCode::Interrupted).into())
    }

    /// etcdctl's `printWatchCh` for one response; false once its watch has ended.
    fn show(&mut self, response: &WatchResponse) -> anyhow::Result<bool> {
        if response.canceled {
            let reason = if response.compact_revision > 0 {
                "etcdserver: mvcc: required revision has been compacted".to_string()
            } else {
                response.cancel_reason.clone()
            };
            eprintln!("watch was canceled ({reason})");
        }
        let revision = response.header.as_ref().map_or(0, |h| h.revision);
        let progress = response.events.is_empty()
            && !response.canceled
            && response.compact_revision == 0
            && revision != 0;
        if progress {
            emit(format!("progress notify: {revision}\n").into_bytes().into())?;
        }
        let printer = self.printer;
        emit(
            printer.reply(Reply::Watch(response), |out| simple::watch(out, &response.events, printer.hex))?,
        )?;
        if let Some(command) = self.commands.get(&response.watch_id).filter(|c| !c.is_empty()) {
            for event in &response.events {
                run_command(command, revision, event)?;
            }
        }
        if response.canceled {
            self.commands.remove(&response.watch_id);
            return Ok(false);
        }
        Ok(true)
    }

    /// One interactive line: `watch ...`, `progress`, or a mistake reported on stderr.
    async fn command(&mut self, line: &str, environment: &EnvironmentKey) -> CtlResult<()> {
        let words: Vec<String> = crate::txn_parser::argify(line.as_bytes())?
            .into_iter()
            .map(|w| String::from_utf8_lossy(&w).into_owned())
            .collect();
        match words.first().map(String::as_str) {
            None => eprintln!("Invalid command: {line} (watch and progress supported)"),
            Some("watch") => {
                if words.len() < 2 && environment.key.is_empty() {
                    eprintln!("Invalid command {line} (command type or key is not provided)");
                    return Ok(());
                }
                if separator_without_command(&words) {
                    return Err(CtlError::bad_args(BAD_ARGS_SEPARATOR));
                }
                let parsed = WatchLine::try_parse_from(&words).map_err(|e| {
                    CtlError::bad_args(e.render().to_string().lines().next().unwrap_or_default().to_string())
                })?;
                let args = parsed.args;
                if args.command.is_empty() && environment.key.is_empty() && args.args.is_empty() {
                    return Err(CtlError::bad_args(BAD_ARGS_NUM));
                }
                if args.command.is_empty() && !environment.key.is_empty() && !args.args.is_empty() {
                    return Err(CtlError::bad_args(BAD_ARGS_CONFLICT_ENV));
                }
                let mut keys: Vec<String> = [&environment.key, &environment.range_end]
                    .into_iter()
                    .filter(|k| !k.is_empty())
                    .cloned()
                    .collect();
                keys.extend(args.args.iter().cloned());
                match spec(&args, &keys) {
                    Ok(spec) => self.create(spec).await?,
                    Err(reason) => eprintln!("Invalid command {line} ({reason})"),
                }
            }
            Some("progress") => {
                self.send(watch_request::RequestUnion::ProgressRequest(WatchProgressRequest {})).await?
            }
            Some(_) => eprintln!("Invalid command {line} (only support watch)"),
        }
        Ok(())
    }
}

/// Interactive commands on stdin.
struct Lines {
    reader: tokio::io::Lines<tokio::io::BufReader<tokio::io::Stdin>>,
    environment: EnvironmentKey,
}

/// One interactive `watch` line, parsed with the watch verb's own flags.
#[derive(Parser)]
#[command(name = "watch")]
struct WatchLine {
    #[command(flatten)]
    args: WatchArgs,
}

/// Runs the watch's command for one event, as etcdctl does: with the event in its
/// environment and this process's stdout and stderr; a failure ends synodctl.
fn run_command(command: &[String], revision: i64, event: &synod_api::mvccpb::Event) -> CtlResult<()> {
    let kind = EventType::try_from(event.r#type).map_or("UNKNOWN", |t| t.as_str_name());
    let kv = event.kv.clone().unwrap_or_default();
    let _ = std::io::stdout().flush();
    let status = std::process::Command::new(&command[0])
        .args(&command[1..])
        .env("ETCD_WATCH_REVISION", revision.to_string())
        .env("ETCD_WATCH_EVENT_TYPE", quote(kind.as_bytes()))
        .env("ETCD_WATCH_KEY", quote(&kv.key))
        .env("ETCD_WATCH_VALUE", quote(&kv.value))
        .status();
    let failure = match status {
        Ok(status) if status.success() => return Ok(()),
        Ok(status) => match (status.code(), std::os::unix::process::ExitStatusExt::signal(&status)) {
            (Some(code), _) => format!("exit status {code}"),
            // Go names the common signals.
            (None, Some(2)) => "signal: interrupt".to_string(),
            (None, Some(9)) => "signal: killed".to_string(),
            (None, Some(15)) => "signal: terminated".to_string(),
            (None, signal) => format!("signal: {}", signal.unwrap_or_default()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            format!("exec: {}: executable file not found in $PATH", quote(command[0].as_bytes()))
        }
        Err(e) => e.to_string(),
    };
    // Go's `%q` of a string slice: `["echo" "hi"]`.
    let shown: Vec<String> = command.iter().map(|w| quote(w.as_bytes())).collect();
    eprintln!("command [{}] error ({failure})", shown.join(" "));
    Err(CtlError::silent(ExitCode::Error))
}
