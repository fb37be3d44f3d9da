//! A results CSV given to `sweep --report`: the seed's published rows or a sweep's own,
//! read and turned into the tables.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let csv = stacklab_fuzz::file("report/results.csv", data);
    let out = csv.parent().expect("a folder");
    if let Ok(md) = stacklab::sweep::run::write_tables(&csv, out) {
        assert!(md.starts_with("# Results"), "tables begin with their title");
    }
});
