//! redis-failover: watches Redis masters (and LedisDB, Valkey, KeyDB: anything with
//! `ROLE`, `INFO replication` and `SLAVEOF`) and, when a master stays down, promotes its
//! most up-to-date replica and re-points the others.
//!
//! The daemon is also a library: [`App`] starts one in-process, with hooks around each
//! failover.
//!
//! # Threads and channels
//!
//! Every thread is started (and stopped, through one [`shutdown::Shutdown`]) by
//! `app.rs`, except the broker's, which the broker owns. A standalone daemon with the
//! Sentinel port runs 11 threads:
//!
//! ```text
//!  http (net/server.rs, epoll) ─► http-0..3 (api/http.rs) ─┐
//!  sentinel (net/server.rs, epoll; api/sentinel/)  ────────┼─► Daemon ─► broker ─┬─ raft (broker/raft/node.rs): RawNode, Ready loop
//!  library (App)  ─────────────────────────────────────────┘  (daemon.rs)  │     │   raft-send-*, raft-accept, raft-read
//!                                                                          │     └─ or zk-session, zk-call, zk-writer, zk-views
//!                                         state changes and peers' views   │
//!                                                                          ▼
//!  checker-0 (monitor/checker/, epoll) ◄─CheckJob─ monitor (monitor/) ─WorkerJob─► failover (worker/)
//!  resolve-0 (host names)  └──CheckOutcome──────►  detector, quorum  ◄─WorkerReport─┘
//!                                                      │ events (observe/events.rs)
//!                      notify-script (host/), Sentinel subscribers ◄┘
//! ```
//!
//! - **monitor**: schedules checks, runs each group's down detector and the cluster's
//!   quorum (`monitor/core/quorum.rs`: Sentinel's `s_down` and `o_down`), and hands down
//!   masters, switchovers and fencing to the worker. It owns all per-group state.
//! - **checker pool**: one thread per few thousand groups, each with its own epoll and a
//!   kept non-blocking connection (plain or TLS) per server; every check has a whole
//!   deadline, so a slow server fails only its own check. Never changes a server.
//! - **failover worker**: the one thread that changes servers' roles (failover,
//!   switchover, fencing), so two changes of a group never interleave.
//! - **broker**: the replicated groups and history, who acts (standalone, Raft, or
//!   ZooKeeper), and each daemon's view of the masters (`broker/views.rs`), which the
//!   quorum counts.
//! - **API surfaces**: HTTP and the Sentinel port, each an event loop on the bounded
//!   connection server (`net/`: caps, idle timeouts, TLS), HTTP with 4 handler threads;
//!   the library; all through [`daemon::Daemon`].
//! - **host**: the systemd notifier (started by `main.rs`), the notification script
//!   runner, the seeder that records the configured masters once a cluster has a leader.
//!
//! # Modules, from the bottom up
//!
//! `error`, `address`, `secret`, `sync`, `clock`, `shutdown`: small pieces. `net`: the
//! bounded connection server, HTTP/1.1 and TLS.
//! `config`: settings and validation. `observe`: what the threads publish (statuses,
//! events, counters). `redis`: speaking to servers. `broker`: the replicated state.
//! `worker`, `monitor`: the failover machinery. `daemon`, `api`, `host`, `app`: the
//! surfaces and the wiring.

pub mod address;
pub mod api;
pub mod app;
pub mod broker;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod error;
pub mod host;
pub mod monitor;
pub mod net;
pub mod observe;
pub mod redis;
pub mod secret;
pub mod shutdown;
pub mod sync;
#[cfg(test)]
mod testing;
pub mod worker;

pub use address::{Addr, MasterSpec};
pub use app::App;
pub use broker::{FailoverRecord, Outcome};
pub use config::Config;
pub use error::{Error, Result};
pub use observe::status::{GroupStatus, WatchState};
pub use secret::Secret;
