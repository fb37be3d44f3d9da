//! A stack spec file (`stack --spec`). A spec that loads writes TOML that loads back to it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use stacklab::stack::spec::StackSpec;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(spec) = StackSpec::from_toml_str(text, "fuzz.toml") {
        let again = StackSpec::from_toml_str(&spec.to_toml_string(), "written.toml")
            .expect("a spec stacklab accepted writes TOML it accepts");
        assert_eq!(again, spec, "a spec survives writing and reading");
    }
});
