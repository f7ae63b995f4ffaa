//! Pre-compiled string and header matchers (Envoy's `StringMatcher`, `HeaderMatcher`, query
//! parameter matchers). Regexes are compiled at config time; names are lower-cased once.

use regex::Regex;

/// Envoy's `type.matcher.v3.StringMatcher`.
#[derive(Debug, Clone)]
pub enum StringMatch {
    /// Whole value equals.
    Exact(String, bool),
    /// Starts with.
    Prefix(String, bool),
    /// Ends with.
    Suffix(String, bool),
    /// Contains.
    Contains(String, bool),
    /// RE2-style regex, anchored to the whole value as Envoy's `safe_regex` is.
    Regex(Regex),
}

impl StringMatch {
    /// Whether `value` matches. The bool in each variant is `ignore_case`.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            StringMatch::Exact(s, false) => value == s,
            StringMatch::Exact(s, true) => value.eq_ignore_ascii_case(s),
            StringMatch::Prefix(s, false) => value.starts_with(s.as_str()),
            StringMatch::Prefix(s, true) => value
                .get(..s.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(s)),
            StringMatch::Suffix(s, false) => value.ends_with(s.as_str()),
            StringMatch::Suffix(s, true) => value
                .len()
                .checked_sub(s.len())
                .and_then(|i| value.get(i..))
                .is_some_and(|p| p.eq_ignore_ascii_case(s)),
            StringMatch::Contains(s, false) => value.contains(s.as_str()),
            StringMatch::Contains(s, true) => value.to_ascii_lowercase().contains(s.as_str()),
            StringMatch::Regex(r) => r.is_match(value),
        }
    }
}

/// Compile a regex that must match the whole input (Envoy's safe_regex semantics).
pub fn full_regex(pattern: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{pattern})$"))
}

/// How a header value is tested.
#[derive(Debug, Clone)]
pub enum HeaderValueMatch {
    /// Header present (or absent when `false`).
    Present(bool),
    /// String matcher against the (comma-joined) value.
    String(StringMatch),
    /// Integer value in `[start, end)`.
    Range(i64, i64),
}

/// A compiled `route.v3.HeaderMatcher`.
#[derive(Debug, Clone)]
pub struct HeaderMatch {
    /// Which header.
    pub name: HeaderKey,
    /// The value test.
    pub value: HeaderValueMatch,
    /// Invert the result.
    pub invert: bool,
    /// When the header is absent, a (non-present) matcher still evaluates against "" if set.
    pub treat_missing_as_empty: bool,
}

/// A compiled `QueryParameterMatcher`.
#[derive(Debug, Clone)]
pub struct QueryMatch {
    /// Parameter name (exact).
    pub name: String,
    /// `None` = present match.
    pub value: Option<StringMatch>,
}

/// A header name as route matching sees it: HTTP/2 pseudo-headers are addressable too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderKey {
    /// `:authority` (the Host).
    Authority,
    /// `:path`.
    Path,
    /// `:method`.
    Method,
    /// `:scheme`.
    Scheme,
    /// `:status` (responses only: `retriable_headers`).
    Status,
    /// A regular header, lower-cased.
    Regular(http::HeaderName),
}
