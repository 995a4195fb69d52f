//! `lock`: holds a named lock through etcd's Lock service, with a session lease kept alive
//! for as long as synodctl holds it.
//!
//! Output: the lock's key (as etcdctl prints it), then `fencing token: REV`, the key's
//! create revision, which every later holder's exceeds: hand it to the resource the lock
//! protects, which refuses writes with a smaller token than it has seen (docs/locks.md).

use std::time::Duration;

use synod_api::etcdserverpb::{LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest, RangeRequest};
use synod_api::v3lockpb::{LockRequest, UnlockRequest};

use super::Context;
use crate::cli::LockArgs;
use crate::client::{Client, request_error};
use crate::exit::CtlError;

pub async fn run(context: &Context, args: &LockArgs) -> anyhow::Result<()> {
    let Some((name, command)) = args.args.split_first() else {
        return Err(
            CtlError::bad_args("lock takes a lock name argument and an optional command to execute").into()
        );
    };
    if args.ttl <= 0 {
        return Err(CtlError::bad_args("--ttl must be a positive number of seconds").into());
    }
    let client = context.connect().await?;
    let lease = client.call(client.lease().lease_grant(LeaseGrantRequest { ttl: args.ttl, id: 0 })).await?.id;
    let keepalive = tokio::spawn(keep_alive(client.clone(), lease, args.ttl));
    let outcome = hold(&client, name, lease, command).await;
    keepalive.abort();
    // Revoking the lease deletes the lock's key: the lock is released even if Unlock failed.
    let _ = client.call(client.lease().lease_revoke(LeaseRevokeRequest { id: lease })).await;
    outcome
}

async fn hold(client: &Client, name: &str, lease: i64, command: &[String]) -> anyhow::Result<()> {
    // Waiting for the lock has no timeout, as in etcdctl; Ctrl-C stops it.
    let request = LockRequest { name: name.as_bytes().to_vec(), lease };
    let mut locks = client.lock();
    let key = tokio::select! {
        locked = locks.lock(request) => locked.map_err(|status| CtlError::request(request_error(&status)))?.into_inner().key,
        _ = stop() => return Ok(()),
    };
    let range = RangeRequest { key: key.clone(), ..Default::default() };
    let token = client.call(client.kv().range(range)).await?.kvs.first().map_or(0, |kv| kv.create_revision);
    let key_text = String::from_utf8_lossy(&key).into_owned();
    let outcome = match command.split_first() {
        None => {
            println!("{key_text}");
            println!("fencing token: {token}");
            stop().await;
            Ok(())
        }
        Some((program, program_args)) => {
            let mut child = std::process::Command::new(program);
            child.args(program_args).env("ETCD_LOCK_KEY", &key_text).env("ETCD_LOCK_REV", token.to_string());
            let status = tokio::task::spawn_blocking(move || child.status())
                .await
                .map_err(|e| CtlError::request(format!("run {program}: {e}")))?
                .map_err(|e| CtlError::request(format!("run {program}: {e}")))?;
            match status.code() {
                Some(0) => Ok(()),
                Some(code) => Err(CtlError::request(format!("{program} exited with status {code}")).into()),
                None => Err(CtlError::request(format!("{program} was killed by a signal")).into()),
            }
        }
    };
    client.call(client.lock().unlock(UnlockRequest { key })).await?;
    outcome
}

/// Ctrl-C or SIGTERM.
pub(super) async fn stop() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

/// Renews the lease a third of its TTL apart while the lock (or a candidacy) is held.
/// Returns once the lease is gone (expired or revoked): the session, and what it held, is
/// lost.
pub(super) async fn keep_alive(client: Client, lease: i64, ttl: i64) {
    let period = Duration::from_millis(ttl as u64 * 1000 / 3);
    loop {
        tokio::time::sleep(period).await;
        let request = LeaseKeepAliveRequest { id: lease };
        let renewed = client.lease().lease_keep_alive(tokio_stream::once(request)).await;
        match renewed {
            Ok(response) => match response.into_inner().message().await {
                Ok(Some(answer)) if answer.ttl > 0 => {}
                Ok(Some(_)) => return,
                _ => eprintln!("Error: the session's lease could not be renewed; it may be lost"),
            },
            Err(status) => eprintln!("Error: renewing the session's lease: {}", request_error(&status)),
        }
    }
}
