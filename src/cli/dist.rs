//! `train --nproc N` and trainings launched by torchrun or srun: the world this process
//! trains in, its device, and the local launcher.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tch::Device;

use crate::config::TrainConfig;
use crate::dist::{Launch, World};

/// What `train` was asked, as far as starting processes goes.
pub(super) struct Plan<'a> {
    pub config: Option<&'a str>,
    pub sets: &'a [String],
    pub resume: Option<&'a Path>,
    /// `--device` as given, and resolved (a list's first GPU).
    pub device_arg: &'a str,
    pub device: Device,
    /// The GPUs of a `--device` list, one per process (process k on the k-th).
    pub gpus: Option<Vec<usize>>,
    /// `--dist-timeout`, seconds.
    pub dist_timeout: u64,
}

/// The collective timeout `--dist-timeout` asks for.
pub(super) fn timeout(a: &Plan) -> Result<Duration> {
    if a.dist_timeout == 0 {
        bail!("--dist-timeout 0: collectives need at least one second");
    }
    Ok(Duration::from_secs(a.dist_timeout))
}

/// The device of a launched process: the `LOCAL_RANK`-th GPU of a `--device` list, else
/// `cuda:LOCAL_RANK` where `--device` says CUDA (or `auto` finds it), else the CPU.
pub(super) fn launched_device(
    device_arg: &str,
    resolved: Device,
    gpus: Option<&[usize]>,
    l: &Launch,
) -> Result<Device> {
    if let Some(g) = gpus {
        return match g.get(l.local_rank) {
            Some(&i) => Ok(Device::Cuda(i)),
            None => bail!(
                "LOCAL_RANK = {} but --device {device_arg} lists {} GPU(s): one per process on this node",
                l.local_rank,
                g.len()
            ),
        };
    }
    let Device::Cuda(_) = resolved else {
        return Ok(resolved);
    };
    if device_arg.contains(':') && l.world > 1 {
        bail!(
            "--device {device_arg}: each of the {} processes trains on cuda:LOCAL_RANK; give --device cuda (or auto), or one GPU per process (--device cuda:0,cuda:1)",
            l.world
        );
    }
    let count = tch::Cuda::device_count().max(0) as usize;
    if l.local_rank >= count {
        bail!(
            "LOCAL_RANK = {} but this machine has {count} CUDA device(s): start at most {count} processes per node",
            l.local_rank
        );
    }
    Ok(Device::Cuda(l.local_rank))
}

/// The device this process of `train` trains on (under a launch, its share), recorded as
/// its training label with every GPU of its processes on this node (for the queue).
pub(super) fn this_process_device(plan: &Plan, launch: Option<&Launch>) -> Result<Device> {
    let device = match launch {
        Some(l) => launched_device(plan.device_arg, plan.device, plan.gpus.as_deref(), l)?,
        None if plan.gpus.is_some() => bail!(
            "--device {} lists GPUs, one per process: add --nproc {} (or start the processes with torchrun)",
            plan.device_arg,
            plan.gpus.as_ref().map_or(0, Vec::len)
        ),
        None => plan.device,
    };
    let local = match launch {
        Some(l) if l.world > 1 => crate::device::slots::local_processes(),
        _ => 1,
    };
    crate::device::slots::set_training_label(crate::device::slots::processes_label(
        device,
        plan.gpus.as_deref(),
        local,
    ));
    Ok(device)
}

/// Refuses, before connecting, a launch whose world size does not divide `batch.ranks` of
/// what it trains (when that config is readable here; else rank 0 refuses at its setup).
pub(super) fn check_launch(a: &Plan, l: &Launch) -> Result<()> {
    if let Ok(cfg) = planned_config(a) {
        let by = if l.launcher == "srun" {
            "SLURM_NTASKS"
        } else {
            "WORLD_SIZE"
        };
        crate::train::parallel::check_world_size(l.world, cfg.batch.ranks, by)?;
    }
    Ok(())
}

/// This process's world: the launch's group (connected here), or one process.
pub(super) fn world(launch: Option<Launch>, device: Device, timeout: Duration) -> Result<World> {
    match launch {
        Some(l) => World::connect(l, device, timeout),
        None => Ok(World::single()),
    }
}

