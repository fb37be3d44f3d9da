//! A native checkpoint folder (`meta.toml`, then `model.safetensors` after a NUL byte) opened
//! and loaded as a model, and the weights alone loaded as a seed-format file (its metadata
//! from `stacklab export`); a model that loads computes a loss.
#![no_main]
use libfuzzer_sys::fuzz_target;
use stacklab::model::weights::{load_seed_file, SeedOptions};
use stacklab::model::{Compute, Gpt};
use stacklab::runs::checkpoint::Checkpoint;
use tch::{Device, Kind, Tensor};

fn exercise(model: &Gpt) {
    // A small model only: the loss is a check that what loaded is usable, not a benchmark.
    if model.num_parameters() > 2_000_000 || model.cfg.seq_len < 2 {
        return;
    }
    let t = model.cfg.seq_len.min(4);
    let idx = Tensor::arange(t, (Kind::Int64, Device::Cpu)).remainder(model.cfg.vocab_size);
    let idx = idx.unsqueeze(0);
    let loss = model.loss(&idx, &idx, Compute::Fp32);
    let _ = loss.double_value(&[]);
}

fuzz_target!(|data: &[u8]| {
    tch::set_num_threads(1);
    let (meta, weights) = stacklab_fuzz::split_nul(data);
    let dir = stacklab_fuzz::scratch().join("run").join("step_000001");
    stacklab_fuzz::file("run/step_000001/meta.toml", meta);
    let w = stacklab_fuzz::file("run/step_000001/model.safetensors", weights);
    if let Ok(ck) = Checkpoint::open(&dir) {
        if let Ok(model) = ck.load_model(Device::Cpu) {
            exercise(&model);
        }
    }
    if let Ok(model) = load_seed_file(&w, &SeedOptions::default(), Device::Cpu) {
        exercise(&model);
    }
});
