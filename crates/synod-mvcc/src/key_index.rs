//! [`KeyIndex`]: one key's history, as a list of generations.
//!
//! A generation runs from a key's creation to its deletion: its revisions are every put, and
//! the last one of a closed generation is the tombstone. The last generation is the current
//! one; it is empty while the key is deleted. This is etcd's `keyIndex`, and the semantics of
//! `get` and `compact` follow etcd's exactly, because reads at old revisions and compaction
//! results are visible to clients.

use crate::Rev;

#[derive(Clone, Debug, Default, PartialEq)]
struct Generation {
    /// Number of puts in this generation, tombstone included; kept across compaction so
    /// that versions stay right after older revisions are dropped.
    version: i64,
    created: Rev,
    revs: Vec<Rev>,
}

impl Generation {
    fn is_empty(&self) -> bool {
        self.revs.is_empty()
    }

    /// Position of the newest revision for which `keep_walking` is false, walking from the
    /// newest to the oldest; `None` if it is true for all.
    fn walk_back(&self, keep_walking: impl Fn(Rev) -> bool) -> Option<usize> {
        self.revs.iter().rposition(|&rev| !keep_walking(rev))
    }
}

/// What a read at some revision sees of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Visible {
    pub modified: Rev,
    pub created: Rev,
    pub version: i64,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct KeyIndex {
    modified: Rev,
    generations: Vec<Generation>,
}

impl KeyIndex {
    /// Records a put at `rev`.
    pub fn put(&mut self, rev: Rev) {
        assert!(rev > self.modified, "put at {rev} is not after the key's last change {}", self.modified);
        if self.generations.is_empty() {
            self.generations.push(Generation::default());
        }
        let generation = self.generations.last_mut().expect("just ensured non-empty");
        if generation.is_empty() {
            generation.created = rev;
        }
        generation.revs.push(rev);
        generation.version += 1;
        self.modified = rev;
    }

    /// Starts the key's history from a stored record whose earlier revisions may have been
    /// compacted away: the record carries its generation's creation and version.
    pub fn restore(&mut self, created: Rev, modified: Rev, version: i64) {
        assert!(self.generations.is_empty(), "restore into a key with history");
        self.modified = modified;
        self.generations.push(Generation { version, created, revs: vec![modified] });
    }

    /// Records a deletion at `rev`. The caller only deletes keys that are currently live.
    pub fn tombstone(&mut self, rev: Rev) {
        let live = self.generations.last().is_some_and(|g| !g.is_empty());
        assert!(live, "tombstone at {rev} for a key that is not live");
        self.put(rev);
        self.generations.push(Generation::default());
    }

    /// Whether the key has no history left at all.
    pub fn is_empty(&self) -> bool {
        self.generations.len() == 1 && self.generations[0].is_empty()
    }

    /// Whether the key exists (is not deleted) in the newest state.
    pub fn is_live(&self) -> bool {
        self.generations.last().is_some_and(|g| !g.is_empty())
    }

    /// The key's state as of main revision `at`, if it existed then.
    pub fn get(&self, at: i64) -> Option<Visible> {
        let generation = self.find_generation(at)?;
        let n = generation.walk_back(|rev| rev.main > at)?;
        Some(Visible {
            modified: generation.revs[n],
            created: generation.created,
            version: generation.version - (generation.revs.len() - n - 1) as i64,
        })
    }

    /// The generation that was live at `at`; `None` if the key did not exist then.
    fn find_generation(&self, at: i64) -> Option<&Generation> {
        let last = self.generations.len().checked_sub(1)?;
        for (i, generation) in self.generations.iter().enumerate().rev() {
            let Some(first) = generation.revs.first() else {
                continue;
            };
            if i != last {
                let tombstone = generation.revs.last().expect("non-empty");
                if tombstone.main <= at {
                    return None;
                }
            }
            if first.main <= at {
                return Some(generation);
            }
        }
        None
    }

