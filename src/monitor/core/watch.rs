//! [`Watch`]: everything the monitor knows about one group, and the small rules that
//! need nothing but that knowledge.

use super::detector::DownDetector;
use crate::address::Addr;
use crate::observe::metrics::CheckCounts;
use crate::observe::status::ReplicaStatus;
use crate::redis::{ListedReplica, ReplicationInfo};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Where a watch stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Watching,
    /// The failover worker has the group (a failover or a switchover).
    FailingOver,
    /// Not checked: the master reports being a replica.
    Stopped,
}

/// Everything the monitor knows about one group.
pub struct Watch {
    pub master: Addr,
    /// The replicated `Group::revision` this watch was made for.
    pub revision: u64,
    /// Names this watch among all the monitor has made (never reused): timers, check
    /// outcomes and worker reports for an older watch of the group are ignored.
    pub watch_id: u64,
    pub phase: Phase,
    /// A failover of this group failed (the replicated `Group::failed`): it is still
    /// checked, and an old master that comes back is still fenced, but no automatic
    /// failover begins until the group is added again.
    pub failover_off: Option<String>,
    pub detector: DownDetector,
    pub check_in_flight: bool,
    /// The link to the master is down (closed by the server, or the last check failed).
    pub link_down: bool,
    /// A replica refresh is scheduled or running (one chain per watch, never more).
    pub refresh_pending: bool,
    /// Replica `INFO` probes of the current refresh still out.
    pub refresh_outstanding: usize,
    /// The replicas the master listed in its last `ROLE` reply.
    pub listed: Vec<ListedReplica>,
    /// The replicas as recorded in the replicated state.
    pub known: Vec<Addr>,
    /// This daemon finds the master down (`s_down`): `+sdown` was published and
    /// `-sdown` not yet.
    pub reported_down: bool,
    /// Daemons (this one included) that find the master down, as last counted.
    pub down_votes: usize,
    /// The vote count last logged while waiting for a quorum.
    pub waiting_for_quorum: Option<usize>,
    /// Servers being probed or fenced now (one probe or job per server at a time).
    pub fence_pending: HashSet<Addr>,
    /// The master's replication offset in its last `ROLE` reply.
    pub master_offset: i64,
    pub infos: HashMap<Addr, Option<ReplicationInfo>>,
    /// The master got the bounded-loss settings (or needs none).
    pub configured: bool,
    /// This group's check counters in the metrics.
    pub counts: Arc<CheckCounts>,
    /// The observation already says "ok, no error": a healthy check needs not write it.
    pub observed_ok: bool,
    /// The replica list as last published in the observation.
    pub published_replicas: Vec<ReplicaStatus>,
}

impl Watch {
    /// The replicas' statuses for the API: `ROLE` offsets merged with `INFO` details.
    pub fn replica_statuses(&self) -> Vec<ReplicaStatus> {
        self.listed
            .iter()
            .map(|listed| {
                let info = self.infos.get(&listed.addr).cloned().flatten();
                ReplicaStatus {
                    addr: listed.addr.clone(),
                    offset: listed.offset,
                    link: match &info {
                        Some(i) if i.link_up => "up",
                        Some(_) => "down",
                        None => "unknown",
                    },
                    priority: info.map(|i| i.priority),
                }
            })
            .collect()
    }

    /// The addresses of the listed replicas.
    pub fn listed_addrs(&self) -> Vec<Addr> {
        self.listed.iter().map(|r| r.addr.clone()).collect()
    }

    /// The replicas a failover of this master elects from and re-points: those it
    /// listed last, then the known ones from the replicated state (listed earlier, or
    /// added by fencing and failovers), each once and never the master itself. A daemon
    /// that never saw the master alive (a new leader) knows them from the state alone.
    pub fn failover_replicas(&self) -> Vec<Addr> {
        let mut replicas: Vec<Addr> = Vec::new();
        let listed = self.listed.iter().map(|r| &r.addr);
        for addr in listed.chain(&self.known) {
            if *addr != self.master && !replicas.contains(addr) {
                replicas.push(addr.clone());
            }
        }
        replicas
    }

    /// Records the replicas the master listed now: whether the list changed, and the
    /// ones never known before (to record in the replicated state). Known replicas are
    /// never forgotten (as in Sentinel): one that is down now is fenced when it comes
    /// back, and re-pointed at the next failover.
    pub fn take_listed(&mut self, replicas: Vec<ListedReplica>) -> (bool, Vec<Addr>) {
        let changed = !same_addresses(&self.listed, &replicas);
        self.listed = replicas;
        let new: Vec<Addr> = self
            .listed
            .iter()
            .map(|r| r.addr.clone())
            .filter(|a| !self.known.contains(a))
            .collect();
        self.known.extend(new.iter().cloned());
        (changed, new)
    }

    /// Known replicas the master does not list (nor is) and that are not being looked
    /// at already: they may claim master.
    pub fn unlisted_known(&self) -> Vec<Addr> {
        self.known
            .iter()
            .filter(|a| !self.listed.iter().any(|l| l.addr == **a) && **a != self.master)
            .filter(|a| !self.fence_pending.contains(*a))
            .cloned()
            .collect()
    }
}

fn same_addresses(a: &[ListedReplica], b: &[ListedReplica]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.addr == y.addr)
}
