//! Inputs the fuzz targets (`fuzz/`, `scripts/fuzz.sh`) found crashing stacklab, kept as
//! tests of the normal suite: each must now give a clear result or error, never a panic.

use std::path::Path;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fuzz")
        .join(name)
}

/// The seed's rows with the training norms (`norm_wtes`) but no `norm_lm_head` column: the
/// stack's norms are unknown, so whether a part was trained with others is unknown too
/// (empty), not a panic on the missing column.
#[test]
fn seed_rows_with_training_norms_but_no_stack_norms_make_tables() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("results.csv");
    std::fs::copy(fixture("seed_results_norm_lm_head_missing.csv"), &csv).unwrap();
    let md = stacklab::sweep::run::write_tables(&csv, dir.path()).unwrap();
    assert!(md.starts_with("# Results (1 rows of"), "{md}");
    let rows = stacklab::sweep::tables::Rows::read_csv(&csv).unwrap();
    let converted = stacklab::sweep::seed_rows::from_seed_rows(&rows).unwrap();
    assert_eq!(converted.rows[0]["norm_mismatch"], "");
    assert_eq!(
        converted.rows[0]["training_norms"],
        "rms_norm/rms_norm + rms_norm/rms_norm"
    );
}

/// A shard header shorter than a header is refused, naming the file.
#[test]
fn a_short_shard_header_is_an_error() {
    let e = stacklab::data::shard::check_header(Path::new("x.bin"), &[1, 2, 3], 3).unwrap_err();
    assert!(e.to_string().contains("x.bin"), "{e}");
}
