//! etcdctl's txn input language: comparisons such as `mod("key") > "0"` and request lines
//! such as `put key value` or `get key --prefix`.
//!
//! Request lines are split into words as etcdctl's `argify` does (double-quoted words are
//! Go string literals, single-quoted words are taken as they are) and then parsed with the
//! very flags of `get`, `put` and `del`. Comparisons follow etcdctl's
//! `Sscanf("%q) %s %q")`, with its error texts. Two deliberate departures, both where
//! etcdctl 3.5 is broken: a single-quoted word keeps its text (etcdctl slices it by the
//! number of words, emptying or crashing on it), and `lease("k") = "<hex id>"` compares
//! the key's lease as etcd 3.6 does (etcdctl 3.5 panics on it).

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use clap::Parser;
use synod_api::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use synod_api::etcdserverpb::{Compare, RequestOp, request_op};

use crate::cli::TxnOp;
use crate::exit::{CtlError, CtlResult};
use crate::requests;
use synod_base::go_fmt;

/// Go's `\s`: the ASCII whitespace RE2 knows.
fn is_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c')
}

/// Splits a request line into words, as etcdctl's `argify` regular expression
/// `"(?:[^"\\]|\\.)*"|'[^']*'|[^'"\s]\S*[^'"\s]?` does with leftmost-first matching.
pub fn argify(line: &[u8]) -> CtlResult<Vec<Vec<u8>>> {
    let mut words = Vec::new();
    let mut i = 0;
    while i < line.len() {
        let Some(end) = word_end(line, i) else {
            i += 1;
            continue;
        };
        let word = &line[i..end];
        words.push(match word[0] {
            b'\'' => word[1..word.len() - 1].to_vec(),
            b'"' => go_fmt::unquote(word).map_err(CtlError::invalid_input)?,
            _ => word.to_vec(),
        });
        i = end;
    }
    Ok(words)
}

/// Where the word starting at `start` ends, if a word starts there.
fn word_end(line: &[u8], start: usize) -> Option<usize> {
    match line[start] {
        b'"' => {
            let mut j = start + 1;
            while j < line.len() {
                match line[j] {
                    b'"' => return Some(j + 1),
                    // `\\.`: any character but a newline may be escaped.
                    b'\\' if line.get(j + 1).is_some_and(|&b| b != b'\n') => j += 2,
                    b'\\' => return None,
                    _ => j += 1,
                }
            }
            None
        }
        b'\'' => line[start + 1..].iter().position(|&b| b == b'\'').map(|p| start + 1 + p + 1),
        b if is_space(b) => None,
        _ => Some(line[start..].iter().position(|&b| is_space(b)).map_or(line.len(), |p| start + p)),
    }
}

/// A cursor over a comparison, scanning as Go's `fmt.Sscanf` does.
struct Scanner<'a> {
    input: &'a [u8],
    at: usize,
}

impl Scanner<'_> {
    fn skip_spaces(&mut self) {
        while self.input.get(self.at).is_some_and(|&b| is_space(b)) {
            self.at += 1;
        }
    }

    /// `%q`: a Go string literal, double- or back-quoted, after optional spaces.
    fn quoted(&mut self) -> Option<Vec<u8>> {
        self.skip_spaces();
        let start = self.at;
        let end = match *self.input.get(start)? {
            b'`' => start + 1 + self.input[start + 1..].iter().position(|&b| b == b'`')? + 1,
            b'"' => {
                let mut j = start + 1;
                loop {
                    match *self.input.get(j)? {
                        b'"' => break j + 1,
                        b'\\' => j += 2,
                        _ => j += 1,
                    }
                }
            }
            _ => return None,
        };
        let literal = self.input.get(start..end)?;
        self.at = end;
        go_fmt::unquote(literal).ok()
    }

    /// A literal byte of the format, which must be next.
    fn literal(&mut self, byte: u8) -> Option<()> {
        (self.input.get(self.at) == Some(&byte)).then(|| self.at += 1)
    }

    /// A space in the format: one or more spaces, or the end of the input.
    fn space(&mut self) -> Option<()> {
        if self.at < self.input.len() && !is_space(self.input[self.at]) {
            return None;
        }
        self.skip_spaces();
        Some(())
    }

    /// `%s`: a word up to the next space, after optional spaces.
    fn word(&mut self) -> Option<Vec<u8>> {
        self.skip_spaces();
        let start = self.at;
        while self.input.get(self.at).is_some_and(|&b| !is_space(b)) {
            self.at += 1;
        }
        (self.at > start).then(|| self.input[start..self.at].to_vec())
    }
}

