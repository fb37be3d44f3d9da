//! What a child process writes on stderr, as the lab reads it: lines (not necessarily
//! UTF-8), each a progress event or text. A progress event written again reads back the same.
#![no_main]
use libfuzzer_sys::fuzz_target;
use stacklab::progress::parse;

fuzz_target!(|data: &[u8]| {
    for line in data.split(|&b| b == b'\n') {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches(['\n', '\r']);
        if let Some(p) = parse(text) {
            let again = serde_json::json!({ "progress": p }).to_string();
            assert_eq!(parse(&again), Some(p));
        }
    }
});
