//! One progress display for a whole sweep: which job runs on which device slot, how many
//! are done, and an ETA from the jobs' expected costs. On a terminal, a bar and a line per
//! slot; otherwise a line per start and end (for logs and `ssh host stacklab sweep`). The
//! sweep's `jobs.jsonl` gets a row per finished job: where and when it ran.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::schedule::{Event, Job};

/// A row of `jobs.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub job: String,
    /// Its device, or devices joined by `,` (a training in several processes).
    pub device: String,
    /// Its first slot of `--devices` (0-based): two `cpu` slots are 0 and 1.
    pub slot: usize,
    /// Every slot it took.
    pub slots: Vec<usize>,
    pub started_at: String,
    pub ended_at: String,
    pub seconds: f64,
    pub ok: bool,
    pub message: String,
}

pub struct Display<'a> {
    jobs: &'a [Job],
    slots: &'a [String],
    bar: Option<indicatif::MultiProgress>,
    total: Option<indicatif::ProgressBar>,
    lines: Vec<Option<indicatif::ProgressBar>>,
    started: Vec<Option<chrono::DateTime<chrono::Local>>>,
    start: Instant,
    done: usize,
    done_weight: f64,
    total_weight: f64,
    record: PathBuf,
}

/// A slot's name as shown: the device, numbered when it appears more than once.
pub fn slot_name(slots: &[String], i: usize) -> String {
    if slots.iter().filter(|s| **s == slots[i]).count() > 1 {
        let k = slots[..i].iter().filter(|s| **s == slots[i]).count();
        format!("{}#{k}", slots[i])
    } else {
        slots[i].clone()
    }
}

impl<'a> Display<'a> {
    pub fn new(jobs: &'a [Job], slots: &'a [String], record: PathBuf) -> Display<'a> {
        let total_weight = jobs.iter().map(|j| j.weight).sum::<f64>();
        let mut d = Display {
            jobs,
            slots,
            bar: None,
            total: None,
            lines: vec![None; slots.len()],
            started: vec![None; jobs.len()],
            start: Instant::now(),
            done: 0,
            done_weight: 0.0,
            total_weight,
            record,
        };
        if std::io::stderr().is_terminal() && !jobs.is_empty() {
            let m = indicatif::MultiProgress::new();
            let total = m.add(indicatif::ProgressBar::new(jobs.len() as u64));
            total.set_style(
                indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} jobs {msg}")
                    .expect("valid template"),
            );
            for (i, line) in d.lines.iter_mut().enumerate() {
                let b = m.add(indicatif::ProgressBar::new_spinner());
                b.set_style(
                    indicatif::ProgressStyle::with_template("  {prefix:<10} {msg} {elapsed}")
                        .expect("valid template"),
                );
                b.set_prefix(slot_name(slots, i));
                b.set_message("idle");
                *line = Some(b);
            }
            d.total = Some(total);
            d.bar = Some(m);
        }
        d
    }

    /// Remaining time from the throughput so far (expected cost per second over all slots).
    fn eta(&self) -> Option<Duration> {
        let secs = self.start.elapsed().as_secs_f64();
        if self.done_weight <= 0.0 || secs <= 0.0 {
            return None;
        }
        let rate = self.done_weight / secs;
        Some(Duration::from_secs_f64(
            ((self.total_weight - self.done_weight) / rate).max(0.0),
        ))
    }

    fn say(&self, msg: String) {
        match &self.bar {
            Some(m) => {
                let _ = m.println(msg);
            }
            None => {
                let _ = writeln!(std::io::stderr(), "{msg}");
            }
        }
    }

    pub fn observe(&mut self, e: &Event) {
        match e {
            Event::Started { job, slots } => {
                self.started[*job] = Some(chrono::Local::now());
                let label = &self.jobs[*job].label;
                if self.bar.is_some() {
                    for b in slots.iter().filter_map(|&s| self.lines[s].as_ref()) {
                        b.reset_elapsed();
                        b.set_message(label.clone());
                    }
                } else {
                    self.say(format!(
                        "[{}/{}] {}: started {label}",
                        self.done,
                        self.jobs.len(),
                        self.names(slots)
                    ));
                }
            }
            Event::Finished {
                job,
                slots,
                took,
                outcome,
            } => self.finished(*job, slots, *took, outcome),
        }
    }

    fn names(&self, slots: &[usize]) -> String {
        slots
            .iter()
            .map(|&s| slot_name(self.slots, s))
            .collect::<Vec<_>>()
            .join("+")
    }

    fn finished(
        &mut self,
        job: usize,
        slots: &[usize],
        took: Duration,
        outcome: &Result<String, String>,
    ) {
        self.done += 1;
        self.done_weight += self.jobs[job].weight;
        let eta = self
            .eta()
            .map(|d| format!(" · eta {}", crate::train::format_duration(d.as_secs_f64())))
            .unwrap_or_default();
        let what = match outcome {
            Ok(line) if line.is_empty() => self.jobs[job].label.clone(),
            Ok(line) => line.clone(),
            Err(e) => format!("{} FAILED: {e}", self.jobs[job].label),
        };
        self.say(format!(
            "[{}/{}] {}: {what} ({:.0}s){eta}",
            self.done,
            self.jobs.len(),
            self.names(slots),
            took.as_secs_f64()
        ));
        for b in slots.iter().filter_map(|&s| self.lines[s].as_ref()) {
            b.set_message("idle");
        }
        if let Some(t) = &self.total {
            t.inc(1);
            t.set_message(eta.trim_start_matches(" · ").to_string());
        }
        self.append(job, slots, took, outcome);
    }

    fn append(
        &self,
        job: usize,
        slots: &[usize],
        took: Duration,
        outcome: &Result<String, String>,
    ) {
        let now = chrono::Local::now();
        let rec = JobRecord {
            job: self.jobs[job].label.clone(),
            device: slots
                .iter()
                .map(|&s| self.slots[s].as_str())
                .collect::<Vec<_>>()
                .join(","),
            slot: slots.first().copied().unwrap_or(0),
            slots: slots.to_vec(),
            started_at: self.started[job].unwrap_or(now).to_rfc3339(),
            ended_at: now.to_rfc3339(),
            seconds: took.as_secs_f64(),
            ok: outcome.is_ok(),
            message: match outcome {
                Ok(m) | Err(m) => m.clone(),
            },
        };
        let line = match serde_json::to_string(&rec) {
            Ok(l) => l,
            Err(_) => return,
        };
        let write = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.record)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = write {
            tracing::warn!("cannot append to {}: {e}", self.record.display());
        }
    }

    pub fn finish(&self) {
        if let Some(m) = &self.bar {
            for b in self.lines.iter().flatten() {
                b.finish_and_clear();
            }
            if let Some(t) = &self.total {
                t.finish_and_clear();
            }
            let _ = m.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_of_one_device_are_numbered() {
        let s: Vec<String> = ["cpu", "cpu", "cuda:0"].map(String::from).to_vec();
        assert_eq!(slot_name(&s, 0), "cpu#0");
        assert_eq!(slot_name(&s, 1), "cpu#1");
        assert_eq!(slot_name(&s, 2), "cuda:0");
    }
}
