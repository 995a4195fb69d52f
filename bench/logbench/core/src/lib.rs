//! logbench-core: the `Log` trait every engine adapter implements, the `Backend`
//! factory, the workloads, and the raw pwrite+fdatasync floor.
//!
//! To add an engine: make a crate that depends on this one (path dependency),
//! implement `Log` + `Backend` for it, and register it in `logbench/src/backends.rs`.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One append: (group, first index of `entries`, entries). Indexes start at 1 and are
/// contiguous per group.
pub type Append = (u64, u64, Vec<Vec<u8>>);

/// A multi-group Raft log.
pub trait Log {
    /// Append every group's entries as ONE durable write: returns only after the data is
    /// on disk (fdatasync or equivalent).
    fn append(&mut self, batch: &[Append]);
    /// Drop entries of `group` with index <= `through`.
    fn purge(&mut self, group: u64, through: u64);
    /// Read one entry (panics if absent: the harness only reads what it wrote).
    fn read(&self, group: u64, index: u64) -> Vec<u8>;
}

/// Opens (creating if needed) a log in a directory. Opening an existing directory is
/// what the `purge`/`recover` workloads time as "reopen".
pub trait Backend {
    fn name(&self) -> &'static str;
    /// Human-readable description of the configuration used (printed in results).
    fn config(&self) -> String;
    fn open(&self, dir: &Path) -> Box<dyn Log>;
}

// ---------------------------------------------------------------- helpers

/// xorshift64*: deterministic, dependency-free.
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A 300-byte (or `size`) entry: 8-byte group, 8-byte index, then pseudo-random bytes
/// (incompressible, so lz4 in raft-engine gains nothing; realistic Raft payloads may
/// compress better).
pub fn payload(group: u64, index: u64, size: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(size);
    v.extend_from_slice(&group.to_le_bytes());
    v.extend_from_slice(&index.to_le_bytes());
    let mut r = Rng::new(group.wrapping_mul(1_000_003) ^ index);
    while v.len() < size {
        v.extend_from_slice(&r.next().to_le_bytes());
    }
    v.truncate(size);
    v
}

#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub n: usize,
    pub wchar: u64,
    pub write_bytes: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub mean_us: f64,
    pub max_us: f64,
    pub total_s: f64,
}
impl Stats {
    pub fn from(mut lat: Vec<Duration>, total: Duration) -> Stats {
        lat.sort();
        let n = lat.len();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let pct = |p: f64| us(lat[((n as f64 * p).ceil() as usize).clamp(1, n) - 1]);
        Stats {
            n,
            p50_us: pct(0.50),
            p99_us: pct(0.99),
            mean_us: lat.iter().map(|d| us(*d)).sum::<f64>() / n as f64,
            max_us: us(*lat.last().unwrap()),
            total_s: total.as_secs_f64(),
            ..Default::default()
        }
    }
}

/// One result line: workload-specific metrics as (name, value) pairs.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub metrics: Vec<(&'static str, f64)>,
}
impl Outcome {
    fn lat(s: &Stats, entries_per_append: f64) -> Outcome {
        Outcome {
            metrics: vec![
                ("p50_us", s.p50_us),
                ("p99_us", s.p99_us),
                ("mean_us", s.mean_us),
                ("max_us", s.max_us),
                ("appends_per_s", s.n as f64 / s.total_s),
                ("entries_per_s", s.n as f64 * entries_per_append / s.total_s),
                ("syscall_bytes_per_append", s.wchar as f64 / s.n as f64),
                ("disk_bytes_per_append", s.write_bytes as f64 / s.n as f64),
            ],
        }
    }
}

/// (wchar, write_bytes) of this process from /proc/self/io: bytes handed to write
/// syscalls, and bytes this process caused to be sent to the block device.
pub fn io_bytes() -> (u64, u64) {
    let t = fs::read_to_string("/proc/self/io").unwrap_or_default();
    let get = |k: &str| {
        t.lines().find_map(|l| l.strip_prefix(k).map(|v| v.trim().parse::<u64>().unwrap_or(0))).unwrap_or(0)
    };
    (get("wchar:"), get("write_bytes:"))
}