    /// Drops history that no read at a revision `>= at` can see. Every dropped revision is
    /// added to `dropped`, so the caller can delete its record.
    ///
    /// Kept: every revision after `at`, and the newest revision at or before `at` unless it
    /// is a tombstone. Exactly etcd's `keyIndex.compact`.
    pub fn compact(&mut self, at: i64, dropped: &mut Vec<Rev>) {
        assert!(!self.is_empty(), "compact of an empty key index");
        // The one revision compaction keeps from before `at`, if any (etcd keeps a set
        // across keys; per key it never holds more than one).
        let (mut gen_idx, rev_idx) = self.do_compact(at);
        let mut available = rev_idx.map(|i| self.generations[gen_idx].revs[i]);

        let last = self.generations.len() - 1;
        let generation = &mut self.generations[gen_idx];
        if !generation.is_empty() {
            if let Some(rev_idx) = rev_idx {
                dropped.extend(generation.revs.drain(..rev_idx));
            }
            // A generation reduced to its tombstone carries nothing a read can see.
            if generation.revs.len() == 1 && gen_idx != last {
                if available == Some(generation.revs[0]) {
                    available = None;
                }
                gen_idx += 1;
            }
        }
        for generation in self.generations.drain(..gen_idx) {
            dropped.extend(generation.revs.iter().filter(|r| available != Some(**r)));
        }
    }

    /// Finds the generation that compaction at `at` keeps first, and in it the newest
    /// revision at or before `at`, which compaction keeps.
    fn do_compact(&self, at: i64) -> (usize, Option<usize>) {
        let mut gen_idx = 0;
        while gen_idx < self.generations.len() - 1 {
            let tombstone = self.generations[gen_idx].revs.last().expect("closed generation");
            if tombstone.main > at {
                break;
            }
            gen_idx += 1;
        }
        let rev_idx = self.generations[gen_idx].walk_back(|rev| rev.main > at);
        (gen_idx, rev_idx)
    }

    /// Every revision of this key, oldest first (for consistency checks).
    pub fn all_revs(&self) -> Vec<Rev> {
        self.generations.iter().flat_map(|g| g.revs.iter().copied()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(main: i64) -> Rev {
        Rev::new(main, 0)
    }

    /// A key put at 2 and 4, deleted at 6, put again at 8: reads at every revision see what
    /// etcd shows, with versions restarting in the new generation.
    #[test]
    fn get_follows_generations() {
        let mut ki = KeyIndex::default();
        ki.put(r(2));
        ki.put(r(4));
        ki.tombstone(r(6));
        ki.put(r(8));
        assert_eq!(ki.get(1), None);
        let v = ki.get(3).unwrap();
        assert_eq!((v.modified, v.created, v.version), (r(2), r(2), 1));
        let v = ki.get(5).unwrap();
        assert_eq!((v.modified, v.created, v.version), (r(4), r(2), 2));
        assert_eq!(ki.get(6), None);
        assert_eq!(ki.get(7), None);
        let v = ki.get(9).unwrap();
        assert_eq!((v.modified, v.created, v.version), (r(8), r(8), 1));
    }

    /// Compaction keeps what reads at or after the compaction revision need, and reports the
    /// rest as dropped.
    #[test]
    fn compact_keeps_what_later_reads_need() {
        let mut ki = KeyIndex::default();
        ki.put(r(2));
        ki.put(r(4));
        ki.tombstone(r(6));
        ki.put(r(8));
        ki.put(r(10));

        let mut dropped = Vec::new();
        ki.compact(3, &mut dropped);
        assert_eq!(dropped, vec![]);
        assert_eq!(ki.get(3).unwrap().modified, r(2));

        ki.compact(5, &mut dropped);
        assert_eq!(dropped, vec![r(2)]);
        assert_eq!(ki.get(5).unwrap().version, 2);

        dropped.clear();
        ki.compact(6, &mut dropped);
        assert_eq!(dropped, vec![r(4), r(6)]);
        assert_eq!(ki.get(7), None);
        assert_eq!(ki.all_revs(), vec![r(8), r(10)]);

        dropped.clear();
        ki.compact(9, &mut dropped);
        assert_eq!(dropped, vec![]);
        assert_eq!(ki.get(9).unwrap().modified, r(8));
        ki.compact(10, &mut dropped);
        assert_eq!(dropped, vec![r(8)]);
        assert_eq!(ki.get(10).unwrap().version, 2);
    }

    /// A deleted key compacted past its tombstone leaves nothing behind.
    #[test]
    fn compact_past_tombstone_empties_key() {
        let mut ki = KeyIndex::default();
        ki.put(r(2));
        ki.tombstone(r(3));
        let mut dropped = Vec::new();
        ki.compact(3, &mut dropped);
        assert_eq!(dropped, vec![r(2), r(3)]);
        assert!(ki.is_empty());
    }

    /// A restored key (older revisions compacted away) keeps its creation and version.
    #[test]
    fn restore_keeps_creation_and_version() {
        let mut ki = KeyIndex::default();
        ki.restore(r(2), r(5), 3);
        ki.put(r(7));
        let v = ki.get(7).unwrap();
        assert_eq!((v.created, v.version), (r(2), 4));
    }
}