/// Parses one comparison line, such as `mod("key") > "0"` or `value("k") = "v"`.
pub fn parse_compare(line: &[u8]) -> Result<Compare, String> {
    let text = String::from_utf8_lossy(line);
    let Some(paren) = line.iter().position(|&b| b == b'(') else {
        return Err(format!("malformed comparison: {text}"));
    };
    let target = String::from_utf8_lossy(&line[..paren]);
    let mut scanner = Scanner { input: &line[paren + 1..], at: 0 };
    let (mut key, mut op, mut value) = (Vec::new(), Vec::new(), Vec::new());
    // Sscanf stops at the first item that does not match; each `?` below is such a stop.
    let scanned = (|| {
        key = scanner.quoted()?;
        scanner.literal(b')')?;
        scanner.space()?;
        op = scanner.word()?;
        scanner.space()?;
        value = scanner.quoted()?;
        Some(())
    })();
    if scanned.is_none() {
        return Err(format!(
            "malformed comparison: {text}; got {target}({}) {} {}",
            go_fmt::quote(&key),
            String::from_utf8_lossy(&op),
            go_fmt::quote(&value)
        ));
    }
    let invalid = || format!("invalid txn compare request: {text}");
    let number = |base| -> Result<i64, String> {
        let digits = std::str::from_utf8(&value).map_err(|_| invalid())?;
        go_fmt::parse_int(digits, base).map_err(|_| invalid())
    };
    let (target, union) = match target.as_ref() {
        "ver" | "version" => (CompareTarget::Version, TargetUnion::Version(number(10)?)),
        "c" | "create" => (CompareTarget::Create, TargetUnion::CreateRevision(number(10)?)),
        "m" | "mod" => (CompareTarget::Mod, TargetUnion::ModRevision(number(10)?)),
        "val" | "value" => (CompareTarget::Value, TargetUnion::Value(value.clone())),
        // Lease ids are hex everywhere in etcdctl; etcd 3.6 reads them so here too.
        "lease" => (CompareTarget::Lease, TargetUnion::Lease(number(16)?)),
        other => return Err(format!("malformed comparison: {text} (unknown target {other})")),
    };
    let result = match op.as_slice() {
        b"=" => CompareResult::Equal,
        b"!=" => CompareResult::NotEqual,
        b">" => CompareResult::Greater,
        b"<" => CompareResult::Less,
        other => {
            return Err(format!(
                "malformed comparison: {text} (unknown operator {})",
                String::from_utf8_lossy(other)
            ));
        }
    };
    Ok(Compare {
        result: result as i32,
        target: target as i32,
        key,
        range_end: Vec::new(),
        target_union: Some(union),
    })
}

