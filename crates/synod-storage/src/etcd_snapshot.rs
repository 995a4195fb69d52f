//! etcd's snapshot format: a bbolt database with etcd's buckets. synod writes its own
//! snapshots (Maintenance.Snapshot) in it, so that `etcdctl snapshot status` reads them and
//! they restore like etcd's, and reads it back in `synodctl snapshot restore`, which so also
//! moves an etcd cluster's keys (every kept revision), compaction revision and leases onto
//! synod.
//!
//! Only what etcd stores is read, page by page from the file (no mapping of the whole
//! database into memory), and everything is checked: page ids within the file, element
//! offsets within their pages, the meta page checksums, and etcd's key layout. A damaged
//! or foreign file is an error that says what is wrong, never a panic.
//!
//! The layout is bbolt's (go.etcd.io/bbolt, `page.go`, `db.go`, `bucket.go`): two meta pages
//! at the start, each naming the root bucket's page; branch and leaf pages of a B+tree;
//! sub-buckets as leaf values holding a bucket header, with small buckets inline.
//! etcd's buckets (`server/storage/schema`): "key" (revision → mvccpb.KeyValue; 17-byte
//! revisions, plus a `t` for tombstones), "meta" (`finishedCompactRev`), and "lease"
//! (id → leasepb.Lease).

use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

use prost::Message;
use synod_api::mvccpb::KeyValue;
use synod_api::synodpb::LeaseRecord;
use synod_mvcc::{MAX_LEASE_TTL, Rev, StoredKv};

const MAGIC: u32 = 0xED0C_DAED;
const VERSION: u32 = 2;
const PAGE_HEADER: usize = 16;
const ELEMENT: usize = 16;
const BRANCH: u16 = 0x01;
const LEAF: u16 = 0x02;
const META: u16 = 0x04;
const FREELIST: u16 = 0x10;
/// The page size synod writes (bbolt's default on Linux).
const PAGE_SIZE: usize = 4096;
const BUCKET_LEAF: u32 = 0x01;
/// The deepest B+tree a real database has is far shallower; deeper means a cycle.
const DEPTH_MAX: usize = 64;

/// What `snapshot restore` takes from an etcd snapshot.
pub struct EtcdSnapshot {
    /// Every kept record, in revision order.
    pub records: Vec<(Rev, StoredKv)>,
    pub revision: i64,
    pub compact_revision: i64,
    pub leases: Vec<LeaseRecord>,
}

/// Whether the file starts with a bbolt meta page.
pub fn is_bbolt(file: &mut std::fs::File) -> std::io::Result<bool> {
    let mut head = [0u8; PAGE_HEADER + 8];
    match file.read_exact_at(&mut head, 0) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e),
    }
    let flags = u16::from_le_bytes([head[8], head[9]]);
    Ok(flags == META && u32_at(&head, PAGE_HEADER) == Some(MAGIC))
}

