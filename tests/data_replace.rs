//! `data prepare --force` replaces only a folder that holds a stacklab dataset and nothing
//! else; any other folder is refused by name and left as it was, and a prepare that fails
//! leaves the dataset it was to replace in place.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::Lab;

/// Every file under `dir` with its bytes.
fn contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// The entries of `dir`'s parent besides `dir`, sorted (a temporary folder left behind
/// shows here).
fn siblings(dir: &Path) -> Vec<String> {
    let name = dir.file_name().unwrap();
    let mut v: Vec<String> = std::fs::read_dir(dir.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != name)
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn prepare(lab: &Lab, input: &Path, out: &Path, force: bool) -> std::process::Output {
    let mut args = vec![
        "data",
        "prepare",
        "--input",
        input.to_str().unwrap(),
        "--tokenizer",
        "train:300",
        "--out",
        out.to_str().unwrap(),
    ];
    if force {
        args.push("--force");
    }
    let o = lab.run(&args);
    common::no_panic(&o);
    o
}

const TEXT: &str = "Before we proceed any further, hear me speak.\nSpeak, speak.\n";

#[test]
fn force_refuses_a_folder_that_is_not_only_a_dataset() {
    let lab = Lab::new();
    let input = lab.write("in.txt", &TEXT.repeat(30));
    // A folder of someone's files.
    let notes = lab.path("notes");
    lab.write("notes/paper.tex", "months of work");
    lab.write("notes/figures/plot.svg", "<svg/>");
    let o = prepare(&lab, &input, &notes, true);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains(&format!("--out {}", notes.display()))
            && e.contains("holds no stacklab dataset (no dataset.toml)")
            && e.contains("nothing was changed"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(notes.join("paper.tex")).unwrap(),
        "months of work"
    );
    assert!(notes.join("figures/plot.svg").exists());
    // Without --force it says the same kind of thing, and never offers --force.
    let e = String::from_utf8_lossy(&prepare(&lab, &input, &notes, false).stderr).into_owned();
    assert!(
        e.contains("holds no stacklab dataset") && !e.contains("--force"),
        "{e}"
    );

    // A dataset folder someone added a file to.
    let out = lab.path("ds");
    let o = prepare(&lab, &input, &out, false);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    lab.write("ds/README.md", "what this data is");
    let before = contents(&out);
    let o = prepare(&lab, &input, &out, true);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("holds README.md besides its dataset") && e.contains("move them away first"),
        "{e}"
    );
    assert_eq!(contents(&out), before, "nothing is deleted");

    // A folder with a dataset.toml that is not a dataset summary.
    lab.write("fake/dataset.toml", "hello = 1\n");
    let o = prepare(&lab, &input, &lab.path("fake"), true);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("not a stacklab dataset summary"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(lab.path("fake/dataset.toml")).unwrap(),
        "hello = 1\n"
    );
    assert!(
        siblings(&out).iter().all(|s| !s.starts_with('.')),
        "{:?}",
        siblings(&out)
    );
}

#[test]
fn force_replaces_a_dataset_and_a_failed_replacement_keeps_the_old_one() {
    let lab = Lab::new();
    let out = lab.path("ds");
    let first = lab.write("first.txt", &TEXT.repeat(30));
    assert!(prepare(&lab, &first, &out, false).status.success());
    let old = contents(&out);

    // A prepare that fails part-way (the second file is not UTF-8) changes nothing.
    let docs = lab.path("docs");
    lab.write("docs/a.txt", &TEXT.repeat(50));
    std::fs::write(docs.join("b.txt"), [0xff, 0xfe, 0x00, 0x41]).unwrap();
    let o = prepare(&lab, &docs, &out, true);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("not UTF-8 text"), "{e}");
    assert_eq!(contents(&out), old, "the old dataset is untouched");
    assert_eq!(
        siblings(&out),
        ["docs", "first.txt"],
        "no temporary folder is left"
    );

    // One that fails at the very end (too few tokens to split) changes nothing either.
    let few = lab.write("few.txt", "a");
    assert!(!prepare(&lab, &few, &out, true).status.success());
    assert_eq!(contents(&out), old);

    // A good one replaces it.
    let second = lab.write("second.txt", &TEXT.repeat(90));
    let o = prepare(&lab, &second, &out, true);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let info = std::fs::read_to_string(out.join("dataset.toml")).unwrap();
    assert!(
        info.contains("second.txt") && !info.contains("first.txt"),
        "{info}"
    );
    assert_eq!(
        siblings(&out),
        ["docs", "few.txt", "first.txt", "second.txt"]
    );
}
