//! The Runs pane's trainings: ticking (reaping children, starting queued runs, following
//! the selected log), resuming, signalling and what a confirmed dialog does.

use std::path::PathBuf;
use std::time::SystemTime;

use super::{output_log, Confirm, LogSource, Overlay, RunsPane, LOG_CAP};
use crate::runs::process;
use crate::runs::queue::{QueuedRun, Request};
use crate::runs::registry::Phase;
use crate::tui::widgets::log_view::LogTail;

impl RunsPane {
    /// Checks the run folders, the queue and the children; starts queued runs that have a
    /// slot. Returns whether anything shown changed.
    pub fn tick(&mut self) -> bool {
        let cap = crate::runs::queue::Capacity::of(&self.lab);
        let (mut changed, news) = self.trainings.tick(&cap);
        if let Some(n) = news.into_iter().last() {
            self.message = Some(n);
        }
        changed |= self.sync_log();
        changed |= self.sync_gpu_use();
        // Ages and the ETA move while something runs: redraw once a second then.
        let second = self
            .now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let active = self.order.iter().any(|n| self.phase(n).is_active());
        if active && second != self.last_second {
            changed = true;
        }
        self.last_second = second;
        if changed {
            self.rebuild_order();
        }
        changed
    }

    /// Takes each run's GPU use from the monitor's latest sample; returns whether it changed.
    fn sync_gpu_use(&mut self) -> bool {
        let Some(m) = &self.monitor else {
            return false;
        };
        let use_ = m.read(|s| {
            s.latest
                .as_ref()
                .map(|s| crate::runs::gpu_use::by_run(s.gpu_list()))
                .unwrap_or_default()
        });
        let changed = use_ != self.gpu_use;
        self.gpu_use = use_;
        changed
    }

    fn log_path(&self) -> Option<PathBuf> {
        let name = self.selected.as_deref()?;
        Some(match self.log_source {
            LogSource::Train => self.root.join(name).join(crate::runs::run_dir::LOG_FILE),
            LogSource::Output => output_log(&self.root, name),
        })
    }

    /// Follows the selected run's log (a new tail when the selection or source changed).
    pub(super) fn sync_log(&mut self) -> bool {
        let path = self.log_path().unwrap_or_default();
        let mut changed = false;
        if path != self.log.path {
            let search = std::mem::take(&mut self.log.search);
            self.log = LogTail::new(&path, LOG_CAP);
            self.log.search = search;
            changed = true;
        }
        changed | self.log.refresh()
    }

    pub(super) fn resume(&mut self, name: &str) {
        let phase = self.phase(name);
        if !phase.resumable() {
            return self.notify(
                format!(
                    "{name} is {}{}: only stopped, failed or lost runs resume",
                    phase.as_str(),
                    self.pid_note(name)
                ),
                true,
            );
        }
        let q = resume_request(name, &self.root, &self.queue_device());
        let how = match q.nproc {
            Some(n) => format!(" in {n} processes, as it trained"),
            None => String::new(),
        };
        match self.trainings.queue.push(&q) {
            Ok(_) => self.notify(format!("{name}: resume queued{how}"), false),
            Err(e) => self.notify(format!("{e:#}"), true),
        }
        self.tick();
    }

    /// " (pid N)" for a run whose training process is known (its lock's holder or its
    /// status), else nothing.
    fn pid_note(&self, name: &str) -> String {
        self.trainings
            .registry
            .get(name)
            .and_then(|e| e.training())
            .map(|(pid, _)| format!(" (pid {pid})"))
            .unwrap_or_default()
    }

    /// Signals a run's training: by its status (pid and start time), or our child's pid.
    fn signal(&mut self, name: &str, sig: i32) -> anyhow::Result<()> {
        if let Some(e) = self
            .trainings
            .registry
            .get(name)
            .filter(|e| e.phase() == Phase::Running)
        {
            return crate::runs::control::signal_run(e, sig);
        }
        // Our child that has not written its status yet: its pid cannot be reused before
        // we reap it.
        let c = self
            .trainings
            .child(name)
            .ok_or_else(|| anyhow::anyhow!("{name} is not running"))?;
        process::signal_training(c.child.id(), None, sig)
    }