/// Reads the records, revisions and leases of an etcd snapshot whose first `length` bytes
/// are the database (the rest is the checksum).
pub fn read(file: &mut std::fs::File, length: u64) -> Result<EtcdSnapshot, String> {
    let db = Db::open(file, length)?;
    let root = db.root()?;
    let mut buckets = Vec::new();
    db.walk(&root, 0, &mut |key, value, flags| {
        if flags & BUCKET_LEAF != 0 {
            buckets.push((key.to_vec(), value.to_vec()));
        }
        Ok(())
    })?;
    let bucket = |name: &[u8]| buckets.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());

    let mut records: Vec<(Rev, StoredKv)> = Vec::new();
    if let Some(header) = bucket(b"key") {
        db.walk_bucket(&header, &mut |key, value, _| {
            let (rev, tombstone) = revision_key(key)?;
            let kv = KeyValue::decode(value).map_err(|e| format!("record {rev}: {e}"))?;
            if kv.key.is_empty() {
                return Err(format!("record {rev} has no key"));
            }
            records.push((rev, StoredKv { kv, tombstone }));
            Ok(())
        })?;
    }
    records.sort_by_key(|(rev, _)| *rev);
    if let Some(w) = records.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(format!("revision {} is stored twice", w[0].0));
    }

    let (mut finished, mut scheduled) = (-1, -1);
    if let Some(header) = bucket(b"meta") {
        db.walk_bucket(&header, &mut |key, value, _| {
            match key {
                b"finishedCompactRev" => finished = revision_key(value)?.0.main,
                b"scheduledCompactRev" => scheduled = revision_key(value)?.0.main,
                _ => {}
            }
            Ok(())
        })?;
    }
    // etcd compacts in batches, so a snapshot taken during a compaction holds some of what
    // it was removing; finish it here, as etcd does when it restarts on such a database.
    let compact_revision = finished.max(scheduled);
    if compact_revision > 0 {
        records = compacted(records, compact_revision);
    }

    // A compaction at the newest revision removes a delete's tombstone there, so the
    // store's revision is the larger of the two, as etcd computes it on restore.
    let revision = records.last().map_or(1, |(rev, _)| rev.main).max(compact_revision).max(1);

    let mut leases = Vec::new();
    if let Some(header) = bucket(b"lease") {
        db.walk_bucket(&header, &mut |key, value, _| {
            let lease = EtcdLease::decode(value).map_err(|e| format!("lease {key:02x?}: {e}"))?;
            if lease.id == 0 {
                return Err("a lease with id 0".into());
            }
            if !(1..=MAX_LEASE_TTL).contains(&lease.ttl) {
                return Err(format!("lease {:x} has a TTL of {} s", lease.id, lease.ttl));
            }
            // A checkpoint never exceeds the TTL.
            let remaining_ms = lease.remaining_ttl.clamp(0, lease.ttl) * 1000;
            leases.push(LeaseRecord { id: lease.id, ttl: lease.ttl, remaining_ms });
            Ok(())
        })?;
    }
    Ok(EtcdSnapshot { records, revision, compact_revision, leases })
}

/// What `etcdctl snapshot status` reports of a snapshot file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotStatus {
    /// CRC-32C (Castagnoli) over every bucket's name and then its keys and values, in order,
    /// as etcd computes it.
    pub hash: u32,
    /// The newest revision in the key bucket.
    pub revision: i64,
    /// Keys in all buckets.
    pub total_keys: u64,
    /// The database's size: its page count times its page size.
    pub total_size: u64,
}

/// etcd's snapshot status of the database in the first `length` bytes of `file`.
pub fn status(file: &mut std::fs::File, length: u64) -> Result<SnapshotStatus, String> {
    const CASTAGNOLI: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);
    let db = Db::open(file, length)?;
    let root = db.root()?;
    let mut buckets = Vec::new();
    db.walk(&root, 0, &mut |key, value, flags| {
        if flags & BUCKET_LEAF == 0 {
            return Err(format!("a key that is not a bucket at the top: {key:02x?}"));
        }
        buckets.push((key.to_vec(), value.to_vec()));
        Ok(())
    })?;
    let mut digest = CASTAGNOLI.digest();
    let (mut revision, mut total_keys) = (0, 0);
    for (name, header) in &buckets {
        digest.update(name);
        let is_key_bucket = name == b"key";
        db.walk_bucket(header, &mut |key, value, _| {
            digest.update(key);
            digest.update(value);
            if is_key_bucket {
                revision = revision_key(key)?.0.main;
            }
            total_keys += 1;
            Ok(())
        })?;
    }
    Ok(SnapshotStatus {
        hash: digest.finalize(),
        revision,
        total_keys,
        total_size: db.high_water * db.page_size as u64,
    })
}

