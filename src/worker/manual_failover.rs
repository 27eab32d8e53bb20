//! A failover a person asks for (`POST /api/v1/groups/NAME/failover`, Sentinel's
//! `SENTINEL FAILOVER`): the command the API sends to the monitor and the handle it
//! holds. The monitor's core decides (see `monitor/core/holds.rs`): only the acting
//! daemon, only a master that does not answer (a live one is switched over instead),
//! and neither a pause nor the anti-flapping block holds it back. The worker then runs
//! the usual failover steps, election rules included.

use super::switchover_request::SwitchoverError;
use crate::broker::Broker;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

/// How long the API waits for the monitor to accept or refuse.
const REPLY_WITHIN: Duration = Duration::from_secs(10);

/// A request on its way from the API to the monitor.
pub struct ManualFailoverCommand {
    /// The group's name.
    pub group: String,
    /// Accepted: the master being failed over; or why not.
    pub reply: Sender<Result<String, SwitchoverError>>,
}

impl ManualFailoverCommand {
    /// Answers the caller without running anything.
    pub fn refuse(self, error: SwitchoverError) {
        log::warn!("group {}: manual failover refused: {error}", self.group);
        let _ = self.reply.send(Err(error));
    }
}

/// The API's handle on manual failovers.
pub struct ManualFailovers {
    commands: Sender<ManualFailoverCommand>,
}

impl Default for ManualFailovers {
    /// A handle with no monitor behind it: every request is refused.
    fn default() -> ManualFailovers {
        ManualFailovers {
            commands: crossbeam_channel::bounded(1).0,
        }
    }
}

impl ManualFailovers {
    /// A handle and the receiver the monitor listens on.
    pub fn new() -> (ManualFailovers, Receiver<ManualFailoverCommand>) {
        let (commands, receiver) = crossbeam_channel::unbounded();
        (ManualFailovers { commands }, receiver)
    }

    /// Asks the monitor to fail the group's master over; answers once it has begun (the
    /// outcome shows in `GET /api/v1/groups` and the history) or why it will not.
    pub fn request(&self, broker: &dyn Broker, group: &str) -> Result<String, SwitchoverError> {
        if !broker.is_acting() {
            return Err(SwitchoverError::Unavailable(match broker.cluster().other_leader_http() {
                Some(addr) => format!(
                    "this daemon is not the cluster's acting leader; send the failover to the leader, whose HTTP API is at http://{addr}"
                ),
                None => "this daemon is not the cluster's acting leader and knows no leader now; try again".into(),
            }));
        }
        let group = broker
            .state()
            .find(group)
            .ok_or_else(|| SwitchoverError::NotFound(format!("no monitored group {group:?}")))?;
        let (reply, answer) = crossbeam_channel::bounded(1);
        let command = ManualFailoverCommand { group, reply };
        if self.commands.send(command).is_err() {
            return Err(SwitchoverError::Unavailable(
                "the monitor is not running (the daemon is stopping)".into(),
            ));
        }
        match answer.recv_timeout(REPLY_WITHIN) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => Err(SwitchoverError::Unavailable(
                "the monitor did not answer in time; GET /api/v1/groups shows the group's state"
                    .into(),
            )),
            Err(RecvTimeoutError::Disconnected) => Err(SwitchoverError::Unavailable(
                "the monitor dropped the request (it is stopping)".into(),
            )),
        }
    }
}
