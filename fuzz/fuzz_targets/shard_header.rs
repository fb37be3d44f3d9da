//! A token shard's header (magic, version, count) against its file size, then reading the
//! tokens of a shard that opened.
#![no_main]
use libfuzzer_sys::fuzz_target;
use stacklab::data::shard::{check_header, Shard, HEADER_BYTES};

fuzz_target!(|data: &[u8]| {
    let p = stacklab_fuzz::file("shard.bin", data);
    match Shard::open(&p) {
        Ok(s) => {
            let n = s.len();
            assert_eq!(
                HEADER_BYTES + 2 * n,
                data.len(),
                "a shard's size is its header's count"
            );
            if n > 0 {
                let _ = s.token(n - 1);
                assert_eq!(s.window_i64(0, n.min(64)).len(), n.min(64));
            }
            assert_eq!(s.max_token().is_some(), n > 0);
        }
        Err(e) => {
            let m = stacklab_fuzz::message(&e);
            assert!(
                m.contains(&p.display().to_string()),
                "the error names the shard: {m}"
            );
        }
    }
    // The header check alone, for any header length a caller could pass.
    let _ = check_header(&p, &data[..data.len().min(HEADER_BYTES)], data.len() as u64);
});
