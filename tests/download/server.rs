//! A small HTTP/1.1 file server on 127.0.0.1 for the download tests (no network): plain or
//! TLS (the certificate in tests/fixtures/tls), ETag and Last-Modified on every file,
//! `Range: bytes=N-` answered with a 206 unless `If-Range` names another version, and
//! one-off misbehaviours queued per file.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Instant;

// The helpers every download test uses.

/// A tiny valid shard of `n` tokens.
pub fn shard(n: usize, seed: u32) -> Vec<u8> {
    let toks: Vec<u16> = (0..n as u32)
        .map(|i| ((i * 7919 + seed * 104_729) % 50_257) as u16)
        .collect();
    stacklab::data::shard::encode(&toks).unwrap()
}

pub fn server_with(n_train: usize) -> Server {
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

pub fn download(
    lab: &super::common::Lab,
    server: &Server,
    out: &str,
    extra: &[&str],
) -> std::process::Output {
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
    super::common::no_panic(&o);
    o
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A request the server saw: the file, its Range and If-Range headers, when.
#[derive(Debug, Clone)]
pub struct Seen {
    pub file: String,
    pub range: Option<String>,
    pub if_range: Option<String>,
    pub at: Instant,
}

/// How the server answers one request for a file (queued with [`Server::then`]).
#[derive(Debug, Clone)]
pub enum Answer {
    /// A status with no body, and a Retry-After header when given.
    Status(u16, Option<String>),
    /// `302 Found` to this URL.
    Redirect(String),
    /// The whole file with a 200, whatever Range asked.
    IgnoreRange,
    /// A 206 for the range asked, whatever If-Range says.
    IgnoreIfRange,
    /// The file with no Content-Length (the end is the closed connection), then bytes
    /// without end.
    Endless,
    /// Nothing for this long, then a 503.
    Stall(std::time::Duration),
}

#[derive(Clone)]
struct File {
    bytes: Vec<u8>,
    version: u32,
}

#[derive(Default)]
pub struct State {
    files: HashMap<String, File>,
    /// Cut the next response for a file after this many body bytes (once).
    cut: HashMap<String, usize>,
    answers: HashMap<String, VecDeque<Answer>>,
    /// Send ETag and Last-Modified headers.
    pub validators: bool,
    pub seen: Vec<Seen>,
    /// Bytes the endless answers got out before the client hung up.
    pub endless_sent: usize,
}

pub struct Server {
    pub url: String,
    pub state: Arc<Mutex<State>>,
}

impl Server {
    pub fn start() -> Server {
        Self::start_with(None)
    }

    /// An https server for 127.0.0.1, trusted by clients with `SSL_CERT_FILE` = [`ca_file`].
    pub fn start_tls() -> Server {
        Self::start_with(Some(tls_config()))
    }

    fn start_with(tls: Option<Arc<rustls::ServerConfig>>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State {
            validators: true,
            ..State::default()
        }));
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                let tls = tls.clone();
                std::thread::spawn(move || match tls {
                    None => serve(conn, &st),
                    Some(cfg) => {
                        let Ok(session) = rustls::ServerConnection::new(cfg) else {
                            return;
                        };
                        let mut s = rustls::StreamOwned::new(session, conn);
                        serve(&mut s, &st);
                        s.conn.send_close_notify();
                        let _ = s.flush();
                    }
                });
            }
        });
        Server { url, state }
    }

    /// Serves `bytes` as `name`, as a new version of it (a new ETag).
    pub fn put(&self, name: &str, bytes: Vec<u8>) {
        let mut s = self.state.lock().unwrap();
        let version = s.files.get(name).map_or(1, |f| f.version + 1);
        s.files.insert(name.into(), File { bytes, version });
    }
    pub fn cut_once(&self, name: &str, after: usize) {
        self.state.lock().unwrap().cut.insert(name.into(), after);
    }
    /// Answers the next request for `name` this way (queued in order).
    pub fn then(&self, name: &str, answer: Answer) {
        let mut s = self.state.lock().unwrap();
        s.answers.entry(name.into()).or_default().push_back(answer);
    }
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }
    pub fn seen_for(&self, name: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.file == name).collect()
    }
    pub fn bytes(&self, name: &str) -> Vec<u8> {
        self.state.lock().unwrap().files[name].bytes.clone()
    }
}

