//! Where this process stands in a data-parallel launch, from the environment torchrun sets
//! (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`) or, without those,
//! Slurm's `srun` (`SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`, with `MASTER_ADDR` and
//! `MASTER_PORT` set by the job script). A bad value is refused with the variable named.

use anyhow::{bail, Context, Result};

/// Set by `train --nproc` in each process it starts: the processes' rank 0 hosts the
/// rendezvous store itself (torchrun's agent hosts it for torchrun's workers).
pub const STANDALONE_ENV: &str = "STACKLAB_DIST_STANDALONE";

/// Who hosts the rendezvous store (a c10d `TCPStore`) at `MASTER_ADDR:MASTER_PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreHost {
    /// Rank 0 hosts it (`train --nproc`, Slurm, a hand-made environment).
    RankZero,
    /// torchrun's agent hosts it (`TORCHELASTIC_USE_AGENT_STORE`); every rank is a client,
    /// under the agent's prefix for this restart.
    Agent { prefix: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub rank: usize,
    pub world: usize,
    pub local_rank: usize,
    pub master_addr: String,
    pub master_port: u16,
    pub store: StoreHost,
    /// What set the variables: "torchrun", "srun", "train --nproc" or "the environment".
    pub launcher: &'static str,
}

/// Reads a variable through `get` (the process environment, or a test's map).
fn var(get: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    get(name).map(|v| v.trim().to_string())
}

fn number(get: &dyn Fn(&str) -> Option<String>, name: &str) -> Result<Option<usize>> {
    match var(get, name) {
        None => Ok(None),
        Some(v) => v
            .parse::<usize>()
            .map(Some)
            .with_context(|| format!("{name} = `{v}` is not a non-negative whole number")),
    }
}

fn required(get: &dyn Fn(&str) -> Option<String>, name: &str, why: &str) -> Result<usize> {
    number(get, name)?.with_context(|| format!("{name} is not set ({why})"))
}

/// This process's place in a launch, or `None` when the environment names none (no
/// `WORLD_SIZE`, `RANK`, nor Slurm's `SLURM_PROCID`): then it trains alone.
pub fn from_env() -> Result<Option<Launch>> {
    parse(&|name| std::env::var(name).ok())
}

/// [`from_env`] over any variable source.
pub fn parse(get: &dyn Fn(&str) -> Option<String>) -> Result<Option<Launch>> {
    let (rank, world, local_rank, launcher) =
        if var(get, "WORLD_SIZE").is_some() || var(get, "RANK").is_some() {
            let why = "set it with WORLD_SIZE, or unset both to train in one process";
            let world = required(get, "WORLD_SIZE", why)?;
            let rank = required(get, "RANK", why)?;
            let local = number(get, "LOCAL_RANK")?.unwrap_or(rank);
            let launcher = if var(get, "TORCHELASTIC_RUN_ID").is_some() {
                "torchrun"
            } else if var(get, STANDALONE_ENV).is_some() {
                "train --nproc"
            } else {
                "the environment"
            };
            (rank, world, local, launcher)
        } else if var(get, "SLURM_PROCID").is_some() {
            let why = "srun sets it; run the training under srun";
            let world = required(get, "SLURM_NTASKS", why)?;
            let rank = required(get, "SLURM_PROCID", why)?;
            let local = required(get, "SLURM_LOCALID", why)?;
            (rank, world, local, "srun")
        } else {
            return Ok(None);
        };
    let (rank_var, world_var) = if launcher == "srun" {
        ("SLURM_PROCID", "SLURM_NTASKS")
    } else {
        ("RANK", "WORLD_SIZE")
    };
    if world == 0 {
        bail!("{world_var} = 0: a training needs at least one process");
    }
    if rank >= world {
        bail!(
            "{rank_var} = {rank} is out of range for {world_var} = {world} (ranks are 0 to {})",
            world - 1
        );
    }
    let master_addr = var(get, "MASTER_ADDR").filter(|a| !a.is_empty());
    let master_addr = match (master_addr, world) {
        (Some(a), _) => a,
        (None, 1) => "127.0.0.1".to_string(),
        (None, _) => bail!(
            "MASTER_ADDR is not set: the {world} processes need the address of rank 0's host (e.g. MASTER_ADDR=$(hostname) on it)"
        ),
    };
    let master_port = match var(get, "MASTER_PORT") {
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => bail!("MASTER_PORT = `{p}` is not a port (1 to 65535)"),
        },
        None if world == 1 => 0,
        None => bail!("MASTER_PORT is not set: the {world} processes need a free TCP port on rank 0's host for their rendezvous (e.g. MASTER_PORT=29500)"),
    };
    let store = match var(get, "TORCHELASTIC_USE_AGENT_STORE").as_deref() {
        Some("True") | Some("true") | Some("1") => StoreHost::Agent {
            prefix: format!(
                "/worker/attempt_{}",
                var(get, "TORCHELASTIC_RESTART_COUNT").unwrap_or_else(|| "0".into())
            ),
        },
        _ => StoreHost::RankZero,
    };
    Ok(Some(Launch {
        rank,
        world,
        local_rank,
        master_addr,
        master_port,
        store,
        launcher,
    }))
}

