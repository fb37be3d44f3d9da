//! Progress of long loops, reported to a [`Sink`] the caller chooses and the loop does not
//! know: a bar on a terminal ([`Bar`]), JSON lines for a parent process ([`JsonLines`]:
//! with `STACKLAB_PROGRESS=json` the lab's children print one line
//! `{"progress":{"stage":"eval","done":N,"total":M}}` to stderr per batch), or nothing.

use serde::{Deserialize, Serialize};

pub const ENV: &str = "STACKLAB_PROGRESS";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub stage: String,
    pub done: i64,
    pub total: i64,
}

#[derive(Serialize, Deserialize)]
struct Line {
    progress: Progress,
}

/// Where a loop reports how far it is.
pub trait Sink {
    /// `done` of `total` units of `stage` are done.
    fn update(&mut self, stage: &str, done: i64, total: i64);
    /// The loop ended (a bar clears itself).
    fn finish(&mut self) {}
}

/// Reports nothing.
pub struct Silent;

impl Sink for Silent {
    fn update(&mut self, _: &str, _: i64, _: i64) {}
}

/// One JSON line per update on stderr, for a parent process.
pub struct JsonLines;

impl Sink for JsonLines {
    fn update(&mut self, stage: &str, done: i64, total: i64) {
        print_line(stage, done, total);
    }
}

/// A bar on stderr (units, rate, ETA), one per stage.
#[derive(Default)]
pub struct Bar {
    bar: Option<(String, indicatif::ProgressBar)>,
}

impl Sink for Bar {
    fn update(&mut self, stage: &str, done: i64, total: i64) {
        if self.bar.as_ref().is_none_or(|(s, _)| s != stage) {
            self.finish();
            let bar = indicatif::ProgressBar::new(total.max(0) as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} {bar:30} {human_pos}/{human_len}  {per_sec}  ETA {eta}",
                )
                .expect("valid progress template"),
            );
            bar.set_message(stage.to_string());
            self.bar = Some((stage.to_string(), bar));
        }
        if let Some((_, bar)) = &self.bar {
            bar.set_length(total.max(0) as u64);
            bar.set_position(done.max(0) as u64);
        }
    }

    fn finish(&mut self) {
        if let Some((_, bar)) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.finish();
    }
}

/// What a command run from a shell or by the lab reports to: JSON lines when the parent
/// asked for them (`STACKLAB_PROGRESS=json`), a bar on a terminal, else nothing.
pub fn for_command() -> Box<dyn Sink> {
    use std::io::IsTerminal;
    if json_enabled() {
        Box::new(JsonLines)
    } else if std::io::stderr().is_terminal() {
        Box::new(Bar::default())
    } else {
        Box::new(Silent)
    }
}

/// Whether this process reports progress as JSON lines.
pub fn json_enabled() -> bool {
    std::env::var(ENV).map(|v| v == "json").unwrap_or(false)
}

fn print_line(stage: &str, done: i64, total: i64) {
    let line = Line {
        progress: Progress {
            stage: stage.to_string(),
            done,
            total,
        },
    };
    if let Ok(s) = serde_json::to_string(&line) {
        // A closed stderr (the parent went away) is no reason to stop the work.
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "{s}");
    }
}

/// A progress line, if `line` is one.
pub fn parse(line: &str) -> Option<Progress> {
    let line = line.trim();
    if !line.starts_with("{\"progress\"") {
        return None;
    }
    serde_json::from_str::<Line>(line).ok().map(|l| l.progress)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_other_text_is_not_progress() {
        let s = serde_json::to_string(&Line {
            progress: Progress {
                stage: "eval".into(),
                done: 3,
                total: 9,
            },
        })
        .unwrap();
        assert_eq!(
            parse(&s),
            Some(Progress {
                stage: "eval".into(),
                done: 3,
                total: 9
            })
        );
        assert_eq!(parse("warning: something"), None);
        assert_eq!(parse("{\"progress\": 3}"), None);
    }
}
