//! The standalone broker: one daemon, state in memory, always the leader.
//!
//! This is the Go original's behaviour when no broker is configured. Nothing survives a
//! restart except what the config file and flags say.

use super::{Action, Broker, ClusterStatus, ReplicatedState, Subscribers};
use crate::error::Result;
use crate::sync::lock;
use crossbeam_channel::Receiver;
use std::sync::{Arc, Mutex};

/// In-memory broker for a single daemon.
#[derive(Default)]
pub struct StandaloneBroker {
    state: Mutex<Arc<ReplicatedState>>,
    subscribers: Subscribers,
    http_addr: String,
}

impl StandaloneBroker {
    pub fn new(http_addr: String) -> StandaloneBroker {
        StandaloneBroker {
            http_addr,
            ..StandaloneBroker::default()
        }
    }
}

impl Broker for StandaloneBroker {
    fn propose(&self, action: Action) -> Result<()> {
        // Copy-on-write: snapshots handed out earlier keep what they saw.
        Arc::make_mut(&mut lock(&self.state)).apply(action)?;
        self.subscribers.notify();
        Ok(())
    }

    fn state(&self) -> Arc<ReplicatedState> {
        lock(&self.state).clone()
    }

    fn is_acting(&self) -> bool {
        true
    }

    fn subscribe(&self) -> Receiver<()> {
        self.subscribers.subscribe()
    }

    fn cluster(&self) -> ClusterStatus {
        ClusterStatus {
            broker: "standalone".into(),
            http_addr: self.http_addr.clone(),
            role: "leader".into(),
            acting: true,
            ..ClusterStatus::default()
        }
    }
}
