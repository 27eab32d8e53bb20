//! What the failover worker is asked ([`FailoverRequest`], with [`Resume`] for a
//! failover an earlier leader began) and how its steps stop short ([`Stop`]): shared by
//! the failover steps (`failover.rs`) and the promotion in election order
//! (`promotion.rs`).

use crate::address::Addr;
use crate::broker::Outcome;
use std::time::Instant;

/// A master that the detector found down.
#[derive(Debug, Clone)]
pub struct FailoverRequest {
    pub group: String,
    pub master: Addr,
    /// The replicas to elect from and re-point: the ones the replicated state records
    /// for the group (listed by the master, or added by fencing and failovers).
    pub replicas: Vec<Addr>,
    /// When the master last answered a check.
    pub last_success: Instant,
    /// The master's replication offset when it last answered.
    pub master_offset: i64,
    /// Which watch of the monitor asked (answers to an older watch are ignored).
    pub watch_id: u64,
    /// Set when an earlier leader recorded failover-begin and stopped before
    /// failover-end: finish that failover, never choose another replica.
    pub resume: Option<Resume>,
    /// A person asked for it (`POST /api/v1/groups/NAME/failover`).
    pub manual: bool,
}

/// A failover begun by an earlier leader: the replica it chose and when it began (which
/// names the attempt in the replicated state).
#[derive(Debug, Clone)]
pub struct Resume {
    pub new_master: Addr,
    pub started_at_ms: u64,
}

/// How the steps ended when they did not run to the end.
pub(super) enum Stop {
    /// Recorded with this outcome and reason.
    End(Outcome, String),
    /// Leadership was lost after failover-begin and before a promotion, or the move to
    /// the next candidate could not be recorded: nothing is recorded, so whoever acts
    /// next finishes the attempt from its replicated failover-begin.
    Abandon(String),
}

impl From<(Outcome, String)> for Stop {
    fn from((outcome, reason): (Outcome, String)) -> Stop {
        Stop::End(outcome, reason)
    }
}
