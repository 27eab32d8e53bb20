//! redis-failover: watches Redis masters (and LedisDB, Valkey, KeyDB: anything with
//! `ROLE`, `INFO replication` and `SLAVEOF`) and, when a master stays down, promotes its
//! most up-to-date replica and re-points the others.
//!
//! The daemon is also a library: [`App`] starts one in-process, with hooks around each
//! failover. How the pieces fit:
//!
//! ```text
//!  HTTP (http.rs) ──► Core (app.rs) ──► broker (broker/) : replicated groups + history
//!                                          │ changes
//!  checker pool (checker.rs) ◄── monitor (monitor.rs) ── detector.rs: is it down?
//!        └── outcomes ──────────────►│
//!                                    └─► failover worker (failover.rs): elect, promote,
//!                                        re-point, record through the broker
//! ```

pub mod address;
pub mod api_auth;
pub mod app;
pub mod broker;
pub mod checker;
pub mod cli;
pub mod config;
pub mod detector;
pub mod error;
pub mod events;
pub mod failover;
pub mod hooks;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod monitor;
pub mod notify;
pub mod redis_node;
pub mod request_params;
pub mod resp;
pub mod secret;
pub mod sentinel;
pub mod status;
pub mod switchover;
pub mod systemd;
pub mod tcp;

pub use address::{Addr, MasterSpec};
pub use app::App;
pub use broker::{FailoverRecord, Outcome};
pub use config::Config;
pub use error::{Error, Result};
pub use secret::Secret;
pub use status::{GroupStatus, WatchState};
