//! The segmented log: entries of many groups in one file set, read back after reopening;
//! segments removed once nothing in them is live, and old ones emptied by rewriting;
//! power cuts that lose unsynced tails or tear the last record; damage in the middle
//! refused with the file and offset; a log kept in `raftlog.redb` by an earlier synod
//! moved over once.

use std::collections::BTreeMap;
use std::path::Path;

use synod_base::{GroupId, LogIndex};
use synod_storage::sim_disk::SimDir;
use synod_storage::{LogOp, LogOptions, LogStore, StorageError};

/// Entries of 20 to 150 bytes, and every fifth of up to 1.5 KB (records across sectors).
fn entry(group: u64, index: u64) -> Vec<u8> {
    let times = (1 + index % 7) * if index.is_multiple_of(5) { 10 } else { 1 };
    format!("group {group} entry {index} ").repeat(times as usize).into_bytes()
}

/// What a log should hold: every group's entries by index, and the meta values.
#[derive(Default, Clone, Debug, PartialEq)]
struct Model {
    groups: BTreeMap<u64, BTreeMap<u64, Vec<u8>>>,
    meta: BTreeMap<String, Vec<u8>>,
}

impl Model {
    /// Appends one entry to each group of `batch`, `(group, index)`, in one write.
    fn append(&mut self, log: &LogStore, batch: &[(u64, u64)]) -> Result<(), StorageError> {
        write_appends(log, batch)?;
        self.add(batch);
        Ok(())
    }

    fn add(&mut self, batch: &[(u64, u64)]) {
        for &(g, i) in batch {
            self.groups.entry(g).or_default().insert(i, entry(g, i));
        }
    }

    fn purge(&mut self, log: &LogStore, group: u64, through: u64) {
        log.write(&[LogOp::PurgeThrough { group: GroupId(group), through: LogIndex(through) }])
            .expect("purge");
        if let Some(entries) = self.groups.get_mut(&group) {
            entries.retain(|i, _| *i > through);
        }
    }

    fn put_meta(&mut self, log: &LogStore, key: &str, value: &[u8]) {
        log.put_meta(key, value).expect("put meta");
        self.meta.insert(key.into(), value.to_vec());
    }

    /// Each group's first and last index and entry count, and the meta values.
    fn summary(&self) -> String {
        let groups: Vec<String> = self
            .groups
            .iter()
            .map(|(g, e)| format!("{g}: {:?}..{:?} ({})", e.keys().next(), e.keys().last(), e.len()))
            .collect();
        let meta: Vec<String> =
            self.meta.iter().map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(v))).collect();
        format!("[{}] {{{}}}", groups.join(", "), meta.join(", "))
    }

    /// What `log` holds of the groups and keys in `a` and `b`.
    fn read(log: &LogStore, a: &Model, b: &Model) -> Model {
        let mut model = Model::default();
        for group in a.groups.keys().chain(b.groups.keys()) {
            let read = log.entries(GroupId(*group), LogIndex(0)..LogIndex(u64::MAX)).expect("entries");
            if !read.is_empty() {
                model.groups.insert(*group, read.into_iter().map(|(i, b)| (i.0, b)).collect());
            }
        }
        for key in a.meta.keys().chain(b.meta.keys()) {
            if let Some(value) = log.meta(key).expect("meta") {
                model.meta.insert(key.clone(), value);
            }
        }
        model
    }

    fn check(&self, log: &LogStore) {
        for (group, entries) in &self.groups {
            let group_id = GroupId(*group);
            let expected_bounds = entries.keys().next().zip(entries.keys().last());
            let bounds = log.bounds(group_id).expect("bounds");
            assert_eq!(
                bounds.map(|(f, l)| (f.0, l.0)),
                expected_bounds.map(|(f, l)| (*f, *l)),
                "group {group}"
            );
            let read = log.entries(group_id, LogIndex(0)..LogIndex(u64::MAX)).expect("entries");
            let read: BTreeMap<u64, Vec<u8>> = read.into_iter().map(|(i, b)| (i.0, b)).collect();
            assert_eq!(&read, entries, "entries of group {group}");
        }
        for (key, value) in &self.meta {
            assert_eq!(log.meta(key).expect("meta").as_ref(), Some(value), "meta {key}");
        }
    }
}

