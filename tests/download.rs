//! `stacklab data download` against a small HTTP server started by the test (no network):
//! resumed downloads are byte-identical, bad shards are refused with the file named,
//! `--shards 0` fetches only val, complete files are not fetched again, and an unreachable
//! endpoint gives an error that names the URL and what to do.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use common::Lab;

/// A request the server saw: the file and its Range header.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    file: String,
    range: Option<String>,
}

#[derive(Default)]
struct State {
    files: HashMap<String, Vec<u8>>,
    /// Cut the next response for a file after this many body bytes (once).
    cut: HashMap<String, usize>,
    seen: Vec<Seen>,
}

struct Server {
    url: String,
    state: Arc<Mutex<State>>,
}

impl Server {
    fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || serve(conn, &st));
            }
        });
        Server { url, state }
    }
    fn put(&self, name: &str, bytes: Vec<u8>) {
        self.state.lock().unwrap().files.insert(name.into(), bytes);
    }
    fn cut_once(&self, name: &str, after: usize) {
        self.state.lock().unwrap().cut.insert(name.into(), after);
    }
    fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }
}

/// One HTTP/1.1 request per connection; `Range: bytes=N-` is honoured with a 206.
fn serve(mut conn: TcpStream, st: &Mutex<State>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut first = String::new();
    if reader.read_line(&mut first).is_err() {
        return;
    }
    let mut range = None;
    loop {
        let mut l = String::new();
        if reader.read_line(&mut l).unwrap_or(0) == 0 || l.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            }
        }
    }
    let file = first
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .trim_start_matches('/')
        .to_string();
    let (body, cut) = {
        let mut s = st.lock().unwrap();
        s.seen.push(Seen {
            file: file.clone(),
            range: range.clone(),
        });
        (s.files.get(&file).cloned(), s.cut.remove(&file))
    };
    let Some(body) = body else {
        let _ = conn
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    };
    let start: usize = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let head = if range.is_some() {
        if start >= body.len() {
            let h = format!(
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(h.as_bytes());
            return;
        }
        format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{}/{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len() - 1,
            body.len(),
            body.len() - start
        )
    } else {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
    };
    let rest = &body[start..];
    let send = cut.map_or(rest.len(), |c| c.min(rest.len()));
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(&rest[..send]);
    let _ = conn.flush();
    // Dropping the connection here cuts a response short.
}

/// A tiny valid shard of `n` tokens.
fn shard(n: usize, seed: u32) -> Vec<u8> {
    let toks: Vec<u16> = (0..n as u32)
        .map(|i| ((i * 7919 + seed * 104_729) % 50_257) as u16)
        .collect();
    stacklab::data::shard::encode(&toks).unwrap()
}

fn server_with(n_train: usize) -> Server {
    let s = Server::start();
    s.put("fineweb_val_000000.bin", shard(1500, 0));
    for i in 1..=n_train {
        s.put(
            &format!("fineweb_train_{i:06}.bin"),
            shard(1000 + 10 * i, i as u32),
        );
    }
    s
}

fn download(lab: &Lab, server: &Server, out: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "data",
        "download",
        "fineweb10B",
        "--endpoint",
        &server.url,
        "--out",
        out,
    ];
    args.extend_from_slice(extra);
    let o = lab.run(&args);
    common::no_panic(&o);
    o
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

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
    let seen = server.seen();
    assert!(
        seen.contains(&Seen {
            file: val.into(),
            range: Some("bytes=1500-".into())
        }),
        "{seen:?}"
    );
    // Within one run, a transfer that breaks is retried from where it stopped.
    let out2 = lab.path("fw2");
    let train1 = "fineweb_train_000001.bin";
    server.cut_once(train1, 2000);
    let o = download(&lab, &server, out2.to_str().unwrap(), &["--shards", "2"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(server.seen().contains(&Seen {
        file: train1.into(),
        range: Some("bytes=2000-".into())
    }));

    let st = server.state.lock().unwrap();
    for dir in [&out, &out2] {
        for (name, bytes) in &st.files {
            assert_eq!(
                &std::fs::read(dir.join(name)).unwrap(),
                bytes,
                "{name} is byte-identical"
            );
            assert!(!dir.join(format!("{name}.part")).exists());
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
