//! A training config's TOML, with `--set KEY=VALUE` overrides (the lines after a NUL byte).
//! A config that loads writes TOML that loads back to the same config.
#![no_main]
use libfuzzer_sys::fuzz_target;
use stacklab::config::TrainConfig;

fuzz_target!(|data: &[u8]| {
    let (text, sets) = stacklab_fuzz::split_nul(data);
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let overrides: Vec<String> = String::from_utf8_lossy(sets)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if let Ok(cfg) = TrainConfig::from_toml_str(text, "fuzz.toml", &overrides) {
        let again = TrainConfig::from_toml_str(&cfg.to_toml_string(), "written.toml", &[])
            .expect("a config stacklab accepted writes TOML it accepts");
        assert_eq!(again, cfg, "a config survives writing and reading");
    }
});