fn write_appends(log: &LogStore, batch: &[(u64, u64)]) -> Result<(), StorageError> {
    let bytes: Vec<(u64, u64, Vec<u8>)> = batch.iter().map(|&(g, i)| (g, i, entry(g, i))).collect();
    let entries: Vec<[(LogIndex, &[u8]); 1]> =
        bytes.iter().map(|(_, i, b)| [(LogIndex(*i), b.as_slice())]).collect();
    let ops: Vec<LogOp<'_>> = bytes
        .iter()
        .zip(&entries)
        .map(|((g, _, _), entries)| LogOp::Append { group: GroupId(*g), entries })
        .collect();
    log.write(&ops)
}

fn small_segments() -> LogOptions {
    LogOptions { segment_bytes: 16 << 10, prepare_in_background: false, ..LogOptions::default() }
}

/// Many groups write into one file set; each reads back its own entries, in segments and
/// after a reopen; a purge of every group frees the old segments, and a group that lags
/// (and a meta key never written again) does not keep them: its entries are rewritten
/// forward and the segments go.
#[test]
fn groups_share_segments_that_are_freed_by_purges_and_rewrites() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let mut model = Model::default();
    {
        let log = LogStore::open_with(&path, small_segments()).unwrap();
        model.put_meta(&log, "identity", b"member 1");
        for round in 1..=300u64 {
            let batch: Vec<(u64, u64)> =
                (0..8).filter(|g| (round + g) % 3 != 0 || *g == 7).map(|g| (g, 0)).collect();
            let batch: Vec<(u64, u64)> = batch
                .into_iter()
                .map(|(g, _)| (g, model.groups.get(&g).and_then(|e| e.keys().last()).map_or(1, |l| l + 1)))
                .collect();
            model.append(&log, &batch).unwrap();
        }
        assert!(log.segments().len() > 10, "{} segments", log.segments().len());
        model.check(&log);
    }
    let log = LogStore::open_with(&path, small_segments()).unwrap();
    model.check(&log);
    // Every group but 7 purges all but its last entries; 7 lags with all of its own.
    for group in 0..7 {
        let last = *model.groups[&group].keys().last().unwrap();
        model.purge(&log, group, last - 2);
    }
    let before = log.segments().len();
    // New writes after the purges drive the collection (a rewrite at most per write).
    for round in 0..200u64 {
        let next = model.groups[&0].keys().last().unwrap() + 1;
        model.append(&log, &[(0, next)]).unwrap();
        if round % 10 == 0 {
            model.purge(&log, 0, next - 1);
        }
    }
    let after = log.segments().len();
    let live: usize = model.groups.values().map(|e| e.values().map(Vec::len).sum::<usize>()).sum();
    assert!(
        after <= live / (16 << 10) + 4,
        "{after} segments left of {before}, for {live} live bytes: lagging group 7 pins them"
    );
    model.check(&log);
    drop(log);
    let log = LogStore::open_with(&path, small_segments()).unwrap();
    model.check(&log);
}

/// Appends that leave a gap or repeat an index are refused and change nothing.
#[test]
fn appends_must_follow_the_last_entry() {
    let dir = tempfile::tempdir().unwrap();
    let log = LogStore::open(&dir.path().join("log")).unwrap();
    let g = GroupId(1);
    log.append(g, &[(LogIndex(5), b"five".as_slice()), (LogIndex(6), b"six".as_slice())], None).unwrap();
    for bad in [4, 6, 8] {
        let error = log.append(g, &[(LogIndex(bad), b"x".as_slice())], None).unwrap_err();
        assert!(error.to_string().contains("where entry 7 comes next"), "{error}");
    }
    // In one write: a truncation makes room for the entries after it.
    log.write(&[
        LogOp::TruncateFrom { group: g, from: LogIndex(6) },
        LogOp::Append { group: g, entries: &[(LogIndex(6), b"SIX".as_slice())] },
    ])
    .unwrap();
    assert_eq!(log.entries(g, LogIndex(1)..LogIndex(10)).unwrap()[1].1, b"SIX");
    // The last index there is cannot be written: the entry after it would overflow.
    let error = log.append(GroupId(9), &[(LogIndex(u64::MAX), b"x".as_slice())], None).unwrap_err();
    assert!(error.to_string().contains("the last index there is"), "{error}");
    // Emptied by a purge, a group takes any next index (after a snapshot).
    log.write(&[LogOp::PurgeThrough { group: g, through: LogIndex(6) }]).unwrap();
    log.append(g, &[(LogIndex(100), b"hundred".as_slice())], None).unwrap();
    assert_eq!(log.bounds(g).unwrap(), Some((LogIndex(100), LogIndex(100))));
}

/// A second process cannot open the same log.
#[test]
fn a_second_open_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _log = LogStore::open(&dir.path().join("log")).unwrap();
    let error = LogStore::open(&dir.path().join("log")).err().expect("a second open");
    assert!(matches!(error, StorageError::InUse { .. }), "{error}");
}

