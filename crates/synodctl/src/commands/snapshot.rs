//! `snapshot save`, `snapshot status` and `snapshot restore`: a member's whole state to a
//! file, what such a file holds, and a new data directory from it.
//!
//! A snapshot file is what Maintenance.Snapshot streams, from synod as from etcd: a bbolt
//! database with etcd's buckets, then its SHA-256. So `restore` takes etcd's snapshots too,
//! and an etcd cluster's keys, revisions and leases move onto synod.

use std::io::{Read, Write};

use anyhow::Context as _;
use sha2::Digest as _;
use synod_api::etcdserverpb::SnapshotRequest;
use synod_base::GroupId;
use synod_storage::{DataDir, StateStore, etcd_snapshot};

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
    let mut file = std::fs::File::create(&part).with_context(|| format!("create {part}"))?;
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
    let data_dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => format!("{}.synod", args.name).into(),
    };
    if data_dir.exists() && std::fs::read_dir(&data_dir).map(|mut d| d.next().is_some()).unwrap_or(true) {
        return Err(CtlError::request(format!("data-dir {:?} exists", data_dir.display())).into());
    }
    let mut file = std::fs::File::open(path).with_context(|| format!("open {path}"))?;
    let body = checked_body(&mut file, args.skip_hash_check).map_err(CtlError::request)?;
    // Built next to the target and renamed into place once complete, so that neither a
    // failure nor a crash leaves a data dir a member would start on half filled.
    let staging = staging_dir(&data_dir)?;
    let _ = std::fs::remove_dir_all(&staging);
    let restored = restore_into(&mut file, body, &staging)
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
            return Err(e.into());
        }
    };
    println!(
        "restored snapshot {path} into {}: revision {revision}, {} records, {leases} leases",
        data_dir.display(),
        summary.records
    );
    println!(
        "start every member of the new cluster on its restored data dir with --initial-cluster-state new and the same --initial-cluster"
    );
    Ok(())
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
) -> anyhow::Result<(synod_storage::ExportSummary, i64, usize)> {
    let dir = DataDir::open(data_dir).with_context(|| format!("create {}", data_dir.display()))?;
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
