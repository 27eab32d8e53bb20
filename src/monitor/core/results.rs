//! What the checker threads report, taken apart: each probe's result goes to the part
//! of the monitor it concerns (a master check to `master_check.rs`, a replica's `INFO`
//! to the group's replica list, a look at a server that may need fencing to the worker),
//! and a closed link to the master is seen at once.

use super::probe::{Answer, CheckerReport, LinkClosed, Probe, ProbeKind, ProbeResult};
use super::{MonitorCore, REPLICA_REFRESH, Timer};
use crate::address::Addr;
use crate::error::{Error, Result};
use crate::redis::{ReplicationInfo, Role};
use crate::worker::WorkerJob;
use crate::worker::fence::FenceJob;

impl MonitorCore {
    pub(super) fn on_report(&mut self, report: CheckerReport) {
        let now = self.now.mono;
        if let Some(change) = self.tilt.on_lateness("a checker thread", report.late, now) {
            self.on_tilt(change);
        }
        for result in report.results {
            self.on_probe_result(result);
        }
        for closed in report.closed {
            self.on_link_closed(closed);
        }
    }

    fn on_probe_result(&mut self, result: ProbeResult) {
        let ProbeResult {
            probe,
            started,
            finished,
            answer,
        } = result;
        let Some(group) = self.by_id.get(&probe.watch_id).cloned() else {
            return;
        };
        let Some(watch) = self.watches.get(&*group) else {
            return;
        };
        let is_master = probe.addr == *watch.master();
        match probe.kind {
            ProbeKind::Master if is_master => {
                let lag = started.saturating_duration_since(probe.due);
                self.sinks.metrics.on_check_lag(lag);
                let role = answer.and_then(|a| expect_role(&probe, a));
                self.on_master_checked(&group, &probe, started, finished, role);
            }
            ProbeKind::Master | ProbeKind::Role => {
                let role = answer.and_then(|a| expect_role(&probe, a));
                self.on_fence_probed(&group, probe, role);
            }
            ProbeKind::Info => {
                let info = answer.and_then(|a| match a {
                    Answer::Info(info) => Ok(info),
                    Answer::Role(_) => Err(Error::Server(format!("{}: not an INFO", probe.addr))),
                });
                self.on_replica_info(&group, probe, info);
            }
        }
    }

    /// A known replica that the master does not list was asked its role: one that
    /// claims master goes to the worker to be made a replica.
    fn on_fence_probed(&mut self, group: &str, probe: Probe, role: Result<Role>) {
        let acting = self.acting;
        let Some(watch) = self.current(group, probe.watch_id) else {
            return;
        };
        let claims_master = matches!(role, Ok(Role::Master { .. }));
        if let Err(e) = &role {
            log::debug!(
                "group {group}: known replica {} does not answer: {e}",
                probe.addr
            );
        }
        // Fencing changes a server's role without the cluster's say: only while this
        // daemon still acts (its lease may have run out since the check).
        if !claims_master || !acting {
            watch.fence_done(&probe.addr);
            return;
        }
        let job = FenceJob {
            group: group.to_string(),
            watch_id: probe.watch_id,
            master: watch.master().clone(),
            targets: vec![probe.addr],
        };
        self.send_to_worker(WorkerJob::Fence(job));
    }

    /// One replica's `INFO` of a refresh; the last one publishes the list and sets the
    /// next refresh.
    fn on_replica_info(&mut self, group: &str, probe: Probe, info: Result<ReplicationInfo>) {
        let Some(watch) = self.current(group, probe.watch_id) else {
            return;
        };
        if let Err(e) = &info {
            log::debug!("group {group}: replica INFO failed: {e}");
        }
        if !watch.replica_info(probe.addr, info.ok()) {
            return;
        }
        self.publish_replicas(group);
        let next = self.now.mono + REPLICA_REFRESH;
        self.schedule(next, Timer::RefreshReplicas, probe.watch_id);
    }

    /// The server closed a kept connection: for a master, its link is down at once
    /// (Sentinel's `disconnected`), and it is checked again in the next slot. The down
    /// window still counts from the last successful check.
    fn on_link_closed(&mut self, closed: LinkClosed) {
        let LinkClosed {
            watch_id,
            addr,
            why,
        } = closed;
        let Some(group) = self.by_id.get(&watch_id).cloned() else {
            return;
        };
        let Some(watch) = self.watches.get_mut(&*group) else {
            return;
        };
        if addr != *watch.master() {
            log::debug!("group {group}: link to {addr} closed: {why}");
            return;
        }
        watch.link_closed();
        self.mark_link(&group, false, Some(&why));
        let Some(watch) = self.watches.get(&*group) else {
            return;
        };
        if watch.recheck_on_close() {
            // Spread: when every link closes at once (a network blip, a daemon resumed
            // after a stop), the checks do not all reconnect in the same instant.
            let at = self.now.mono + self.recheck_spread(watch_id);
            self.schedule(at, Timer::Check, watch_id);
        }
    }

    /// Records whether the link to a group's master is up; logs when it goes down.
    pub(super) fn mark_link(&mut self, group: &str, up: bool, why: Option<&str>) {
        let Some(watch) = self.watches.get_mut(group) else {
            return;
        };
        if !watch.set_link(up) {
            return;
        }
        if let Some(why) = why {
            log::warn!(
                "group {group}: link to master {} is down ({why}); checking again now",
                watch.master()
            );
        }
        self.sinks.observed.update(group, |o| o.disconnected = !up);
    }

    /// Asks servers that may claim master for their role (in the next batch).
    pub(super) fn fence_probes(&mut self, watch_id: u64, targets: Vec<Addr>) {
        let now = self.now.mono;
        for addr in targets {
            self.batch.push(Probe {
                watch_id,
                addr,
                kind: ProbeKind::Role,
                due: now,
            });
        }
    }
}

fn expect_role(probe: &Probe, answer: Answer) -> Result<Role> {
    match answer {
        Answer::Role(role) => Ok(role),
        Answer::Info(_) => Err(Error::Server(format!("{}: not a ROLE reply", probe.addr))),
    }
}
