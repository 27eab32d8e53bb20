//! The standalone broker: one daemon, state in memory, always the leader.
//!
//! This is the Go original's behaviour when no broker is configured. Nothing survives a
//! restart except what the config file and flags say.

use super::{Action, Broker, ReplicatedState};
use crate::error::Result;
use crossbeam_channel::{Receiver, Sender};
use std::sync::Mutex;

/// In-memory broker for a single daemon.
#[derive(Default)]
pub struct StandaloneBroker {
    state: Mutex<ReplicatedState>,
    subscribers: Mutex<Vec<Sender<()>>>,
}

impl StandaloneBroker {
    pub fn new() -> StandaloneBroker {
        StandaloneBroker::default()
    }

    fn notify(&self) {
        let mut subscribers = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        // A full channel already holds a wake-up; a closed one has gone away.
        subscribers.retain(|tx| {
            !matches!(
                tx.try_send(()),
                Err(crossbeam_channel::TrySendError::Disconnected(_))
            )
        });
    }
}

impl Broker for StandaloneBroker {
    fn propose(&self, action: Action) -> Result<()> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .apply(action)?;
        self.notify();
        Ok(())
    }

    fn state(&self) -> ReplicatedState {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn is_leader(&self) -> bool {
        true
    }

    fn subscribe(&self) -> Receiver<()> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tx);
        rx
    }
}
