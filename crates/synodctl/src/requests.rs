//! From command-line arguments to etcd requests, with etcdctl's checks in etcdctl's order.
//!
//! The `get`, `put` and `del` commands and the request lines of `txn` share these builders,
//! as etcdctl's `getGetOp`, `getPutOp` and `getDelOp` are shared: the same flags make the
//! same request, and the same mistakes get the same message and exit status.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;

use synod_api::etcdserverpb::range_request::{SortOrder, SortTarget};
use synod_api::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest};

use crate::cli::{DelArgs, GetArgs, PutArgs};
use crate::exit::{CtlError, CtlResult};
use synod_base::go_fmt;

/// etcd's range end meaning "every key from the start key on".
const FROM_KEY_END: &[u8] = b"\x00";

/// etcdctl 3.5's warning when `del` is given a range end without `--range`.
pub const RANGE_DELETE_WARNING: &str = "In etcd v3.6, the operation will be suspended for a few seconds to provide the user time to verify range.";

fn bytes(arg: &OsString) -> Vec<u8> {
    arg.as_bytes().to_vec()
}

/// The range end that covers every key starting with `prefix` (clientv3's `GetPrefixRangeEnd`).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte is 0xff: no key is greater, so the range runs to the end of the keyspace.
    FROM_KEY_END.to_vec()
}

/// The Range request of `get` (etcdctl's `getGetOp`).
pub fn range_request(args: &GetArgs) -> CtlResult<RangeRequest> {
    let Some(key) = args.args.first() else {
        return Err(CtlError::bad_args(
            "get command needs one argument as key and an optional argument as range_end",
        ));
    };
    if args.prefix && args.from_key {
        return Err(CtlError::bad_args(
            "`--prefix` and `--from-key` cannot be set at the same time, choose one",
        ));
    }
    if args.keys_only && args.count_only {
        return Err(CtlError::bad_args(
            "`--keys-only` and `--count-only` cannot be set at the same time, choose one",
        ));
    }
    let serializable = match args.consistency.as_str() {
        "s" => true,
        "l" => false,
        other => {
            return Err(CtlError::bad_feature(format!(
                "unknown consistency flag {}",
                go_fmt::quote(other.as_bytes())
            )));
        }
    };
    let mut request = RangeRequest { key: bytes(key), serializable, ..Default::default() };
    if let Some(range_end) = args.args.get(1) {
        if args.prefix || args.from_key {
            return Err(CtlError::bad_args(
                "too many arguments, only accept one argument when `--prefix` or `--from-key` is set",
            ));
        }
        request.range_end = bytes(range_end);
    }
    request.limit = args.limit;
    if args.rev > 0 {
        request.revision = args.rev;
    }
    let order = match args.order.to_uppercase().as_str() {
        "ASCEND" => SortOrder::Ascend,
        "DESCEND" => SortOrder::Descend,
        "" => SortOrder::None,
        _ => return Err(CtlError::bad_feature(format!("bad sort order {}", args.order))),
    };
    let target = match args.sort_by.to_uppercase().as_str() {
        "CREATE" => SortTarget::Create,
        "KEY" | "" => SortTarget::Key,
        "MODIFY" => SortTarget::Mod,
        "VALUE" => SortTarget::Value,
        "VERSION" => SortTarget::Version,
        _ => return Err(CtlError::bad_feature(format!("bad sort target {}", args.sort_by))),
    };
    // clientv3's WithSort: keys already come back in ascending order, so asking for that
    // explicitly is sent as no sort at all (which lets the server apply the limit early).
    let order = if target == SortTarget::Key && order == SortOrder::Ascend { SortOrder::None } else { order };
    request.sort_order = order as i32;
    request.sort_target = target as i32;
    if args.prefix {
        set_prefix(&mut request.key, &mut request.range_end);
    }
    if args.from_key {
        set_from_key(&mut request.key, &mut request.range_end);
    }
    request.keys_only = args.keys_only;
    request.count_only = args.count_only;
    Ok(request)
}

