//! The upstream side: live clusters, their endpoint sets, load balancers and connection pools.
//!
//! request path: router -> [`Cluster::pick`] (load balancer over the current [`EndpointSet`]) ->
//! [`Host`]'s pool -> upstream connection.

pub mod cluster;
pub mod dns;
pub mod http1;
pub mod lb;
pub mod pool;

pub use cluster::{Cluster, ClusterStats, EndpointSet, Host};
pub use pool::{UpstreamBody, UpstreamError};