    pub(super) fn confirmed(&mut self, c: Confirm) {
        match c {
            Confirm::Stop(n) => match self.signal(&n, libc::SIGTERM) {
                Ok(()) => self.notify(
                    format!("{n}: stopping (it checkpoints, then ends stopped)"),
                    false,
                ),
                Err(e) => self.notify(format!("{e:#}"), true),
            },
            Confirm::Kill(n) => self.overlay = Some(Overlay::Confirm(Confirm::KillSure(n))),
            Confirm::KillSure(n) => match self.signal(&n, libc::SIGKILL) {
                Ok(()) => self.notify(
                    format!("{n}: killed (resumable from its last checkpoint)"),
                    false,
                ),
                Err(e) => self.notify(format!("{e:#}"), true),
            },
            Confirm::Delete(n) => {
                let phase = self.phase(&n);
                if phase.is_active() || phase == Phase::Corrupt {
                    return self.notify(
                        format!(
                            "{n} is {}{}: not deleted",
                            phase.as_str(),
                            self.pid_note(&n)
                        ),
                        true,
                    );
                }
                let r = crate::runs::control::remove_run(&self.root, &n).map(|_| ());
                let _ = std::fs::remove_file(output_log(&self.root, &n));
                match r {
                    Ok(()) => self.notify(format!("deleted {n}"), false),
                    Err(e) => self.notify(format!("cannot delete {n}: {e}"), true),
                }
                self.pinned.retain(|p| p != &n);
            }
            Confirm::Cancel(n) => match self.trainings.queue.remove(&n) {
                Ok(()) => self.notify(format!("{n}: taken off the queue"), false),
                Err(e) => self.notify(format!("{e:#}"), true),
            },
        }
        self.tick();
    }
}

/// The queued resume of `name`: in as many processes as it trained in (its status's world
/// size), on `device`, or on any free GPUs when it was several processes and `device` is
/// one GPU.
fn resume_request(name: &str, root: &std::path::Path, device: &str) -> QueuedRun {
    let world = crate::runs::run_dir::RunDir::new(root.join(name))
        .read_status()
        .ok()
        .and_then(|st| st.world_size)
        .filter(|&w| w > 1);
    let device = match world {
        Some(_) if device.starts_with("cuda:") => crate::runs::queue::ANY_DEVICE,
        _ => device,
    };
    QueuedRun {
        nproc: world,
        ..QueuedRun::new(name, device, Request::Resume)
    }
}

#[cfg(test)]
mod tests {
    use super::resume_request;
    use crate::runs::run_dir::{RunDir, RunState, RunStatus};

    #[test]
    fn a_run_resumes_in_as_many_processes_as_it_trained_in() {
        let dir = tempfile::tempdir().unwrap();
        let status = |name: &str, world_size| {
            let run = RunDir::new(dir.path().join(name));
            std::fs::create_dir_all(&run.path).unwrap();
            run.write_status(&RunStatus {
                state: RunState::Stopped,
                pid: 1,
                step: 3,
                total_steps: 9,
                message: String::new(),
                updated_at: String::new(),
                start_time: None,
                device: Some("cuda:0,cuda:1".into()),
                world_size,
            })
            .unwrap();
        };
        status("wide", Some(2));
        status("single", Some(1));
        let q = resume_request("wide", dir.path(), "cuda:0");
        assert_eq!((q.nproc, q.device.as_str()), (Some(2), "any"));
        let q = resume_request("wide", dir.path(), "cpu");
        assert_eq!((q.nproc, q.device.as_str()), (Some(2), "cpu"));
        let q = resume_request("single", dir.path(), "cuda:0");
        assert_eq!((q.nproc, q.device.as_str()), (None, "cuda:0"));
        let q = resume_request("missing", dir.path(), "cpu");
        assert_eq!(q.nproc, None);
    }
}