/// What a compaction at `at` keeps of records in revision order: for each key its newest
/// record at or below `at` unless that is a deletion, and everything after `at`.
fn compacted(records: Vec<(Rev, StoredKv)>, at: i64) -> Vec<(Rev, StoredKv)> {
    let mut newest: std::collections::HashMap<&[u8], Rev> = std::collections::HashMap::new();
    for (rev, stored) in records.iter().filter(|(rev, _)| rev.main <= at) {
        newest.insert(stored.kv.key.as_slice(), *rev);
    }
    let keep: std::collections::HashSet<Rev> = records
        .iter()
        .filter(|(rev, stored)| {
            rev.main <= at && !stored.tombstone && newest.get(stored.kv.key.as_slice()) == Some(rev)
        })
        .map(|(rev, _)| *rev)
        .collect();
    records.into_iter().filter(|(rev, _)| rev.main > at || keep.contains(rev)).collect()
}

/// etcd's `leasepb.Lease`.
#[derive(Clone, PartialEq, prost::Message)]
struct EtcdLease {
    #[prost(int64, tag = "1")]
    id: i64,
    #[prost(int64, tag = "2")]
    ttl: i64,
    #[prost(int64, tag = "3")]
    remaining_ttl: i64,
}

/// etcd's revision key: main and sub revision, big-endian around a `_`, and a trailing
/// `t` for a tombstone.
fn revision_key(key: &[u8]) -> Result<(Rev, bool), String> {
    let tombstone = match key.len() {
        17 => false,
        18 if key[17] == b't' => true,
        _ => return Err(format!("{key:02x?} is not an etcd revision")),
    };
    if key[8] != b'_' {
        return Err(format!("{key:02x?} is not an etcd revision"));
    }
    let main = i64::from_be_bytes(key[..8].try_into().expect("8 bytes"));
    let sub = i64::from_be_bytes(key[9..17].try_into().expect("8 bytes"));
    if main < 1 || sub < 0 {
        return Err(format!("revision {main}.{sub} out of range"));
    }
    Ok((Rev::new(main, sub), tombstone))
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// A page's bytes: a page read from the file, or an inline bucket's page.
struct Page {
    bytes: Vec<u8>,
}

impl Page {
    fn flags(&self) -> Result<u16, String> {
        u16_at(&self.bytes, 8).ok_or_else(|| "a short page".to_string())
    }

    fn count(&self) -> Result<usize, String> {
        Ok(usize::from(u16_at(&self.bytes, 10).ok_or("a short page")?))
    }

    /// Element `i`'s header fields and where the element starts.
    fn element(&self, i: usize) -> Result<(usize, [u32; 4]), String> {
        let at = PAGE_HEADER + i * ELEMENT;
        let field = |n: usize| {
            u32_at(&self.bytes, at + 4 * n).ok_or_else(|| "an element beyond its page".to_string())
        };
        Ok((at, [field(0)?, field(1)?, field(2)?, field(3)?]))
    }

    fn slice(&self, at: usize, len: usize) -> Result<&[u8], String> {
        at.checked_add(len)
            .and_then(|end| self.bytes.get(at..end))
            .ok_or_else(|| "a key or value beyond its page".to_string())
    }
}

/// A key, its value and its leaf flags.
type Visit<'a> = dyn FnMut(&[u8], &[u8], u32) -> Result<(), String> + 'a;

struct Db<'a> {
    file: &'a std::fs::File,
    page_size: usize,
    pages: u64,
    root: u64,
    /// The database's page count as its meta page says (bbolt's `tx.Size()` in pages).
    high_water: u64,
    /// Pages read so far (with their overflow pages): each belongs to one tree once, so a
    /// page met again is damage (a cycle, or pages shared so as to make a walk take forever
    /// or read the file many times over), as bbolt's check says.
    seen: std::cell::RefCell<std::collections::HashSet<u64>>,
}

