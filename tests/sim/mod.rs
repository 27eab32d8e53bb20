//! A deterministic simulator of whole clusters: daemons running the real monitor core
//! and the real failover worker, a simulated cluster (the ZooKeeper-like `cluster.rs` or raft-rs in `raft.rs`, chosen per seed in `coord.rs`), simulated
//! Redis servers (`world.rs`), a client that writes, and a fault injector (`faults.rs`).
//! All randomness comes from one seed, and time is simulated: one seed is one exact
//! run, replayed by `SIM_SEED=S`, and a minute of a cluster's life takes milliseconds.
//!
//! The invariants (`invariants.rs`) are checked as the run goes and at its end.

pub mod calls;
pub mod cluster;
pub mod coord;
pub mod daemon;
pub mod faults;
pub mod inject;
pub mod invariants;
pub mod raft;
pub mod rng;
pub mod run;
pub mod scenario;
pub mod topology;
pub mod world;
pub mod writes;

pub use run::{Outcome, Settings, run_script, run_seed};
pub use scenario::Script;
