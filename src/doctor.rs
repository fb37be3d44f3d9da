//! `stacklab doctor`: what this installation sees (versions, libtorch, devices, folders).

use anyhow::Result;
use serde::Serialize;

use crate::device::{self, CudaLibrary};
use crate::system::labels as figures;
use crate::system::{GpuFigures, HostFigures};

#[derive(Debug, Serialize)]
pub struct GpuReport {
    pub index: usize,
    pub name: Option<String>,
    pub memory_gib: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct DoctorReport {
    pub stacklab_version: String,
    pub git_commit: String,
    pub libtorch_version: Option<String>,
    pub torch_lib_dir: Option<String>,
    pub cuda_library: String,
    pub cuda_available: bool,
    pub cudnn_available: bool,
    pub gpus: Vec<GpuReport>,
    /// What fp32 matmuls (validation) use on CUDA.
    pub cuda_fp32_matmul: String,
    pub default_device: String,
    pub cpu_threads: i32,
    pub data_dir: String,
    pub config_dir: String,
    pub checkpoint_dir: String,
    pub embedded_corpus: String,
    /// Datasets found (the embedded corpus, ./data/*, the data dir's folders) and their tokens.
    pub datasets: Vec<crate::data::on_disk::DatasetSummary>,
    /// The c10d backends of data-parallel training this build has (`gloo`, `nccl`).
    pub dist_backends: Vec<String>,
    /// How the build found (or did not find) each backend's headers.
    pub dist_build: Vec<String>,
    /// What the GPU figures come from (NVML and the driver's version, or the fake source).
    pub gpu_source: String,
    /// Every GPU of the machine now, as the lab's System pane shows them (NVML's numbering).
    pub gpu_figures: Vec<GpuFigures>,
    /// Why there are no GPU figures, when there are none.
    pub no_gpu_figures: Option<String>,
    /// CPU load, memory and the free space of the checkpoint and data folders.
    pub host: HostFigures,
}

pub fn report() -> DoctorReport {
    let rt = device::init();
    let (sample, gpu_source) =
        crate::runs::gpu_use::sample_once(&crate::runs::gpu_use::lab_folders());
    let cuda_count = device::cuda_device_count();
    let gpus = (0..cuda_count)
        .map(|i| {
            let info = device::nvml::gpu(i);
            GpuReport {
                index: i,
                name: info.as_ref().map(|g| g.name.clone()),
                memory_gib: info.map(|g| g.memory_total as f64 / device::GIB),
            }
        })
        .collect();
    let embedded = match crate::data::embedded::prepared() {
        Some(ds) => format!(
            "prepared in {} ({} train / {} val tokens, vocabulary {})",
            ds.dir.display(),
            ds.info.train_tokens,
            ds.info.val_tokens,
            ds.info.vocab_size
        ),
        None => format!(
            "not prepared yet (prepared on first use into {})",
            crate::data::embedded::dir().display()
        ),
    };
    DoctorReport {
        stacklab_version: env!("CARGO_PKG_VERSION").into(),
        git_commit: env!("STACKLAB_GIT_COMMIT").into(),
        libtorch_version: device::libtorch_version(),
        torch_lib_dir: rt.torch_lib_dir.as_ref().map(|p| p.display().to_string()),
        cuda_library: match &rt.cuda_library {
            CudaLibrary::Loaded(p) => format!("loaded {}", p.display()),
            CudaLibrary::Missing(why) => format!("not loaded: {why}"),
        },
        cuda_available: cuda_count > 0,
        cudnn_available: tch::Cuda::cudnn_is_available(),
        gpus,
        cuda_fp32_matmul: device::cuda_fp32_matmul(),
        default_device: device::parse_device("auto")
            .map(device::describe)
            .unwrap_or_else(|e| e.to_string()),
        cpu_threads: tch::get_num_threads(),
        data_dir: crate::paths::data_dir().display().to_string(),
        config_dir: crate::paths::config_dir().display().to_string(),
        checkpoint_dir: crate::paths::checkpoint_dir().display().to_string(),
        embedded_corpus: embedded,
        datasets: crate::data::on_disk::datasets(),
        dist_backends: [
            ("gloo", crate::dist::has_gloo()),
            ("nccl", crate::dist::has_nccl()),
        ]
        .iter()
        .filter(|(_, has)| *has)
        .map(|(name, _)| name.to_string())
        .collect(),
        dist_build: vec![
            crate::dist::gloo_build().to_string(),
            crate::dist::nccl_build().to_string(),
        ],
        gpu_source,
        no_gpu_figures: sample.gpus.as_ref().err().map(ToString::to_string),
        gpu_figures: sample.gpus.unwrap_or_default(),
        host: sample.host,
    }
}

/// The GPUs' and the host's figures, labelled as the System pane labels them.
fn machine_rows(r: &DoctorReport) -> Vec<(&'static str, String)> {
    let mut rows = Vec::new();
    match &r.no_gpu_figures {
        Some(why) => rows.push(("GPU figures", format!("none: {why}"))),
        None => rows.push(("GPU figures", r.gpu_source.clone())),
    }
    for g in &r.gpu_figures {
        let mut figs = figures::gpu_figures(g, false, false);
        figs.push(figures::Figure::new(
            "processes",
            g.processes.len().to_string(),
        ));
        figs.extend(g.processes.iter().map(figures::process_figure));
        let text = format!("{} {}: {}", g.index, g.name, figures::plain(&figs));
        rows.push(("GPU", text));
    }
    rows.push((
        "host",
        figures::plain(&figures::host_figures(&r.host, false)),
    ));
    for d in &r.host.disks {
        rows.push(("disk", figures::plain(&figures::disk_figures(d))));
        if let Some(w) = &d.warning {
            rows.push(("disk warning", format!("{}: {w}", d.label)));
        }
    }
    rows
}

pub fn run(json: bool) -> Result<()> {
    let r = report();
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    let yes_no = |b: bool| if b { "available" } else { "not available" };
    let rows: Vec<(&str, String)> = vec![
        (
            "stacklab",
            format!("{} (commit {})", r.stacklab_version, r.git_commit),
        ),
        (
            "libtorch",
            r.libtorch_version
                .clone()
                .unwrap_or_else(|| "unknown".into()),
        ),
        (
            "torch lib dir",
            r.torch_lib_dir.clone().unwrap_or_else(|| "unknown".into()),
        ),
        ("libtorch_cuda", r.cuda_library.clone()),
        ("CUDA", yes_no(r.cuda_available).into()),
        ("cuDNN", yes_no(r.cudnn_available).into()),
    ];
    let mut rows = rows;
    if r.gpus.is_empty() {
        rows.push(("GPUs", "none".into()));
    }
    for g in &r.gpus {
        rows.push((
            "GPU",
            format!(
                "cuda:{} {} {}",
                g.index,
                g.name.clone().unwrap_or_else(|| "(name unknown)".into()),
                g.memory_gib
                    .map(|m| format!("{m:.1} GiB"))
                    .unwrap_or_default()
            ),
        ));
    }
    rows.extend([
        (
            "fp32 on CUDA",
            format!(
                "{} for validation and precision = \"fp32\"",
                r.cuda_fp32_matmul
            ),
        ),
        ("device in use", r.default_device.clone()),
        (
            "c10d backends",
            match r.dist_backends.is_empty() {
                true => "none (--nproc, torchrun and srun need one)".into(),
                false => r.dist_backends.join(", "),
            },
        ),
        ("c10d build", r.dist_build.join("; ")),
        ("CPU threads", r.cpu_threads.to_string()),
        ("data dir", r.data_dir.clone()),
        ("config dir", r.config_dir.clone()),
        ("checkpoint dir", r.checkpoint_dir.clone()),
        ("embedded corpus", r.embedded_corpus.clone()),
    ]);
    rows.extend(machine_rows(&r));
    for (k, v) in rows {
        println!("{k:<16} {v}");
    }
    println!("datasets");
    for d in &r.datasets {
        println!("  {:<14} {}", d.name, d.describe());
    }
    Ok(())
}