impl<'a> Db<'a> {
    fn open(file: &'a std::fs::File, length: u64) -> Result<Db<'a>, String> {
        let mut first = vec![0u8; 4096.min(length as usize)];
        file.read_exact_at(&mut first, 0).map_err(|e| format!("reading the first page: {e}"))?;
        let page_size = u32_at(&first, PAGE_HEADER + 8).ok_or("too short for a bbolt database")? as usize;
        if !(512..=1 << 20).contains(&page_size) || !page_size.is_power_of_two() {
            return Err(format!("page size {page_size} is not bbolt's"));
        }
        let pages = length / page_size as u64;
        let mut best: Option<(u64, u64, u64)> = None;
        for id in 0..2u64 {
            let mut page = vec![0u8; page_size];
            if (id + 1) * page_size as u64 > length
                || file.read_exact_at(&mut page, id * page_size as u64).is_err()
            {
                continue;
            }
            if let Some((txid, root, high_water)) = meta(&page)
                && best.is_none_or(|(t, ..)| txid > t)
            {
                best = Some((txid, root, high_water));
            }
        }
        let (_, root, high_water) =
            best.ok_or("neither meta page is valid (not an etcd snapshot, or damaged)")?;
        Ok(Db { file, page_size, pages, root, high_water, seen: Default::default() })
    }

    fn page(&self, id: u64) -> Result<Page, String> {
        if id < 2 || id >= self.pages {
            return Err(format!("page {id} outside the database's {} pages", self.pages));
        }
        let mut head = vec![0u8; PAGE_HEADER];
        let offset = id * self.page_size as u64;
        self.file.read_exact_at(&mut head, offset).map_err(|e| format!("reading page {id}: {e}"))?;
        let overflow = u64::from(u32_at(&head, 12).expect("16 bytes"));
        if id + overflow >= self.pages {
            return Err(format!("page {id} runs past the end of the database"));
        }
        // Every page, overflow pages included, belongs to one place in one tree: a page met
        // again is damage, and refusing it bounds the whole read by the file's size.
        let mut seen = self.seen.borrow_mut();
        for page in id..=id + overflow {
            if !seen.insert(page) {
                return Err(format!("page {page} is referenced twice"));
            }
        }
        drop(seen);
        let mut bytes = vec![0u8; (overflow as usize + 1) * self.page_size];
        self.file.read_exact_at(&mut bytes, offset).map_err(|e| format!("reading page {id}: {e}"))?;
        Ok(Page { bytes })
    }

    /// The root bucket's tree.
    fn root(&self) -> Result<Page, String> {
        self.page(self.root)
    }

    /// Visits every key of a bucket, given its header (leaf value).
    fn walk_bucket(&self, header: &[u8], visit: &mut Visit<'_>) -> Result<(), String> {
        let root = u64_at(header, 0).ok_or("a short bucket header")?;
        let page = if root == 0 {
            // An inline bucket: its single leaf page follows the header.
            Page { bytes: header.get(16..).ok_or("a short inline bucket")?.to_vec() }
        } else {
            self.page(root)?
        };
        self.walk(&page, 0, visit)
    }

    /// Visits every key under `page`, in order.
    fn walk(&self, page: &Page, depth: usize, visit: &mut Visit<'_>) -> Result<(), String> {
        if depth > DEPTH_MAX {
            return Err("the tree is deeper than any real database's (a cycle?)".into());
        }
        match page.flags()? {
            BRANCH => {
                for i in 0..page.count()? {
                    let (_, [_, _, low, high]) = page.element(i)?;
                    let child = u64::from(low) | (u64::from(high) << 32);
                    self.walk(&self.page(child)?, depth + 1, visit)?;
                }
                Ok(())
            }
            LEAF => {
                for i in 0..page.count()? {
                    let (at, [flags, pos, key_len, value_len]) = page.element(i)?;
                    let key_at = at + pos as usize;
                    let key = page.slice(key_at, key_len as usize)?;
                    let value = page.slice(key_at + key_len as usize, value_len as usize)?;
                    visit(key, value, flags)?;
                }
                Ok(())
            }
            other => Err(format!("a page of kind {other:#x} inside a bucket")),
        }
    }
}

/// A valid meta page's transaction id, root bucket page and high-water page id.
fn meta(page: &[u8]) -> Option<(u64, u64, u64)> {
    if u16_at(page, 8)? != META
        || u32_at(page, PAGE_HEADER)? != MAGIC
        || u32_at(page, PAGE_HEADER + 4)? != VERSION
    {
        return None;
    }
    // The checksum is FNV-1a (64-bit) over the meta fields before it.
    if u64_at(page, PAGE_HEADER + 56)? != fnv1a(page.get(PAGE_HEADER..PAGE_HEADER + 56)?) {
        return None;
    }
    let root = u64_at(page, PAGE_HEADER + 16)?;
    let high_water = u64_at(page, PAGE_HEADER + 40)?;
    let txid = u64_at(page, PAGE_HEADER + 48)?;
    Some((txid, root, high_water))
}

#[cfg(test)]
mod tests {
    use super::round_trip::scratch;
    use super::*;

