//! `check perf [--load s|m|l|xl] [--prefix P]`: etcdctl's performance check. For a minute
//! (the hidden `--duration` shortens it, for tests) clients put 1 KiB values under the
//! prefix at the load's rate; then the keys are deleted and the result is judged as etcdctl
//! judges it: throughput at least 90% of the rate, the slowest put under 0.5 s, a standard
//! deviation under 0.1 s, and no errors.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use synod_api::etcdserverpb::{
    CompactionRequest, DefragmentRequest, DeleteRangeRequest, PutRequest, RangeRequest,
};

use super::Context;
use crate::cli::CheckPerfArgs;
use crate::client::request_error;
use crate::exit::{CtlError, ExitCode};
use crate::requests::prefix_end;

/// etcdctl's loads: requests per second and clients.
fn load(name: &str) -> Option<(u64, usize)> {
    match name {
        "s" => Some((150, 50)),
        "m" => Some((1000, 200)),
        "l" => Some((8000, 500)),
        "xl" => Some((15000, 1000)),
        _ => None,
    }
}

pub async fn perf(context: &Context, args: &CheckPerfArgs) -> anyhow::Result<()> {
    let Some((rate, clients)) = load(&args.load) else {
        return Err(CtlError::bad_args(format!("unknown load option {}", args.load)).into());
    };
    let client = context.connect().await?;
    let prefix = args.prefix.as_bytes().to_vec();
    let existing = RangeRequest {
        key: prefix.clone(),
        range_end: prefix_end(&prefix),
        count_only: true,
        ..Default::default()
    };
    if client.call(client.kv().range(existing)).await?.count > 0 {
        return Err(CtlError::request(format!(
            "prefix {:?} has keys. Delete with etcdctl del --prefix {} first",
            args.prefix, args.prefix
        ))
        .into());
    }
    let duration = args.duration;
    let started = Instant::now();
    let sequence = Arc::new(AtomicU64::new(0));
    let planned = (rate as f64 * duration.as_secs_f64()).ceil() as u64;
    let progress = crate::progress::count(planned, "writing");
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (client, sequence, prefix) = (client.clone(), sequence.clone(), prefix.clone());
            let progress = progress.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = Vec::new();
                loop {
                    // Request n is due n/rate seconds after the start: the rate for all clients.
                    let n = sequence.fetch_add(1, Ordering::Relaxed);
                    let due = started + Duration::from_secs_f64(n as f64 / rate as f64);
                    if due >= started + duration {
                        break;
                    }
                    tokio::time::sleep_until(due.into()).await;
                    let key = [prefix.as_slice(), format!("{n:016x}").as_bytes()].concat();
                    let put = PutRequest { key, value: vec![b'x'; 1024], ..Default::default() };
                    let sent = Instant::now();
                    match client.kv().put(put).await {
                        Ok(_) => latencies.push(sent.elapsed().as_secs_f64()),
                        Err(status) => errors.push(request_error(&status)),
                    }
                    progress.inc(1);
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    for worker in workers {
        let (l, e) = worker.await?;
        latencies.extend(l);
        errors.extend(e);
    }
    progress.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    let delete =
        DeleteRangeRequest { key: prefix.clone(), range_end: prefix_end(&prefix), ..Default::default() };
    let deleted = client.call(client.kv().delete_range(delete)).await?;
    if args.auto_compact {
        let revision = deleted.header.map_or(0, |h| h.revision);
        client.call(client.kv().compact(CompactionRequest { revision, physical: true })).await?;
    }
    if args.auto_defrag {
        client.call(client.maintenance().defragment(DefragmentRequest {})).await?;
    }

    let mut ok = true;
    if !errors.is_empty() {
        println!("FAIL: too many errors");
        let mut kinds: Vec<&String> = errors.iter().collect();
        kinds.sort();
        kinds.dedup();
        for kind in kinds {
            println!("FAIL: ERROR({kind}) -> {}", errors.iter().filter(|e| *e == kind).count());
        }
        ok = false;
    }
    let rps = latencies.len() as f64 / elapsed;
    if rps / rate as f64 <= 0.9 {
        println!("FAIL: Throughput too low: {} writes/s", rps as u64 + 1);
        ok = false;
    } else {
        println!("PASS: Throughput is {} writes/s", rps as u64 + 1);
    }
    let slowest = latencies.iter().copied().fold(0.0, f64::max);
    if slowest > 0.5 {
        println!("FAIL: Slowest request took too long: {slowest:.6}s");
        ok = false;
    } else {
        println!("PASS: Slowest request took {slowest:.6}s");
    }
    let mean = latencies.iter().sum::<f64>() / latencies.len().max(1) as f64;
    let stddev =
        (latencies.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / latencies.len().max(1) as f64).sqrt();
    if stddev > 0.1 {
        println!("FAIL: Stddev too high: {stddev:.6}s");
        ok = false;
    } else {
        println!("PASS: Stddev is {stddev:.6}s");
    }
    if ok {
        println!("PASS");
        Ok(())
    } else {
        println!("FAIL");
        Err(CtlError::silent(ExitCode::Error).into())
    }
}
