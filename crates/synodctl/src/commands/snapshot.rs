//! `snapshot save`, `snapshot status` and `snapshot restore`: a member's whole state to a
//! file, what such a file holds, and a new data directory from it.
//!
//! A snapshot file is what Maintenance.Snapshot streams, from synod as from etcd: a bbolt
//! database with etcd's buckets, then its SHA-256. So `restore` takes etcd's snapshots too,
//! and an etcd cluster's keys, revisions and leases move onto synod.

use std::io::{Read, Write};

use anyhow::Context as _;
use prost::Message as _;
use sha2::Digest as _;
use synod_api::etcdserverpb::SnapshotRequest;
use synod_api::synodpb::RestoredCluster;
use synod_base::{GroupId, bootstrap};
use synod_storage::{DataDir, LogStore, RESTORED_CLUSTER_META, StateStore, etcd_snapshot};

use super::Context;
use crate::cli::SnapshotRestoreArgs;
use crate::exit::CtlError;
use crate::printer::Format;

/// The bytes a snapshot's checksum takes at its end.
const CHECKSUM_BYTES: u64 = 32;

pub async fn save(context: &Context, args: &[String]) -> anyhow::Result<()> {
    let [path] = args else {
        return Err(CtlError::bad_args("snapshot save expects one argument").into());
    };
    if context.endpoints.len() != 1 {
        return Err(CtlError::bad_args(format!(
            "snapshot must be requested to one selected node, not multiple {:?}",
            context.endpoints
        ))
        .into());
    }
    let client = context.connect().await?;
    let mut stream = client.call(client.maintenance().snapshot(SnapshotRequest {})).await?;
    let part = format!("{path}.part");
    // Private to its owner, as etcdctl makes it: it holds every key and the auth data.
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&part).with_context(|| format!("create {part}"))?;
    let mut size = 0u64;
    let mut progress = None;
    while let Some(message) =
        stream.message().await.map_err(|s| CtlError::request(crate::client::request_error(&s)))?
    {
        file.write_all(&message.blob).with_context(|| format!("write {part}"))?;
        size += message.blob.len() as u64;
        // Each message says how much is still to come.
        progress
            .get_or_insert_with(|| crate::progress::bytes(size + message.remaining_bytes, "saving snapshot"))
            .set_position(size);
    }
    if let Some(progress) = progress {
        progress.finish_and_clear();
    }
    if size % 512 != CHECKSUM_BYTES {
        return Err(CtlError::request(format!("sha256 checksum not found [bytes: {size}]")).into());
    }
    file.sync_all().with_context(|| format!("sync {part}"))?;
    std::fs::rename(&part, path).with_context(|| format!("rename {part} to {path}"))?;
    println!("Snapshot saved at {path}");
    Ok(())
}