    #[test]
    fn revision_keys_are_etcds() {
        let mut key = 5i64.to_be_bytes().to_vec();
        key.push(b'_');
        key.extend(2i64.to_be_bytes());
        assert_eq!(revision_key(&key), Ok((Rev::new(5, 2), false)));
        key.push(b't');
        assert_eq!(revision_key(&key), Ok((Rev::new(5, 2), true)));
        key[17] = b'x';
        assert!(revision_key(&key).is_err());
        assert!(revision_key(b"short").is_err());
    }

    /// A branch whose children all point at one page would make a walk exponential; the
    /// second visit of a page is refused instead.
    #[test]
    fn a_page_referenced_twice_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("shared.db");
        let mut file = scratch(&path);
        let mut none = std::iter::empty();
        let bytes = write(&mut file, &mut none, -1, &[]).expect("write");
        // The root bucket page is the last one; point the "key" bucket at the root page itself.
        let root = bytes / PAGE_SIZE as u64 - 1;
        let mut page = vec![0u8; PAGE_SIZE];
        file.read_exact_at(&mut page, root * PAGE_SIZE as u64).unwrap();
        let (at, [_, pos, key_len, _]) = Page { bytes: page.clone() }.element(0).unwrap();
        let value_at = at + pos as usize + key_len as usize;
        page[value_at..value_at + 8].copy_from_slice(&root.to_le_bytes());
        file.write_all_at(&page, root * PAGE_SIZE as u64).unwrap();
        let error = read(&mut file, bytes).err().expect("refused");
        assert!(error.contains("twice"), "{error}");
    }

    #[test]
    fn a_damaged_meta_page_is_refused() {
        let mut page = vec![0u8; 4096];
        page[8..10].copy_from_slice(&META.to_le_bytes());
        page[PAGE_HEADER..PAGE_HEADER + 4].copy_from_slice(&MAGIC.to_le_bytes());
        page[PAGE_HEADER + 4..PAGE_HEADER + 8].copy_from_slice(&VERSION.to_le_bytes());
        assert_eq!(meta(&page), None, "a wrong checksum");
    }
}

/// etcd's revision key for a record.
fn revision_bytes(rev: Rev, tombstone: bool) -> Vec<u8> {
    let mut key = Vec::with_capacity(18);
    key.extend_from_slice(&rev.main.to_be_bytes());
    key.push(b'_');
    key.extend_from_slice(&rev.sub.to_be_bytes());
    if tombstone {
        key.push(b't');
    }
    key
}

/// Writes pages one after another from page 3 on (0 and 1 are the meta pages, 2 the
/// empty freelist), each padded to whole pages.
struct Pages<'a> {
    out: &'a mut std::fs::File,
    next: u64,
}

