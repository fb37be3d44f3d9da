//! `stacklab data download` against servers that misbehave (a loopback test server, no
//! network): a body without end, a 200 answer to a range request, a redirect from https to
//! plain http, a file that changed between runs, and a busy server (503, 429); and a
//! `data` command never loads libtorch's CUDA library.

mod common;
#[path = "download/server.rs"]
mod server;

use std::path::Path;

use common::Lab;
use server::{download, server_with, shard, text, Answer, Server};

const VAL: &str = "fineweb_val_000000.bin";

/// The files of `dir` (names), sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn a_body_without_end_is_cut_at_the_size_the_header_promises() {
    let lab = Lab::new();
    let server = server_with(0);
    let out = lab.path("fw");
    // No Content-Length: the shard's bytes, then bytes without end.
    server.then(VAL, Answer::Endless);
    let o = download(&lab, &server, out.to_str().unwrap(), &["--shards", "0"]);
    assert!(!o.status.success());
    let e = text(&o.stderr);
    let size = server.bytes(VAL).len();
    assert!(
        e.contains(&format!(
            "sends more than the {size} bytes the header of {VAL} promises"
        )),
        "{e}"
    );
    assert_eq!(files(&out), Vec::<String>::new(), "nothing is kept");
    // The client hung up soon after the promised bytes (socket buffers aside), instead of
    // taking all the server had (256 MiB).
    let sent = server.state.lock().unwrap().endless_sent;
    assert!(sent < 64 << 20, "the server got {sent} bytes out");

    // A Content-Length larger than the header's size is refused once the header is in.
    let lab2 = Lab::new();
    let mut long = server.bytes(VAL);
    long.extend(std::iter::repeat_n(0u8, 10_000));
    server.put(VAL, long);
    let o = download(
        &lab2,
        &server,
        lab2.path("fw").to_str().unwrap(),
        &["--shards", "0"],
    );
    let e = text(&o.stderr);
    assert!(
        !o.status.success() && e.contains("not a valid shard"),
        "{e}"
    );
    assert!(!lab2.path("fw").join(VAL).exists());
}