pub fn restore(args: &SnapshotRestoreArgs) -> anyhow::Result<()> {
    let [path] = args.args.as_slice() else {
        return Err(CtlError::bad_args("snapshot restore requires exactly one argument").into());
    };
    let cluster = restored_cluster(args).map_err(CtlError::request)?;
    let data_dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => format!("{}.synod", args.name).into(),
    };
    let holds_files = |dir: &std::path::Path| {
        dir.exists() && std::fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(true)
    };
    if holds_files(&data_dir) {
        return Err(CtlError::request(format!("data-dir {:?} exists", data_dir.display())).into());
    }
    if let Some(wal_dir) = args.wal_dir.as_deref().filter(|dir| holds_files(dir)) {
        return Err(CtlError::request(format!("wal-dir {:?} exists", wal_dir.display())).into());
    }
    let mut file = std::fs::File::open(path).with_context(|| format!("open {path}"))?;
    let body = checked_body(&mut file, args.skip_hash_check).map_err(CtlError::request)?;
    // Built next to the target and renamed into place once complete, so that neither a
    // failure nor a crash leaves a data dir a member would start on half filled.
    let staging = staging_dir(&data_dir)?;
    let _ = std::fs::remove_dir_all(&staging);
    let wal_dir_existed = args.wal_dir.as_deref().is_some_and(std::path::Path::exists);
    let restored = restore_into(&mut file, body, &staging, args.wal_dir.as_deref(), cluster.as_ref())
        .and_then(|restored| {
            if data_dir.exists() {
                // An empty directory the user made for it.
                std::fs::remove_dir(&data_dir).with_context(|| format!("replace {}", data_dir.display()))?;
            }
            std::fs::rename(&staging, &data_dir)
                .with_context(|| format!("move the restored data into {}", data_dir.display()))?;
            if let Some(parent) = data_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::File::open(parent)
                    .and_then(|d| d.sync_all())
                    .with_context(|| format!("sync {}", parent.display()))?;
            }
            Ok(restored)
        })
        .map_err(|e| CtlError::request(format!("{path}: {e:#}")));
    let (summary, revision, leases) = match restored {
        Ok(restored) => restored,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            // The log dir goes back to how it was: absent, or empty.
            if let Some(dir) = &args.wal_dir {
                let _ = std::fs::remove_dir_all(dir);
                if wal_dir_existed {
                    let _ = std::fs::create_dir(dir);
                }
            }
            return Err(e.into());
        }
    };
    println!(
        "restored snapshot {path} into {}: revision {revision}, {} records, {leases} leases",
        data_dir.display(),
        summary.records
    );
    let wal = args.wal_dir.as_ref().map(|dir| format!(" --wal-dir {}", dir.display())).unwrap_or_default();
    match &cluster {
        Some(cluster) => println!(
            "start member {} on it (--data-dir {}{wal}): its first start forms the cluster {} (token {}) \
             whatever its --initial-cluster flags say",
            cluster.name,
            data_dir.display(),
            cluster.initial_cluster,
            cluster.initial_cluster_token
        ),
        None => println!(
            "start every member of the new cluster on its restored data dir (--data-dir {}{wal}) with \
             --initial-cluster-state new and the same --initial-cluster",
            data_dir.display()
        ),
    }
    Ok(())
}

/// The cluster the data dir is restored for, from etcdctl's bootstrap flags, checked as
/// etcdctl checks them; `None` when none of them is given (then the member's own flags
/// bootstrap it at its first start).
fn restored_cluster(args: &SnapshotRestoreArgs) -> Result<Option<RestoredCluster>, String> {
    if args.initial_cluster.is_none()
        && args.initial_cluster_token.is_none()
        && args.initial_advertise_peer_urls.is_none()
    {
        return Ok(None);
    }
    let initial_cluster = args.initial_cluster.as_deref().unwrap_or("default=http://localhost:2380");
    let advertised = args.initial_advertise_peer_urls.as_deref().unwrap_or("http://localhost:2380");
    let peer_url = |text: &str| {
        let text = text.trim().trim_end_matches('/');
        match text.split_once("://") {
            Some(("http" | "https", rest)) if rest.contains(':') => Ok(text.to_string()),
            _ => Err(format!("URL {text:?} is not http://host:port or https://host:port")),
        }
    };
    let members = bootstrap::parse_initial_cluster(initial_cluster, peer_url)?;
    let advertised_urls = advertised
        .split(',')
        .filter(|u| !u.trim().is_empty())
        .map(peer_url)
        .collect::<Result<Vec<_>, _>>()?;
    bootstrap::check_own_entry(&args.name, &members, &advertised_urls)?;
    Ok(Some(RestoredCluster {
        name: args.name.clone(),
        initial_cluster: initial_cluster.to_string(),
        initial_cluster_token: args.initial_cluster_token.clone().unwrap_or_else(|| "etcd-cluster".into()),
        initial_advertise_peer_urls: advertised.to_string(),
    }))
}

/// The directory a restore into `data_dir` is built in: beside it, hidden.
fn staging_dir(data_dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    let name = data_dir
        .file_name()
        .ok_or_else(|| anyhow::anyhow!("--data-dir {} names no directory", data_dir.display()))?;
    let mut staging = std::ffi::OsString::from(".");
    staging.push(name);
    staging.push(".restoring");
    Ok(data_dir.with_file_name(staging))
}

