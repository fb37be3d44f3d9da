//! The lab's trainings as processes: the run registry, the queue, the children this lab
//! started (reaped so none is left a zombie) and the starts other processes made. One
//! place owns them; the Runs pane shows them and asks for starts and signals.

use std::path::{Path, PathBuf};
use std::process::Child;

use super::output_log;
use crate::runs::queue::{Capacity, Queue, QueuedRun};
use crate::runs::registry::{Phase, Registry};

pub(super) struct Spawned {
    pub name: String,
    pub child: Child,
}

pub struct Trainings {
    pub root: PathBuf,
    /// The stacklab binary trainings are started with.
    pub exe: PathBuf,
    pub registry: Registry,
    pub(super) queue: Queue,
    pub queued: Vec<QueuedRun>,
    pub(super) children: Vec<Spawned>,
    /// Trainings started from the queue by another process (an ending training, another
    /// lab) that have not written their status yet.
    started_elsewhere: Vec<String>,
}

impl Trainings {
    pub fn new(root: &Path, exe: &Path) -> Trainings {
        Trainings {
            root: root.to_path_buf(),
            exe: exe.to_path_buf(),
            registry: Registry::new(root),
            queue: Queue::new(root),
            queued: Vec::new(),
            children: Vec::new(),
            started_elsewhere: Vec::new(),
        }
    }

    /// Reaps ended children, re-reads the run folders and the queue, and starts the queued
    /// requests that have a slot (`cap.max_per_device` per device). Returns whether anything
    /// changed, and what to tell the user (started, did not start).
    pub fn tick(&mut self, cap: &Capacity) -> (bool, Vec<(String, bool)>) {
        let mut news = Vec::new();
        let mut changed = self.reap(&mut news);
        changed |= self.registry.refresh();
        let queued = self.queue.list();
        if queued
            .iter()
            .map(|q| &q.name)
            .ne(self.queued.iter().map(|q| &q.name))
        {
            changed = true;
        }
        self.queued = queued;
        let elsewhere: Vec<String> = crate::runs::launch::starting(&self.root)
            .into_iter()
            .map(|s| s.name)
            .collect();
        changed |= elsewhere != self.started_elsewhere;
        self.started_elsewhere = elsewhere;
        changed |= self.start_ready(cap, &mut news);
        (changed, news)
    }

    /// Waits for children that ended, so none is left a zombie.
    fn reap(&mut self, news: &mut Vec<(String, bool)>) -> bool {
        let mut changed = false;
        let mut i = 0;
        while i < self.children.len() {
            match self.children[i].child.try_wait() {
                Ok(None) => i += 1,
                Ok(Some(status)) => {
                    let c = self.children.remove(i);
                    changed = true;
                    let has_status = self
                        .registry
                        .get(&c.name)
                        .is_some_and(|e| e.status.is_some());
                    if !status.success() && status.code() != Some(130) && !has_status {
                        let out = std::fs::read_to_string(output_log(&self.root, &c.name))
                            .unwrap_or_default();
                        let last = out
                            .lines()
                            .rev()
                            .find(|l| !l.trim().is_empty())
                            .unwrap_or("no output");
                        news.push((format!("{} did not start: {last}", c.name), true));
                    }
                    tracing::info!(run = %c.name, %status, "training process ended");
                }
                Err(_) => {
                    self.children.remove(i);
                }
            }
        }
        changed
    }

    /// Starts the queued requests that fit, deciding under the queue's lock with every
    /// other lab and ending training (see `runs::launch::start_ready`).
    fn start_ready(&mut self, cap: &Capacity, news: &mut Vec<(String, bool)>) -> bool {
        // A claim left by a taker that died is put back by the look below.
        if self.queued.is_empty() && self.queue.claimed().is_empty() {
            return false;
        }
        let started = crate::runs::launch::start_ready(&self.root, &self.exe, cap);
        let changed = !started.is_empty();
        for (q, child) in started {
            self.queued.retain(|x| x.name != q.name);
            match child {
                Ok(child) => {
                    let args = q.train_args(&self.root);
                    tracing::info!(run = %q.name, pid = child.id(), ?args, "started a training");
                    news.push((format!("started {} (pid {})", q.name, child.id()), false));
                    self.children.push(Spawned {
                        name: q.name.clone(),
                        child,
                    });
                }
                Err(e) => news.push((format!("cannot start {}: {e:#}", q.name), true)),
            }
        }
        changed
    }

    pub(super) fn child(&self, name: &str) -> Option<&Spawned> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The phase shown for a run: queued, starting (our child, no status of its own yet),
    /// else what its folder and process say.
    pub fn phase(&self, name: &str) -> Phase {
        if self.queued.iter().any(|q| q.name == name) {
            return Phase::Queued;
        }
        let child = self.child(name);
        match (self.registry.get(name), child) {
            (Some(e), Some(c)) => match &e.status {
                Some(st) if st.pid == c.child.id() => e.phase(),
                _ => Phase::Starting,
            },
            (Some(e), None)
                if e.status.is_none() && self.started_elsewhere.iter().any(|n| n == name) =>
            {
                Phase::Starting
            }
            (Some(e), None) => e.phase(),
            (None, Some(_)) => Phase::Starting,
            (None, None) => Phase::Corrupt,
        }
    }
}
