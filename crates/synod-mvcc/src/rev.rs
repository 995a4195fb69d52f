//! [`Rev`]: a position in the store's history.

use std::fmt;

/// A change's place in history: `main` is the store revision of the request that made it,
/// `sub` its index among that request's changes (a Txn changing three keys writes subs 0, 1
/// and 2 at one main revision). This is etcd's `revision{main, sub}`; records are keyed by it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rev {
    pub main: i64,
    pub sub: i64,
}

impl Rev {
    pub const fn new(main: i64, sub: i64) -> Rev {
        Rev { main, sub }
    }
}

impl fmt::Display for Rev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.main, self.sub)
    }
}
