//! A picture of a check's result: one self-contained HTML page (inline SVG, no scripts, no
//! external assets) that a test run can leave next to its history and anyone can open.
//!
//! For a violation it draws the ops of the failing object around the place the search got
//! stuck, one lane per client, time left to right: the end of the longest linearization in
//! green with its order, the ops that could not come next in red, ops whose outcome is
//! unknown dashed and running to the right edge (they may take effect at any time). The
//! order and the stuck ops are listed as text below, for copying into a bug report.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;

use crate::history::{Call, Op, Outcome, Reply};
use crate::{Report, Verdict, Violation, is_searched, limits};

/// Renders `report`, about `history`, as an HTML page.
pub fn render_html(history: &[Op], report: &Report) -> String {
    let title = match &report.verdict {
        Verdict::Linearizable if report.is_ok() => "linearizable".to_string(),
        Verdict::Linearizable => "linearizable, but revisions went backwards".to_string(),
        Verdict::Unknown => "unknown: the budget ran out".to_string(),
        Verdict::Violation(violation) => format!("not linearizable: {}", violation.object),
    };
    let mut page = String::new();
    page.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    let _ = writeln!(page, "<title>synod-check: {}</title>", escape(&title));
    page.push_str(STYLE);
    page.push_str("</head>\n<body>\n");
    let _ = writeln!(page, "<h1>synod-check: {}</h1>", escape(&title));
    let _ = writeln!(page, "<pre>{}</pre>", escape(&report.summary()));
    match &report.verdict {
        Verdict::Linearizable => {
            let _ = writeln!(
                page,
                "<p>All {} ops on {} objects have a linearization ({} ops in the history; failed ops and reads \
                 with unknown outcomes are left out).</p>",
                report.ops,
                report.objects,
                history.len()
            );
        }
        Verdict::Unknown => {
            let _ = writeln!(
                page,
                "<p>The search ran out of budget before it finished: the history may be linearizable or \
                 not. A larger budget, or fewer concurrent clients per key, may settle it.</p>"
            );
        }
        Verdict::Violation(violation) => render_violation(&mut page, history, violation),
    }
    render_regressions(&mut page, history, report);
    page.push_str("</body>\n</html>\n");
    page
}

const STYLE: &str = "<style>\n\
    body { font-family: sans-serif; margin: 1.5em; }\n\
    pre { background: #f4f4f4; padding: 0.6em; white-space: pre-wrap; }\n\
    svg text { font-family: monospace; font-size: 11px; }\n\
    td, th { padding: 0.2em 0.8em; text-align: left; font-family: monospace; }\n\
    </style>\n";

/// Width of the drawing, and of the margin left of the time axis for the lane names.
const WIDTH_PX: f64 = 1200.0;
const LANE_LABEL_PX: f64 = 90.0;
const RIGHT_MARGIN_PX: f64 = 20.0;
const AXIS_PX: f64 = 34.0;
const ROW_PX: f64 = 24.0;
const BAR_PX: f64 = 19.0;
const LANE_GAP_PX: f64 = 8.0;

/// How an op is drawn.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// In the longest linearization, at this position (from 1).
    Placed(usize),
    /// Could not come next after the longest linearization.
    Stuck,
    Other,
}

fn render_violation(page: &mut String, history: &[Op], violation: &Violation) {
    let order: BTreeMap<usize, usize> =
        violation.longest_prefix.iter().enumerate().map(|(position, &op)| (op, position + 1)).collect();
    let stuck: HashSet<usize> = violation.stuck.iter().copied().collect();
    let role = |index: usize| match (order.get(&index), stuck.contains(&index)) {
        (Some(&position), _) => Role::Placed(position),
        (None, true) => Role::Stuck,
        (None, false) => Role::Other,
    };

    let (shown, window) = ops_to_draw(history, violation);
    if shown.is_empty() {
        page.push_str("<p>No ops of this object to draw.</p>\n");
    } else {
        draw(page, history, &shown, window, &role);
    }

    let prefix = &violation.longest_prefix;
    let _ = writeln!(page, "<h2>Longest linearization: {} ops</h2>", prefix.len());
    let listed_from = prefix.len().saturating_sub(limits::PICTURE_LIST_OPS_MAX);
    if listed_from > 0 {
        let _ = writeln!(page, "<p>The first {listed_from} are left out.</p>");
    }
    let _ = writeln!(page, "<ol start=\"{}\">", listed_from + 1);
    for &index in &prefix[listed_from..] {
        let _ = writeln!(page, "<li>{}</li>", escape(&describe(history, index)));
    }
    page.push_str("</ol>\n");
    let _ = writeln!(page, "<h2>Stuck: none of these can come next</h2>\n<ul>");
    for &index in &violation.stuck {
        let _ = writeln!(page, "<li>{}</li>", escape(&describe(history, index)));
    }
    page.push_str("</ul>\n");
}