/// Creates the data dir and fills its state; returns what was moved, the revision and
/// the number of leases.
fn restore_into(
    file: &mut std::fs::File,
    body: u64,
    data_dir: &std::path::Path,
    wal_dir: Option<&std::path::Path>,
    cluster: Option<&RestoredCluster>,
) -> anyhow::Result<(synod_storage::ExportSummary, i64, usize)> {
    let dir = DataDir::open_with_log_in(data_dir, wal_dir)
        .with_context(|| format!("create {}", data_dir.display()))?;
    if let Some(cluster) = cluster {
        LogStore::open(&dir.log_path())
            .and_then(|log| log.put_meta(RESTORED_CLUSTER_META, &cluster.encode_to_vec()))
            .context("record the cluster in the new log")?;
    }
    let state = StateStore::open(&dir.state_path(), GroupId::FIRST).context("open the new state")?;
    if !etcd_snapshot::is_bbolt(file)? {
        anyhow::bail!("not a snapshot: no bbolt database at its start");
    }
    let snapshot = etcd_snapshot::read(file, body).map_err(anyhow::Error::msg)?;
    let progress = crate::progress::count(snapshot.records.len() as u64, "restoring records");
    let mut records = snapshot.records.into_iter().inspect(|_| progress.inc(1)).map(Ok);
    let summary = state.restore_records(
        &mut records,
        &snapshot.leases,
        snapshot.revision,
        snapshot.compact_revision,
    )?;
    progress.finish_and_clear();
    dir.sync()?;
    Ok((summary, state.current_revision()?, state.leases()?.len()))
}

/// `snapshot status <file>`: the hash, revision, key count and size etcd reports of a
/// snapshot file (a trailing SHA-256, if any, is not part of the database).
pub fn status(context: &Context, args: &[String]) -> anyhow::Result<()> {
    let [path] = args else {
        return Err(CtlError::bad_args("snapshot status requires exactly one argument").into());
    };
    let printer = context.printer()?;
    let mut file = std::fs::File::open(path).map_err(|e| CtlError::request(format!("open {path}: {e}")))?;
    let size = file.metadata().map_err(|e| CtlError::request(e.to_string()))?.len();
    let body = if size % 512 == CHECKSUM_BYTES { size - CHECKSUM_BYTES } else { size };
    let status = etcd_snapshot::status(&mut file, body).map_err(CtlError::request)?;
    let size = crate::printer::rows::si_bytes(status.total_size);
    let row =
        vec![format!("{:x}", status.hash), status.revision.to_string(), status.total_keys.to_string(), size];
    let mut out = Vec::new();
    match printer.format {
        Format::Simple => out.extend_from_slice(format!("{}\n", row.join(", ")).as_bytes()),
        Format::Json => out.extend_from_slice(
            format!(
                "{{\"hash\":{},\"revision\":{},\"totalKey\":{},\"totalSize\":{}}}\n",
                status.hash, status.revision, status.total_keys, status.total_size
            )
            .as_bytes(),
        ),
        Format::Table => {
            crate::printer::table::render(&mut out, &["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"], &[row])
        }
        other => {
            return Err(CtlError::bad_feature(format!(
                "{} not supported as output format",
                format!("{other:?}").to_lowercase()
            ))
            .into());
        }
    }
    std::io::stdout().write_all(&out)?;
    Ok(())
}

/// Checks the SHA-256 at the end of a snapshot file and returns the length of what it
/// covers. A file without one (copied from a data dir) needs `--skip-hash-check`.
fn checked_body(file: &mut std::fs::File, skip_hash_check: bool) -> Result<u64, String> {
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    if skip_hash_check {
        return Ok(size);
    }
    if size % 512 != CHECKSUM_BYTES {
        return Err(
            "snapshot file has no sha256 checksum (use --skip-hash-check for a file copied from a data dir)"
                .into(),
        );
    }
    let body = size - CHECKSUM_BYTES;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut (&mut *file).take(body), &mut hasher).map_err(|e| e.to_string())?;
    let mut expected = [0u8; CHECKSUM_BYTES as usize];
    file.read_exact(&mut expected).map_err(|e| e.to_string())?;
    if hasher.finalize().as_slice() != expected {
        return Err("expected sha256 does not match the snapshot's content".into());
    }
    Ok(body)
}