pub fn ca_file() -> std::path::PathBuf {
    super::common::fixtures().join("tls/ca.pem")
}

fn tls_config() -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let dir = super::common::fixtures().join("tls");
    let certs = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
    )
}

fn etag(f: &File) -> String {
    format!("\"v{}\"", f.version)
}

fn last_modified(f: &File) -> String {
    // One second per version after a fixed date: a different date for each version.
    let t = chrono::DateTime::parse_from_rfc3339("2024-05-20T00:00:00Z").unwrap()
        + chrono::Duration::seconds(f.version as i64);
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// One request per connection.
fn serve<S: Read + Write>(conn: S, st: &Mutex<State>) {
    let mut reader = BufReader::new(conn);
    let mut first = String::new();
    if reader.read_line(&mut first).is_err() {
        return;
    }
    let (mut range, mut if_range) = (None, None);
    loop {
        let mut l = String::new();
        if reader.read_line(&mut l).unwrap_or(0) == 0 || l.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            } else if k.eq_ignore_ascii_case("if-range") {
                if_range = Some(v.trim().to_string());
            }
        }
    }
    let file = first
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .trim_start_matches('/')
        .to_string();
    let (found, cut, answer, validators) = {
        let mut s = st.lock().unwrap();
        s.seen.push(Seen {
            file: file.clone(),
            range: range.clone(),
            if_range: if_range.clone(),
            at: Instant::now(),
        });
        let answer = s.answers.get_mut(&file).and_then(|q| q.pop_front());
        (
            s.files.get(&file).cloned(),
            s.cut.remove(&file),
            answer,
            s.validators,
        )
    };
    let conn = reader.get_mut();
    let Some(f) = found else {
        let _ = conn
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    };
    let body = &f.bytes;
    let meta = if validators {
        format!(
            "ETag: {}\r\nLast-Modified: {}\r\n",
            etag(&f),
            last_modified(&f)
        )
    } else {
        String::new()
    };
    match &answer {
        Some(Answer::Status(code, retry_after)) => {
            let ra = retry_after
                .as_ref()
                .map(|v| format!("Retry-After: {v}\r\n"))
                .unwrap_or_default();
            let h = format!(
                "HTTP/1.1 {code} Busy\r\n{ra}Content-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = conn.write_all(h.as_bytes());
            return;
        }
        Some(Answer::Stall(d)) => {
            std::thread::sleep(*d);
            let _ = conn
                .write_all(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            return;
        }
        Some(Answer::Redirect(to)) => {
            let h = format!(
                "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = conn.write_all(h.as_bytes());
            return;
        }
        Some(Answer::Endless) => {
            let h = format!("HTTP/1.1 200 OK\r\n{meta}Connection: close\r\n\r\n");
            let _ = conn.write_all(h.as_bytes());
            if conn.write_all(body).is_err() {
                return;
            }
            // At most 256 MiB, so a client that never stops does not fill the disk.
            let junk = vec![7u8; 1 << 16];
            let mut sent = body.len();
            while sent < 256 << 20 && conn.write_all(&junk).is_ok() {
                sent += junk.len();
            }
            st.lock().unwrap().endless_sent = sent;
            return;
        }
        _ => {}
    }
    let start: usize = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    // If-Range: the range only while the validator names this version.
    let if_range_current = match &if_range {
        None => true,
        Some(v) => validators && (*v == etag(&f) || *v == last_modified(&f)),
    };
    let ranged = range.is_some()
        && !matches!(answer, Some(Answer::IgnoreRange))
        && (if_range_current || matches!(answer, Some(Answer::IgnoreIfRange)));
    let (head, start) = if ranged {
        if start >= body.len() {
            let h = format!(
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(h.as_bytes());
            return;
        }
        (
            format!(
                "HTTP/1.1 206 Partial Content\r\n{meta}Content-Range: bytes {start}-{}/{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len() - 1,
                body.len(),
                body.len() - start
            ),
            start,
        )
    } else {
        (
            format!(
                "HTTP/1.1 200 OK\r\n{meta}Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            ),
            0,
        )
    };
    let rest = &body[start..];
    let send = cut.map_or(rest.len(), |c| c.min(rest.len()));
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(&rest[..send]);
    let _ = conn.flush();
    // Dropping the connection here cuts a response short.
}