/// The ops of the violating object that overlap the time from the last few placed ops to
/// the stuck ones, at most [`limits::PICTURE_OPS_MAX`], in call order, and that time in
/// nanoseconds. The stuck ops and the last placed ones are always among them.
fn ops_to_draw(history: &[Op], violation: &Violation) -> (Vec<usize>, (u64, u64)) {
    let context_from = violation.longest_prefix.len().saturating_sub(limits::PREFIX_TAIL_OPS);
    let mut must: Vec<usize> = violation.longest_prefix[context_from..]
        .iter()
        .chain(&violation.stuck)
        .copied()
        .filter(|&index| index < history.len())
        .collect();
    must.truncate(limits::PICTURE_OPS_MAX);
    let from_ns = must.iter().map(|&index| history[index].call_ns).min().unwrap_or(0);
    // An unknown op's return is when its client gave up, a fair end for the window even
    // though the op itself may take effect later.
    let to_ns = must.iter().map(|&index| history[index].return_ns).max().unwrap_or(0).max(from_ns);

    let mut shown: Vec<usize> = must.clone();
    let chosen: HashSet<usize> = must.into_iter().collect();
    for (index, op) in history.iter().enumerate() {
        if shown.len() >= limits::PICTURE_OPS_MAX {
            break;
        }
        if chosen.contains(&index) || op.call.object() != violation.object || !is_searched(op) {
            continue;
        }
        if op.call_ns <= to_ns && return_ns(op) >= from_ns {
            shown.push(index);
        }
    }
    shown.sort_by_key(|&index| (history[index].call_ns, index));
    (shown, (from_ns, to_ns))
}

/// When `op` may have taken effect by, for drawing: never, for an unknown outcome.
fn return_ns(op: &Op) -> u64 {
    match op.outcome {
        Outcome::Unknown { .. } => u64::MAX,
        Outcome::Ok { .. } | Outcome::Fail { .. } => op.return_ns,
    }
}