/// The config of what `a` trains: `--config` with `--set`, or the resumed run's own.
fn planned_config(a: &Plan) -> Result<TrainConfig> {
    match (a.config, a.resume) {
        (Some(c), _) => TrainConfig::load(&crate::config::resolve_config_path(c)?, a.sets),
        (None, Some(r)) => {
            let p: PathBuf = r.join(crate::runs::run_dir::CONFIG_FILE);
            TrainConfig::load(&p, &[]).with_context(|| format!("--resume {}", r.display()))
        }
        (None, None) => bail!("a new run needs --config"),
    }
}

/// `train --nproc N`: N processes of this command on this machine (N = 1 trains here).
pub(super) fn run_nproc(a: &Plan, n: usize) -> Result<Option<ExitCode>> {
    if n == 0 {
        bail!("--nproc 0: at least one process");
    }
    if let Some(l) = crate::dist::env::from_env()? {
        bail!(
            "--nproc {n}: this process is already rank {} of {} started by {} (RANK/WORLD_SIZE are set); leave out --nproc",
            l.rank,
            l.world,
            l.launcher
        );
    }
    if n == 1 {
        return Ok(None);
    }
    let cfg = planned_config(a)?;
    crate::train::parallel::check_world_size(n, cfg.batch.ranks, "--nproc")?;
    let device = a.device;
    if let Some(g) = &a.gpus {
        if g.len() != n {
            bail!(
                "--nproc {n} with --device {}: it lists {} GPU(s), one per process is needed",
                a.device_arg,
                g.len()
            );
        }
    } else if device.is_cuda() && (tch::Cuda::device_count().max(0) as usize) < n {
        bail!(
            "--nproc {n}: this machine has {} CUDA device(s), one per process is needed (or --device cpu)",
            tch::Cuda::device_count()
        );
    }
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let args = crate::jobs::ranks::without_nproc(&args);
    let code = crate::jobs::ranks::run_local(n, &args, timeout(a)?)?;
    let label = crate::device::slots::processes_label(device, a.gpus.as_deref(), n);
    crate::runs::launch::after_training(&label);
    Ok(Some(ExitCode::from(code.clamp(0, 255) as u8)))
}

/// `bench --nproc N`: the bench in this process, then in N processes started like
/// `train --nproc`; rank 0's report (through a file) against this one's.
pub(super) fn bench_nproc(
    opts: &crate::bench::BenchOptions,
    n: usize,
    json: bool,
    timeout: Duration,
) -> Result<()> {
    if let Some(l) = crate::dist::env::from_env()? {
        bail!(
            "--nproc {n}: this process is already rank {} of {} (RANK/WORLD_SIZE are set); leave out --nproc",
            l.rank,
            l.world
        );
    }
    // On the CPU the N processes share its cores: the one-process baseline gets one
    // process's share, so the ratio measures what the collectives cost, not the cores.
    let baseline_threads = (!opts.device.is_cuda())
        .then(|| crate::jobs::ranks::threads_per_process(n))
        .flatten();
    let before = tch::get_num_threads();
    if let Some(t) = baseline_threads {
        tch::set_num_threads(t as i32);
    }
    let one = crate::bench::run(opts);
    tch::set_num_threads(before);
    let one = one?;
    let report = std::env::temp_dir().join(format!("stacklab-bench-{}.json", std::process::id()));
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let mut args = crate::jobs::ranks::without_nproc(&args);
    args.extend(["--report-to".into(), report.clone().into_os_string()]);
    let code = crate::jobs::ranks::run_local(n, &args, timeout)?;
    let text = std::fs::read(&report);
    let _ = std::fs::remove_file(&report);
    if code != 0 {
        bail!("the {n} bench processes failed (exit code {code})");
    }
    let parallel: crate::bench::BenchReport =
        serde_json::from_slice(&text.context("rank 0 wrote no report")?)
            .context("rank 0's bench report")?;
    let threads = baseline_threads.unwrap_or(before.max(1) as usize);
    let r = crate::bench::parallel::scaling(one, parallel, threads);
    if json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        crate::bench::parallel::print_scaling(&r);
    }
    Ok(())
}
