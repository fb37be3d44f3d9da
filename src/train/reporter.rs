//! Training progress for a person: a bar with loss, tokens/s and ETA on a terminal, or a
//! plain line every `log_every` steps when stderr is a file or pipe.
//!
//! A training never dies because its output went away (`... | head`, a dropped SSH link):
//! a failed write to stderr or stdout is ignored, and the run's own files (`train.log`,
//! `metrics.jsonl`, `status.json`) keep everything.

use std::io::{IsTerminal, Write};

use crate::runs::run_dir::MetricsRow;

/// Progress on a terminal (a bar) or as plain lines.
pub struct Reporter {
    bar: Option<indicatif::ProgressBar>,
    log_every: i64,
    ema_step_s: Option<f64>,
    /// Says nothing (the processes of a parallel training other than rank 0).
    quiet: bool,
}

impl Reporter {
    pub fn new(total: i64, start: i64, log_every: i64) -> Reporter {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(total as u64);
            b.set_style(
                indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
                    .expect("valid progress template"),
            );
            b.set_position(start as u64);
            b
        });
        Reporter {
            bar,
            log_every: log_every.max(1),
            ema_step_s: None,
            quiet: false,
        }
    }

    /// A reporter that says nothing.
    pub fn silenced(mut self) -> Reporter {
        self.bar = None;
        self.quiet = true;
        self
    }

    pub fn line(&self, msg: &str) {
        if self.quiet {
            return;
        }
        match &self.bar {
            Some(b) => b.println(msg),
            None => say(msg),
        }
    }

    pub fn step(&mut self, row: &MetricsRow, total: i64, step_s: f64, first_of_session: bool) {
        if self.quiet {
            return;
        }
        // The first step of a session pays for warm-up (allocations, kernels): keep it out of the ETA.
        if !first_of_session {
            self.ema_step_s = Some(match self.ema_step_s {
                Some(e) => 0.9 * e + 0.1 * step_s,
                None => step_s,
            });
        }
        let eta = self
            .ema_step_s
            .map(|s| format_duration(s * (total - row.step) as f64))
            .unwrap_or_else(|| "-".into());
        let mut msg = format!(
            "loss {:.4} | {:.0} tok/s | eta {eta}",
            row.train_loss.unwrap_or(f64::NAN),
            row.tokens_per_s.unwrap_or(0.0)
        );
        if let Some(l) = row.latent_loss {
            msg = format!("{msg} | latent {l:.4}");
        }
        match &self.bar {
            Some(b) => {
                b.set_position(row.step as u64);
                b.set_message(msg);
            }
            None => {
                if row.step % self.log_every == 0 || row.step == total {
                    say(&format!("step {}/{total} | {msg}", row.step));
                }
            }
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// A line on stderr; a closed or broken stderr is ignored (never a panic, as `eprintln!`
/// would).
pub fn say(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

/// A line on stdout, likewise.
pub fn print(msg: &str) {
    let _ = writeln!(std::io::stdout(), "{msg}");
}

pub fn format_duration(s: f64) -> String {
    let s = s.max(0.0).round() as i64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}
