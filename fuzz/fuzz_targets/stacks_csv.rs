//! The lab's `stacks.csv` (what `stack --results` appends and scripts may edit): its rows
//! read by the stack builder, sorted each way, and their ranges checked against part depths
//! as reopening a row does.
#![no_main]
use libfuzzer_sys::fuzz_target;
use stacklab::tui::panes::builder::results::{check_ranges, load, sort, SortBy};

fuzz_target!(|data: &[u8]| {
    let p = stacklab_fuzz::file("lab/stacks.csv", data);
    let Ok((mut rows, _bad)) = load(&p) else {
        return;
    };
    for by in [SortBy::Newest, SortBy::StackLoss, SortBy::Delta] {
        sort(&mut rows, by);
    }
    for row in &rows {
        for depths in [&[1i64, 1][..], &[4, 4], &[12, 12, 12], &[0, 3]] {
            if check_ranges(row, depths).is_ok() && !row.ranges_text.trim().is_empty() {
                for (r, d) in row.ranges.iter().zip(depths) {
                    assert!(0 <= r.start && r.start < r.end && r.end <= *d);
                }
            }
        }
    }
});
