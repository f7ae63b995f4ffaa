//! Load balancers. Tables that need building (ring hash, maglev, weighted round robin schedule)
//! are built once per endpoint-set update, never per request.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use xxhash_rust::xxh64::xxh64;

use super::cluster::Host;
use crate::model::cluster::LbPolicy;

/// Per-endpoint-set balancer state.
#[derive(Debug)]
pub enum Balancer {
    /// Weighted round robin over an expanded schedule (smooth interleaving).
    RoundRobin {
        /// Host indices in schedule order.
        schedule: Vec<u32>,
        /// Cursor.
        next: AtomicUsize,
    },
    /// Power-of-N choices over weighted random picks.
    LeastRequest {
        /// Choices per pick.
        choices: u32,
    },
    /// Weighted random.
    Random,
    /// Sorted (hash, host index) ring.
    Ring(Vec<(u64, u32)>),
    /// Maglev lookup table of host indices.
    Maglev(Vec<u32>),
}

/// Build the balancer for `hosts` (healthy ones only are passed in).
pub fn build(policy: LbPolicy, hosts: &[Arc<Host>]) -> Balancer {
    match policy {
        LbPolicy::RoundRobin | LbPolicy::ClusterProvided => Balancer::RoundRobin {
            schedule: smooth_wrr(hosts),
            next: AtomicUsize::new(0),
        },
        LbPolicy::LeastRequest { choices } => Balancer::LeastRequest {
            choices: choices.max(2),
        },
        LbPolicy::Random => Balancer::Random,
        LbPolicy::RingHash { min_ring, max_ring } => {
            Balancer::Ring(ring(hosts, min_ring, max_ring))
        }
        LbPolicy::Maglev { table_size } => Balancer::Maglev(maglev(hosts, table_size)),
    }
}

fn effective_weight(h: &Host) -> u64 {
    u64::from(h.weight.max(1)) * u64::from(h.locality_weight.max(1))
}

/// Smooth weighted round robin (nginx's algorithm), expanded once into a schedule.
fn smooth_wrr(hosts: &[Arc<Host>]) -> Vec<u32> {
    if hosts.is_empty() {
        return Vec::new();
    }
    let weights: Vec<i64> = hosts.iter().map(|h| effective_weight(h) as i64).collect();
    let g = weights.iter().fold(0i64, |a, &w| gcd(a, w));
    let weights: Vec<i64> = weights.iter().map(|w| w / g.max(1)).collect();
    let total: i64 = weights.iter().sum();
    // Cap the schedule; beyond that fall back to proportional truncation.
    let len = total.min(65_536) as usize;
    let mut current = vec![0i64; hosts.len()];
    let mut out = Vec::with_capacity(len);
    for _ in 0..len {
        let mut best = 0;
        for i in 0..hosts.len() {
            current[i] += weights[i];
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best as u32);
    }
    out
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn ring(hosts: &[Arc<Host>], min_ring: u64, max_ring: u64) -> Vec<(u64, u32)> {
    if hosts.is_empty() {
        return Vec::new();
    }
    let total: u64 = hosts.iter().map(|h| effective_weight(h)).sum();
    let min_w = hosts.iter().map(|h| effective_weight(h)).min().unwrap_or(1) as f64 / total as f64;
    let scale = ((min_ring as f64 * min_w).ceil() / min_w).min(max_ring as f64);
    let mut ring = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        let n = ((effective_weight(h) as f64 / total as f64) * scale)
            .round()
            .max(1.0) as u64;
        let key = h.key();
        for j in 0..n {
            let hash = xxh64(format!("{key}_{j}").as_bytes(), 0);
            ring.push((hash, i as u32));
        }
    }
    ring.sort_unstable();
    ring
}

