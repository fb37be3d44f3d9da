//! A fake GPU source: N GPUs with deterministic figures that move from sample to sample, and
//! the processes it is told about. Tests draw the System pane from it, and the lab uses it
//! under `STACKLAB_FAKE_GPUS=N` (for its idle-CPU measurement with eight GPUs' figures).

use super::{GpuFigures, GpuProcess, GpuSource, NoGpus};

/// The most fake GPUs (a large node has 8 or 16).
pub const MAX_GPUS: usize = 64;
/// Each fake GPU's memory.
pub const MEMORY_TOTAL: u64 = 80 << 30;
/// Device memory each fake process uses.
pub const PROCESS_MEMORY: u64 = 3 << 30;
pub const POWER_LIMIT_W: f64 = 700.0;

pub struct FakeSource {
    gpus: usize,
    /// (pid, GPU index) of each process.
    processes: Vec<(u32, u32)>,
    /// Samples taken so far: the figures move with it.
    tick: u64,
    /// A bad `STACKLAB_FAKE_GPUS`: every sample is this reason.
    error: Option<NoGpus>,
}

impl FakeSource {
    /// `gpus` fake GPUs (at most [`MAX_GPUS`]), no processes.
    pub fn new(gpus: usize) -> FakeSource {
        FakeSource {
            gpus: gpus.min(MAX_GPUS),
            processes: Vec::new(),
            tick: 0,
            error: None,
        }
    }

    /// Adds a process on GPU `gpu` (wrapped to the GPUs there are).
    pub fn with_process(mut self, pid: u32, gpu: u32) -> FakeSource {
        self.processes.push((pid, gpu));
        self
    }

    /// From the values of `STACKLAB_FAKE_GPUS` and `STACKLAB_FAKE_GPU_PIDS` (`PID[:GPU],...`;
    /// unreadable entries are skipped).
    pub fn from_env_values(gpus: &str, pids: &str) -> FakeSource {
        let n = match gpus.trim().parse::<usize>() {
            Ok(n) if n <= MAX_GPUS => n,
            _ => {
                let mut s = FakeSource::new(0);
                s.error = Some(NoGpus::BadFake(gpus.to_string()));
                return s;
            }
        };
        let mut s = FakeSource::new(n);
        for (i, entry) in pids.split(',').map(str::trim).enumerate() {
            let (pid, gpu) = match entry.split_once(':') {
                Some((p, g)) => (p.parse::<u32>(), g.parse::<u32>().ok()),
                None => (entry.parse::<u32>(), None),
            };
            if let Ok(pid) = pid {
                s = s.with_process(pid, gpu.unwrap_or(i as u32));
            }
        }
        s
    }

    fn gpu(&self, i: usize) -> GpuFigures {
        let (k, gi) = (self.tick, i as u64);
        let processes: Vec<GpuProcess> = self
            .processes
            .iter()
            .filter(|(_, g)| *g as usize % self.gpus.max(1) == i)
            .map(|(pid, _)| GpuProcess {
                pid: *pid,
                memory_bytes: Some(PROCESS_MEMORY),
                run: None,
            })
            .collect();
        // 12.1 GiB on GPU 0, 8 GiB more on each next one (wrapping under the total), with
        // 1 GiB of wobble from sample to sample.
        let base = (121 * (1u64 << 30) / 10 + ((gi * 8) << 30)) % (MEMORY_TOTAL - (4 << 30));
        let used = base + (((k + gi) % 3) << 30) + processes.len() as u64 * PROCESS_MEMORY / 4;
        GpuFigures {
            index: i as u32,
            name: "Fake GPU 80GB".into(),
            bus_id: Some(format!("00000000:{:02X}:00.0", 0x18 + i * 0x10)),
            utilization_percent: Some(((37 + 13 * gi + 7 * k) % 101) as u32),
            memory_used_bytes: Some(used.min(MEMORY_TOTAL)),
            memory_total_bytes: Some(MEMORY_TOTAL),
            temperature_c: Some((45 + 2 * gi + k % 5) as u32),
            power_w: Some(310.0 + 20.0 * i as f64 + (k % 4) as f64 * 5.0),
            power_limit_w: Some(POWER_LIMIT_W),
            processes,
        }
    }
}

impl GpuSource for FakeSource {
    fn describe(&self) -> String {
        format!("fake: {} GPUs ({})", self.gpus, super::FAKE_GPUS_ENV)
    }

    fn sample(&mut self) -> Result<Vec<GpuFigures>, NoGpus> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if self.gpus == 0 {
            return Err(NoGpus::NoGpu);
        }
        let out = (0..self.gpus).map(|i| self.gpu(i)).collect();
        self.tick += 1;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_gpus_are_deterministic_and_move_between_samples() {
        let mut a = FakeSource::new(8);
        let mut b = FakeSource::new(8);
        let first = a.sample().unwrap();
        assert_eq!(first, b.sample().unwrap());
        assert_eq!(first.len(), 8);
        assert_eq!(first[0].utilization_percent, Some(37));
        assert_eq!(first[0].memory_used_bytes, Some(121 * (1u64 << 30) / 10));
        for g in &first {
            let (used, total) = (g.memory_used_bytes.unwrap(), g.memory_total_bytes.unwrap());
            assert!(
                used <= total && g.utilization_percent.unwrap() <= 100,
                "{g:?}"
            );
        }
        assert_ne!(a.sample().unwrap(), first);
    }

    #[test]
    fn the_environment_names_gpus_and_processes_and_bad_values_are_a_reason() {
        let mut s = FakeSource::from_env_values("2", "100:1, 200, junk, 300:5");
        let g = s.sample().unwrap();
        let pids = |i: usize| g[i].processes.iter().map(|p| p.pid).collect::<Vec<_>>();
        // 100 on GPU 1; 200 (second entry) on GPU 1; 300 on GPU 5 mod 2 = 1.
        assert_eq!((pids(0), pids(1)), (vec![], vec![100, 200, 300]));
        assert_eq!(g[1].processes[0].memory_bytes, Some(PROCESS_MEMORY));
        assert_eq!(
            FakeSource::from_env_values("0", "").sample(),
            Err(NoGpus::NoGpu)
        );
        for bad in ["eight", "-1", "65"] {
            let e = FakeSource::from_env_values(bad, "").sample().unwrap_err();
            assert_eq!(e, NoGpus::BadFake(bad.into()));
            assert!(e.to_string().contains("is not a number of GPUs"), "{e}");
        }
    }
}