/// `--prefix`: an empty prefix means every key, as `--from-key` on the first key.
fn set_prefix(key: &mut Vec<u8>, range_end: &mut Vec<u8>) {
    if key.is_empty() {
        set_from_key(key, range_end);
    } else {
        *range_end = prefix_end(key);
    }
}

/// `--from-key`: an empty key means the first key.
fn set_from_key(key: &mut Vec<u8>, range_end: &mut Vec<u8>) {
    if key.is_empty() {
        *key = FROM_KEY_END.to_vec();
    }
    *range_end = FROM_KEY_END.to_vec();
}

/// The Put request of `put` (etcdctl's `getPutOp`). `read_stdin` supplies the value when
/// none is given; `None` means stdin is not available.
pub fn put_request(args: &PutArgs, read_stdin: impl FnOnce() -> Option<Vec<u8>>) -> CtlResult<PutRequest> {
    const NEEDS_ARGS: &str = "put command needs 1 argument and input from stdin or 2 arguments";
    let Some(key) = args.args.first() else {
        return Err(CtlError::bad_args(NEEDS_ARGS));
    };
    if args.ignore_value && args.args.len() > 1 {
        return Err(CtlError::bad_args("put command needs only 1 argument when 'ignore-value' is set"));
    }
    let value = if args.ignore_value {
        Vec::new()
    } else {
        match args.args.get(1) {
            Some(value) => bytes(value),
            None => match read_stdin() {
                Some(value) if !value.is_empty() => value,
                _ => return Err(CtlError::bad_args(NEEDS_ARGS)),
            },
        }
    };
    let lease = go_fmt::parse_int(&args.lease, 16)
        .map_err(|e| CtlError::bad_args(format!("bad lease ID ({e}), expecting ID in Hex")))?;
    Ok(PutRequest {
        key: bytes(key),
        value,
        lease,
        prev_kv: args.prev_kv,
        ignore_value: args.ignore_value,
        ignore_lease: args.ignore_lease,
    })
}

