//! [`TreeIndex`]: every key's [`KeyIndex`], ordered by key, and [`KeyRange`], etcd's rules
//! for what `key` and `range_end` select.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::Rev;
use crate::key_index::{KeyIndex, Visible};

/// The keys a request selects, from its `key` and `range_end` fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRange<'a> {
    /// `range_end` empty: just `key`.
    Single(&'a [u8]),
    /// `range_end` is `"\0"`: every key `>= key`.
    From(&'a [u8]),
    /// `[key, range_end)`; empty when `range_end <= key`.
    Span(&'a [u8], &'a [u8]),
}

impl<'a> KeyRange<'a> {
    pub fn new(key: &'a [u8], range_end: &'a [u8]) -> KeyRange<'a> {
        match range_end {
            [] => KeyRange::Single(key),
            [0] => KeyRange::From(key),
            end => KeyRange::Span(key, end),
        }
    }

    fn bounds(&self) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
        match *self {
            KeyRange::Single(key) => (Bound::Included(key), Bound::Included(key)),
            KeyRange::From(key) => (Bound::Included(key), Bound::Unbounded),
            KeyRange::Span(key, end) => (Bound::Included(key), Bound::Excluded(end)),
        }
    }

    fn is_empty(&self) -> bool {
        matches!(*self, KeyRange::Span(key, end) if end <= key)
    }

    /// Whether `candidate` is one of the keys this range selects.
    pub fn contains(&self, candidate: &[u8]) -> bool {
        match *self {
            KeyRange::Single(key) => candidate == key,
            KeyRange::From(key) => candidate >= key,
            KeyRange::Span(key, end) => key <= candidate && candidate < end,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct TreeIndex {
    keys: BTreeMap<Vec<u8>, KeyIndex>,
}

impl TreeIndex {
    /// Whether the index has any history of `key`.
    pub fn has_key(&self, key: &[u8]) -> bool {
        self.keys.contains_key(key)
    }

    pub fn get(&self, key: &[u8], at: i64) -> Option<Visible> {
        self.keys.get(key)?.get(at)
    }

    pub fn put(&mut self, key: &[u8], rev: Rev) {
        match self.keys.get_mut(key) {
            Some(ki) => ki.put(rev),
            None => {
                let mut ki = KeyIndex::default();
                ki.put(rev);
                self.keys.insert(key.to_vec(), ki);
            }
        }
    }

    /// Records the deletion of a live key.
    pub fn tombstone(&mut self, key: &[u8], rev: Rev) {
        self.keys.get_mut(key).expect("tombstone of a key missing from the index").tombstone(rev);
    }

    /// Rebuilds a key's history from one stored record, oldest record first. Records that
    /// cannot follow each other (a tombstone of a deleted key, a first record that is a
    /// tombstone) are refused.
    pub fn restore(
        &mut self,
        key: &[u8],
        rev: Rev,
        created: i64,
        version: i64,
        tombstone: bool,
    ) -> Result<(), String> {
        match self.keys.get_mut(key) {
            Some(ki) if tombstone && !ki.is_live() => {
                Err("a tombstone for a key that is already deleted".into())
            }
            Some(ki) if tombstone => {
                ki.tombstone(rev);
                Ok(())
            }
            Some(ki) => {
                ki.put(rev);
                Ok(())
            }
            // A key's first surviving record is never a tombstone: compaction keeps the put
            // before any tombstone it keeps.
            None if tombstone => Err("a key whose first record is a tombstone".into()),
            None if version < 1 || created < 1 || created > rev.main => {
                Err(format!("a record with version {version} and creation revision {created}"))
            }
            None => {
                let mut ki = KeyIndex::default();
                ki.restore(Rev::new(created, 0), rev, version);
                self.keys.insert(key.to_vec(), ki);
                Ok(())
            }
        }
    }

    /// Visits the keys in `range` that exist at `at`, in key order, until `visit` returns
    /// false.
    pub fn visit(&self, range: &KeyRange<'_>, at: i64, mut visit: impl FnMut(&[u8], Visible) -> bool) {
        if range.is_empty() {
            return;
        }
        for (key, ki) in self.keys.range::<[u8], _>(range.bounds()) {
            if let Some(visible) = ki.get(at)
                && !visit(key, visible)
            {
                return;
            }
        }
    }

    /// The revisions of the keys in `range` as of `at` (at most `limit` of them, 0 for all),
    /// and how many keys the range holds in all.
    pub fn revisions(&self, range: &KeyRange<'_>, at: i64, limit: usize) -> (Vec<Rev>, usize) {
        let mut revs = Vec::new();
        let mut count = 0;
        self.visit(range, at, |_, visible| {
            if limit == 0 || revs.len() < limit {
                revs.push(visible.modified);
            }
            count += 1;
            true
        });
        (revs, count)
    }

    /// The keys in `range` that exist at `at`.
    pub fn keys(&self, range: &KeyRange<'_>, at: i64) -> Vec<Vec<u8>> {
        let mut keys = Vec::new();
        self.visit(range, at, |key, _| {
            keys.push(key.to_vec());
            true
        });
        keys
    }

    /// Compacts every key at `at` and returns the revisions whose records are no longer
    /// needed. Keys left without history leave the index.
    pub fn compact(&mut self, at: i64) -> Vec<Rev> {
        let mut dropped = Vec::new();
        self.keys.retain(|_, ki| {
            ki.compact(at, &mut dropped);
            !ki.is_empty()
        });
        dropped
    }

    /// Compacts at `at` the keys from `from` on (up to `until`, not included, if given), at
    /// most `max_keys` of them, as [`TreeIndex::compact`] does, adding the revisions no
    /// longer needed to `dropped`. Returns the key to go on from, or `None` once the last
    /// key is done.
    pub fn compact_from(
        &mut self,
        from: &[u8],
        until: Option<&[u8]>,
        at: i64,
        max_keys: usize,
        dropped: &mut Vec<Rev>,
    ) -> Option<Vec<u8>> {
        if until.is_some_and(|until| until <= from) {
            return None;
        }
        let mut emptied = Vec::new();
        let end = until.map_or(Bound::Unbounded, Bound::Excluded);
        let mut keys = self.keys.range_mut::<[u8], _>((Bound::Included(from), end));
        for (key, ki) in keys.by_ref().take(max_keys) {
            ki.compact(at, dropped);
            if ki.is_empty() {
                emptied.push(key.clone());
            }
        }
        let next = keys.next().map(|(key, _)| key.clone());
        for key in emptied {
            self.keys.remove(&key);
        }
        next
    }

    /// Every revision the index refers to, for consistency checks.
    pub fn all_revisions(&self) -> Vec<Rev> {
        self.keys.values().flat_map(|ki| ki.all_revs()).collect()
    }

    /// Number of keys that currently exist.
    pub fn live_keys(&self) -> usize {
        self.keys.values().filter(|ki| ki.is_live()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index_with(keys: &[&str]) -> TreeIndex {
        let mut index = TreeIndex::default();
        for (i, key) in keys.iter().enumerate() {
            index.put(key.as_bytes(), Rev::new(i as i64 + 2, 0));
        }
        index
    }

    fn keys_of(index: &TreeIndex, key: &str, end: &[u8]) -> Vec<String> {
        let range = KeyRange::new(key.as_bytes(), end);
        index.keys(&range, 100).into_iter().map(|k| String::from_utf8(k).unwrap()).collect()
    }

    /// `range_end` selects a single key, a prefix, everything from a key, or nothing, as
    /// etcd documents.
    #[test]
    fn key_ranges_follow_etcd_rules() {
        let index = index_with(&["a", "aa", "ab", "b", "c"]);
        assert_eq!(keys_of(&index, "aa", b""), ["aa"]);
        assert_eq!(keys_of(&index, "a", b"b"), ["a", "aa", "ab"]);
        assert_eq!(keys_of(&index, "ab", b"\0"), ["ab", "b", "c"]);
        assert_eq!(keys_of(&index, "\0", b"\0"), ["a", "aa", "ab", "b", "c"]);
        assert_eq!(keys_of(&index, "c", b"a"), Vec::<String>::new());
        assert_eq!(keys_of(&index, "zz", b""), Vec::<String>::new());
    }

    /// `revisions` honours the limit but always counts the whole range.
    #[test]
    fn revisions_limit_and_count() {
        let index = index_with(&["a", "b", "c"]);
        let (revs, count) = index.revisions(&KeyRange::new(b"a", b"\0"), 100, 2);
        assert_eq!(revs, vec![Rev::new(2, 0), Rev::new(3, 0)]);
        assert_eq!(count, 3);
    }
}
