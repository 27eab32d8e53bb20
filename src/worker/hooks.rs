//! Failover hooks for programs that embed the daemon.
//!
//! A before-failover hook sees `(group, old_master)` and may veto the failover by
//! returning `Err(reason)`; a before-promote hook sees `(group, old_master,
//! chosen_replica)` once the election is done and may veto too (`pre_failover_script`
//! is one); an after-failover hook sees `(group, old_master, new_master)`
//! once the new master is in place. Hooks run on the failover worker thread; a hook that
//! panics is logged and counts as a veto (before) or is ignored (after), so user code can
//! never take the worker down.

use crate::address::Addr;
use crate::sync::{read, write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::RwLock;

/// Called before a failover; `Err(reason)` vetoes it.
pub type BeforeFailover = Box<dyn Fn(&str, &Addr) -> Result<(), String> + Send + Sync>;
/// Called once the replica to promote is chosen; `Err(reason)` vetoes the failover.
pub type BeforePromote = Box<dyn Fn(&str, &Addr, &Addr) -> Result<(), String> + Send + Sync>;
/// Called after a successful failover.
pub type AfterFailover = Box<dyn Fn(&str, &Addr, &Addr) + Send + Sync>;

/// The registered hooks.
#[derive(Default)]
pub struct Hooks {
    before: RwLock<Vec<BeforeFailover>>,
    before_promote: RwLock<Vec<BeforePromote>>,
    after: RwLock<Vec<AfterFailover>>,
}

impl Hooks {
    pub fn add_before(&self, hook: BeforeFailover) {
        write(&self.before).push(hook);
    }

    pub fn add_before_promote(&self, hook: BeforePromote) {
        write(&self.before_promote).push(hook);
    }

    /// Runs every before-promote hook; the first refusal wins. `Ok(false)` when there
    /// is none.
    pub fn run_before_promote(
        &self,
        group: &str,
        old: &Addr,
        chosen: &Addr,
    ) -> Result<bool, String> {
        let hooks = read(&self.before_promote);
        for hook in hooks.iter() {
            match catch_unwind(AssertUnwindSafe(|| hook(group, old, chosen))) {
                Ok(Ok(())) => {}
                Ok(Err(reason)) => return Err(reason),
                Err(_) => return Err("a before-promote hook panicked".into()),
            }
        }
        Ok(!hooks.is_empty())
    }

    pub fn add_after(&self, hook: AfterFailover) {
        write(&self.after).push(hook);
    }

    /// Runs every before hook; the first refusal wins.
    pub fn run_before(&self, group: &str, old: &Addr) -> Result<(), String> {
        let hooks = read(&self.before);
        for hook in hooks.iter() {
            match catch_unwind(AssertUnwindSafe(|| hook(group, old))) {
                Ok(Ok(())) => {}
                Ok(Err(reason)) => return Err(reason),
                Err(_) => return Err("a before-failover hook panicked".into()),
            }
        }
        Ok(())
    }

    /// Runs every after hook.
    pub fn run_after(&self, group: &str, old: &Addr, new: &Addr) {
        let hooks = read(&self.after);
        for hook in hooks.iter() {
            if catch_unwind(AssertUnwindSafe(|| hook(group, old, new))).is_err() {
                log::error!("group {group}: an after-failover hook panicked");
            }
        }
    }
}