/// Power cuts at every point of runs on a simulated disk: at a write, at a sync (with the
/// record being synced torn at a random length), while a segment is prepared or renamed,
/// while old segments are removed or rewritten. After each, the log reopens holding every
/// acknowledged write, plus at most the one write in flight, whole.
#[test]
fn power_cuts_keep_every_acknowledged_write() {
    let options = || LogOptions { segment_bytes: 4 << 10, prepare_in_background: false, rewrite_below: 0.5 };
    let mut cuts = 0;
    let mut torn_cut_off = 0;
    for seed in 0..400u64 {
        let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let disk = SimDir::new();
        disk.cut_power_at(1 + next(600), next(1500) as usize, next(3) == 0);
        let mut acknowledged = Model::default();
        let mut in_flight = None;
        if let Ok(log) = LogStore::open_on_with(disk.clone(), "log".into(), options()) {
            for step in 0..200u64 {
                let group = next(4);
                let last =
                    acknowledged.groups.get(&group).and_then(|e| e.keys().last().copied()).unwrap_or(0);
                let mut after = acknowledged.clone();
                let outcome = match next(10) {
                    0 if last > 3 => {
                        after.groups.get_mut(&group).unwrap().retain(|i, _| *i > last - 3);
                        log.write(&[LogOp::PurgeThrough {
                            group: GroupId(group),
                            through: LogIndex(last - 3),
                        }])
                    }
                    1 => {
                        let (key, value) = (format!("key{}", next(3)), format!("value {step}"));
                        after.meta.insert(key.clone(), value.clone().into_bytes());
                        log.put_meta(&key, value.as_bytes())
                    }
                    _ => {
                        let other = (group + 1) % 4;
                        let other_last = acknowledged
                            .groups
                            .get(&other)
                            .and_then(|e| e.keys().last().copied())
                            .unwrap_or(0);
                        let batch = [(group, last + 1), (other, other_last + 1)];
                        after.add(&batch);
                        write_appends(&log, &batch)
                    }
                };
                match outcome {
                    Ok(()) => acknowledged = after,
                    Err(_) => {
                        in_flight = Some(after);
                        break;
                    }
                }
            }
        }
        if disk.operations() < 2 || in_flight.is_none() {
            continue;
        }
        cuts += 1;
        let disk = disk.reboot();
        let log = LogStore::open_on_with(disk.clone(), "log".into(), options())
            .unwrap_or_else(|e| panic!("seed {seed}: the log does not reopen after a power cut: {e}"));
        let recovered = Model::read(&log, &acknowledged, in_flight.as_ref().unwrap());
        // The recovered log goes on: many writes (past whatever the cut left behind, and
        // into new segments), then a clean reopen finds all of them.
        let mut after = recovered.clone();
        for round in 0..60u64 {
            let group = round % 4;
            let last = after.groups.get(&group).and_then(|e| e.keys().last().copied()).unwrap_or(0);
            after
                .append(&log, &[(group, last + 1)])
                .unwrap_or_else(|e| panic!("seed {seed}: a write after recovery: {e}"));
        }
        drop(log);
        let log = LogStore::open_on_with(disk, "log".into(), options()).unwrap_or_else(|e| {
            panic!("seed {seed}: the log does not reopen after writes that followed a recovery: {e}")
        });
        assert!(
            Model::read(&log, &after, &after) == after,
            "seed {seed}: the writes after recovery are not all there"
        );
        if recovered == acknowledged {
            torn_cut_off += 1;
        } else {
            let in_flight = in_flight.as_ref().unwrap();
            assert!(
                &recovered == in_flight,
                "seed {seed}: recovered {}\nnot what was acknowledged {}\nnor that and the write in flight {}",
                recovered.summary(),
                acknowledged.summary(),
                in_flight.summary()
            );
        }
    }
    assert!(cuts > 200, "only {cuts} runs were cut by the power");
    assert!(torn_cut_off > 50, "only {torn_cut_off} runs lost their write in flight");
}

