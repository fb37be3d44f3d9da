//! Device lists: where a sweep or the lab's queue may run work (`--devices cuda:0,cuda:1`,
//! lab.toml's `devices`). Every entry is a slot; a device listed twice (`cpu,cpu`) runs two
//! jobs at once.

use anyhow::{bail, Context, Result};

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

#[cfg(test)]
mod tests {
    use super::*;

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
