//! What the daemon serves: the HTTP API (`http.rs`, with its parameters in `params.rs`
//! the `api_token` check in `auth.rs`, the cross-site checks in `cross_site.rs`; pause,
//! acknowledge and manual failover in `operate.rs`), the `/metrics` page (`metrics.rs`),
//! the status page (`page/`), the load balancers' health checks (`health.rs`), the
//! failover history (`history.rs`) and the Sentinel-compatible port for client
//! libraries (`sentinel/`). All of them read and change the daemon through
//! [`Daemon`](crate::daemon::Daemon).

pub mod auth;
pub mod cross_site;
pub mod health;
pub mod history;
pub mod http;
pub mod metrics;
pub mod operate;
pub mod page;
pub mod params;
pub mod sentinel;
