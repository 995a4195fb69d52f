//! `watch [--prefix] [--rev N] [--prev-kv] [--progress-notify] <key> [range_end]`: prints
//! events as they come, in etcdctl's simple format, until interrupted or the server
//! cancels the watch. Interactive watches (`-i`) and running a command per event are not
//! offered yet.

use std::io::Write;

use synod_api::etcdserverpb::{WatchCreateRequest, WatchRequest, watch_request};

use super::Context;
use crate::cli::WatchArgs;
use crate::exit::{CtlError, ExitCode};
use crate::printer::simple;
use crate::requests::prefix_end;

pub async fn run(context: &Context, args: &WatchArgs) -> anyhow::Result<()> {
    if args.interactive {
        return Err(CtlError::bad_feature("interactive watch (-i) is not offered by synodctl yet").into());
    }
    let (key, range_end) = match args.args.as_slice() {
        [] => return Err(CtlError::bad_args("watch in non-interactive mode requires one or two arguments as key or prefix, with range end").into()),
        [key] => (key.as_bytes().to_vec(), Vec::new()),
        [key, end] if !args.prefix => (key.as_bytes().to_vec(), end.as_bytes().to_vec()),
        _ => return Err(CtlError::bad_args("`range_end` and `--prefix` are mutually exclusive; running a command per event is not offered yet").into()),
    };
    let range_end = if args.prefix { prefix_end(&key) } else { range_end };
    let printer = context.simple_printer("watch")?;
    let client = context.connect().await?;
    let create = WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(WatchCreateRequest {
            key,
            range_end,
            start_revision: args.rev,
            prev_kv: args.prev_kv,
            progress_notify: args.progress_notify,
            ..Default::default()
        })),
    };
    // The request stream stays open for as long as the watch runs.
    let requests = tokio_stream::StreamExt::chain(tokio_stream::once(create), tokio_stream::pending());
    let mut responses = client
        .watch()
        .watch(requests)
        .await
        .map_err(|s| CtlError::request(crate::client::request_error(&s)))?
        .into_inner();
    let mut stdout = std::io::stdout();
    loop {
        let response = match responses.message().await {
            Ok(Some(response)) => response,
            Ok(None) => break,
            Err(status) => return Err(CtlError::request(crate::client::request_error(&status)).into()),
        };
        if response.canceled {
            let reason = if response.compact_revision > 0 {
                "etcdserver: mvcc: required revision has been compacted".to_string()
            } else {
                response.cancel_reason.clone()
            };
            eprintln!("watch was canceled ({reason})");
            break;
        }
        if response.events.is_empty() && !response.created && response.header.is_some() {
            let revision = response.header.as_ref().map_or(0, |h| h.revision);
            println!("progress notify: {revision}");
            continue;
        }
        let mut out = Vec::new();
        simple::watch(&mut out, &response.events, printer.hex);
        stdout.write_all(&out)?;
        stdout.flush()?;
    }
    eprintln!("Error: watch is canceled by the server");
    Err(CtlError::silent(ExitCode::Interrupted).into())
}
