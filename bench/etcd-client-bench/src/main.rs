//! etcd-client-bench: puts and gets against any etcd endpoints through the etcd-client crate.
//!
//! ```text
//! etcd-client-bench WORKLOAD --endpoints URL[,URL...] [--clients 100] [--conns 10]
//!                   [--seconds 10] [--keys 100000] [--value-size 256]
//! ```
//!
//! WORKLOAD is `load` (put every key once, in order), `put` (random keys), `get-l` or `get-s`
//! (linearizable or serializable gets of random keys). Each connection is one etcd-client
//! `Client` on one endpoint, taken in turn; the clients share them, each with one request in
//! flight. Prints one line: workload, requests, errors, seconds, requests/s, p50, p99 (µs).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions};
use hdrhistogram::Histogram;

struct Args {
    workload: String,
    endpoints: Vec<String>,
    clients: usize,
    conns: usize,
    seconds: u64,
    keys: u64,
    value_size: usize,
}

fn parse() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let workload = args.next().ok_or("usage: etcd-client-bench WORKLOAD --endpoints URL,... [flags]")?;
    if !["load", "put", "get-l", "get-s"].contains(&workload.as_str()) {
        return Err(format!("unknown workload {workload:?}: load, put, get-l or get-s"));
    }
    let mut parsed = Args {
        workload,
        endpoints: Vec::new(),
        clients: 100,
        conns: 10,
        seconds: 10,
        keys: 100_000,
        value_size: 256,
    };
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let number = || value.parse::<u64>().map_err(|_| format!("{flag} {value}: not a number"));
        match flag.as_str() {
            "--endpoints" => parsed.endpoints = value.split(',').map(str::to_string).collect(),
            "--clients" => parsed.clients = number()? as usize,
            "--conns" => parsed.conns = number()? as usize,
            "--seconds" => parsed.seconds = number()?,
            "--keys" => parsed.keys = number()?,
            "--value-size" => parsed.value_size = number()? as usize,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if parsed.endpoints.is_empty() || parsed.clients == 0 || parsed.conns == 0 || parsed.keys == 0 {
        return Err("--endpoints, --clients, --conns and --keys must be given and not zero".into());
    }
    Ok(parsed)
}

fn key(n: u64) -> String {
    format!("{n:08}")
}

/// A small xorshift generator per client: random keys without a dependency.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[tokio::main]
async fn main() {
    let args = match parse() {
        Ok(args) => args,
        Err(error) => {
            eprintln!("etcd-client-bench: {error}");
            std::process::exit(2);
        }
    };
    let mut conns = Vec::with_capacity(args.conns);
    for i in 0..args.conns {
        let endpoint = &args.endpoints[i % args.endpoints.len()];
        match Client::connect([endpoint], None).await {
            Ok(client) => conns.push(client),
            Err(error) => {
                eprintln!("etcd-client-bench: connect to {endpoint}: {error}");
                std::process::exit(1);
            }
        }
    }
    let value = vec![b'v'; args.value_size];
    let stop = Arc::new(AtomicBool::new(false));
    let next_key = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.clients);
    for c in 0..args.clients {
        let mut kv = conns[c % conns.len()].kv_client();
        let (workload, value, stop, next_key) = (args.workload.clone(), value.clone(), stop.clone(), next_key.clone());
        let keys = args.keys;
        tasks.push(tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
            let mut errors = 0u64;
            let mut random = 0x9E37_79B9_7F4A_7C15u64 ^ (c as u64 + 1);
            loop {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let n = match workload.as_str() {
                    "load" => {
                        let n = next_key.fetch_add(1, Ordering::Relaxed);
                        if n >= keys {
                            break;
                        }
                        n
                    }
                    _ => next_random(&mut random) % keys,
                };
                let sent = Instant::now();
                let result = match workload.as_str() {
                    "load" | "put" => kv.put(key(n), value.clone(), None).await.map(drop),
                    "get-l" => kv.get(key(n), None).await.map(drop),
                    _ => kv.get(key(n), Some(GetOptions::new().with_serializable())).await.map(drop),
                };
                match result {
                    Ok(()) => histogram.saturating_record(sent.elapsed().as_micros() as u64),
                    Err(_) => errors += 1,
                }
            }
            (histogram, errors)
        }));
    }
    if args.workload != "load" {
        tokio::time::sleep(Duration::from_secs(args.seconds)).await;
        stop.store(true, Ordering::Relaxed);
    }
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    let mut errors = 0;
    for task in tasks {
        let (h, e) = task.await.expect("a client task");
        histogram.add(h).expect("same bounds");
        errors += e;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{} {} {} {:.2} {:.0} {} {}",
        args.workload,
        histogram.len(),
        errors,
        seconds,
        histogram.len() as f64 / seconds,
        histogram.value_at_quantile(0.5),
        histogram.value_at_quantile(0.99)
    );
}
