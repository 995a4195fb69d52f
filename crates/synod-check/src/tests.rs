//! Histories with a known answer, written out by hand: the checker must accept every
//! linearizable one and reject every one that is not, naming the object. Random histories
//! and the performance check are in `tests/random.rs`.

use std::time::Duration;

use super::*;

mod random;

const BUDGET: Duration = Duration::from_secs(20);

/// A call and its outcome, as the helpers below build them.
type Exchange = (Call, Outcome);

fn ok(call: Call, reply: Reply) -> Exchange {
    (call, Outcome::Ok { reply, revision: None })
}

fn put(key: &str, value: &str) -> Exchange {
    ok(Call::Put { key: key.into(), value: value.into() }, Reply::Put)
}

fn get(key: &str, value: Option<&str>) -> Exchange {
    ok(Call::Get { key: key.into() }, Reply::Get { value: value.map(Into::into) })
}

fn delete(key: &str, deleted: bool) -> Exchange {
    ok(Call::Delete { key: key.into() }, Reply::Delete { deleted })
}

fn cas(key: &str, expect: Option<&str>, value: &str, succeeded: bool) -> Exchange {
    ok(
        Call::Cas { key: key.into(), expect: expect.map(Into::into), value: value.into() },
        Reply::Cas { succeeded },
    )
}

fn add(key: &str, delta: i64, value: i64) -> Exchange {
    ok(Call::Add { key: key.into(), delta }, Reply::Add { value })
}

fn read(key: &str, value: i64) -> Exchange {
    ok(Call::ReadCounter { key: key.into() }, Reply::ReadCounter { value })
}

fn acquire(lock: &str, owner: &str, token: i64) -> Exchange {
    ok(Call::Acquire { lock: lock.into(), owner: owner.into() }, Reply::Acquire { token })
}

fn release(lock: &str, owner: &str, token: i64, released: bool) -> Exchange {
    ok(Call::Release { lock: lock.into(), owner: owner.into(), token }, Reply::Release { released })
}

/// The same call without an answer.
fn unknown((call, _): Exchange) -> Exchange {
    (call, Outcome::Unknown { error: "deadline exceeded".into() })
}

/// The same call, refused.
fn failed((call, _): Exchange) -> Exchange {
    (call, Outcome::Fail { error: "no leader".into() })
}

/// The same exchange, with the revision of the reply's header.
fn at_revision((call, outcome): Exchange, revision: i64) -> Exchange {
    match outcome {
        Outcome::Ok { reply, .. } => (call, Outcome::Ok { reply, revision: Some(revision) }),
        outcome => (call, outcome),
    }
}

/// `client` made the call at `call_ns` and heard back at `return_ns`.
fn op(client: u32, call_ns: u64, return_ns: u64, (call, outcome): Exchange) -> Op {
    Op { client, member: String::new(), call_ns, return_ns, call, outcome }
}

#[track_caller]
fn assert_linearizable(history: &[Op]) -> Report {
    let report = check(history, BUDGET);
    assert_eq!(report.verdict, Verdict::Linearizable, "{}", report.summary());
    report
}

#[track_caller]
fn assert_violation(history: &[Op], object: &str) -> Violation {
    let report = check(history, BUDGET);
    assert!(!report.is_ok());
    let Verdict::Violation(violation) = report.verdict else {
        panic!("accepted a history that is not linearizable: {}", report.summary());
    };
    assert_eq!(violation.object, object, "{}", violation.message);
    assert!(!violation.stuck.is_empty(), "{}", violation.message);
    violation
}

/// One client doing one thing after another on a key is linearizable, whatever it does.
#[test]
fn sequential_register_is_linearizable() {
    let report = assert_linearizable(&[
        op(1, 0, 10, get("x", None)),
        op(1, 20, 30, put("x", "a")),
        op(1, 40, 50, get("x", Some("a"))),
        op(1, 60, 70, cas("x", Some("a"), "b", true)),
        op(1, 80, 90, cas("x", Some("a"), "c", false)),
        op(1, 100, 110, delete("x", true)),
        op(1, 120, 130, delete("x", false)),
        op(1, 140, 150, cas("x", None, "d", true)),
        op(1, 160, 170, get("x", Some("d"))),
    ]);
    assert!(report.is_ok());
    assert_eq!((report.objects, report.ops), (1, 9));
}

/// Two writes that overlap may take effect in either order, and a read overlapping a write
/// may see the value before or after it.
#[test]
fn overlapping_writes_and_reads_in_either_order() {
    for last in ["a", "b"] {
        assert_linearizable(&[
            op(1, 0, 100, put("x", "a")),
            op(2, 10, 90, put("x", "b")),
            op(3, 110, 120, get("x", Some(last))),
        ]);
    }
    for seen in ["a", "b"] {
        assert_linearizable(&[
            op(1, 0, 10, put("x", "a")),
            op(2, 20, 40, put("x", "b")),
            op(3, 25, 30, get("x", Some(seen))),
            op(3, 50, 60, get("x", Some("b"))),
        ]);
    }
}