fn maglev(hosts: &[Arc<Host>], table_size: u64) -> Vec<u32> {
    let m = table_size as usize;
    if hosts.is_empty() || m == 0 {
        return Vec::new();
    }
    let max_w = hosts.iter().map(|h| effective_weight(h)).max().unwrap_or(1) as f64;
    let params: Vec<(u64, u64, f64)> = hosts
        .iter()
        .map(|h| {
            let key = h.key();
            let offset = xxh64(key.as_bytes(), 0) % table_size;
            let skip = xxh64(key.as_bytes(), 1) % (table_size - 1) + 1;
            (offset, skip, effective_weight(h) as f64 / max_w)
        })
        .collect();
    let mut next = vec![0u64; hosts.len()];
    let mut target = vec![0f64; hosts.len()];
    let mut table = vec![u32::MAX; m];
    let mut filled = 0;
    let mut iteration = 1u64;
    while filled < m {
        for i in 0..hosts.len() {
            let (offset, skip, w) = params[i];
            if (iteration as f64) * w < target[i] {
                continue;
            }
            target[i] += 1.0;
            loop {
                let c = ((offset + skip * next[i]) % table_size) as usize;
                next[i] += 1;
                if table[c] == u32::MAX {
                    table[c] = i as u32;
                    filled += 1;
                    break;
                }
            }
            if filled == m {
                break;
            }
        }
        iteration += 1;
    }
    table
}

impl Balancer {
    /// Pick a host index. `hash` is the request hash for hash-based policies; `attempt` varies
    /// the pick on retries (so a retry can land elsewhere).
    pub fn pick(&self, hosts: &[Arc<Host>], hash: Option<u64>, attempt: u32) -> Option<usize> {
        if hosts.is_empty() {
            return None;
        }
        match self {
            Balancer::RoundRobin { schedule, next } => {
                let n = next.fetch_add(1, Ordering::Relaxed);
                schedule.get(n % schedule.len().max(1)).map(|&i| i as usize)
            }
            Balancer::Random => Some(weighted_random(hosts)),
            Balancer::LeastRequest { choices } => {
                let mut best = weighted_random(hosts);
                for _ in 1..*choices {
                    let c = weighted_random(hosts);
                    if hosts[c].active_requests() < hosts[best].active_requests() {
                        best = c;
                    }
                }
                Some(best)
            }
            Balancer::Ring(ring) => {
                let h = hash
                    .unwrap_or_else(rand::random)
                    .wrapping_add(u64::from(attempt));
                let idx = ring.partition_point(|(k, _)| *k < h);
                let (_, host) = ring.get(idx).or_else(|| ring.first())?;
                Some(*host as usize)
            }
            Balancer::Maglev(table) => {
                let h = hash
                    .unwrap_or_else(rand::random)
                    .wrapping_add(u64::from(attempt));
                table
                    .get((h % table.len().max(1) as u64) as usize)
                    .map(|&i| i as usize)
            }
        }
    }
}

fn weighted_random(hosts: &[Arc<Host>]) -> usize {
    if hosts.len() == 1 {
        return 0;
    }
    let total: u64 = hosts.iter().map(|h| effective_weight(h)).sum();
    let mut r = rand::random_range(0..total.max(1));
    for (i, h) in hosts.iter().enumerate() {
        let w = effective_weight(h);
        if r < w {
            return i;
        }
        r -= w;
    }
    hosts.len() - 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cluster::{EndpointAddr, EndpointConfig};

    fn hosts(weights: &[u32]) -> Vec<Arc<Host>> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                Arc::new(Host::new(&EndpointConfig {
                    addr: EndpointAddr::Ip(format!("127.0.0.1:{}", 1000 + i).parse().unwrap()),
                    weight: *w,
                    locality_weight: 1,
                    priority: 0,
                    hostname: String::new(),
                    unhealthy: false,
                }))
            })
            .collect()
    }

    #[test]
    fn round_robin_honours_weights_exactly() {
        let hs = hosts(&[1, 3]);
        let b = build(LbPolicy::RoundRobin, &hs);
        let mut counts = [0; 2];
        for _ in 0..400 {
            counts[b.pick(&hs, None, 0).unwrap()] += 1;
        }
        assert_eq!(counts, [100, 300]);
    }

    #[test]
    fn hash_policies_are_consistent_and_spread() {
        for policy in [
            LbPolicy::RingHash {
                min_ring: 1024,
                max_ring: 8 << 20,
            },
            LbPolicy::Maglev { table_size: 65537 },
        ] {
            let hs = hosts(&[1, 1, 1]);
            let b = build(policy, &hs);
            let mut seen = [0; 3];
            for k in 0..3000u64 {
                let h = xxh64(&k.to_le_bytes(), 0);
                let a = b.pick(&hs, Some(h), 0).unwrap();
                assert_eq!(a, b.pick(&hs, Some(h), 0).unwrap());
                seen[a] += 1;
            }
            assert!(seen.iter().all(|&c| c > 600), "{policy:?}: {seen:?}");
        }
    }
}