impl Pages<'_> {
    /// Writes one page (with overflow pages if `body` needs them) and returns its id.
    fn write(&mut self, flags: u16, count: usize, body: &[u8]) -> std::io::Result<u64> {
        let id = self.next;
        let pages = (PAGE_HEADER + body.len()).div_ceil(PAGE_SIZE).max(1);
        let count =
            u16::try_from(count).map_err(|_| std::io::Error::other("too many elements for a page"))?;
        let overflow =
            u32::try_from(pages - 1).map_err(|_| std::io::Error::other("a value too large for a page"))?;
        let mut page = Vec::with_capacity(pages * PAGE_SIZE);
        page.extend_from_slice(&id.to_le_bytes());
        page.extend_from_slice(&flags.to_le_bytes());
        page.extend_from_slice(&count.to_le_bytes());
        page.extend_from_slice(&overflow.to_le_bytes());
        page.extend_from_slice(body);
        page.resize(pages * PAGE_SIZE, 0);
        self.out.write_all(&page)?;
        self.next += pages as u64;
        Ok(id)
    }

    /// Writes a page of sorted elements: leaf (key, value, flags) or branch (key, child).
    fn elements(&mut self, flags: u16, elements: &[(Vec<u8>, Vec<u8>, u32)]) -> std::io::Result<u64> {
        let mut headers = Vec::with_capacity(elements.len() * ELEMENT);
        let mut data = Vec::new();
        for (i, (key, value, element_flags)) in elements.iter().enumerate() {
            // Offsets count from the element's own header.
            let pos = (elements.len() - i) * ELEMENT + data.len();
            let pos = u32::try_from(pos).map_err(|_| std::io::Error::other("a page too large"))?;
            if flags == LEAF {
                headers.extend_from_slice(&element_flags.to_le_bytes());
                headers.extend_from_slice(&pos.to_le_bytes());
                headers.extend_from_slice(&(key.len() as u32).to_le_bytes());
                headers.extend_from_slice(&(value.len() as u32).to_le_bytes());
                data.extend_from_slice(key);
                data.extend_from_slice(value);
            } else {
                headers.extend_from_slice(&pos.to_le_bytes());
                headers.extend_from_slice(&(key.len() as u32).to_le_bytes());
                headers.extend_from_slice(value);
                data.extend_from_slice(key);
            }
        }
        headers.extend_from_slice(&data);
        self.write(flags, elements.len(), &headers)
    }
}

/// Builds a bucket's B+tree from its entries in key order; returns its root page.
struct Tree {
    /// Entries of the leaf being filled, and its size so far.
    pending: Vec<(Vec<u8>, Vec<u8>, u32)>,
    pending_bytes: usize,
    /// The first key and page of every full leaf.
    leaves: Vec<(Vec<u8>, u64)>,
}

impl Tree {
    fn new() -> Tree {
        Tree { pending: Vec::new(), pending_bytes: PAGE_HEADER, leaves: Vec::new() }
    }

    fn add(
        &mut self,
        pages: &mut Pages<'_>,
        key: Vec<u8>,
        value: Vec<u8>,
        flags: u32,
    ) -> std::io::Result<()> {
        let size = ELEMENT + key.len() + value.len();
        if !self.pending.is_empty() && self.pending_bytes + size > PAGE_SIZE {
            self.flush(pages)?;
        }
        self.pending_bytes += size;
        self.pending.push((key, value, flags));
        Ok(())
    }

    fn flush(&mut self, pages: &mut Pages<'_>) -> std::io::Result<()> {
        let first = self.pending.first().map(|(k, _, _)| k.clone()).unwrap_or_default();
        let id = pages.elements(LEAF, &self.pending)?;
        self.leaves.push((first, id));
        self.pending.clear();
        self.pending_bytes = PAGE_HEADER;
        Ok(())
    }

    /// Writes what is left and the branch pages above the leaves.
    fn finish(mut self, pages: &mut Pages<'_>) -> std::io::Result<u64> {
        if !self.pending.is_empty() || self.leaves.is_empty() {
            self.flush(pages)?;
        }
        let mut level = self.leaves;
        while level.len() > 1 {
            let mut parents = Vec::new();
            let mut elements: Vec<(Vec<u8>, Vec<u8>, u32)> = Vec::new();
            let mut bytes = PAGE_HEADER;
            for (key, id) in level {
                let size = ELEMENT + key.len();
                if !elements.is_empty() && bytes + size > PAGE_SIZE {
                    let first = elements[0].0.clone();
                    parents.push((first, pages.elements(BRANCH, &elements)?));
                    elements.clear();
                    bytes = PAGE_HEADER;
                }
                bytes += size;
                elements.push((key, id.to_le_bytes().to_vec(), 0));
            }
            let first = elements[0].0.clone();
            parents.push((first, pages.elements(BRANCH, &elements)?));
            level = parents;
        }
        Ok(level[0].1)
    }
}

