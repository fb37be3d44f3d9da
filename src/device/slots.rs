//! Device lists: where a sweep or the lab's queue may run work (`--devices cuda:0,cuda:1`,
//! lab.toml's `devices`). Every entry is a slot; a device listed twice (`cpu,cpu`) runs two
//! jobs at once.

use anyhow::{bail, Context, Result};
use tch::Device;

/// Every GPU of this machine (`cuda:0`, `cuda:1`, ...), or `cpu` without one.
pub fn every_device() -> Vec<String> {
    match super::cuda_device_count() {
        0 => vec!["cpu".to_string()],
        n => (0..n).map(|i| format!("cuda:{i}")).collect(),
    }
}

/// A comma-separated list of devices, each as `--device` takes it, by canonical name
/// (`cuda` is `cuda:0`); `auto` (or `all`) alone is every device.
pub fn parse_device_list(list: &str) -> Result<Vec<String>> {
    let entries: Vec<&str> = list.split(',').map(str::trim).collect();
    if entries.iter().any(|e| e.is_empty()) {
        bail!("`{list}`: expected devices separated by commas, e.g. cuda:0,cuda:1 or cpu,cpu");
    }
    if let ["auto" | "all"] = entries.as_slice() {
        return Ok(every_device());
    }
    entries
        .iter()
        .map(|e| {
            if matches!(*e, "auto" | "all") {
                bail!("`{e}` stands for every device and cannot be one entry of a list");
            }
            super::parse_device(e)
                .map(super::name)
                .with_context(|| format!("`{e}` in `{list}`"))
        })
        .collect()
}

/// The GPUs of a `--device` list (`cuda:1,cuda:3`: a training in several processes,
/// process k on the k-th), by syntax alone: each `cuda:N`, none twice. `None` for one
/// device.
pub fn gpu_ordinals(spec: &str) -> Result<Option<Vec<usize>>> {
    if !spec.contains(',') {
        return Ok(None);
    }
    let mut gpus = Vec::new();
    for e in spec.split(',').map(str::trim) {
        let Some(Ok(i)) = e.strip_prefix("cuda:").map(str::parse::<usize>) else {
            bail!("`{e}` in `{spec}`: a list of devices names GPUs, cuda:N each (one per process)");
        };
        if gpus.contains(&i) {
            bail!("`{spec}` names cuda:{i} twice: one process per GPU");
        }
        gpus.push(i);
    }
    Ok(Some(gpus))
}

/// [`gpu_ordinals`], each GPU one this machine has.
pub fn parse_gpu_list(spec: &str) -> Result<Option<Vec<usize>>> {
    let gpus = gpu_ordinals(spec)?;
    for &i in gpus.iter().flatten() {
        super::parse_device(&format!("cuda:{i}")).with_context(|| format!("`{spec}`"))?;
    }
    Ok(gpus)
}

/// The devices a training's processes on this node use, as one label: `cpu`, `cuda:1`, the
/// GPUs of a `--device` list (`cuda:1,cuda:3`), or `cuda:0..` for `local_processes` on
/// `cuda:LOCAL_RANK`. The queue counts a training against each.
pub fn processes_label(device: Device, gpus: Option<&[usize]>, local_processes: usize) -> String {
    let cudas = |it: &mut dyn Iterator<Item = usize>| {
        it.map(|i| format!("cuda:{i}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    match (device, gpus) {
        (Device::Cuda(_), Some(g)) => cudas(&mut g.iter().copied()),
        (Device::Cuda(_), None) if local_processes > 1 => cudas(&mut (0..local_processes)),
        _ => super::name(device),
    }
}

static TRAINING_LABEL: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Records this process's training label (once, before it trains).
pub fn set_training_label(label: String) {
    let _ = TRAINING_LABEL.set(label);
}

/// This process's training label ([`set_training_label`]), else its device's name.
pub fn training_label(device: Device) -> String {
    TRAINING_LABEL
        .get()
        .cloned()
        .unwrap_or_else(|| super::name(device))
}

/// The processes of this training on this node (`LOCAL_WORLD_SIZE`, which `train --nproc`
/// and torchrun set; one otherwise).
pub fn local_processes() -> usize {
    std::env::var("LOCAL_WORLD_SIZE")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|&n| n >= 1)
        .unwrap_or(1)
}

/// The devices of a [`label`].
pub fn devices_of(label: &str) -> impl Iterator<Item = &str> {
    label.split(',').map(str::trim).filter(|d| !d.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_names_every_gpu_of_the_training() {
        assert_eq!(processes_label(Device::Cpu, None, 4), "cpu");
        assert_eq!(processes_label(Device::Cuda(1), None, 1), "cuda:1");
        assert_eq!(
            processes_label(Device::Cuda(1), Some(&[1, 3]), 2),
            "cuda:1,cuda:3"
        );
        assert_eq!(processes_label(Device::Cuda(0), None, 2), "cuda:0,cuda:1");
        let all: Vec<&str> = devices_of("cuda:2,cuda:3").collect();
        assert_eq!(all, ["cuda:2", "cuda:3"]);
        assert_eq!(gpu_ordinals("cuda:1").unwrap(), None);
        assert_eq!(gpu_ordinals("cuda:1, cuda:3").unwrap(), Some(vec![1, 3]));
        for (bad, says) in [
            ("cpu,cuda:0", "`cpu` in `cpu,cuda:0`"),
            ("cuda:1,cuda:1", "names cuda:1 twice"),
            ("cuda:1,", "`` in `cuda:1,`"),
        ] {
            let e = gpu_ordinals(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        if crate::device::cuda_device_count() == 0 {
            let e = format!("{:#}", parse_gpu_list("cuda:0,cuda:1").unwrap_err());
            assert!(e.contains("CUDA is not available"), "{e}");
        }
    }

    #[test]
    fn lists_name_their_slots_and_refuse_what_is_not_a_device() {
        assert_eq!(parse_device_list("cpu,cpu").unwrap(), ["cpu", "cpu"]);
        assert_eq!(parse_device_list(" cpu ").unwrap(), ["cpu"]);
        assert_eq!(parse_device_list("auto").unwrap(), every_device());
        for bad in ["", "cpu,", "cpu,,cpu", "tpu", "cpu,auto"] {
            assert!(parse_device_list(bad).is_err(), "{bad:?}");
        }
        if crate::device::cuda_device_count() == 0 {
            assert_eq!(every_device(), ["cpu"]);
            let e = format!("{:#}", parse_device_list("cpu,cuda:1").unwrap_err());
            assert!(e.contains("`cuda:1` in `cpu,cuda:1`"), "{e}");
        }
    }
}
