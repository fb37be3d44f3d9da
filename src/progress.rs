//! Machine-readable progress for a parent process (the lab runs `stack` and `inspect` as
//! children): with `STACKLAB_PROGRESS=json` in the environment, long loops print one line
//! `{"progress":{"stage":"eval","done":N,"total":M}}` to stderr per batch instead of a bar.

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

/// Whether this process reports progress as JSON lines.
pub fn json_enabled() -> bool {
    std::env::var(ENV).map(|v| v == "json").unwrap_or(false)
}

/// Prints one progress line to stderr when enabled.
pub fn emit(stage: &str, done: i64, total: i64) {
    if json_enabled() {
        let line = Line {
            progress: Progress {
                stage: stage.to_string(),
                done,
                total,
            },
        };
        if let Ok(s) = serde_json::to_string(&line) {
            eprintln!("{s}");
        }
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
