//! What a child process writes, as the lab reads it (`jobs::child::decode_line`): lines
//! that are not necessarily UTF-8, on stderr each a progress event or text, on stdout text.
//! A progress event written again reads back the same; nothing is lost or panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use stacklab::jobs::child::{decode_line, ChildEvent};
use stacklab::progress::parse;

fuzz_target!(|data: &[u8]| {
    for line in data.split_inclusive(|&b| b == b'\n') {
        match decode_line(line, false) {
            ChildEvent::Progress(p) => {
                let again = serde_json::json!({ "progress": p }).to_string();
                assert_eq!(parse(&again), Some(p));
            }
            ChildEvent::Stderr(text) => {
                assert!(!text.ends_with('\n'), "a line keeps no line break");
                assert!(parse(&text).is_none());
            }
            other => panic!("stderr decoded as {other:?}"),
        }
        assert!(matches!(decode_line(line, true), ChildEvent::Stdout(_)));
    }
});