/// A write whose client got no answer may take effect long after the client gave up, or
/// never: a read may see it much later, or never.
#[test]
fn unknown_writes_take_effect_later_or_never() {
    for later in ["a", "b"] {
        assert_linearizable(&[
            op(1, 0, 10, put("x", "a")),
            op(2, 20, 30, unknown(put("x", "b"))),
            op(1, 100, 110, get("x", Some(later))),
            op(1, 120, 130, get("x", Some(later))),
        ]);
    }
    // An unknown Cas whose compare held may have happened; one whose compare failed did not.
    assert_linearizable(&[
        op(1, 0, 10, put("x", "a")),
        op(2, 20, 30, unknown(cas("x", Some("a"), "b", true))),
        op(2, 40, 50, unknown(cas("x", Some("z"), "c", true))),
        op(2, 60, 70, unknown(delete("x", true))),
        op(1, 100, 110, get("x", Some("b"))),
    ]);
}

/// An unknown write still cannot take effect before it was made.
#[test]
fn unknown_write_seen_before_its_call_is_rejected() {
    assert_violation(&[op(1, 0, 10, get("x", Some("b"))), op(2, 20, 30, unknown(put("x", "b")))], "x");
}

/// Failed ops did not happen, and reads without an answer observed nothing, whatever they
/// carry.
#[test]
fn failed_ops_and_unknown_reads_are_left_out() {
    let report = assert_linearizable(&[
        op(1, 0, 10, put("x", "a")),
        op(2, 20, 30, failed(put("x", "b"))),
        op(3, 40, 50, unknown(get("x", Some("zzz")))),
        op(1, 60, 70, get("x", Some("a"))),
    ]);
    assert_eq!(report.ops, 2);
}

/// A chain of compare-and-swaps, each racing one that must lose.
#[test]
fn cas_chains_are_linearizable() {
    assert_linearizable(&[
        op(1, 0, 10, cas("x", None, "a", true)),
        op(1, 20, 40, cas("x", Some("a"), "b", true)),
        op(2, 25, 45, cas("x", Some("a"), "c", false)),
        op(2, 50, 70, cas("x", Some("b"), "d", true)),
        op(3, 55, 75, cas("x", Some("b"), "e", false)),
        op(3, 80, 90, get("x", Some("d"))),
    ]);
}

/// A call made at the very instant another returned counts as concurrent with it: a
/// coarse clock must not produce a false violation.
#[test]
fn equal_timestamps_count_as_concurrent() {
    assert_linearizable(&[op(1, 0, 10, put("x", "a")), op(2, 10, 20, get("x", None))]);
}

/// Objects are checked independently: interleaved keys do not constrain each other.
#[test]
fn objects_are_independent() {
    assert_linearizable(&[
        op(1, 0, 10, put("x", "a")),
        op(2, 5, 15, put("y", "b")),
        op(1, 20, 30, get("y", Some("b"))),
        op(2, 20, 30, get("x", Some("a"))),
        op(3, 0, 40, add("n", 2, 2)),
        op(3, 50, 60, acquire("l", "o3", 7)),
    ]);
}

/// Concurrent adds take effect in some order, each seeing the sum so far.
#[test]
fn concurrent_counter_adds_are_linearizable() {
    assert_linearizable(&[
        op(1, 0, 50, add("n", 1, 2)),
        op(2, 10, 40, add("n", 1, 1)),
        op(3, 20, 30, unknown(add("n", 5, 0))),
        op(1, 60, 70, read("n", 7)),
    ]);
}

/// A lock passed between owners, each grant with a larger token; a waiting acquire
/// overlaps the holder's release.
#[test]
fn lock_handoff_is_linearizable() {
    assert_linearizable(&[
        op(1, 0, 10, acquire("l", "o1", 3)),
        op(2, 5, 60, acquire("l", "o2", 9)),
        op(1, 20, 30, release("l", "o1", 3, true)),
        op(1, 40, 50, release("l", "o1", 3, false)),
        op(3, 55, 65, unknown(acquire("l", "o3", 0))),
        op(2, 70, 80, release("l", "o2", 9, true)),
    ]);
}

/// Once a write of v2 completed after v1's, a later read of v1 is stale.
#[test]
fn stale_read_is_rejected() {
    let history =
        [op(1, 0, 10, put("x", "v1")), op(1, 20, 30, put("x", "v2")), op(2, 40, 50, get("x", Some("v1")))];
    let violation = assert_violation(&history, "x");
    assert_eq!(violation.longest_prefix, vec![0, 1]);
    assert_eq!(violation.stuck, vec![2]);
}