pub fn fresh_dir(root: &Path, tag: &str) -> PathBuf {
    let d = root.join(tag);
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

pub fn dir_size(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = fs::read_dir(p) {
        for e in rd.flatten() {
            let m = e.metadata().unwrap();
            total += if m.is_dir() { dir_size(&e.path()) } else { m.len() };
        }
    }
    total
}

fn time_appends(log: &mut dyn Log, batches: impl Iterator<Item = Vec<Append>>) -> Stats {
    let batches: Vec<Vec<Append>> = batches.collect(); // payloads built before timing
    let mut lat = Vec::with_capacity(batches.len());
    let io0 = io_bytes();
    let t0 = Instant::now();
    for b in batches {
        let t = Instant::now();
        log.append(&b);
        lat.push(t.elapsed());
    }
    let total = t0.elapsed();
    let io1 = io_bytes();
    let mut s = Stats::from(lat, total);
    s.wchar = io1.0 - io0.0;
    s.write_bytes = io1.1 - io0.1;
    s
}

/// Bulk-load `total` entries spread round-robin over `groups` groups, `per_append`
/// entries per durable append, split into chunks of `per_group` entries per group.
/// Returns the next index of each group.
pub fn load(log: &mut dyn Log, groups: u64, total: u64, per_append: u64, per_group: u64, size: usize) -> Vec<u64> {
    let mut next = vec![1u64; groups as usize];
    let mut written = 0;
    let mut g = 0u64;
    while written < total {
        let mut batch = Vec::new();
        let mut in_batch = 0;
        while in_batch < per_append && written < total {
            let k = per_group.min(per_append - in_batch).min(total - written);
            let first = next[g as usize];
            let ents = (0..k).map(|i| payload(g, first + i, size)).collect();
            batch.push((g, first, ents));
            next[g as usize] += k;
            in_batch += k;
            written += k;
            g = (g + 1) % groups;
        }
        log.append(&batch);
    }
    next
}

pub struct Params {
    pub size: usize,
    pub single_n: usize,
    pub batch16_n: usize,
    pub groups64_n: usize,
    pub purge_total: u64,
    pub purge_through: u64,
    pub recover_total: u64,
}
impl Default for Params {
    fn default() -> Self {
        Params {
            size: 300,
            single_n: 20_000,
            batch16_n: 5_000,
            groups64_n: 20_000,
            purge_total: 200_000,
            purge_through: 190_000,
            recover_total: 1_000_000,
        }
    }
}

pub const WORKLOADS: &[&str] = &["single", "batch16", "groups64", "purge", "recover"];

/// Runs one workload on a fresh `dir`. `recover` needs to load in a child process so the
/// first reopen is a crash recovery; the caller passes `spawn_loader` for that.
pub fn run(b: &dyn Backend, w: &str, dir: &Path, p: &Params, spawn_loader: &dyn Fn(&Path)) -> Outcome {
    match w {
        "single" => {
            let mut log = b.open(dir);
            let s = time_appends(&mut *log, (0..p.single_n as u64).map(|i| vec![(0, i + 1, vec![payload(0, i + 1, p.size)])]));
            assert_eq!(log.read(0, p.single_n as u64), payload(0, p.single_n as u64, p.size));
            Outcome::lat(&s, 1.0)
        }
        "batch16" => {
            let mut log = b.open(dir);
            let s = time_appends(
                &mut *log,
                (0..p.batch16_n as u64).map(|i| {
                    let first = i * 16 + 1;
                    vec![(0, first, (0..16).map(|k| payload(0, first + k, p.size)).collect())]
                }),
            );
            let last = p.batch16_n as u64 * 16;
            assert_eq!(log.read(0, last), payload(0, last, p.size));
            Outcome::lat(&s, 16.0)
        }
        "groups64" => {
            let mut log = b.open(dir);
            let mut rng = Rng::new(42);
            let mut next = vec![1u64; 64];
            let batches: Vec<Vec<Append>> = (0..p.groups64_n)
                .map(|_| {
                    // 8 distinct random groups out of 64
                    let mut gs: Vec<u64> = Vec::with_capacity(8);
                    while gs.len() < 8 {
                        let g = rng.below(64);
                        if !gs.contains(&g) {
                            gs.push(g);
                        }
                    }
                    gs.sort();
                    gs.iter()
                        .map(|&g| {
                            let i = next[g as usize];
                            next[g as usize] += 1;
                            (g, i, vec![payload(g, i, p.size)])
                        })
                        .collect()
                })
                .collect();
            let s = time_appends(&mut *log, batches.into_iter());
            for g in 0..64 {
                if next[g] > 1 {
                    assert_eq!(log.read(g as u64, next[g] - 1), payload(g as u64, next[g] - 1, p.size));
                }
            }
            Outcome::lat(&s, 8.0)
        }
        "purge" => {
            let mut log = b.open(dir);
            load(&mut *log, 1, p.purge_total, 128, 128, p.size);
            let before = dir_size(dir);
            let t = Instant::now();
            log.purge(0, p.purge_through);
            let purge = t.elapsed();
            let after = dir_size(dir);
            drop(log);
            let t = Instant::now();
            let log = b.open(dir);
            let reopen = t.elapsed();
            assert_eq!(log.read(0, p.purge_total), payload(0, p.purge_total, p.size));
            assert_eq!(log.read(0, p.purge_through + 1), payload(0, p.purge_through + 1, p.size));
            Outcome {
                metrics: vec![
                    ("purge_ms", purge.as_secs_f64() * 1e3),
                    ("reopen_ms", reopen.as_secs_f64() * 1e3),
                    ("disk_before_mb", before as f64 / 1e6),
                    ("disk_after_purge_mb", after as f64 / 1e6),
                ],
            }
        }
        "recover" => {
            // child process loads and exits without closing (crash-like).
            spawn_loader(dir);
            let size = dir_size(dir);
            let t = Instant::now();
            let log = b.open(dir);
            let crash = t.elapsed();
            drop(log); // clean close
            let t = Instant::now();
            let log = b.open(dir);
            let clean = t.elapsed();
            // the loader hands out 16-entry chunks round-robin over 64 groups
            let last63 = (p.recover_total / 16 / 64) * 16;
            assert_eq!(log.read(0, 1), payload(0, 1, p.size));
            assert_eq!(log.read(63, last63), payload(63, last63, p.size));
            Outcome {
                metrics: vec![
                    ("reopen_after_crash_ms", crash.as_secs_f64() * 1e3),
                    ("reopen_clean_ms", clean.as_secs_f64() * 1e3),
                    ("disk_mb", size as f64 / 1e6),
                ],
            }
        }
        _ => panic!("unknown workload {w}"),
    }
}

/// Loader for `recover`, run in a child process: 1M entries over 64 groups, 8 groups x
/// 16 entries per durable append, then exit WITHOUT dropping the log.
pub fn recover_load(b: &dyn Backend, dir: &Path, p: &Params) -> ! {
    let mut log = b.open(dir);
    load(&mut *log, 64, p.recover_total, 128, 16, p.size);
    std::mem::forget(log);
    std::process::exit(0)
}

/// The floor: preallocated zero-filled 64 MiB file, n x (pwrite 320 B at next offset +
/// fdatasync).
/// `fill_chunk` is the write size used to zero-fill: on kernels with large folios (ext4,
/// 6.x) a 1 MiB fill leaves 1 MiB folios in the page cache and every later 320-byte
/// pwrite then dirties -- and fdatasync writes back -- the whole folio.
pub fn floor(dir: &Path, n: usize, fill_chunk: usize) -> Outcome {
    let path = dir.join("floor.dat");
    {
        let f = File::create(&path).unwrap();
        let zeros = vec![0u8; fill_chunk];
        let mut off = 0u64;
        while off < 64 << 20 {
            f.write_all_at(&zeros, off).unwrap();
            off += fill_chunk as u64;
        }
        f.sync_all().unwrap();
    }
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    let rec = vec![0xA5u8; 320];
    let mut lat = Vec::with_capacity(n);
    let io0 = io_bytes();
    let t0 = Instant::now();
    for i in 0..n as u64 {
        let t = Instant::now();
        f.write_all_at(&rec, i * 320).unwrap();
        f.sync_data().unwrap();
        lat.push(t.elapsed());
    }
    let total = t0.elapsed();
    let io1 = io_bytes();
    let mut s = Stats::from(lat, total);
    s.wchar = io1.0 - io0.0;
    s.write_bytes = io1.1 - io0.1;
    Outcome::lat(&s, 1.0)
}

/// Quick disk-regime probe (run before each workload run): 1 MiB file filled in 4 KiB
/// writes, `n` x (pwrite 320 B + fdatasync); returns p50 in microseconds. This VM's disk
/// alternates between ~0.1 ms and ~4 ms fdatasync depending on outside load, so every
/// result row carries the regime it ran in.
pub fn probe(dir: &Path, n: usize) -> f64 {
    let path = dir.join("probe.dat");
    let f = OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&path).unwrap();
    let zeros = vec![0u8; 4096];
    for i in 0..256u64 {
        f.write_all_at(&zeros, i * 4096).unwrap();
    }
    f.sync_all().unwrap();
    let rec = vec![0x5Au8; 320];
    let mut lat = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let t = Instant::now();
        f.write_all_at(&rec, (i * 320) % (1 << 20)).unwrap();
        f.sync_data().unwrap();
        lat.push(t.elapsed());
    }
    drop(f);
    let _ = fs::remove_file(&path);
    Stats::from(lat, Duration::ZERO).p50_us
}