/// Damage to a record that is not the newest (a flipped byte, or a zeroed one), is refused
/// when the log opens, naming the file and the offset; so is a segment whose header is
/// damaged, and a last record damaged after it was written whole. A last record with
/// sectors never written (a torn write) is cut off instead.
#[test]
fn damage_in_the_middle_is_refused_with_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let mut model = Model::default();
    let open = |path: &Path| {
        LogStore::open_with(path, LogOptions { segment_bytes: 64 << 10, ..LogOptions::default() })
    };
    {
        let log = open(&path).unwrap();
        for i in 1..=20 {
            model.append(&log, &[(1, i)]).unwrap();
        }
    }
    let segment = path.join("0000000000000001.log");
    let original = std::fs::read(&segment).unwrap();
    assert_eq!(original.len(), 64 << 10, "the segment is as large as the options say");
    let needle = entry(1, 5);
    let at =
        original.windows(needle.len()).position(|w| w == needle.as_slice()).expect("entry 5 in the segment");
    for damage in [|b: u8| b ^ 0x40, |_| 0u8] {
        let mut bytes = original.clone();
        bytes[at + 3] = damage(bytes[at + 3]);
        std::fs::write(&segment, &bytes).unwrap();
        let error = open(&path).err().expect("a damaged log opened");
        assert!(error.is_corruption(), "{error}");
        let text = error.to_string();
        assert!(text.contains("0000000000000001.log") && text.contains("at offset"), "{text}");
        assert!(text.contains("a valid record follows") || text.contains("a valid one at offset"), "{text}");
    }
    // A segment missing between others.
    std::fs::write(&segment, &original).unwrap();
    {
        let log = open(&path).unwrap();
        let big = vec![3u8; 40 << 10];
        for i in 21..=23 {
            log.append(GroupId(1), &[(LogIndex(i), big.as_slice())], None).unwrap();
        }
        assert!(log.segments().len() >= 3, "{:?}", log.segments());
        std::fs::remove_file(&log.segments()[1]).unwrap();
    }
    let error = open(&path).err().expect("a log missing a segment opened");
    assert!(error.to_string().contains("is missing between"), "{error}");
    for file in std::fs::read_dir(&path).unwrap() {
        let file = file.unwrap().path();
        if file.extension().is_some_and(|e| e == "log") && file != segment {
            std::fs::remove_file(file).unwrap();
        }
    }

    let mut bytes = original.clone();
    bytes[2] ^= 1;
    std::fs::write(&segment, &bytes).unwrap();
    let error = open(&path).err().expect("a damaged header opened");
    assert!(error.to_string().contains("not a synod log file"), "{error}");

    // The last record damaged where every sector of it was written: refused too.
    let needle = entry(1, 20);
    let at = original.windows(needle.len()).position(|w| w == needle.as_slice()).expect("entry 20");
    let mut bytes = original.clone();
    bytes[at + 1] ^= 0x10;
    std::fs::write(&segment, &bytes).unwrap();
    let error = open(&path).err().expect("a damaged last record opened");
    assert!(error.to_string().contains("not a torn write"), "{error}");

    // A large last record of which the sectors after the first never reached the disk: a
    // torn write, cut off; the log goes on from the entry before it.
    std::fs::write(&segment, &original).unwrap();
    let log = open(&path).unwrap();
    let big = vec![7u8; 3000];
    log.append(GroupId(1), &[(LogIndex(21), big.as_slice())], None).unwrap();
    drop(log);
    let written = std::fs::read(&segment).unwrap();
    let at = written.windows(big.len()).position(|w| w == big.as_slice()).expect("entry 21");
    let mut torn = written.clone();
    torn[at.next_multiple_of(512)..at + big.len()].fill(0);
    std::fs::write(&segment, &torn).unwrap();
    let log = open(&path).unwrap();
    model.check(&log);
    assert_eq!(log.bounds(GroupId(1)).unwrap(), Some((LogIndex(1), LogIndex(20))));
    model.append(&log, &[(1, 21)]).unwrap();
    drop(log);
    model.check(&open(&path).unwrap());
}

/// A write cut short with its first sector lost reads as the end of the log, but leaves
/// the rest of its bytes behind; they are zeroed when the log opens, so later records that
/// end short of them do not make the next open read them as damage.
#[test]
fn leftovers_of_a_write_whose_first_sector_was_lost_are_cleared() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let open = |path: &Path| {
        LogStore::open_with(path, LogOptions { segment_bytes: 64 << 10, ..LogOptions::default() })
    };
    let log = open(&path).unwrap();
    log.append(GroupId(1), &[(LogIndex(1), b"first".as_slice())], None).unwrap();
    // Bytes that read, at every 8-byte boundary of the file, as the header of a 16-byte
    // record (an entry's bytes start 33 bytes into its record: 7 bytes to the boundary).
    let mut big = vec![9u8; 7];
    big.extend([16u8, 0, 0, 0, 1, 2, 3, 4].repeat(400));
    log.append(GroupId(1), &[(LogIndex(2), big.as_slice())], None).unwrap();
    drop(log);
    let segment = path.join("0000000000000001.log");
    let mut bytes = std::fs::read(&segment).unwrap();
    let at = bytes.windows(64).position(|w| w == &big[..64]).expect("the big entry");
    let record = at - 4 - 21 - 8; // entry length, append op header, record header
    bytes[record..(record / 512 + 1) * 512].fill(0);
    std::fs::write(&segment, &bytes).unwrap();
    let log = open(&path).unwrap();
    assert_eq!(
        log.bounds(GroupId(1)).unwrap(),
        Some((LogIndex(1), LogIndex(1))),
        "the cut-short write is gone"
    );
    // A record that ends inside what the cut-short write left.
    let second = vec![b'x'; 700];
    log.append(GroupId(1), &[(LogIndex(2), second.as_slice())], None).unwrap();
    drop(log);
    let log =
        open(&path).unwrap_or_else(|e| panic!("the log does not open after writing past the leftovers: {e}"));
    assert_eq!(log.bounds(GroupId(1)).unwrap(), Some((LogIndex(1), LogIndex(2))));
}