/// The violation reports the deepest point the search reached, not the first it got stuck
/// at: here placing the later write last first looks promising, but only placing it first
/// gets as far as the read of a value never written.
#[test]
fn violation_reports_the_longest_prefix() {
    let violation = assert_violation(
        &[
            op(1, 0, 100, put("x", "a")),
            op(2, 10, 20, put("x", "b")),
            op(2, 30, 40, get("x", Some("a"))),
            op(2, 50, 60, get("x", Some("z"))),
        ],
        "x",
    );
    assert_eq!(violation.longest_prefix, vec![1, 0, 2]);
    assert_eq!(violation.stuck, vec![3]);
}

/// A read cannot see a value nobody wrote.
#[test]
fn read_of_unwritten_value_is_rejected() {
    assert_violation(&[op(1, 0, 10, put("x", "a")), op(2, 5, 15, get("x", Some("b")))], "x");
}

/// Two compare-and-swaps from the same value cannot both succeed.
#[test]
fn two_cas_from_one_value_is_rejected() {
    assert_violation(
        &[
            op(1, 0, 10, put("x", "a")),
            op(1, 20, 40, cas("x", Some("a"), "b", true)),
            op(2, 25, 45, cas("x", Some("a"), "c", true)),
        ],
        "x",
    );
}

/// Two adds of 1, one after the other, cannot both leave the counter at 1.
#[test]
fn counter_lost_update_is_rejected() {
    assert_violation(&[op(1, 0, 10, add("n", 1, 1)), op(2, 20, 30, add("n", 1, 1))], "n");
}

/// A counter read cannot go back to a value it has already passed.
#[test]
fn counter_read_going_backwards_is_rejected() {
    assert_violation(
        &[
            op(1, 0, 10, add("n", 1, 1)),
            op(1, 20, 30, add("n", 1, 2)),
            op(2, 40, 50, read("n", 2)),
            op(3, 60, 70, read("n", 1)),
        ],
        "n",
    );
}

/// A lock cannot be granted to a second owner while the first still holds it.
#[test]
fn lock_granted_twice_is_rejected() {
    assert_violation(&[op(1, 0, 10, acquire("l", "o1", 1)), op(2, 20, 30, acquire("l", "o2", 2))], "l");
}

/// Fencing tokens must grow with every grant.
#[test]
fn lock_token_not_increasing_is_rejected() {
    assert_violation(
        &[
            op(1, 0, 10, acquire("l", "o1", 5)),
            op(1, 20, 30, release("l", "o1", 5, true)),
            op(2, 40, 50, acquire("l", "o2", 5)),
        ],
        "l",
    );
}

/// The violation names the failing object even when objects before it are fine, and its
/// indexes point into the whole history.
#[test]
fn violation_names_the_failing_object() {
    let violation = assert_violation(
        &[
            op(1, 0, 10, put("x", "a")),
            op(1, 20, 30, put("y", "a")),
            op(2, 40, 50, get("x", Some("a"))),
            op(1, 60, 70, delete("y", true)),
            op(2, 80, 90, get("y", Some("a"))),
        ],
        "y",
    );
    assert_eq!(violation.longest_prefix, vec![1, 3]);
    assert_eq!(violation.stuck, vec![4]);
    assert!(violation.message.contains("\"y\""), "{}", violation.message);
}

/// A key used both as a register and as a counter is a harness bug, reported, not a panic.
#[test]
fn mixed_kinds_on_one_object_are_reported() {
    let violation =
        assert_violation(&[op(1, 0, 10, put("x", "a")), op(2, 20, 30, failed(add("x", 1, 0)))], "x");
    assert_eq!(violation.stuck, vec![0, 1]);
    assert!(
        violation.message.contains("register") && violation.message.contains("counter"),
        "{}",
        violation.message
    );
}

/// A reply that does not belong to its call, or a return before the call, is reported.
#[test]
fn malformed_ops_are_reported() {
    let (call, _) = put("x", "a");
    let wrong_reply = (call, Outcome::Ok { reply: Reply::Add { value: 1 }, revision: None });
    assert_violation(&[op(1, 0, 10, wrong_reply)], "x");
    assert_violation(&[op(1, 10, 5, put("x", "a"))], "x");
}

/// A deadline that has passed gives an unknown verdict, not a wrong one.
#[test]
fn exhausted_budget_gives_unknown() {
    // Thousands of overlapping writes take thousands of steps to place.
    let history: Vec<Op> =
        (0..10_000).map(|i| op(i, u64::from(i), 20_000, put("x", &format!("v{i}")))).collect();
    let report = check(&history, Duration::ZERO);
    assert_eq!(report.verdict, Verdict::Unknown);
    assert!(!report.is_ok());
}