/// Parses one request line (`get`, `put` or `del` with their flags) into a txn operation.
/// `del` lines with a range end carry etcdctl's stderr warning, returned as the flag.
pub fn parse_request_op(line: &[u8]) -> CtlResult<(RequestOp, bool)> {
    let text = String::from_utf8_lossy(line);
    let words = argify(line)?;
    if words.len() < 2 {
        return Err(CtlError::invalid_input(format!("invalid txn compare request: {text}")));
    }
    let words = words.into_iter().map(OsString::from_vec);
    let op = TxnOp::try_parse_from(words)
        .map_err(|_| CtlError::invalid_input(format!("invalid txn request: {text}")))?;
    let (request, warn_range) = match op {
        TxnOp::Get(args) => (request_op::Request::RequestRange(requests::range_request(&args)?), false),
        // Inside a txn, stdin holds the txn itself: a put without a value has none to read.
        TxnOp::Put(args) => (request_op::Request::RequestPut(requests::put_request(&args, || None)?), false),
        TxnOp::Del(args) => {
            let (request, warn_range) = requests::delete_request(&args)?;
            (request_op::Request::RequestDeleteRange(request), warn_range)
        }
    };
    Ok((RequestOp { request: Some(request) }, warn_range))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        argify(line.as_bytes()).unwrap().into_iter().map(|w| String::from_utf8(w).unwrap()).collect()
    }

    /// Words split on spaces; quotes group, and double quotes take Go escapes.
    #[test]
    fn argify_matches_etcdctl() {
        assert_eq!(words("put foo bar"), ["put", "foo", "bar"]);
        assert_eq!(words("  put\t\"a b\"   'c d' "), ["put", "a b", "c d"]);
        assert_eq!(words(r#"put k "line\nbreak""#), ["put", "k", "line\nbreak"]);
        assert_eq!(words(r#"put k"x y""#), ["put", "k\"x", "y\""]);
        // An unterminated quote starts no word; the rest still splits.
        assert_eq!(words(r#"put "open k"#), ["put", "open", "k"]);
    }

    /// The four numeric targets, values and leases compare as etcdctl builds them.
    #[test]
    fn compares() {
        let compare = parse_compare(br#"mod("key") > "0""#).unwrap();
        assert_eq!(compare.key, b"key");
        assert_eq!(compare.target, CompareTarget::Mod as i32);
        assert_eq!(compare.result, CompareResult::Greater as i32);
        assert_eq!(compare.target_union, Some(TargetUnion::ModRevision(0)));
        let compare = parse_compare(br#"value("k") != "v w""#).unwrap();
        assert_eq!(compare.target_union, Some(TargetUnion::Value(b"v w".to_vec())));
        assert_eq!(compare.result, CompareResult::NotEqual as i32);
        let compare = parse_compare(br#"c("k") = "3""#).unwrap();
        assert_eq!(compare.target_union, Some(TargetUnion::CreateRevision(3)));
        let compare = parse_compare(br#"ver("k") < "2""#).unwrap();
        assert_eq!(compare.target_union, Some(TargetUnion::Version(2)));
        let compare = parse_compare(br#"lease("k") = "1f""#).unwrap();
        assert_eq!((compare.key.as_slice(), compare.target_union), (&b"k"[..], Some(TargetUnion::Lease(31))));
    }

    /// Malformed comparisons fail with etcdctl's messages.
    #[test]
    fn malformed_compares() {
        assert_eq!(parse_compare(b"nonsense").unwrap_err(), "malformed comparison: nonsense");
        assert_eq!(
            parse_compare(br#"mod("k")>"0""#).unwrap_err(),
            r#"malformed comparison: mod("k")>"0"; got mod("k")  """#
        );
        assert_eq!(
            parse_compare(br#"size("k") = "0""#).unwrap_err(),
            r#"malformed comparison: size("k") = "0" (unknown target size)"#
        );
        assert_eq!(
            parse_compare(br#"mod("k") = "x""#).unwrap_err(),
            r#"invalid txn compare request: mod("k") = "x""#
        );
    }

    /// Request lines use the commands' own flags; bad lines are invalid input (exit 3).
    #[test]
    fn request_ops() {
        let (op, _) = parse_request_op(b"get k --prefix --limit=1").unwrap();
        let Some(request_op::Request::RequestRange(range)) = op.request else { panic!("expected a range") };
        assert_eq!((range.range_end.as_slice(), range.limit), (&b"l"[..], 1));
        let (op, _) = parse_request_op(br#"put "a key" 'a value' --prev-kv"#).unwrap();
        let Some(request_op::Request::RequestPut(put)) = op.request else { panic!("expected a put") };
        assert_eq!(
            (put.key.as_slice(), put.value.as_slice(), put.prev_kv),
            (&b"a key"[..], &b"a value"[..], true)
        );
        let (op, warn) = parse_request_op(b"del a z").unwrap();
        assert!(matches!(op.request, Some(request_op::Request::RequestDeleteRange(_))));
        assert!(warn);
        let error = parse_request_op(b"get").unwrap_err();
        assert_eq!(error.to_string(), "invalid txn compare request: get");
        let error = parse_request_op(b"watch k").unwrap_err();
        assert_eq!(error.to_string(), "invalid txn request: watch k");
        let error = parse_request_op(b"get k --no-such-flag").unwrap_err();
        assert_eq!(error.code, crate::exit::ExitCode::InvalidInput);
    }
}
