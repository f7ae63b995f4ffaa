//! DNS resolution for STRICT_DNS and LOGICAL_DNS clusters, off the request path.

use std::sync::Weak;

use super::cluster::Cluster;
use crate::model::cluster::{Discovery, EndpointAddr, EndpointConfig};

/// Resolve the cluster's hosts every `dns_refresh` until the cluster is dropped.
pub async fn refresh_loop(cluster: Weak<Cluster>) {
    loop {
        let Some(c) = cluster.upgrade() else { return };
        let refresh = c.config.dns_refresh;
        let mut resolved = Vec::new();
        for ep in &c.config.endpoints {
            match &ep.addr {
                EndpointAddr::Dns(host, port) => {
                    match tokio::net::lookup_host((host.as_str(), *port)).await {
                        Ok(addrs) => {
                            let mut addrs = c.config.dns_family.select(addrs.collect());
                            if c.config.discovery == Discovery::LogicalDns {
                                addrs.truncate(1);
                            }
                            for a in addrs {
                                resolved.push(EndpointConfig {
                                    addr: EndpointAddr::Ip(a),
                                    hostname: host.clone(),
                                    ..ep.clone()
                                });
                            }
                        }
                        Err(e) => {
                            tracing::warn!(cluster = %c.name, %host, error = %e, "DNS resolution failed");
                        }
                    }
                }
                _ => resolved.push(ep.clone()),
            }
        }
        if !resolved.is_empty() || c.endpoints().all.is_empty() {
            c.update_endpoints(&resolved);
        }
        drop(c);
        tokio::time::sleep(refresh).await;
    }
}