/// A revision lower than one a client already saw, on any key, is reported with the op
/// that saw the highest; concurrent ops may come in either order.
#[test]
fn revision_regressions_are_reported() {
    let history = [
        op(1, 0, 10, at_revision(put("x", "a"), 5)),
        op(2, 0, 12, at_revision(put("y", "b"), 7)),
        op(3, 5, 30, at_revision(get("x", Some("a")), 4)),
        op(1, 20, 25, at_revision(get("y", Some("b")), 6)),
        op(2, 40, 50, at_revision(get("x", Some("a")), 9)),
        op(3, 60, 70, failed(put("x", "c"))),
        // Called the instant op 4 returned: concurrent with it, so it may carry less.
        op(3, 50, 80, at_revision(get("x", Some("a")), 8)),
    ];
    let report = check(&history, BUDGET);
    assert_eq!(report.verdict, Verdict::Linearizable);
    assert_eq!(report.revision_regressions, vec![Regression { earlier: 1, later: 3 }]);
    assert!(!report.is_ok());
    assert!(report.summary().contains("op 1 returned before op 3"), "{}", report.summary());
}

/// Only the first few regressions are kept.
#[test]
fn revision_regressions_are_capped() {
    let mut history = vec![op(1, 0, 10, at_revision(put("x", "a"), 100))];
    history.extend((0..50).map(|i| op(2, 20 + i, 20 + i, at_revision(get("x", Some("a")), 1))));
    assert_eq!(check(&history, BUDGET).revision_regressions.len(), limits::REGRESSIONS_MAX);
}

/// Every kind of call and outcome survives a write and a read; the JSON shape is pinned,
/// since histories outlive the code that wrote them.
#[test]
fn jsonl_roundtrip() {
    let mut history = vec![
        op(1, 0, 10, at_revision(put("x", "a"), 7)),
        op(2, 5, 15, get("x", None)),
        op(2, 20, 25, get("x", Some("a"))),
        op(3, 1, 2, delete("x", true)),
        op(3, 3, 4, cas("x", None, "b", false)),
        op(3, 5, 6, unknown(cas("x", Some("a"), "c", true))),
        op(4, 0, 1, failed(add("n", -3, 0))),
        op(4, 2, 3, read("n", 7)),
        op(5, 0, 1, acquire("l", "o5", 1)),
        op(5, 2, 3, release("l", "o5", 1, true)),
    ];
    history[1].member = "m2".into();
    let mut bytes = Vec::new();
    write_jsonl(&mut bytes, &history).expect("write to memory");
    let text = String::from_utf8(bytes).expect("JSON is UTF-8");
    assert_eq!(
        text.lines().next(),
        Some(
            r#"{"client":1,"call_ns":0,"return_ns":10,"call":"put","key":"x","value":"a","outcome":{"status":"ok","reply":"put","revision":7}}"#
        )
    );
    assert_eq!(text.lines().count(), history.len());
    assert_eq!(read_jsonl(text.as_bytes()), Ok(history));
}

/// A line that is not an op is an error naming the line; blank lines are skipped.
#[test]
fn jsonl_errors_name_the_line() {
    let mut bytes = Vec::new();
    write_jsonl(&mut bytes, &[op(1, 0, 10, put("x", "a"))]).expect("write to memory");
    bytes.extend_from_slice(b"\n{\"client\": 1}\n");
    let error = read_jsonl(bytes.as_slice()).expect_err("the third line is not an op");
    assert!(error.starts_with("line 3:"), "{error}");
    let long = format!("{}\n", " ".repeat(limits::HISTORY_LINE_BYTES_MAX as usize));
    let error = read_jsonl(long.as_bytes()).expect_err("the line is too long");
    assert!(error.starts_with("line 1:"), "{error}");
}

/// The picture of a violation draws the stuck op by its text, with values escaped.
#[test]
fn render_html_shows_the_stuck_op() {
    let history = [
        op(1, 1_000_000, 2_000_000, put("x", "<v1>")),
        op(2, 3_000_000, 4_000_000, put("x", "v2")),
        op(3, 5_000_000, 6_000_000, get("x", Some("<v1>"))),
        op(3, 7_000_000, 8_000_000, unknown(put("x", "v3"))),
    ];
    let report = check(&history, BUDGET);
    assert!(matches!(report.verdict, Verdict::Violation(_)), "{}", report.summary());
    let page = render_html(&history, &report);
    assert!(page.contains("<svg"), "{page}");
    assert!(page.contains("get x → &lt;v1&gt;"), "{page}");
    assert!(page.contains("#2 put x=v2"), "{page}");
    assert!(!page.contains("<v1>"), "{page}");

    let fine = &history[..2];
    let page = render_html(fine, &check(fine, BUDGET));
    assert!(page.contains("linearization") && !page.contains("<svg"), "{page}");
}
