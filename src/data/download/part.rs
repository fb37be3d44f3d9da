//! What a `.part` file was fetched from: the server's validators (a strong ETag, else
//! Last-Modified) of the response that started it, kept beside it as `NAME.part.json`. A
//! broken transfer is continued (`Range` with `If-Range`) only while they still name the
//! same file; without one, or when they changed, the file is fetched again from its start.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PartOrigin {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
}

/// A weak ETag (`W/"..."`) cannot be used in `If-Range` (RFC 9110 13.1.5).
fn strong(etag: Option<&str>) -> Option<&str> {
    etag.map(str::trim)
        .filter(|e| !e.is_empty() && !e.starts_with("W/"))
}

impl PartOrigin {
    pub fn new(url: &str, etag: Option<&str>, last_modified: Option<&str>) -> PartOrigin {
        PartOrigin {
            url: url.to_string(),
            etag: strong(etag).map(str::to_string),
            last_modified: last_modified
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string),
        }
    }

    /// The `If-Range` value: the ETag, else the Last-Modified date.
    pub fn if_range(&self) -> Option<&str> {
        self.etag.as_deref().or(self.last_modified.as_deref())
    }

    /// Whether a response's validators still name the file this part came from (a
    /// validator the response leaves out is not taken as a change).
    pub fn same_file(&self, etag: Option<&str>, last_modified: Option<&str>) -> bool {
        let etag_same = match (&self.etag, strong(etag)) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        let date_same = match (&self.last_modified, last_modified.map(str::trim)) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        etag_same && date_same
    }

    pub fn file(part: &Path) -> PathBuf {
        let mut p = part.as_os_str().to_owned();
        p.push(".json");
        PathBuf::from(p)
    }

    /// The origin saved for `part`, when one was saved and reads.
    pub fn load(part: &Path) -> Option<PartOrigin> {
        let text = std::fs::read_to_string(Self::file(part)).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub fn save(&self, part: &Path) -> Result<()> {
        crate::paths::write_atomic(&Self::file(part), serde_json::to_string(self)?.as_bytes())
    }

    /// Removes `part` and its origin.
    pub fn discard(part: &Path) {
        let _ = std::fs::remove_file(part);
        let _ = std::fs::remove_file(Self::file(part));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validators_choose_if_range_and_tell_a_changed_file() {
        let o = PartOrigin::new("u", Some("\"v1\""), Some("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert_eq!(o.if_range(), Some("\"v1\""));
        assert!(o.same_file(Some("\"v1\""), None));
        assert!(!o.same_file(Some("\"v2\""), None));
        assert!(!o.same_file(None, Some("Thu, 22 Oct 2015 07:28:00 GMT")));
        // A weak ETag is not a validator: the date is used instead.
        let o = PartOrigin::new("u", Some("W/\"v1\""), Some("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert_eq!(o.if_range(), Some("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert_eq!(PartOrigin::new("u", Some("W/\"x\""), None).if_range(), None);
        assert_eq!(PartOrigin::new("u", None, None).if_range(), None);
    }

    #[test]
    fn an_origin_is_kept_beside_its_part() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("a.bin.part");
        std::fs::write(&part, b"x").unwrap();
        let o = PartOrigin::new("http://127.0.0.1/a.bin", Some("\"e\""), None);
        o.save(&part).unwrap();
        assert_eq!(PartOrigin::file(&part), dir.path().join("a.bin.part.json"));
        assert_eq!(PartOrigin::load(&part), Some(o));
        PartOrigin::discard(&part);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
