//! `make-mirror <destination>`: copies the keys under `--prefix` from the source cluster to
//! the destination, as they are at one revision, then applies every later change from a
//! watch, in order, for as long as it runs; every 30 s it prints how many keys it has
//! written, as etcdctl does. A key's prefix is replaced by `--dest-prefix`, or removed
//! with `--no-dest-prefix`.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use synod_api::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, WatchCreateRequest, WatchRequest, watch_request,
};
use synod_api::mvccpb::event::EventType;

use super::Context;
use crate::cli::MirrorArgs;
use crate::client::{Client, ClientConfig, request_error};
use crate::exit::CtlError;
use crate::requests::prefix_end;

/// How often the running count is printed.
const REPORT_INTERVAL: Duration = Duration::from_secs(30);

pub async fn run(context: &Context, args: &MirrorArgs) -> anyhow::Result<()> {
    let [destination] = args.args.as_slice() else {
        return Err(CtlError::bad_args("make-mirror takes one destination argument").into());
    };
    if args.no_dest_prefix && args.dest_prefix.is_some() {
        return Err(CtlError::bad_args(
            "`--dest-prefix` and `--no-dest-prefix` cannot be set at the same time, choose one",
        )
        .into());
    }
    let prefix = args.prefix.clone().unwrap_or_default().into_bytes();
    let dest_prefix: Vec<u8> = match (&args.dest_prefix, args.no_dest_prefix) {
        (_, true) => Vec::new(),
        (Some(dest), false) => dest.clone().into_bytes(),
        (None, false) => prefix.clone(),
    };
    let source = context.connect().await?;
    let dest_config = ClientConfig { tls: dest_tls(args)?, login: None, ..context.client_config.clone() };
    let dest = Client::connect(std::slice::from_ref(destination), &dest_config).await?;
    let rename = |key: &[u8]| -> Vec<u8> { [dest_prefix.as_slice(), &key[prefix.len()..]].concat() };

    let total = Arc::new(AtomicI64::new(0));
    let reporter = tokio::spawn({
        let total = total.clone();
        async move {
            loop {
                tokio::time::sleep(REPORT_INTERVAL).await;
                println!("{}", total.load(Ordering::Relaxed));
            }
        }
    });
    let outcome = async {
        // Everything as of one revision, a page at a time in key order.
        let range_end = if prefix.is_empty() { vec![0] } else { prefix_end(&prefix) };
        let mut start = prefix.clone();
        let mut revision = 0;
        loop {
            let page = RangeRequest {
                key: start.clone(),
                range_end: range_end.clone(),
                revision,
                limit: 1000,
                ..Default::default()
            };
            let response = source.call(source.kv().range(page)).await?;
            if revision == 0 {
                revision = response.header.as_ref().map_or(0, |h| h.revision);
            }
            for kv in &response.kvs {
                let put = PutRequest { key: rename(&kv.key), value: kv.value.clone(), ..Default::default() };
                dest.call(dest.kv().put(put)).await?;
                total.fetch_add(1, Ordering::Relaxed);
            }
            match response.kvs.last() {
                Some(last) if response.more => start = [last.key.as_slice(), &[0]].concat(),
                _ => break,
            }
        }
        // Then every change after that revision, in order.
        let create = WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(WatchCreateRequest {
                key: prefix.clone(),
                range_end,
                start_revision: revision + 1,
                ..Default::default()
            })),
        };
        let requests = tokio_stream::StreamExt::chain(tokio_stream::once(create), tokio_stream::pending());
        let mut events = source
            .watch()
            .watch(requests)
            .await
            .map_err(|s| CtlError::request(request_error(&s)))?
            .into_inner();
        loop {
            let Some(response) = events.message().await.map_err(|s| CtlError::request(request_error(&s)))?
            else {
                return Err(CtlError::request("the source cluster ended the watch"));
            };
            if response.canceled {
                return Err(CtlError::request(format!(
                    "the source cluster canceled the watch: {}",
                    response.cancel_reason
                )));
            }
            for event in response.events {
                let Some(kv) = event.kv else { continue };
                if event.r#type == EventType::Delete as i32 {
                    let delete = DeleteRangeRequest { key: rename(&kv.key), ..Default::default() };
                    dest.call(dest.kv().delete_range(delete)).await?;
                } else {
                    let put = PutRequest { key: rename(&kv.key), value: kv.value, ..Default::default() };
                    dest.call(dest.kv().put(put)).await?;
                }
                total.fetch_add(1, Ordering::Relaxed);
            }
        }
    };
    let outcome: Result<(), CtlError> = tokio::select! {
        outcome = outcome => outcome,
        () = super::lock::stop() => Ok(()),
    };
    reporter.abort();
    Ok(outcome?)
}

/// TLS for the destination from `--dest-cacert`, `--dest-cert` and `--dest-key`.
fn dest_tls(args: &MirrorArgs) -> Result<Option<tonic::transport::ClientTlsConfig>, CtlError> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| CtlError::bad_args(format!("read {}: {e}", path.display())))
    };
    let Some(ca) = &args.dest_cacert else {
        if args.dest_cert.is_some() || args.dest_key.is_some() {
            return Err(CtlError::bad_args("destination TLS needs --dest-cacert"));
        }
        return Ok(None);
    };
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
    if let (Some(cert), Some(key)) = (&args.dest_cert, &args.dest_key) {
        tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(Some(tls))
}
