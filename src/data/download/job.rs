//! One file to fetch, how its bytes are reported, and the checks of its shard header that
//! both a transfer and the final check make.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};

use crate::data::shard::{check_header, HEADER_BYTES};

/// One file to fetch.
#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub url: String,
    pub dest: PathBuf,
}

impl Job {
    pub fn part(&self) -> PathBuf {
        let mut p = self.dest.clone().into_os_string();
        p.push(".part");
        PathBuf::from(p)
    }
}

/// Progress reporting shared by the workers.
pub trait Progress: Sync {
    /// The size of a file's remaining bytes became known.
    fn sized(&self, remaining: u64);
    fn advanced(&self, bytes: u64);
}

pub(super) fn not_a_shard(e: anyhow::Error, job: &Job) -> anyhow::Error {
    anyhow!(
        "{e}\n{} as served by {} is not a valid shard; it was removed (run again to fetch it anew, or use another --endpoint)",
        job.name,
        job.url
    )
}

/// The size a shard's header promises (header + 2 bytes a token), its magic and version
/// checked; with `announced` (the server's size), that it agrees.
pub(super) fn promised_size(job: &Job, header: &[u8], announced: Option<u64>) -> Result<u64> {
    let count = i32::from_le_bytes(header[8..12].try_into().expect("4 bytes")).max(0) as u64;
    let promised = HEADER_BYTES as u64 + 2 * count;
    check_header(Path::new(&job.name), header, announced.unwrap_or(promised))?;
    Ok(promised)
}

pub(super) fn read_part_header(part: &Path) -> std::io::Result<[u8; HEADER_BYTES]> {
    let mut header = [0u8; HEADER_BYTES];
    File::open(part)?.read_exact(&mut header)?;
    Ok(header)
}
