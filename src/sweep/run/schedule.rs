//! Running a sweep's jobs on device slots: each slot (`--devices cuda:0,cuda:1`, or
//! `cpu,cpu`) runs one job at a time, a job starts once every job it depends on has
//! finished, and jobs start in the plan's order among those ready that fit the free slots.
//! A job may take several slots at once (a training in several processes): all on the CPU,
//! or on distinct GPUs. A failed job stops new starts; the jobs running finish (their
//! results are kept) and the first error is returned.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

/// One unit of a sweep: a training, a stack evaluation or a heal.
#[derive(Debug, Clone)]
pub struct Job {
    /// What a person reads: `train mini-m1-r0`.
    pub label: String,
    /// Jobs (indices) that must have finished first.
    pub deps: Vec<usize>,
    /// Its expected cost (FLOPs), for the ETA.
    pub weight: f64,
    /// How many slots it takes at once (1, or a training's processes).
    pub width: usize,
}

/// What happened to a job, as the display hears it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Started {
        job: usize,
        slots: Vec<usize>,
    },
    /// `Ok` carries the line to show (a loss, a summary).
    Finished {
        job: usize,
        slots: Vec<usize>,
        took: Duration,
        outcome: Result<String, String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Waiting,
    Running,
    Done,
    Failed,
}

/// Free slots for a job `width` wide: the first free ones on the CPU, or on as many
/// distinct GPUs (two processes never share one).
fn fitting(slots: &[String], free: &[bool], width: usize) -> Option<Vec<usize>> {
    let open: Vec<usize> = (0..slots.len()).filter(|&i| free[i]).collect();
    if width <= 1 {
        return open.first().map(|&i| vec![i]);
    }
    let cpu: Vec<usize> = open
        .iter()
        .copied()
        .filter(|&i| slots[i] == "cpu")
        .collect();
    if cpu.len() >= width {
        return Some(cpu[..width].to_vec());
    }
    let mut gpus: Vec<usize> = Vec::new();
    for &i in open.iter().filter(|&&i| slots[i] != "cpu") {
        if !gpus.iter().any(|&g| slots[g] == slots[i]) {
            gpus.push(i);
        }
    }
    (gpus.len() >= width).then(|| gpus[..width].to_vec())
}

/// The first waiting job, in order, whose dependencies are all done and that fits the free
/// slots, with the slots it takes.
fn next_ready(
    jobs: &[Job],
    state: &[State],
    slots: &[String],
    free: &[bool],
) -> Option<(usize, Vec<usize>)> {
    (0..jobs.len())
        .filter(|&j| {
            state[j] == State::Waiting && jobs[j].deps.iter().all(|&d| state[d] == State::Done)
        })
        .find_map(|j| fitting(slots, free, jobs[j].width).map(|s| (j, s)))
}

/// A panic in one job is that job's failure, not the sweep's crash.
fn guarded(f: impl FnOnce() -> Result<String>) -> Result<String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        Err(anyhow::anyhow!("internal error: {msg}"))
    })
}

/// Refuses a plan that cannot run on `slots`: no slot, a dependency on itself or on no
/// job, or a job wider than the slots can ever hold.
pub fn check(jobs: &[Job], slots: &[String]) -> Result<()> {
    if slots.is_empty() {
        bail!("no device to run the sweep on");
    }
    for (j, job) in jobs.iter().enumerate() {
        if let Some(&d) = job.deps.iter().find(|&&d| d >= jobs.len() || d == j) {
            bail!("job `{}` depends on job {d}, which it cannot", job.label);
        }
        if fitting(slots, &vec![true; slots.len()], job.width).is_none() {
            bail!(
                "{} needs {} device slots at once (all cpu, or distinct GPUs), and --devices {} has not that many",
                job.label,
                job.width,
                slots.join(",")
            );
        }
    }
    Ok(())
}

