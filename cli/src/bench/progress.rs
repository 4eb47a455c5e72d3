//! The progress bar on stderr: requests done of `--total`, or time gone of `--duration`. Drawn only
//! when stderr is a terminal, so a pipe or a log gets the report alone.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressFinish, ProgressStyle};

pub struct Progress {
    bar: ProgressBar,
    /// With `--duration`: when the run started (the bar counts milliseconds, not requests).
    timed: Option<Instant>,
}

impl Progress {
    pub fn new(total: u64, duration: Option<Duration>) -> Self {
        let target = if std::io::stderr().is_terminal() { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        let (length, template) = match duration {
            Some(duration) => (duration.as_millis() as u64, format!("{{wide_bar}} {{elapsed}} of {}", humantime::format_duration(duration))),
            None => (total, "{wide_bar} {pos}/{len} requests, {elapsed}".to_string()),
        };
        // Cleared when dropped too, so a run that fails leaves its error alone on the terminal.
        let bar = ProgressBar::with_draw_target(Some(length), target).with_finish(ProgressFinish::AndClear);
        bar.set_style(ProgressStyle::with_template(&template).expect("a valid progress template"));
        Progress { bar, timed: duration.map(|_| Instant::now()) }
    }

    /// One more request done.
    pub fn advance(&self) {
        match self.timed {
            Some(started) => self.bar.set_position(started.elapsed().as_millis() as u64),
            None => self.bar.inc(1),
        }
    }

    /// Take the bar off the terminal before the report is printed.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
