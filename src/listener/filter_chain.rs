//! Filter-chain selection in Envoy's order: destination port, destination IP, server name,
//! transport protocol, application protocols, direct source IP, source type, source IP, source
//! port. At each step only the most specific matching chains survive; a chain without that
//! criterion survives only when no chain matched it specifically.

use std::net::IpAddr;
use std::sync::Arc;

use super::ConnInfo;
use crate::model::listener::{ChainMatch, Cidr, FilterChain, ListenerConfig, SourceType};

fn narrow(cands: &mut Vec<Arc<FilterChain>>, score: impl Fn(&ChainMatch) -> Option<u32>) {
    let scored: Vec<(Option<u32>, Arc<FilterChain>)> =
        cands.drain(..).map(|c| (score(&c.matcher), c)).collect();
    let best = scored.iter().filter_map(|(s, _)| *s).max();
    if let Some(best) = best {
        cands.extend(
            scored
                .into_iter()
                .filter(|(s, _)| *s == Some(best))
                .map(|(_, c)| c),
        );
    }
}

fn cidr_score(ranges: &[Cidr], ip: IpAddr) -> Option<u32> {
    if ranges.is_empty() {
        return Some(0);
    }
    ranges
        .iter()
        .filter(|r| r.contains(ip))
        .map(|r| u32::from(r.len) + 1)
        .max()
}

/// Pick the chain for a connection (the default chain if none matches).
pub fn select(listener: &ListenerConfig, info: &ConnInfo) -> Option<Arc<FilterChain>> {
    let mut cands: Vec<Arc<FilterChain>> = listener.filter_chains.clone();
    let dst = info.destination();
    narrow(&mut cands, |m| match m.destination_port {
        None => Some(0),
        Some(p) if p == dst.port() => Some(1),
        Some(_) => None,
    });
    narrow(&mut cands, |m| cidr_score(&m.prefix_ranges, dst.ip()));
    narrow(&mut cands, |m| {
        if m.server_names.is_empty() {
            return Some(0);
        }
        let sni = info.sni.as_deref()?;
        m.server_names
            .iter()
            .filter_map(|n| {
                if n == sni {
                    Some(u32::MAX)
                } else if let Some(suffix) = n.strip_prefix('*') {
                    (sni.len() > suffix.len() && sni.ends_with(suffix))
                        .then_some(suffix.len() as u32)
                } else {
                    None
                }
            })
            .max()
    });
    narrow(&mut cands, |m| match &m.transport_protocol {
        None => Some(0),
        Some(t) if t == info.transport => Some(1),
        Some(_) => None,
    });
    narrow(&mut cands, |m| {
        if m.application_protocols.is_empty() {
            Some(0)
        } else if m
            .application_protocols
            .iter()
            .any(|p| info.app_protocols.contains(p))
        {
            Some(1)
        } else {
            None
        }
    });
    narrow(&mut cands, |m| {
        cidr_score(&m.direct_source_prefix_ranges, info.peer.ip())
    });
    narrow(&mut cands, |m| {
        let local = info.peer.ip().is_loopback() || info.peer.ip() == info.local.ip();
        match m.source_type {
            SourceType::Any => Some(0),
            SourceType::Local if local => Some(1),
            SourceType::External if !local => Some(1),
            _ => None,
        }
    });
    narrow(&mut cands, |m| {
        cidr_score(&m.source_prefix_ranges, info.peer.ip())
    });
    narrow(&mut cands, |m| {
        if m.source_ports.is_empty() {
            Some(0)
        } else {
            m.source_ports.contains(&info.peer.port()).then_some(1)
        }
    });
    cands
        .into_iter()
        .next()
        .or_else(|| listener.default_chain.clone())
}