/// Runs `jobs` on `slots` (device names; one job per slot at a time) with `work(job,
/// devices)`, telling `observe` every start and end. Returns the first failure.
pub fn run<W, O>(jobs: &[Job], slots: &[String], work: W, mut observe: O) -> Result<()>
where
    W: Fn(usize, &[String]) -> Result<String> + Sync,
    O: FnMut(&Event),
{
    check(jobs, slots)?;
    let mut state = vec![State::Waiting; jobs.len()];
    let mut free: Vec<bool> = vec![true; slots.len()];
    let mut first_error: Option<anyhow::Error> = None;
    let (tx, rx) = mpsc::channel::<(usize, Vec<usize>, Duration, Result<String>)>();
    let work = &work;
    std::thread::scope(|scope| -> Result<()> {
        loop {
            while first_error.is_none() {
                let Some((job, taken)) = next_ready(jobs, &state, slots, &free) else {
                    break;
                };
                state[job] = State::Running;
                for &s in &taken {
                    free[s] = false;
                }
                observe(&Event::Started {
                    job,
                    slots: taken.clone(),
                });
                let devices: Vec<String> = taken.iter().map(|&s| slots[s].clone()).collect();
                let tx = tx.clone();
                scope.spawn(move || {
                    let t = Instant::now();
                    let r = guarded(|| work(job, &devices));
                    let _ = tx.send((job, taken, t.elapsed(), r));
                });
            }
            if !state.contains(&State::Running) {
                break;
            }
            let (job, taken, took, r) = rx.recv().expect("a running job reports");
            for &s in &taken {
                free[s] = true;
            }
            let outcome = match r {
                Ok(line) => {
                    state[job] = State::Done;
                    Ok(line)
                }
                Err(e) => {
                    state[job] = State::Failed;
                    let text = format!("{e:#}");
                    first_error.get_or_insert(e);
                    Err(text)
                }
            };
            observe(&Event::Finished {
                job,
                slots: taken,
                took,
                outcome,
            });
        }
        Ok(())
    })?;
    if let Some(e) = first_error {
        return Err(e);
    }
    if let Some(j) = state.iter().position(|s| *s == State::Waiting) {
        bail!(
            "job `{}` could not start: a job it depends on never finished",
            jobs[j].label
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier, Mutex};

    fn job(label: &str, deps: &[usize]) -> Job {
        Job {
            label: label.into(),
            deps: deps.to_vec(),
            weight: 1.0,
            width: 1,
        }
    }

    fn slots(n: usize) -> Vec<String> {
        vec!["cpu".to_string(); n]
    }

    /// Two independent jobs meet at a barrier: they finish only if they run at once.
    #[test]
    fn independent_jobs_run_at_once_on_two_slots_and_a_dependent_one_waits() {
        let jobs = [job("a", &[]), job("b", &[]), job("c", &[0, 1])];
        let barrier = Barrier::new(2);
        let order = Mutex::new(Vec::new());
        let mut events = Vec::new();
        run(
            &jobs,
            &slots(2),
            |j, _| {
                if j < 2 {
                    barrier.wait();
                }
                order.lock().unwrap().push(j);
                Ok(format!("job {j}"))
            },
            |e| events.push(e.clone()),
        )
        .unwrap();
        let order = order.into_inner().unwrap();
        assert_eq!(order.len(), 3);
        assert_eq!(order[2], 2, "c ran before its dependencies: {order:?}");
        // c started only after both a and b finished.
        let pos = |pred: &dyn Fn(&Event) -> bool| events.iter().position(pred).unwrap();
        let c_started = pos(&|e| matches!(e, Event::Started { job: 2, .. }));
        for j in [0, 1] {
            let done = pos(&|e| matches!(e, Event::Finished { job, .. } if *job == j));
            assert!(done < c_started, "{events:?}");
        }
    }

    #[test]
    fn one_slot_runs_jobs_in_order_one_at_a_time() {
        let jobs = [job("a", &[]), job("b", &[0]), job("c", &[])];
        let running = Arc::new(Mutex::new(0));
        let order = Mutex::new(Vec::new());
        run(
            &jobs,
            &slots(1),
            |j, _| {
                let mut r = running.lock().unwrap();
                *r += 1;
                assert_eq!(*r, 1, "two jobs at once on one slot");
                *r -= 1;
                order.lock().unwrap().push(j);
                Ok(String::new())
            },
            |_| {},
        )
        .unwrap();
        // b waits for a; c is ready from the start but comes after b in the plan's order
        // only once b is ready: a, then b (ready now, earlier in order), then c.
        assert_eq!(order.into_inner().unwrap(), [0, 1, 2]);
    }

    #[test]
    fn a_failure_stops_new_starts_and_a_panic_is_a_failure() {
        let jobs = [job("a", &[]), job("b", &[0]), job("c", &[])];
        let ran = Mutex::new(Vec::new());
        let e = run(
            &jobs,
            &slots(1),
            |j, _| {
                ran.lock().unwrap().push(j);
                if j == 0 {
                    bail!("a broke");
                }
                Ok(String::new())
            },
            |_| {},
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "a broke");
        assert_eq!(ran.into_inner().unwrap(), [0]);

        let e = run(
            &[job("p", &[])],
            &slots(1),
            |_, _| -> Result<String> { panic!("boom") },
            |_| {},
        )
        .unwrap_err();
        assert!(e.to_string().contains("internal error: boom"), "{e}");
        assert!(run(
            &[job("x", &[0])],
            &slots(1),
            |_, _| Ok(String::new()),
            |_| {}
        )
        .is_err());
    }

    /// A two-slot job waits for two free slots (distinct GPUs), while one-slot jobs after
    /// it in order may start where it does not fit.
    #[test]
    fn a_wide_job_takes_distinct_gpus_at_once() {
        let gpus: Vec<String> = ["cuda:0", "cuda:0", "cuda:1"].map(String::from).to_vec();
        let free = [true, true, true];
        assert_eq!(fitting(&gpus, &free, 2), Some(vec![0, 2]));
        assert_eq!(fitting(&gpus, &[true, true, false], 2), None);
        assert_eq!(
            fitting(&slots(3), &[false, true, true], 2),
            Some(vec![1, 2])
        );
        let mixed: Vec<String> = ["cpu", "cuda:0"].map(String::from).to_vec();
        assert_eq!(fitting(&mixed, &[true, true], 2), None);

        let mut wide = job("wide", &[0]);
        wide.width = 2;
        let jobs = [job("a", &[]), wide, job("b", &[])];
        let seen = Mutex::new(Vec::new());
        let mut events = Vec::new();
        run(
            &jobs,
            &slots(2),
            |j, d| {
                seen.lock().unwrap().push((j, d.len()));
                Ok(String::new())
            },
            |e| events.push(e.clone()),
        )
        .unwrap();
        assert!(seen.into_inner().unwrap().contains(&(1, 2)));
        let wide_started = events
            .iter()
            .find_map(|e| match e {
                Event::Started { job: 1, slots } => Some(slots.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(wide_started, [0, 1]);
        let mut too_wide = job("x", &[]);
        too_wide.width = 3;
        let e = run(&[too_wide], &slots(2), |_, _| Ok(String::new()), |_| {}).unwrap_err();
        assert!(e.to_string().contains("needs 3 device slots"), "{e}");
    }

    /// A wide job that is ready but does not fit lets a later one-slot job take the free
    /// slot (a and b run together, which the barrier proves), and no slot is ever held
    /// twice.
    #[test]
    fn one_slot_jobs_fill_in_while_a_wide_job_waits_and_no_slot_is_held_twice() {
        let mut wide = job("w", &[]);
        wide.width = 2;
        let jobs = [job("a", &[]), wide, job("b", &[])];
        let barrier = std::sync::Barrier::new(2);
        let mut events = Vec::new();
        run(
            &jobs,
            &slots(2),
            |j, d| {
                if j != 1 {
                    barrier.wait();
                }
                Ok(d.join(","))
            },
            |e| events.push(e.clone()),
        )
        .unwrap();
        let mut held = [None; 2];
        let mut order = Vec::new();
        for e in &events {
            match e {
                Event::Started { job, slots } => {
                    order.push(*job);
                    for &s in slots {
                        assert_eq!(held[s], None, "slot {s} taken twice: {events:?}");
                        held[s] = Some(*job);
                    }
                }
                Event::Finished { job, slots, .. } => {
                    for &s in slots {
                        assert_eq!(held[s], Some(*job));
                        held[s] = None;
                    }
                }
            }
        }
        assert_eq!(order, [0, 2, 1]);
    }

    #[test]
    fn devices_are_handed_to_the_jobs_by_slot() {
        let jobs = [job("a", &[]), job("b", &[])];
        let seen = Mutex::new(Vec::new());
        let barrier = Barrier::new(2);
        run(
            &jobs,
            &["cuda:0".to_string(), "cuda:1".to_string()],
            |j, d| {
                barrier.wait();
                seen.lock().unwrap().push((j, d.join(",")));
                Ok(String::new())
            },
            |_| {},
        )
        .unwrap();
        let mut seen = seen.into_inner().unwrap();
        seen.sort();
        assert_eq!(seen, [(0, "cuda:0".to_string()), (1, "cuda:1".to_string())]);
    }
}
