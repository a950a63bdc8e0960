//! Purges: what an operator asks to drop (one URL with all its variants, every URL under a
//! prefix, every response with a tag, or everything), parsed from the admin API's JSON and
//! applied to a store. The same order travels to the rest of the fleet ([`super::broadcast`]).

use serde::{Deserialize, Serialize};

use super::{Store, key_for_url};

/// A purge order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Purge {
    /// One URL (`http://host/path?query`), all its `Vary` variants.
    Url(String),
    /// Every URL starting with this (`http://host/path/`).
    Prefix(String),
    /// Every response tagged so (`Surrogate-Key`, `Cache-Tag`).
    Tag(String),
    /// Everything.
    All(bool),
}

impl Purge {
    /// Reads `{"url": ...}`, `{"prefix": ...}`, `{"tag": ...}` or `{"all": true}`.
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        let order: Purge = serde_json::from_slice(body).map_err(|e| {
            format!(
                "expected one of {{\"url\": URL}}, {{\"prefix\": URL}}, {{\"tag\": TAG}}, {{\"all\": true}}: {e}"
            )
        })?;
        match &order {
            Purge::Url(u) | Purge::Prefix(u) => {
                key_for_url(u)?;
            }
            Purge::Tag(t) if t.trim().is_empty() => return Err("the tag is empty".into()),
            Purge::All(false) => return Err("`all` must be true".into()),
            _ => {}
        }
        Ok(order)
    }

    /// Drops what the order names from `store`.
    pub fn apply(&self, store: &Store) {
        match self {
            Purge::Url(u) => {
                if let Ok(k) = key_for_url(u) {
                    store.purge_url(&k);
                }
            }
            Purge::Prefix(p) => {
                if let Ok(k) = key_for_url(p) {
                    store.purge_prefix(&k);
                }
            }
            Purge::Tag(t) => store.purge_tag(t.trim()),
            Purge::All(_) => store.purge_all(),
        }
    }

    /// Says what it drops, for the answer and the log.
    pub fn describe(&self) -> String {
        match self {
            Purge::Url(u) => format!("url {u}"),
            Purge::Prefix(p) => format!("prefix {p}"),
            Purge::Tag(t) => format!("tag {t}"),
            Purge::All(_) => "everything".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_parse_and_bad_ones_say_why() {
        assert_eq!(
            Purge::parse(br#"{"url": "http://a.test/x"}"#).unwrap(),
            Purge::Url("http://a.test/x".into())
        );
        assert_eq!(
            Purge::parse(br#"{"tag": "p1"}"#).unwrap(),
            Purge::Tag("p1".into())
        );
        assert_eq!(Purge::parse(br#"{"all": true}"#).unwrap(), Purge::All(true));
        for bad in [
            &br#"{"all": false}"#[..],
            br#"{"url": "/x"}"#,
            br#"{}"#,
            br#"{"tag": " "}"#,
            b"nope",
        ] {
            assert!(
                Purge::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
