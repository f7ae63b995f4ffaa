//! Path handling: normalisation (`normalize_path`, `merge_slashes`), rewrites
//! (`prefix_rewrite`, `regex_rewrite`) and port stripping for host matching.

use http::Uri;

use crate::model::route::*;

/// Remove dot segments (RFC 3986 5.2.4) and optionally merge slashes.
pub(super) fn normalize(path: &str, merge_slashes: bool) -> String {
    let mut out: Vec<&str> = Vec::new();
    let trailing = path.ends_with('/') || path.ends_with("/.") || path.ends_with("/..");
    for seg in path.split('/').skip(1) {
        match seg {
            "." => {}
            ".." => {
                out.pop();
            }
            "" if merge_slashes => {}
            s => out.push(s),
        }
    }
    let mut s = String::with_capacity(path.len());
    for seg in &out {
        s.push('/');
        s.push_str(seg);
    }
    if trailing && !s.ends_with('/') || s.is_empty() {
        s.push('/');
    }
    s
}

pub(super) fn normalize_slashes(path: &str) -> String {
    let mut s = String::with_capacity(path.len());
    let mut prev = false;
    for c in path.chars() {
        if c == '/' && prev {
            continue;
        }
        prev = c == '/';
        s.push(c);
    }
    s
}

pub(super) fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((h, p))
            if p.chars().all(|c| c.is_ascii_digit()) && (!h.contains(':') || h.ends_with(']')) =>
        {
            h
        }
        _ => host,
    }
}

pub(super) fn rebuild_uri(old: &Uri, path_and_query: &str) -> Result<Uri, http::Error> {
    let mut parts = Uri::builder();
    if let Some(s) = old.scheme() {
        parts = parts.scheme(s.clone());
    }
    if let Some(a) = old.authority() {
        parts = parts.authority(a.clone());
    }
    parts.path_and_query(path_and_query).build()
}

pub(super) fn rewrite_path(pq: &str, rewrite: &Option<PathRewrite>, m: &RouteMatch) -> String {
    let Some(rw) = rewrite else {
        return pq.to_string();
    };
    let (path, query) = pq.split_once('?').map_or((pq, None), |(p, q)| (p, Some(q)));
    let new_path = match rw {
        PathRewrite::Prefix(prefix) => {
            let matched = match &m.path {
                PathMatch::Prefix(p) | PathMatch::SeparatedPrefix(p) | PathMatch::Exact(p) => {
                    p.len()
                }
                PathMatch::Regex(_) => 0,
            };
            format!("{prefix}{}", path.get(matched..).unwrap_or(""))
        }
        PathRewrite::Regex(re, sub) => re.replace_all(path, sub.as_str()).into_owned(),
    };
    match query {
        Some(q) => format!("{new_path}?{q}"),
        None => new_path,
    }
}