/// Draws `shown` (history indexes in call order) as bars, one lane per client, over the
/// time `window` (nanoseconds): bars reaching outside it are cut at its edges.
fn draw(
    page: &mut String,
    history: &[Op],
    shown: &[usize],
    window: (u64, u64),
    role: &dyn Fn(usize) -> Role,
) {
    // Within a client's lane, ops do not overlap, except that an unknown op runs on to the
    // right edge after its client gave up on it: each such op pushes the client's later ops
    // to a new row of the lane.
    let mut lanes: BTreeMap<u32, Vec<(u64, Vec<usize>)>> = BTreeMap::new();
    for &index in shown {
        let op = &history[index];
        let rows = lanes.entry(op.client).or_default();
        match rows.iter_mut().find(|(busy_until, _)| *busy_until <= op.call_ns) {
            Some((busy_until, ops)) => {
                *busy_until = return_ns(op);
                ops.push(index);
            }
            None => rows.push((return_ns(op), vec![index])),
        }
    }

    let (start_ns, end_ns) = window;
    let span_ns = (end_ns - start_ns).max(1) as f64;
    let plot_px = WIDTH_PX - LANE_LABEL_PX - RIGHT_MARGIN_PX;
    // The last 4% of the width is left for unknown ops running on past every return.
    let x =
        |ns: u64| LANE_LABEL_PX + (ns.saturating_sub(start_ns) as f64 / span_ns).min(1.04) * plot_px / 1.04;
    let right_px = LANE_LABEL_PX + plot_px;

    let rows: usize = lanes.values().map(Vec::len).sum();
    let height_px = AXIS_PX + rows as f64 * ROW_PX + lanes.len() as f64 * LANE_GAP_PX + 10.0;
    let _ = writeln!(
        page,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH_PX}\" height=\"{height_px}\" \
         viewBox=\"0 0 {WIDTH_PX} {height_px}\">"
    );

    let step_ns = tick_step_ns(span_ns);
    let decimals = (6.0 - step_ns.log10().floor()).clamp(0.0, 6.0) as usize;
    let mut tick = (start_ns as f64 / step_ns).ceil() * step_ns;
    while tick <= end_ns as f64 {
        let tick_x = x(tick as u64);
        let _ = writeln!(
            page,
            "<line x1=\"{tick_x:.1}\" y1=\"{}\" x2=\"{tick_x:.1}\" y2=\"{height_px}\" stroke=\"#ddd\"/>\
             <text x=\"{tick_x:.1}\" y=\"{}\" text-anchor=\"middle\">{:.decimals$}</text>",
            AXIS_PX - 12.0,
            AXIS_PX - 16.0,
            tick / 1e6,
        );
        tick += step_ns;
    }
    let _ = writeln!(page, "<text x=\"4\" y=\"{}\">time (ms)</text>", AXIS_PX - 16.0);

    let mut y = AXIS_PX;
    for (client, rows) in &lanes {
        let _ = writeln!(
            page,
            "<line x1=\"0\" y1=\"{y}\" x2=\"{WIDTH_PX}\" y2=\"{y}\" stroke=\"#bbb\"/>\
             <text x=\"4\" y=\"{}\">client {client}</text>",
            y + 4.0 + BAR_PX / 2.0 + 4.0,
        );
        y += LANE_GAP_PX / 2.0;
        for (_, ops) in rows {
            for &index in ops {
                let op = &history[index];
                let left = x(op.call_ns);
                let right = if return_ns(op) == u64::MAX { right_px } else { x(op.return_ns) };
                draw_bar(page, history, index, role(index), left, (right - left).max(2.0), y);
            }
            y += ROW_PX;
        }
        y += LANE_GAP_PX / 2.0;
    }
    page.push_str("</svg>\n");
    page.push_str(
        "<p>Green: the end of the longest linearization found, numbered in its order. Red: ops that \
         could not come next. Dashed: the outcome is unknown, so the op may take effect at any time \
         after its call. Hover over a bar for the whole op.</p>\n",
    );
}

fn draw_bar(page: &mut String, history: &[Op], index: usize, role: Role, x: f64, width: f64, y: f64) {
    let op = &history[index];
    let (fill, stroke) = match role {
        Role::Placed(_) => ("#bfe6b5", "#3d8b2f"),
        Role::Stuck => ("#f6a5a5", "#b22222"),
        Role::Other if matches!(op.outcome, Outcome::Unknown { .. }) => ("#eeeeee", "#888888"),
        Role::Other => ("#dde5ee", "#6d7f93"),
    };
    let dash = if matches!(op.outcome, Outcome::Unknown { .. }) { " stroke-dasharray=\"5 3\"" } else { "" };
    let text = match role {
        Role::Placed(position) => format!("#{position} {}", label(op)),
        Role::Stuck | Role::Other => label(op),
    };
    // The text sits in a nested <svg> the size of the bar, which clips it to the bar.
    let _ = writeln!(
        page,
        "<g><title>{}</title><rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{width:.1}\" height=\"{BAR_PX}\" \
         fill=\"{fill}\" stroke=\"{stroke}\"{dash}/><svg x=\"{x:.1}\" y=\"{y:.1}\" width=\"{width:.1}\" \
         height=\"{BAR_PX}\"><text x=\"3\" y=\"{}\">{}</text></svg></g>",
        escape(&describe(history, index)),
        BAR_PX - 5.0,
        escape(&text),
    );
}

/// A round step between axis ticks (1, 2 or 5 times a power of ten nanoseconds) that puts
/// about eight ticks on the axis.
fn tick_step_ns(span_ns: f64) -> f64 {
    let rough = (span_ns / 8.0).max(1.0);
    let power = 10f64.powf(rough.log10().floor());
    [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * power).find(|&step| step >= rough).unwrap_or(10.0 * power)
}

