//! What this daemon observes and tells about itself, written by the monitor and the
//! failover worker and read by the API surfaces: each group's observed state
//! (`status.rs`), Sentinel-style events (`events.rs`) and counters (`metrics.rs`).

pub mod events;
pub mod metrics;
pub mod status;
