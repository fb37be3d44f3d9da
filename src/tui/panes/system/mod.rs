//! The System pane: the whole machine at a glance. Per GPU its utilisation, memory,
//! temperature and power with a minute of history, and the processes on it with the run
//! each one trains; the host's CPU, memory and the free space of the checkpoint and data
//! folders; then the lab's device, corpus and configs where there is room. Figures come
//! from the sampler's thread ([`Monitor`]); drawing only reads its latest snapshot.

mod draw;
pub mod figures;

use ratatui::layout::Rect;
use ratatui::Frame;
use tch::Device;

use super::Pane;
use crate::data::prepare::Dataset;
use crate::system::sampler::Monitor;
use crate::tui::action::{Action, Handled};
use crate::tui::theme::Theme;

pub const SYSTEM_TITLE: &str = "System";

pub struct SystemPane {
    pub monitor: Monitor,
    /// The lab's device, described (`cuda:0 (NVIDIA H100 80GB HBM3, 79.2 GiB)`).
    pub device: String,
    pub dataset: Option<Dataset>,
    pub configs: Vec<String>,
    /// The snapshot version last handed to the app (a newer one means a redraw).
    seen: u64,
}

/// The config names (`*.toml`) in `dir`, sorted.
pub fn config_names(dir: &std::path::Path) -> Vec<String> {
    let mut configs: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            if p.extension()? != "toml" {
                return None;
            }
            Some(p.file_stem()?.to_string_lossy().into_owned())
        })
        .collect();
    configs.sort();
    configs
}

impl SystemPane {
    pub fn new(
        monitor: Monitor,
        device: String,
        dataset: Option<Dataset>,
        configs: Vec<String>,
    ) -> SystemPane {
        SystemPane {
            monitor,
            device,
            dataset,
            configs,
            seen: 0,
        }
    }

    /// The pane for the lab's `device`, with the configs of this installation.
    pub fn gather(monitor: Monitor, device: Device, dataset: Option<Dataset>) -> SystemPane {
        SystemPane::new(
            monitor,
            crate::device::describe(device),
            dataset,
            config_names(&crate::paths::config_dir()),
        )
    }
}

impl Pane for SystemPane {
    fn title(&self) -> &str {
        SYSTEM_TITLE
    }

    fn handle_key(&mut self, _key: crossterm::event::KeyEvent) -> Handled {
        Handled::No
    }

    /// A new sample since the last tick is a redraw (once a second at most).
    fn update(&mut self, action: &Action) -> bool {
        match action {
            Action::Tick => {
                let v = self.monitor.version();
                let changed = v != self.seen;
                self.seen = v;
                changed
            }
            _ => false,
        }
    }

    fn draw(&mut self, f: &mut Frame, area: Rect, theme: &Theme) {
        let snapshot = self.monitor.read(Clone::clone);
        draw::draw(f, area, self, &snapshot, theme)
    }

    fn keys(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    fn status_keys(&self) -> String {
        let every = self.monitor.read(|s| s.interval.as_secs().max(1));
        format!("figures every {every} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::fake::FakeSource;
    use crate::system::sampler::Snapshot;
    use crate::system::{GpuSource, Sample};

    #[test]
    fn a_new_sample_asks_for_one_redraw() {
        let monitor = Monitor::fixed(Snapshot::default());
        let mut pane = SystemPane::new(monitor.clone(), "cpu".into(), None, vec![]);
        assert!(!pane.update(&Action::Tick), "nothing sampled yet");
        monitor.push(Sample {
            gpus: FakeSource::new(1).sample(),
            host: Default::default(),
        });
        assert!(pane.update(&Action::Tick));
        assert!(!pane.update(&Action::Tick), "the same sample again");
        assert_eq!(pane.title(), "System");
    }

    #[test]
    fn config_names_are_the_toml_files() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["tiny.toml", "b.toml", "notes.txt"] {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        assert_eq!(config_names(dir.path()), ["b", "tiny"]);
    }
}