/// A member of an earlier synod kept its log in `raftlog.redb`: the first start moves all
/// of it (entries of every group and every meta key) into the segmented log, and renames
/// the old file so it is not moved twice.
#[test]
fn a_log_in_raftlog_redb_is_moved_over_once() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = synod_storage::DataDir::open(dir.path()).unwrap();
    let legacy = data_dir.legacy_log_path();
    write_legacy_log(&legacy);
    let log = LogStore::open_in(&data_dir).unwrap();
    assert_eq!(log.meta("identity").unwrap().as_deref(), Some(&b"member 9"[..]));
    assert_eq!(log.bounds(GroupId(0)).unwrap(), Some((LogIndex(3), LogIndex(2000))));
    assert_eq!(log.bounds(GroupId(4)).unwrap(), Some((LogIndex(1), LogIndex(1))));
    let read = log.entries(GroupId(0), LogIndex(1000)..LogIndex(1002)).unwrap();
    assert_eq!(read, vec![(LogIndex(1000), entry(0, 1000)), (LogIndex(1001), entry(0, 1001))]);
    assert!(!legacy.exists() && legacy.with_extension("redb.migrated").exists());
    drop(log);
    let log = LogStore::open_in(&data_dir).unwrap();
    assert_eq!(log.bounds(GroupId(0)).unwrap(), Some((LogIndex(3), LogIndex(2000))));
    drop(log);
    // An old file found again beside the moved log (as after a crash before the rename)
    // is set aside; the log stays.
    std::fs::rename(legacy.with_extension("redb.migrated"), &legacy).unwrap();
    let log = LogStore::open_in(&data_dir).unwrap();
    assert_eq!(log.bounds(GroupId(0)).unwrap(), Some((LogIndex(3), LogIndex(2000))));
    assert!(!legacy.exists());
    drop(log);

    // Beside a log this synod made (never moved in), an old file is refused, not moved
    // over it.
    let other = tempfile::tempdir().unwrap();
    let data_dir = synod_storage::DataDir::open(other.path()).unwrap();
    LogStore::open(&data_dir.log_path()).unwrap().put_meta("identity", b"member 3").unwrap();
    write_legacy_log(&data_dir.legacy_log_path());
    let error = LogStore::open_in(&data_dir).err().expect("an old log was moved over a new one");
    assert!(error.to_string().contains("keep one"), "{error}");
    assert_eq!(
        LogStore::open(&data_dir.log_path()).unwrap().meta("identity").unwrap().as_deref(),
        Some(&b"member 3"[..])
    );
}

/// Writes a log as synod kept it in redb before the segmented log: one table of framed
/// entries per group (`log/<group>`) and a `meta` table, each value a CRC32 then the bytes.
fn write_legacy_log(path: &Path) {
    let framed = |bytes: &[u8]| {
        let mut out = crc32fast::hash(bytes).to_le_bytes().to_vec();
        out.extend_from_slice(bytes);
        out
    };
    let db = redb::Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut meta = txn.open_table(redb::TableDefinition::<&str, &[u8]>::new("meta")).unwrap();
        meta.insert("identity", framed(b"member 9").as_slice()).unwrap();
        let mut zero = txn.open_table(redb::TableDefinition::<u64, &[u8]>::new("log/0")).unwrap();
        for i in 3..=2000 {
            zero.insert(i, framed(&entry(0, i)).as_slice()).unwrap();
        }
        let mut four = txn.open_table(redb::TableDefinition::<u64, &[u8]>::new("log/4")).unwrap();
        four.insert(1, framed(&entry(4, 1)).as_slice()).unwrap();
    }
    txn.commit().unwrap();
}
