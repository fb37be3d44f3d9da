//! `stacklab data download` against a small HTTP server started by the test (no network):
//! resumed downloads are byte-identical, bad shards are refused with the file named,
//! `--shards 0` fetches only val, complete files are not fetched again, and an unreachable
//! endpoint gives an error that names the URL and what to do.

mod common;
#[path = "download/server.rs"]
mod server;

use std::net::TcpListener;

use common::Lab;
use server::{download, server_with, shard, text};

#[test]
fn an_interrupted_download_resumes_to_identical_files() {
    let lab = Lab::new();
    let server = server_with(2);
    let out = lab.path("fw");
    let out_s = out.to_str().unwrap();
    let val = "fineweb_val_000000.bin";

    // The val shard's transfer breaks after 1,500 bytes and this run does not retry.
    server.cut_once(val, 1500);
    let o = download(
        &lab,
        &server,
        out_s,
        &["--shards", "2", "--retries", "0", "--jobs", "1"],
    );
    assert!(
        !o.status.success(),
        "a broken transfer without retries fails"
    );
    let e = text(&o.stderr);
    // For people reading the run (`-- --nocapture`): what a user sees.
    eprintln!("--- interrupted run\n{}{e}", text(&o.stdout));
    assert!(e.contains("cannot download fineweb_val_000000.bin"), "{e}");
    assert!(e.contains("next run continues from there"), "{e}");
    assert_eq!(
        std::fs::metadata(out.join(format!("{val}.part")))
            .unwrap()
            .len(),
        1500
    );
    assert!(
        !out.join(val).exists(),
        "an unchecked file is never in place"
    );

    // The next run continues the partial file with a range request.
    let o = download(&lab, &server, out_s, &["--shards", "2"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    eprintln!("--- resumed run\n{}{}", text(&o.stdout), text(&o.stderr));
    let seen = server.seen_for(val);
    assert!(
        seen.iter()
            .any(|s| s.range.as_deref() == Some("bytes=1500-")
                && s.if_range.as_deref() == Some("\"v1\"")),
        "continued with If-Range naming the version it began: {seen:?}"
    );
    // Within one run, a transfer that breaks is retried from where it stopped.
    let out2 = lab.path("fw2");
    let train1 = "fineweb_train_000001.bin";
    server.cut_once(train1, 2000);
    let o = download(&lab, &server, out2.to_str().unwrap(), &["--shards", "2"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(server
        .seen_for(train1)
        .iter()
        .any(|s| s.range.as_deref() == Some("bytes=2000-")));

    for dir in [&out, &out2] {
        for name in [val, train1, "fineweb_train_000002.bin"] {
            assert_eq!(
                std::fs::read(dir.join(name)).unwrap(),
                server.bytes(name),
                "{name} is byte-identical"
            );
            assert!(!dir.join(format!("{name}.part")).exists());
            assert!(!dir.join(format!("{name}.part.json")).exists());
        }
    }
    let stdout = text(&o.stdout);
    assert!(stdout.contains("3 file(s), 3530 tokens"), "{stdout}");
}

#[test]
fn complete_files_are_not_fetched_again_and_shards_0_is_val_only() {
    let lab = Lab::new();
    let server = server_with(3);
    // Default --out (data/fineweb10B under the current folder) and the endpoint from the
    // environment variable.
    let o = lab
        .cmd(&["data", "download", "fineweb10B", "--shards", "0"])
        .env("STACKLAB_DATA_ENDPOINT", &server.url)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let dir = lab.path("data/fineweb10B");
    let files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, vec!["fineweb_val_000000.bin".to_string()]);
    assert_eq!(server.seen().len(), 1);

    let out = dir.to_str().unwrap();
    let o = download(&lab, &server, out, &["--shards", "2"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let requested: Vec<String> = server.seen().iter().map(|s| s.file.clone()).collect();
    assert_eq!(
        requested.iter().filter(|f| f.contains("val")).count(),
        1,
        "the complete val shard is not fetched again: {requested:?}"
    );
    let before = server.seen().len();
    let o = download(&lab, &server, out, &["--shards", "2"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(
        server.seen().len(),
        before,
        "nothing fetched when all is present"
    );
    assert!(
        text(&o.stderr).contains("3 present, 0 to fetch"),
        "{}",
        text(&o.stderr)
    );

    // doctor sees the set and its tokens.
    let doc = lab.ok(&["doctor", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&doc).unwrap();
    let fw = v["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "fineweb10B")
        .unwrap_or_else(|| panic!("{doc}"))
        .clone();
    assert_eq!(fw["present"], true);
    assert_eq!(fw["val_tokens"], 1500);
    assert_eq!(fw["train_tokens"], 1010 + 1020);
    assert_eq!(fw["train_shards"], 2);
}

#[test]
fn truncated_or_corrupt_shards_are_refused_with_the_file_named() {
    let lab = Lab::new();
    let server = server_with(2);
    // A shard whose header promises more tokens than the file holds, and one that is not a
    // shard at all.
    let mut truncated = shard(1000, 1);
    truncated.truncate(truncated.len() - 100);
    let mut corrupt = shard(1000, 2);
    corrupt[0..4].copy_from_slice(&12345i32.to_le_bytes());
    let name = "fineweb_train_000001.bin";
    for (case, bytes, why) in [
        ("truncated", truncated, "header says 1000 tokens"),
        ("corrupt", corrupt, "wrong magic number 12345"),
    ] {
        server.put(name, bytes);
        let out = lab.path(case);
        // One file at a time: val (good) first, then the refused one.
        let o = download(
            &lab,
            &server,
            out.to_str().unwrap(),
            &["--shards", "1", "--jobs", "1"],
        );
        assert!(!o.status.success());
        let e = text(&o.stderr);
        assert!(e.contains(name) && e.contains(why), "{e}");
        assert!(e.contains("not a valid shard"), "{e}");
        assert!(
            !out.join(name).exists(),
            "a refused shard is not put in place"
        );
        assert!(!out.join(format!("{name}.part")).exists());
        assert!(
            out.join("fineweb_val_000000.bin").exists(),
            "the good file is kept"
        );
    }
}

#[test]
fn an_unreachable_endpoint_names_the_url_and_the_way_out() {
    let lab = Lab::new();
    // A port nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let out = lab.path("fw");
    let e = lab.fails(&[
        "data",
        "download",
        "fineweb10B",
        "--shards",
        "1",
        "--endpoint",
        &url,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(e.contains(&format!("cannot reach {url}/fineweb_")), "{e}");
    assert!(e.contains("--endpoint"), "{e}");
    let e = lab.fails(&["data", "download", "fineweb100B"]);
    assert!(e.contains("unknown dataset `fineweb100B`"), "{e}");
    let e = lab.fails(&["data", "download", "fineweb10B", "--shards", "104"]);
    assert!(e.contains("--shards 104"), "{e}");
}
