//! Stored keys: how an API key becomes the key a store sees (Layotto's `keyPrefix` rules).

use super::components::Metadata;

/// The `keyPrefix` strategy of a state, lock or sequencer component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPrefix {
    /// `none`: the key as given.
    None,
    /// `appid`: `<app_id>||key`.
    AppId,
    /// `name`: `<store name>||key`.
    Name,
    /// Any other value: `<literal>||key`.
    Literal(String),
}

impl KeyPrefix {
    /// Read `keyPrefix` from metadata, with the API's default.
    pub fn from_metadata(m: &Metadata, default: KeyPrefix) -> KeyPrefix {
        match m.get("keyPrefix").map(|s| s.trim()) {
            None | Some("") => default,
            Some(p) if p.eq_ignore_ascii_case("none") => KeyPrefix::None,
            Some(p) if p.eq_ignore_ascii_case("appid") => KeyPrefix::AppId,
            Some(p) if p.eq_ignore_ascii_case("name") => KeyPrefix::Name,
            Some(p) => KeyPrefix::Literal(p.to_string()),
        }
    }

    /// The prefix part (without the `||` separator), if any.
    fn part<'a>(&'a self, app_id: &'a str, store: &'a str) -> Option<&'a str> {
        match self {
            KeyPrefix::None => None,
            KeyPrefix::AppId if app_id.is_empty() => None,
            KeyPrefix::AppId => Some(app_id),
            KeyPrefix::Name => Some(store),
            KeyPrefix::Literal(l) => Some(l),
        }
    }

    /// A state key as stored: `key` or `<prefix>||key`.
    pub fn state_key(&self, key: &str, app_id: &str, store: &str) -> String {
        match self.part(app_id, store) {
            Some(p) => format!("{p}||{key}"),
            None => key.to_string(),
        }
    }

    /// A lock or sequencer key as stored: `<kind>|||<prefix>||key` or `<kind>|||key`.
    pub fn scoped_key(&self, kind: &str, key: &str, app_id: &str, store: &str) -> String {
        match self.part(app_id, store) {
            Some(p) => format!("{kind}|||{p}||{key}"),
            None => format!("{kind}|||{key}"),
        }
    }

    /// The API key from a stored state key (the inverse of [`KeyPrefix::state_key`]).
    pub fn original_key<'a>(&self, stored: &'a str) -> &'a str {
        match self {
            KeyPrefix::None => stored,
            _ => stored.split_once("||").map_or(stored, |(_, k)| k),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layotto_layouts() {
        let p = KeyPrefix::AppId;
        assert_eq!(p.state_key("k", "app1", "s"), "app1||k");
        assert_eq!(p.scoped_key("lock", "r", "app1", "l"), "lock|||app1||r");
        assert_eq!(p.scoped_key("lock", "r", "", "l"), "lock|||r");
        assert_eq!(
            KeyPrefix::None.scoped_key("sequencer", "k", "a", "s"),
            "sequencer|||k"
        );
        assert_eq!(
            KeyPrefix::Name.scoped_key("lock", "r", "a", "l1"),
            "lock|||l1||r"
        );
        assert_eq!(KeyPrefix::Name.state_key("k", "a", "st"), "st||k");
        let m = Metadata::from([("keyPrefix".to_string(), "team".to_string())]);
        let lit = KeyPrefix::from_metadata(&m, KeyPrefix::None);
        assert_eq!(lit.state_key("k", "a", "s"), "team||k");
        assert_eq!(lit.original_key("team||k"), "k");
    }
}
