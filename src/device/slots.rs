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

/// The devices a training's processes on this node use, as one label: `cpu`, `cuda:1`, or
/// `cuda:2,cuda:3` for two processes on `cuda:LOCAL_RANK` under `CUDA_VISIBLE_DEVICES=2,3`
/// (GPUs named as the machine numbers them, so the queue counts each against its slots).
pub fn label(device: Device, local_processes: usize) -> String {
    let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    label_under(device, local_processes, visible.as_deref())
}

/// [`label`] under a given `CUDA_VISIBLE_DEVICES`.
pub fn label_under(device: Device, local_processes: usize, visible: Option<&str>) -> String {
    let Device::Cuda(first) = device else {
        return super::name(device);
    };
    let listed: Option<Vec<&str>> = visible
        .filter(|v| !v.trim().is_empty())
        .map(|v| v.split(',').map(str::trim).collect());
    let ordinals: Vec<usize> = if local_processes > 1 {
        (0..local_processes).collect()
    } else {
        vec![first]
    };
    ordinals
        .iter()
        .map(|&i| match listed.as_ref().and_then(|l| l.get(i)) {
            Some(n) if n.parse::<usize>().is_ok() => format!("cuda:{n}"),
            _ => format!("cuda:{i}"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// This training's [`label`]: its device, or the GPUs of its processes on this node.
pub fn training_label(device: Device) -> String {
    label(device, local_processes())
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
    fn a_label_names_every_gpu_of_the_training_as_the_machine_numbers_them() {
        assert_eq!(label_under(Device::Cpu, 4, Some("2,3")), "cpu");
        assert_eq!(label_under(Device::Cuda(1), 1, None), "cuda:1");
        assert_eq!(label_under(Device::Cuda(0), 1, Some("5,6")), "cuda:5");
        assert_eq!(
            label_under(Device::Cuda(0), 2, Some("2, 3")),
            "cuda:2,cuda:3"
        );
        assert_eq!(label_under(Device::Cuda(0), 2, None), "cuda:0,cuda:1");
        // UUIDs are not ordinals: the process's own numbering stands.
        assert_eq!(label_under(Device::Cuda(0), 1, Some("GPU-8f1c")), "cuda:0");
        let all: Vec<&str> = devices_of("cuda:2,cuda:3").collect();
        assert_eq!(all, ["cuda:2", "cuda:3"]);
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