/// Whether `addr` is this machine's loopback (then Gloo binds to 127.0.0.1).
pub fn is_loopback(addr: &str) -> bool {
    addr == "localhost" || addr.starts_with("127.") || addr == "::1"
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse_map(pairs: &[(&str, &str)]) -> Result<Option<Launch>> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(&move |k| m.get(k).cloned())
    }

    fn err(pairs: &[(&str, &str)]) -> String {
        format!("{:#}", parse_map(pairs).unwrap_err())
    }

    #[test]
    fn torchrun_and_slurm_variables_are_read() {
        assert_eq!(parse_map(&[]).unwrap(), None);
        let l = parse_map(&[
            ("RANK", "3"),
            ("WORLD_SIZE", "8"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "node0"),
            ("MASTER_PORT", "29500"),
            ("TORCHELASTIC_RUN_ID", "x"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
            ("TORCHELASTIC_RESTART_COUNT", "2"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((l.rank, l.world, l.local_rank), (3, 8, 1));
        assert_eq!(l.launcher, "torchrun");
        assert_eq!(
            l.store,
            StoreHost::Agent {
                prefix: "/worker/attempt_2".into()
            }
        );
        let s = parse_map(&[
            ("SLURM_PROCID", "5"),
            ("SLURM_NTASKS", "16"),
            ("SLURM_LOCALID", "5"),
            ("MASTER_ADDR", "n1"),
            ("MASTER_PORT", "1234"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            (s.rank, s.world, s.local_rank, s.launcher),
            (5, 16, 5, "srun")
        );
        assert_eq!(s.store, StoreHost::RankZero);
    }

    #[test]
    fn bad_values_are_refused_with_the_variable_named() {
        let base = [("MASTER_ADDR", "h"), ("MASTER_PORT", "29500")];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut v: Vec<(&str, &str)> = base.to_vec();
            v.extend_from_slice(extra);
            err(&v)
        };
        assert!(with(&[("RANK", "2"), ("WORLD_SIZE", "2")])
            .contains("RANK = 2 is out of range for WORLD_SIZE = 2"));
        assert!(with(&[("RANK", "0"), ("WORLD_SIZE", "two")]).contains("WORLD_SIZE = `two`"));
        assert!(with(&[("WORLD_SIZE", "2")]).contains("RANK is not set"));
        assert!(with(&[("RANK", "0"), ("WORLD_SIZE", "0")]).contains("WORLD_SIZE = 0"));
        assert!(with(&[
            ("SLURM_PROCID", "4"),
            ("SLURM_NTASKS", "4"),
            ("SLURM_LOCALID", "0")
        ])
        .contains("SLURM_PROCID = 4 is out of range for SLURM_NTASKS = 4"));
        assert!(with(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "2")]).contains("SLURM_LOCALID"));
        let e = err(&[("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_PORT", "1")]);
        assert!(e.contains("MASTER_ADDR is not set"), "{e}");
        let e = err(&[("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "h")]);
        assert!(e.contains("MASTER_PORT is not set"), "{e}");
        let e = err(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "70000"),
        ]);
        assert!(e.contains("MASTER_PORT = `70000`"), "{e}");
    }
}
