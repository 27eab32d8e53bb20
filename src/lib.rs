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
//! `app.rs`, except the broker's, which the broker owns:
//!
//! ```text
//!  http-N (api/http.rs) ─┐                    ┌─ raft (broker/raft/node.rs): RawNode, Ready loop
//!  sentinel-* (api/sentinel/)├─► Daemon ─► broker ─┤    raft-send-*, raft-accept, raft-read
//!  library (App)         ─┘   (daemon.rs)  │     └─ or zk session thread (broker/zk/)
//!                                          │ state changes (subscribe)
//!                                          ▼
//!  checker-N (monitor/checker.rs) ◄─CheckJob─ monitor (monitor/) ─WorkerJob─► failover (worker/)
//!              └────────CheckOutcome───────►   detector.rs     ◄─WorkerReport─┘
//!                                                   │ events (observe/events.rs)
//!                  notify-script (host/), Sentinel subscribers ◄┘
//! ```
//!
//! - **monitor**: schedules checks, runs each group's down detector, and hands down
//!   masters, switchovers and fencing to the worker. It owns all per-group state.
//! - **checker pool**: runs master `ROLE` checks in batches with `poll`, and replica
//!   `INFO` refreshes; never changes a server.
//! - **failover worker**: the one thread that changes servers' roles (failover,
//!   switchover, fencing), so two changes of a group never interleave.
//! - **broker**: the replicated groups and history, and who acts (standalone, Raft, or
//!   ZooKeeper).
//! - **API surfaces**: HTTP (4 handler threads), the Sentinel port (one thread per
//!   client), the library; all through [`daemon::Daemon`].
//! - **host**: the systemd notifier (started by `main.rs`), the notification script
//!   runner, the seeder that records the configured masters once a cluster has a leader.
//!
//! # Modules, from the bottom up
//!
//! `error`, `address`, `secret`, `sync`, `clock`, `shutdown`, `net`: small pieces.
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
pub mod worker;

pub use address::{Addr, MasterSpec};
pub use app::App;
pub use broker::{FailoverRecord, Outcome};
pub use config::Config;
pub use error::{Error, Result};
pub use observe::status::{GroupStatus, WatchState};
pub use secret::Secret;