/// Writes the keyspace as an etcd snapshot (without etcd's SHA-256 trailer, which the
/// caller appends): bucket "key" with every record under its revision, "meta" with the
/// compaction revision, "lease" with the leases. Returns the bytes written.
pub fn write(
    out: &mut std::fs::File,
    records: &mut dyn Iterator<Item = Result<(Rev, StoredKv), crate::StorageError>>,
    compact_revision: i64,
    leases: &[LeaseRecord],
) -> Result<u64, crate::StorageError> {
    let io = |source: std::io::Error| crate::StorageError::Io { path: "snapshot".into(), source };
    out.set_len(0).map_err(io)?;
    out.seek(SeekFrom::Start((3 * PAGE_SIZE) as u64)).map_err(io)?;
    let mut pages = Pages { out, next: 3 };

    let mut keys = Tree::new();
    for record in records {
        let (rev, stored) = record?;
        keys.add(&mut pages, revision_bytes(rev, stored.tombstone), stored.kv.encode_to_vec(), 0)
            .map_err(io)?;
    }
    let key_root = keys.finish(&mut pages).map_err(io)?;

    let mut lease_tree = Tree::new();
    let mut sorted: Vec<&LeaseRecord> = leases.iter().collect();
    sorted.sort_by_key(|l| l.id.to_be_bytes());
    for lease in sorted {
        let value = EtcdLease {
            id: lease.id,
            ttl: lease.ttl,
            remaining_ttl: (lease.remaining_ms.max(0) as u64).div_ceil(1000) as i64,
        };
        lease_tree.add(&mut pages, lease.id.to_be_bytes().to_vec(), value.encode_to_vec(), 0).map_err(io)?;
    }
    let lease_root = lease_tree.finish(&mut pages).map_err(io)?;

    let mut meta_tree = Tree::new();
    if compact_revision > 0 {
        let compacted = revision_bytes(Rev::new(compact_revision, 0), false);
        meta_tree.add(&mut pages, b"finishedCompactRev".to_vec(), compacted.clone(), 0).map_err(io)?;
        meta_tree.add(&mut pages, b"scheduledCompactRev".to_vec(), compacted, 0).map_err(io)?;
    }
    let meta_root = meta_tree.finish(&mut pages).map_err(io)?;

    let bucket = |root: u64| {
        let mut header = root.to_le_bytes().to_vec();
        header.extend_from_slice(&0u64.to_le_bytes());
        header
    };
    let mut buckets = Tree::new();
    for (name, root) in [(&b"key"[..], key_root), (b"lease", lease_root), (b"meta", meta_root)] {
        buckets.add(&mut pages, name.to_vec(), bucket(root), BUCKET_LEAF).map_err(io)?;
    }
    let root = buckets.finish(&mut pages).map_err(io)?;
    let high_water = pages.next;

    // The empty freelist, then both meta pages naming the root and the high-water mark.
    pages.out.seek(SeekFrom::Start(0)).map_err(io)?;
    for id in 0..2u64 {
        let mut page = vec![0u8; PAGE_SIZE];
        page[..8].copy_from_slice(&id.to_le_bytes());
        page[8..10].copy_from_slice(&META.to_le_bytes());
        let m = PAGE_HEADER;
        page[m..m + 4].copy_from_slice(&MAGIC.to_le_bytes());
        page[m + 4..m + 8].copy_from_slice(&VERSION.to_le_bytes());
        page[m + 8..m + 12].copy_from_slice(&(PAGE_SIZE as u32).to_le_bytes());
        page[m + 16..m + 24].copy_from_slice(&root.to_le_bytes());
        page[m + 32..m + 40].copy_from_slice(&2u64.to_le_bytes());
        page[m + 40..m + 48].copy_from_slice(&high_water.to_le_bytes());
        page[m + 48..m + 56].copy_from_slice(&id.to_le_bytes());
        let checksum = fnv1a(&page[m..m + 56]);
        page[m + 56..m + 64].copy_from_slice(&checksum.to_le_bytes());
        pages.out.write_all(&page).map_err(io)?;
    }
    let mut freelist = vec![0u8; PAGE_SIZE];
    freelist[..8].copy_from_slice(&2u64.to_le_bytes());
    freelist[8..10].copy_from_slice(&FREELIST.to_le_bytes());
    pages.out.write_all(&freelist).map_err(io)?;
    pages.out.seek(SeekFrom::End(0)).map_err(io)?;
    Ok(high_water * PAGE_SIZE as u64)
}

