//! The HTTP side of a download: the agent (an https endpoint is never followed to plain
//! http; `SSL_CERT_FILE` replaces the built-in root certificates, for a mirror behind a
//! private certificate authority), what a failed request means, and the headers read.

use std::time::Duration;

use anyhow::{anyhow, Context, Result};

/// The environment variable naming a PEM file of root certificates to trust instead of the
/// built-in ones (as OpenSSL and curl read it).
pub const ENV_CERT_FILE: &str = "SSL_CERT_FILE";

/// The longest wait a `Retry-After` header is honoured for.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(60);

/// Why one attempt failed, whether trying again can help, and how long the server asked
/// to wait first.
pub struct Failure {
    pub error: anyhow::Error,
    pub retry: bool,
    pub wait: Option<Duration>,
}

pub fn fatal(error: anyhow::Error) -> Failure {
    Failure {
        error,
        retry: false,
        wait: None,
    }
}

pub fn transient(error: anyhow::Error) -> Failure {
    Failure {
        error,
        retry: true,
        wait: None,
    }
}

/// An agent for `endpoint`: redirects are followed, but from an https endpoint only to
/// https addresses.
pub fn agent(endpoint: &str) -> Result<ureq::Agent> {
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .https_only(endpoint.starts_with("https://"))
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .user_agent(concat!("stacklab/", env!("CARGO_PKG_VERSION")));
    if let Some(file) = std::env::var_os(ENV_CERT_FILE).filter(|v| !v.is_empty()) {
        let path = std::path::PathBuf::from(file);
        let pem = std::fs::read(&path)
            .with_context(|| format!("{ENV_CERT_FILE}={}: cannot read", path.display()))?;
        let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        if certs.is_empty() {
            anyhow::bail!(
                "{ENV_CERT_FILE}={}: no PEM certificates in the file",
                path.display()
            );
        }
        config = config.tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                .build(),
        );
    }
    Ok(config.build().into())
}

/// What a request that got no answer means, and whether trying again can help.
pub fn describe(url: &str, e: ureq::Error) -> Failure {
    use ureq::Error as E;
    let retry = matches!(e, E::Timeout(_) | E::Io(_) | E::Protocol(_));
    let error = match &e {
        E::HostNotFound | E::ConnectionFailed | E::Io(_) | E::Timeout(_) => anyhow!(
            "cannot reach {url}: {e}\nCheck the network connection (a proxy is taken from HTTPS_PROXY / ALL_PROXY), or download from a mirror that serves the same files with --endpoint URL (or STACKLAB_DATA_ENDPOINT)"
        ),
        E::RequireHttpsOnly(to) => anyhow!(
            "{url} redirected to {to}: an https endpoint is never followed to plain http, where the file could be changed on the way; use an --endpoint that stays on https"
        ),
        E::TooManyRedirects => anyhow!("{url}: too many redirects"),
        _ => anyhow!("{url}: {e}"),
    };
    // A refused connection or an unknown host will not change in a few seconds.
    let retry =
        retry && !matches!(&e, E::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused);
    Failure {
        error,
        retry,
        wait: None,
    }
}

/// `bytes START-END/TOTAL` (or `bytes */TOTAL`) from a Content-Range header.
pub fn content_range(v: &str) -> Option<(Option<u64>, Option<u64>)> {
    let v = v.trim().strip_prefix("bytes")?.trim();
    let (range, total) = v.split_once('/')?;
    let total = total.trim().parse().ok();
    let start = range
        .split_once('-')
        .and_then(|(s, _)| s.trim().parse().ok());
    Some((start, total))
}

/// A `Retry-After` value (seconds, or an HTTP date) as a wait from `now`, at most
/// [`RETRY_AFTER_CAP`].
pub fn retry_after(v: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let v = v.trim();
    let wait = match v.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
            (at.with_timezone(&chrono::Utc) - now)
                .to_std()
                .unwrap_or(Duration::ZERO)
        }
    };
    Some(wait.min(RETRY_AFTER_CAP))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parses() {
        assert_eq!(
            content_range("bytes 100-199/200"),
            Some((Some(100), Some(200)))
        );
        assert_eq!(content_range("bytes */200"), Some((None, Some(200))));
        assert_eq!(content_range("items 1-2/3"), None);
    }

    #[test]
    fn retry_after_reads_seconds_and_dates_up_to_the_cap() {
        let now = chrono::DateTime::parse_from_rfc2822("Wed, 21 Oct 2015 07:28:00 GMT")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(retry_after("86400", now), Some(RETRY_AFTER_CAP));
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now),
            Some(Duration::from_secs(10))
        );
        // A date already past means now.
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon", now), None);
    }
}
