//! Progress bars for the verbs that take a while (`snapshot save` and `restore`, `defrag`,
//! `check perf`).
//!
//! They are drawn on stderr and only when stderr is a terminal: a script's stdout and
//! stderr stay exactly what etcdctl prints (etcdctl 3.4's `check perf` draws its bar on
//! stdout; synodctl keeps stdout for results).

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar over `total` units, `template` naming how they are shown.
fn bar(total: u64, template: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    // The templates are constants of this module: a mistake in one is a bug here.
    bar.set_style(ProgressStyle::with_template(template).expect("a valid progress template"));
    bar
}

/// Bytes received or written, out of `total`.
pub fn bytes(total: u64, message: &str) -> ProgressBar {
    let bar = bar(total, "{msg} [{bar:40}] {bytes}/{total_bytes} ({eta})");
    bar.set_message(message.to_string());
    bar
}

/// Items done, out of `total`.
pub fn count(total: u64, message: &str) -> ProgressBar {
    let bar = bar(total, "{msg} [{bar:40}] {pos}/{len} ({eta})");
    bar.set_message(message.to_string());
    bar
}

/// A spinner for work that reports no progress of its own, with the time it has taken.
pub fn spinner(message: String) -> ProgressBar {
    let spinner = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    spinner.set_style(ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("a valid template"));
    spinner.set_message(message);
    spinner.enable_steady_tick(Duration::from_millis(100));
    spinner
}