#[test]
fn a_200_answer_to_a_range_request_starts_over() {
    let lab = Lab::new();
    let server = server_with(0);
    let out = lab.path("fw");
    let out_s = out.to_str().unwrap();
    server.cut_once(VAL, 1500);
    let o = download(&lab, &server, out_s, &["--shards", "0", "--retries", "0"]);
    assert!(!o.status.success());
    // The server then sends the whole file to the range request: it replaces the part.
    server.then(VAL, Answer::IgnoreRange);
    let o = download(&lab, &server, out_s, &["--shards", "0"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let seen = server.seen_for(VAL);
    assert_eq!(seen[1].range.as_deref(), Some("bytes=1500-"), "{seen:?}");
    assert_eq!(std::fs::read(out.join(VAL)).unwrap(), server.bytes(VAL));
    assert_eq!(files(&out), [VAL]);
}

#[test]
fn a_file_changed_between_runs_is_fetched_again_not_mixed() {
    let lab = Lab::new();
    let server = server_with(0);
    let out = lab.path("fw");
    let out_s = out.to_str().unwrap();
    server.cut_once(VAL, 1500);
    assert!(
        !download(&lab, &server, out_s, &["--shards", "0", "--retries", "0"])
            .status
            .success()
    );
    assert!(out.join(format!("{VAL}.part.json")).exists());
    // A new version of the same size: continuing the part would mix two files.
    server.put(VAL, shard(1500, 77));
    let o = download(&lab, &server, out_s, &["--shards", "0"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let seen = server.seen_for(VAL);
    assert_eq!(seen[1].if_range.as_deref(), Some("\"v1\""), "{seen:?}");
    assert_eq!(std::fs::read(out.join(VAL)).unwrap(), server.bytes(VAL));

    // A server that ignores If-Range but names the new version is caught by its ETag.
    let out2 = lab.path("fw2");
    let out2_s = out2.to_str().unwrap();
    server.cut_once(VAL, 1500);
    assert!(
        !download(&lab, &server, out2_s, &["--shards", "0", "--retries", "0"])
            .status
            .success()
    );
    server.put(VAL, shard(1500, 78));
    server.then(VAL, Answer::IgnoreIfRange);
    let o = download(&lab, &server, out2_s, &["--shards", "0"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(std::fs::read(out2.join(VAL)).unwrap(), server.bytes(VAL));

    // Without an ETag or Last-Modified, a part cannot be checked: it is fetched again.
    let out3 = lab.path("fw3");
    let out3_s = out3.to_str().unwrap();
    server.state.lock().unwrap().validators = false;
    server.cut_once(VAL, 1500);
    assert!(
        !download(&lab, &server, out3_s, &["--shards", "0", "--retries", "0"])
            .status
            .success()
    );
    let before = server.seen_for(VAL).len();
    let o = download(&lab, &server, out3_s, &["--shards", "0"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let again = &server.seen_for(VAL)[before];
    assert_eq!(again.range, None, "{again:?}");
    assert_eq!(std::fs::read(out3.join(VAL)).unwrap(), server.bytes(VAL));
    assert_eq!(files(&out3), [VAL]);
}

#[test]
fn an_https_endpoint_is_never_followed_to_plain_http() {
    let lab = Lab::new();
    let plain = server_with(0);
    let tls = Server::start_tls();
    tls.put(VAL, plain.bytes(VAL));
    let ca = server::ca_file();
    let run = |out: &str| {
        let o = lab
            .cmd(&[
                "data",
                "download",
                "fineweb10B",
                "--shards",
                "0",
                "--endpoint",
                &tls.url,
                "--out",
                out,
            ])
            .env("SSL_CERT_FILE", &ca)
            .output()
            .unwrap();
        common::no_panic(&o);
        o
    };
    // Over https with the test CA, the file comes through.
    let o = run(lab.path("ok").to_str().unwrap());
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(
        std::fs::read(lab.path("ok").join(VAL)).unwrap(),
        tls.bytes(VAL)
    );

    // A redirect to the same file over http is refused before any request goes there.
    tls.then(VAL, Answer::Redirect(format!("{}/{VAL}", plain.url)));
    let out = lab.path("fw");
    let o = run(out.to_str().unwrap());
    assert!(!o.status.success());
    let e = text(&o.stderr);
    assert!(
        e.contains(&format!(
            "{}/{VAL} redirected to {}/{VAL}",
            tls.url, plain.url
        )) && e.contains("never followed to plain http"),
        "{e}"
    );
    assert!(plain.seen().is_empty(), "{:?}", plain.seen());
    assert_eq!(files(&out), Vec::<String>::new());
    // It is not retried either.
    assert_eq!(tls.seen_for(VAL).len(), 2);
}

#[test]
fn a_busy_server_is_retried_after_its_retry_after_and_not_forever() {
    let lab = Lab::new();
    let server = server_with(0);
    let out = lab.path("fw");
    server.then(VAL, Answer::Status(503, Some("1".into())));
    let o = download(&lab, &server, out.to_str().unwrap(), &["--shards", "0"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let seen = server.seen_for(VAL);
    assert_eq!(seen.len(), 2, "{seen:?}");
    let waited = seen[1].at - seen[0].at;
    assert!(
        waited >= std::time::Duration::from_secs(1),
        "asked again after {waited:?}, before the Retry-After of 1 s"
    );
    assert_eq!(std::fs::read(out.join(VAL)).unwrap(), server.bytes(VAL));

    // 429 every time: --retries 2 asks three times, then says why it stopped.
    for _ in 0..5 {
        server.then(
            "fineweb_train_000001.bin",
            Answer::Status(429, Some("0".into())),
        );
    }
    server.put("fineweb_train_000001.bin", shard(1000, 1));
    let o = download(
        &lab,
        &server,
        out.to_str().unwrap(),
        &["--shards", "1", "--retries", "2"],
    );
    assert!(!o.status.success());
    let e = text(&o.stderr);
    assert!(
        e.contains("fineweb_train_000001.bin: HTTP status 429"),
        "{e}"
    );
    assert_eq!(server.seen_for("fineweb_train_000001.bin").len(), 3);
}

#[test]
fn a_data_command_does_not_load_libtorchs_cuda_library() {
    let lab = Lab::new();
    let server = server_with(0);
    server.then(VAL, Answer::Stall(std::time::Duration::from_secs(3)));
    let out = lab.path("fw");
    let mut child = lab
        .cmd(&[
            "data",
            "download",
            "fineweb10B",
            "--shards",
            "0",
            "--retries",
            "0",
            "--endpoint",
            &server.url,
            "--out",
            out.to_str().unwrap(),
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // While it waits for the answer, its mappings are what it loaded.
    let started = std::time::Instant::now();
    while server.seen_for(VAL).is_empty() {
        assert!(started.elapsed().as_secs() < 60, "no request came");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", child.id())).unwrap();
    child.wait().unwrap();
    let cpu = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libtorch_cpu.so"))
        .expect("the binary links libtorch_cpu.so");
    let cuda = Path::new(cpu).with_file_name("libtorch_cuda.so");
    if !cuda.exists() {
        eprintln!("a CPU-only libtorch ({cpu}): nothing to check");
    }
    assert!(
        !maps.contains("libtorch_cuda.so"),
        "`data download` mapped {}",
        cuda.display()
    );
}