/// The DeleteRange request of `del` (etcdctl's `getDelOp`), and whether etcdctl 3.5 would
/// warn on stderr that range deletes will pause in 3.6.
pub fn delete_request(args: &DelArgs) -> CtlResult<(DeleteRangeRequest, bool)> {
    let (Some(key), 1..=2) = (args.args.first(), args.args.len()) else {
        return Err(CtlError::bad_args(
            "del command needs one argument as key and an optional argument as range_end",
        ));
    };
    if args.prefix && args.from_key {
        return Err(CtlError::bad_args(
            "`--prefix` and `--from-key` cannot be set at the same time, choose one",
        ));
    }
    let mut request = DeleteRangeRequest { key: bytes(key), ..Default::default() };
    let mut warn_range = false;
    if let Some(range_end) = args.args.get(1) {
        if args.prefix || args.from_key {
            return Err(CtlError::bad_args(
                "too many arguments, only accept one argument when `--prefix` or `--from-key` is set",
            ));
        }
        request.range_end = bytes(range_end);
        warn_range = !args.range;
    }
    if args.prefix {
        set_prefix(&mut request.key, &mut request.range_end);
    }
    request.prev_kv = args.prev_kv;
    if args.from_key {
        set_from_key(&mut request.key, &mut request.range_end);
    }
    Ok((request, warn_range))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::TxnOp;

    fn get(args: &[&str]) -> CtlResult<RangeRequest> {
        let mut argv = vec!["get"];
        argv.extend_from_slice(args);
        match TxnOp::try_parse_from(argv).unwrap() {
            TxnOp::Get(args) => range_request(&args),
            _ => unreachable!(),
        }
    }

    /// Prefix ends increment the last byte that can be, and fall back to "from key".
    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"abc"), b"abd");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\x00");
    }

    /// get's flags make clientv3's request, including its sort quirk.
    #[test]
    fn get_requests() {
        let request = get(&["foo", "--prefix", "--limit=2", "--rev=3", "--consistency=s"]).unwrap();
        assert_eq!((request.key.as_slice(), request.range_end.as_slice()), (&b"foo"[..], &b"fop"[..]));
        assert_eq!((request.limit, request.revision, request.serializable), (2, 3, true));
        let request = get(&["", "--prefix"]).unwrap();
        assert_eq!((request.key.as_slice(), request.range_end.as_slice()), (&b"\x00"[..], &b"\x00"[..]));
        let request = get(&["a", "--order=ascend"]).unwrap();
        assert_eq!(
            (request.sort_order, request.sort_target),
            (SortOrder::None as i32, SortTarget::Key as i32)
        );
        let request = get(&["a", "--order=DESCEND", "--sort-by=modify"]).unwrap();
        assert_eq!(
            (request.sort_order, request.sort_target),
            (SortOrder::Descend as i32, SortTarget::Mod as i32)
        );
        let request = get(&["a", "z"]).unwrap();
        assert_eq!(request.range_end, b"z");
    }

    /// get's argument mistakes fail as etcdctl's do, with its exit statuses.
    #[test]
    fn get_mistakes() {
        use crate::exit::ExitCode;
        let cases: [(&[&str], ExitCode, &str); 5] = [
            (
                &[],
                ExitCode::BadArgs,
                "get command needs one argument as key and an optional argument as range_end",
            ),
            (
                &["a", "--prefix", "--from-key"],
                ExitCode::BadArgs,
                "`--prefix` and `--from-key` cannot be set",
            ),
            (&["a", "b", "--prefix"], ExitCode::BadArgs, "too many arguments"),
            (&["a", "--consistency=x"], ExitCode::BadFeature, "unknown consistency flag \"x\""),
            (&["a", "--sort-by=size"], ExitCode::BadFeature, "bad sort target size"),
        ];
        for (args, code, text) in cases {
            let error = get(args).unwrap_err();
            assert_eq!(error.code, code, "{args:?}");
            assert!(error.to_string().contains(text), "{args:?}: {error}");
        }
    }

    /// put takes its value from the arguments or stdin, and its lease in hex.
    #[test]
    fn put_requests() {
        let args = PutArgs {
            lease: "1f".into(),
            prev_kv: true,
            ignore_value: false,
            ignore_lease: false,
            args: vec!["k".into()],
        };
        let request = put_request(&args, || Some(b"from stdin".to_vec())).unwrap();
        assert_eq!(
            (request.value.as_slice(), request.lease, request.prev_kv),
            (&b"from stdin"[..], 31, true)
        );
        let error = put_request(&args, || None).unwrap_err();
        assert_eq!(error.to_string(), "put command needs 1 argument and input from stdin or 2 arguments");
        let bad_lease = PutArgs { lease: "zz".into(), args: vec!["k".into(), "v".into()], ..args };
        assert_eq!(
            put_request(&bad_lease, || None).unwrap_err().to_string(),
            "bad lease ID (strconv.ParseInt: parsing \"zz\": invalid syntax), expecting ID in Hex"
        );
    }

    /// del with a range end warns unless `--range` is given; prefixes work as in get.
    #[test]
    fn delete_requests() {
        let args = DelArgs {
            prefix: false,
            prev_kv: true,
            from_key: false,
            range: false,
            args: vec!["a".into(), "c".into()],
        };
        let (request, warn) = delete_request(&args).unwrap();
        assert_eq!((request.range_end.as_slice(), request.prev_kv, warn), (&b"c"[..], true, true));
        let (_, warn) = delete_request(&DelArgs { range: true, ..args.clone() }).unwrap();
        assert!(!warn);
        let (request, _) = delete_request(&DelArgs { prefix: true, args: vec!["a".into()], ..args }).unwrap();
        assert_eq!(request.range_end, b"b");
    }
}