fn render_regressions(page: &mut String, history: &[Op], report: &Report) {
    if report.revision_regressions.is_empty() {
        return;
    }
    page.push_str(
        "<h2>Revisions that went backwards</h2>\n<p>Each earlier op returned before the later one was \
         called, yet the later one carries a lower revision.</p>\n<table>\n\
         <tr><th>earlier</th><th>revision</th><th>later</th><th>revision</th></tr>\n",
    );
    let revision = |index: usize| match history.get(index).map(|op| &op.outcome) {
        Some(Outcome::Ok { revision: Some(revision), .. }) => revision.to_string(),
        _ => "?".to_string(),
    };
    for regression in &report.revision_regressions {
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&describe(history, regression.earlier)),
            revision(regression.earlier),
            escape(&describe(history, regression.later)),
            revision(regression.later),
        );
    }
    page.push_str("</table>\n");
}

/// One line about op `index`: who, where, when and what.
fn describe(history: &[Op], index: usize) -> String {
    let Some(op) = history.get(index) else {
        return format!("op {index} (not in the history)");
    };
    let returned = match op.outcome {
        Outcome::Unknown { .. } => format!("gave up at {:.3} ms", op.return_ns as f64 / 1e6),
        Outcome::Ok { .. } | Outcome::Fail { .. } => format!("{:.3} ms", op.return_ns as f64 / 1e6),
    };
    let member = if op.member.is_empty() { String::new() } else { format!(" via {}", op.member) };
    let error = match &op.outcome {
        Outcome::Ok { .. } => String::new(),
        Outcome::Fail { error } | Outcome::Unknown { error } => format!(" ({error})"),
    };
    format!(
        "op {index}: client {}{member}, {:.3} ms to {returned}: {}{error}",
        op.client,
        op.call_ns as f64 / 1e6,
        label(op)
    )
}

/// What the op did, in a few characters: `put a=c3-17`, `get a → c1-9`,
/// `cas a c1-9→c2-4 ✓`. A missing value is `∅`; an unknown outcome ends in `?`.
fn label(op: &Op) -> String {
    let reply = match &op.outcome {
        Outcome::Ok { reply, .. } => Some(reply),
        Outcome::Fail { .. } | Outcome::Unknown { .. } => None,
    };
    let value = |value: &Option<String>| value.as_deref().unwrap_or("∅").to_string();
    let mark = |yes: bool| if yes { "✓" } else { "✗" };
    let text = match (&op.call, reply) {
        (Call::Get { key }, Some(Reply::Get { value: read })) => format!("get {key} → {}", value(read)),
        (Call::Get { key }, _) => format!("get {key}"),
        (Call::Put { key, value }, _) => format!("put {key}={value}"),
        (Call::Delete { key }, Some(Reply::Delete { deleted })) => format!("delete {key} {}", mark(*deleted)),
        (Call::Delete { key }, _) => format!("delete {key}"),
        (Call::Cas { key, expect, value: new }, Some(Reply::Cas { succeeded })) => {
            format!("cas {key} {}→{new} {}", value(expect), mark(*succeeded))
        }
        (Call::Cas { key, expect, value: new }, _) => format!("cas {key} {}→{new}", value(expect)),
        (Call::Add { key, delta }, Some(Reply::Add { value })) => format!("add {key} {delta:+} → {value}"),
        (Call::Add { key, delta }, _) => format!("add {key} {delta:+}"),
        (Call::ReadCounter { key }, Some(Reply::ReadCounter { value })) => format!("read {key} → {value}"),
        (Call::ReadCounter { key }, _) => format!("read {key}"),
        (Call::Acquire { lock, owner }, Some(Reply::Acquire { token })) => {
            format!("acquire {lock} by {owner} → token {token}")
        }
        (Call::Acquire { lock, owner }, _) => format!("acquire {lock} by {owner}"),
        (Call::Release { lock, owner, token }, Some(Reply::Release { released })) => {
            format!("release {lock} by {owner} token {token} {}", mark(*released))
        }
        (Call::Release { lock, owner, token }, _) => format!("release {lock} by {owner} token {token}"),
    };
    match op.outcome {
        Outcome::Ok { .. } => text,
        Outcome::Unknown { .. } => format!("{text} ?"),
        Outcome::Fail { .. } => format!("{text} (failed)"),
    }
}

/// Escapes text for HTML element content and attribute values alike.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}
