//! What the daemon serves: the HTTP API (`http.rs`, with its parameters in `params.rs`
//! the `api_token` check in `auth.rs` and the cross-site checks in `cross_site.rs`), the `/metrics` page (`metrics.rs`) and the
//! Sentinel-compatible port for client libraries (`sentinel/`). All of them read and
//! change the daemon through [`Daemon`](crate::daemon::Daemon).

pub mod auth;
pub mod cross_site;
pub mod http;
pub mod metrics;
pub mod params;
pub mod sentinel;
