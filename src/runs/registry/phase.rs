//! A run's phase as shown to a person: from its status (the process checked by pid and
//! start time), from the training holding its lock whatever the status says, and for a run
//! whose status is missing or unreadable, lost.

use super::*;

/// What a run is doing, as shown to a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// Started by this lab, no status written yet.
    Starting,
    Running,
    Queued,
    /// Its status says running but its process is gone (killed, machine rebooted), or its
    /// status is missing or unreadable beside a config: resumable, removable.
    Lost,
    Stopped,
    Failed,
    Done,
    /// Not readable as a run; the entry's `problem` says why.
    Corrupt,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Running => "running",
            Phase::Queued => "queued",
            Phase::Lost => "lost",
            Phase::Stopped => "stopped",
            Phase::Failed => "failed",
            Phase::Done => "done",
            Phase::Corrupt => "corrupt",
        }
    }

    /// A training process may be alive.
    pub fn is_active(self) -> bool {
        matches!(self, Phase::Starting | Phase::Running)
    }

    pub fn resumable(self) -> bool {
        matches!(self, Phase::Stopped | Phase::Failed | Phase::Lost)
    }
}

/// The phase a status stands for, with the process checked (pid and start time).
pub fn phase_of(status: &RunStatus) -> Phase {
    match status.state {
        RunState::Running if status.process_alive() => Phase::Running,
        RunState::Running => Phase::Lost,
        RunState::Done => Phase::Done,
        RunState::Stopped => Phase::Stopped,
        RunState::Failed => Phase::Failed,
    }
}

impl RunEntry {
    /// Sets the problem and the phase from what was read (`has_config`, `has_status`: the
    /// files exist); returns whether anything shown changed.
    pub(super) fn judge(&mut self, has_config: bool, has_status: bool) -> bool {
        let mut changed = self.refresh_holder();
        let held = self.holder.is_some();
        self.problem = match (&self.status, has_config, has_status) {
            _ if held => None,
            (_, false, false) if self.lock_stamp.is_some() => Some(format!(
                "a start that died during its setup left only its lock file: `stacklab train --name {}` takes the name over",
                self.name
            )),
            (_, false, false) => Some("not a run: no config.toml or status.json".into()),
            (_, true, _) if self.config.is_none() => Some("config.toml is not valid TOML".into()),
            (_, true, false) => Some(
                "no status.json: its training died before writing one; it resumes from what it holds"
                    .into(),
            ),
            (None, true, true) => Some(
                "status.json is unreadable: its training's end is unknown; it resumes from what it holds"
                    .into(),
            ),
            (None, false, true) => Some("status.json is not a stacklab run status".into()),
            (Some(_), false, _) => Some("no config.toml".into()),
            _ => None,
        };
        // Liveness changes without any file changing: check it every time.
        let phase = match &self.status {
            _ if held => Phase::Running,
            Some(st) => phase_of(st),
            // A run whose status is missing or unreadable, but whose config is there, is
            // lost: it resumes from what it holds, or is removed.
            None if self.config.is_some() => Phase::Lost,
            None => Phase::Corrupt,
        };
        if self.phase != Some(phase) {
            self.phase = Some(phase);
            changed = true;
        }
        changed
    }

    /// Looks who holds the run's lock: the file is read when it changed, its training's
    /// process checked (a dead one is remembered as dead), and only a live one's lock tested.
    /// Returns whether the holder changed.
    fn refresh_holder(&mut self) -> bool {
        let ls = stamp(&self.path.join(LOCK_FILE));
        if ls != self.lock_stamp {
            self.lock_stamp = ls;
            self.lock_named = ls
                .and_then(|_| lock::read_holder(&self.path))
                .filter(Holder::is_training);
        }
        let holder = match &self.lock_named {
            Some(h) if !h.alive() => {
                self.lock_named = None;
                None
            }
            // Its own status says it runs: no need to test the lock.
            Some(h)
                if self
                    .status
                    .as_ref()
                    .is_some_and(|st| st.pid == h.pid && phase_of(st) == Phase::Running) =>
            {
                Some(h.clone())
            }
            Some(h) if lock::is_locked(&self.path) => Some(h.clone()),
            _ => None,
        };
        let changed = holder != self.holder;
        self.holder = holder;
        changed
    }
}