/// FNV-1a, 64 bits: bbolt's meta page checksum.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod round_trip {
    use super::*;

    /// A new file to write a snapshot into and read it back from.
    pub(super) fn scratch(path: &std::path::Path) -> std::fs::File {
        std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path).unwrap()
    }

    fn record(main: i64, key: &str, tombstone: bool) -> (Rev, StoredKv) {
        let kv = KeyValue { key: key.into(), mod_revision: main, ..Default::default() };
        (Rev::new(main, 0), StoredKv { kv, tombstone })
    }

    /// A snapshot taken while etcd compacted still holds some of what it was removing; the
    /// reader finishes the compaction.
    #[test]
    fn an_unfinished_compaction_is_finished() {
        let records = vec![
            record(2, "a", false),
            record(3, "b", false),
            record(4, "a", false),
            record(5, "b", true),
            record(6, "c", false),
            record(7, "a", true),
            record(8, "c", false),
        ];
        let kept: Vec<i64> = compacted(records, 6).iter().map(|(rev, _)| rev.main).collect();
        // a's newest at or below 6 is 4 (kept); b's is a deletion (gone); c's is 6.
        assert_eq!(kept, vec![4, 6, 7, 8]);
    }

    /// What is written reads back the same: many records (several tree levels), values
    /// larger than a page (overflow pages), tombstones, leases and the compaction.
    #[test]
    fn a_written_snapshot_reads_back() {
        let mut records = Vec::new();
        for main in 2..3000i64 {
            let size = match main % 500 {
                0 => 3 * PAGE_SIZE + 17,
                n => (n as usize * 7) % 300,
            };
            // Below the compaction at 1500, only what a compaction keeps: one live record
            // per key.
            let key = if main <= 1500 { format!("old-{main:05}") } else { format!("key-{:05}", main % 777) };
            let kv = KeyValue {
                key: key.into_bytes(),
                create_revision: main,
                mod_revision: main,
                version: 1,
                value: vec![b'v'; size],
                lease: 0,
            };
            records.push((Rev::new(main, 0), StoredKv { kv, tombstone: main > 1500 && main % 11 == 0 }));
        }
        let leases: Vec<LeaseRecord> =
            (1..40).map(|id| LeaseRecord { id: id * 1_000_003, ttl: 60, remaining_ms: id * 1000 }).collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("snapshot.db");
        let mut file = scratch(&path);
        let mut source = records.clone().into_iter().map(Ok);
        let bytes = write(&mut file, &mut source, 1500, &leases).expect("write");
        assert_eq!(bytes % PAGE_SIZE as u64, 0);
        assert_eq!(file.metadata().unwrap().len(), bytes);
        assert!(is_bbolt(&mut file).unwrap());
        let read = read(&mut file, bytes).expect("read back");
        assert_eq!(read.records, records);
        assert_eq!(read.compact_revision, 1500);
        assert_eq!(read.revision, 2999);
        let mut sorted = leases.clone();
        sorted.sort_by_key(|l| l.id);
        assert_eq!(read.leases, sorted);
    }
}
