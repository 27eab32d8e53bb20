//! Faults carried out (kills, freezes, partitions, stalls, clock jumps, the heal) and
//! what the invariants are shown of the world.

use super::faults::Fault;
use super::run::lock;
use super::run::{Ev, FENCE_SETTLE, Sim};
use super::scenario::Expect;
use super::world::{Ms, Node};
use redis_failover::broker::Action;
use redis_failover::monitor::core::Input;
use redis_failover::monitor::core::probe::LinkClosed;
use redis_failover::worker::switchover_request::{SwitchoverCommand, SwitchoverRequest};
use std::sync::atomic::Ordering;
use std::time::Duration;

impl Sim {
    /// A switchover asked through the API of the daemon that acts (as a client that
    /// asks any daemon is sent to the leader); refused when none acts.
    fn switchover(&mut self, group: usize, to: Option<usize>) {
        let Some(d) = self.acting_daemon() else {
            self.log("api", "switchover refused: no daemon acts");
            return;
        };
        let (reply, _answers) = crossbeam_channel::bounded(1);
        let command = SwitchoverCommand {
            request: SwitchoverRequest {
                group: self.groups[group].clone(),
                to: to.map(|s| self.world.servers[s].addr.clone()),
                force: false,
            },
            catch_up_timeout: Duration::from_secs(5),
            reply,
        };
        self.log(&format!("d{d}"), &format!("switchover of g{group} asked"));
        self.step(d, Input::Switchover(command));
    }

    /// A pause of the group begins or ends, through the daemon that acts (as the API
    /// proposes it); dropped when none acts.
    fn pause(&mut self, group: usize, on: bool) {
        let Some(d) = self.acting_daemon() else {
            self.log("api", "pause refused: no daemon acts");
            return;
        };
        let group = Some(self.groups[group].clone());
        let wall_ms = self
            .now_at(self.now, 0)
            .unix_ms(self.now_at(self.now, 0).mono);
        let action = if on {
            let pause = redis_failover::broker::Pause {
                since_ms: wall_ms,
                until_ms: None,
            };
            Action::Pause { group, pause }
        } else {
            Action::Resume { group }
        };
        let running = self.running();
        let done = self
            .coord
            .propose(d, &self.net, self.now, action, &running, false);
        self.log(&format!("d{d}"), &format!("pause {on}: {}", done.is_ok()));
        // As the real broker wakes the monitor after any change of the state.
        self.refresh_belief(d);
        let state = lock(&self.daemons[d].belief).state.clone();
        self.step(d, Input::State(std::sync::Arc::new(state)));
    }

    /// The daemon that acts now, as a request to any daemon's API reaches it.
    fn acting_daemon(&self) -> Option<usize> {
        (0..self.daemons.len()).find(|&d| {
            let daemon = &self.daemons[d];
            let mut belief = lock(&daemon.belief);
            belief.now = self.now;
            daemon.up && belief.acting()
        })
    }

    /// A scenario's expectation, checked now; a miss is a violation.
    pub(super) fn check(&mut self, expect: &Expect) {
        let state_group = |g: usize| self.coord.state().groups.get(&self.groups[g]);
        let miss = match expect {
            Expect::Master { group, addr } => {
                let master = state_group(*group).map(|g| g.master.to_string());
                (master.as_deref() != Some(addr.as_str()))
                    .then(|| format!("the master of g{group} is {master:?}, not {addr}"))
            }
            Expect::Writable { group, addrs } => {
                let mut up: Vec<String> = self
                    .world
                    .masters_up(*group, self.now, 0)
                    .iter()
                    .map(|&s| self.world.servers[s].addr.to_string())
                    .collect();
                up.sort();
                let mut want = addrs.clone();
                want.sort();
                (up != want).then(|| {
                    format!("the masters of g{group} that answer are {up:?}, not {want:?}")
                })
            }
            Expect::Failed { group, failed } => {
                let is = state_group(*group).is_some_and(|g| g.failed.is_some());
                (is != *failed).then(|| format!("g{group} failed: {is}, expected {failed}"))
            }
            Expect::Trace { text, present } => {
                let has = self.trace.iter().any(|l| l.contains(text.as_str()));
                (has != *present)
                    .then(|| format!("the trace {} {text:?}", if has { "has" } else { "lacks" }))
            }
        };
        if let Some(miss) = miss {
            let now = self.now;
            self.inv
                .violations
                .push(format!("expected at {now} ms: {miss}"));
        }
    }

    pub(super) fn apply_fault(&mut self, fault: Fault) {
        self.log("fault", &format!("{fault:?}"));
        match fault {
            Fault::KillMaster(g) => {
                if let Some(m) = self.state_master(g) {
                    self.kill_server(m);
                }
            }
            Fault::KillServer(s) => self.kill_server(s),
            Fault::FreezeMaster { group, lasts } => {
                if let Some(m) = self.state_master(group) {
                    self.world.servers[m].frozen_until = self.now + lasts;
                    let until = self.now + lasts;
                    self.at(until, Ev::Thaw);
                }
            }
            Fault::RestartServer(s) => self.world.restart(s, self.now),
            Fault::IsolateMaster {
                group,
                from_replicas,
                lasts,
            } => {
                let Some(m) = self.state_master(group) else {
                    return;
                };
                let mut cuts = Vec::new();
                for d in 0..self.daemons.len() {
                    cuts.push((Node::Daemon(d), Node::Server(m)));
                    cuts.push((Node::Server(m), Node::Daemon(d)));
                }
                if from_replicas {
                    for s in 0..self.world.servers.len() {
                        if s != m {
                            cuts.push((Node::Server(m), Node::Server(s)));
                            cuts.push((Node::Server(s), Node::Server(m)));
                        }
                    }
                }
                self.partition(cuts, lasts);
            }
            Fault::IsolateDaemonFromServers { daemon, lasts } => {
                let cuts = (0..self.world.servers.len())
                    .flat_map(|s| {
                        [
                            (Node::Daemon(daemon), Node::Server(s)),
                            (Node::Server(s), Node::Daemon(daemon)),
                        ]
                    })
                    .collect();
                self.partition(cuts, lasts);
            }
            Fault::IsolateDaemon { daemon, lasts } => {
                let mut cuts = vec![
                    (Node::Daemon(daemon), Node::Coordinator),
                    (Node::Coordinator, Node::Daemon(daemon)),
                ];
                for other in 0..self.daemons.len() {
                    if other != daemon {
                        cuts.push((Node::Daemon(daemon), Node::Daemon(other)));
                    }
                }
                self.partition(cuts, lasts);
            }
            Fault::CutReplication { group, lasts } => {
                let Some(m) = self.state_master(group) else {
                    return;
                };
                let replicas: Vec<usize> = (0..self.world.servers.len())
                    .filter(|&s| s != m && self.world.servers[s].group == group)
                    .collect();
                if replicas.is_empty() {
                    return;
                }
                let r = replicas[self.rng.pick(replicas.len())];
                self.partition(vec![(Node::Server(m), Node::Server(r))], lasts);
            }
            Fault::CutReplicationTo { server, lasts } => {
                let group = self.world.servers[server].group;
                if let Some(m) = self.state_master(group).filter(|&m| m != server) {
                    self.partition(vec![(Node::Server(m), Node::Server(server))], lasts);
                }
            }
            Fault::Switchover { group, to } => self.switchover(group, to),
            Fault::Pause { group, on } => self.pause(group, on),
            Fault::Stall { daemon, lasts } => {
                if self.daemons[daemon].up {
                    let until = self.now + lasts;
                    self.daemons[daemon].stalled_until = until;
                    let i = self.daemons[daemon].incarnation;
                    self.at(until, Ev::StallEnds(daemon, i, lasts));
                }
            }
            Fault::KillDaemon { daemon, down_for } => {
                if self.daemons[daemon].up {
                    self.daemons[daemon].up = false;
                    self.at(self.now + down_for, Ev::RestartDaemon(daemon));
                }
            }
            Fault::ClockJump { daemon, by_ms } => {
                let offset = &self.daemons[daemon].wall_offset;
                offset.fetch_add(by_ms, Ordering::SeqCst);
            }
        }
    }

    pub(super) fn kill_server(&mut self, s: usize) {
        self.world.kill(s);
        // Every kept connection to it is reset: its daemons see the link close.
        for d in 0..self.daemons.len() {
            let i = self.daemons[d].incarnation;
            let closed: Vec<u64> = self.daemons[d]
                .conns
                .iter()
                .filter(|(_, c)| *c == s)
                .map(|(w, _)| *w)
                .collect();
            self.daemons[d].conns.retain(|(_, c)| *c != s);
            if !self.net.connected(Node::Daemon(d), Node::Server(s)) {
                continue;
            }
            for watch_id in closed {
                let closed = LinkClosed {
                    watch_id,
                    addr: self.world.servers[s].addr.clone(),
                    why: "connection reset".into(),
                };
                self.at(self.now + 1, Ev::Closed(d, i, closed));
            }
        }
    }

    pub(super) fn partition(&mut self, cuts: Vec<(Node, Node)>, lasts: Ms) {
        self.seq += 1;
        let id = self.seq;
        self.partitions.insert(id, cuts);
        self.rebuild_net();
        self.at(self.now + lasts, Ev::PartitionEnds(id));
    }

    pub(super) fn rebuild_net(&mut self) {
        self.net.heal_all();
        for cuts in self.partitions.values() {
            for (from, to) in cuts {
                self.net.cut(*from, *to);
            }
        }
    }

    /// The end of the faults: every partition heals, every daemon runs; servers are
    /// restarted or left as they are (drawn per seed).
    pub(super) fn heal(&mut self) {
        self.inv.observe(&self.health());
        self.partitions.clear();
        self.rebuild_net();
        for d in 0..self.daemons.len() {
            if !self.daemons[d].up {
                self.restart_daemon(d);
            }
            self.daemons[d].stalled_until = self.daemons[d].stalled_until.min(self.now);
        }
        if self.restart_servers_at_heal {
            for s in 0..self.world.servers.len() {
                self.world.restart(s, self.now);
            }
        }
        self.log("sim", "heal: partitions gone, every daemon runs");
        self.inv.observe(&self.health());
    }

    /// Which daemon sees which server healthy now (see `invariants.rs`).
    pub(super) fn health(&self) -> super::invariants::Health {
        let mut up = Vec::new();
        for d in 0..self.daemons.len() {
            let daemon = &self.daemons[d];
            let runs = daemon.up && daemon.stalled_until <= self.now;
            let row = (0..self.world.servers.len())
                .map(|s| {
                    // A server that thaws now was silent until now.
                    runs && self.world.servers[s].up
                        && self.world.servers[s].frozen_until < self.now
                        && self.net.connected(Node::Daemon(d), Node::Server(s))
                })
                .collect();
            up.push(row);
        }
        super::invariants::Health {
            now: self.now,
            sees_up: up,
        }
    }

    /// Per group: whether its master is dead while a replica could be promoted.
    pub(super) fn stuck(&self) -> Vec<(usize, bool, String)> {
        (0..self.groups.len())
            .map(|g| {
                let group = self.coord.state().groups.get(&self.groups[g]);
                let master_dead = self
                    .state_master(g)
                    .is_none_or(|m| !self.world.servers[m].answers(self.now));
                let candidate = super::invariants::eligible_in(&self.world.servers, g);
                let detail = format!(
                    "master {} dead, {} could be promoted{}",
                    group.map_or(String::new(), |g| g.master.to_string()),
                    candidate.clone().unwrap_or_default(),
                    group
                        .and_then(|g| g.failed.clone())
                        .map_or(String::new(), |f| format!(
                            "; the group is switched off: {f}"
                        ))
                );
                let off = group.is_some_and(|g| g.failed.is_some());
                (g, master_dead && candidate.is_some() && !off, detail)
            })
            .collect()
    }

    pub(super) fn end_report(&self) -> super::invariants::End {
        super::invariants::End {
            now: self.now,
            state: self.coord.state().clone(),
            groups: self.groups.clone(),
            servers: self.world.servers.clone(),
            masters_up: (0..self.groups.len())
                .map(|g| self.world.masters_up(g, self.now, FENCE_SETTLE))
                .collect(),
            named_answers: (0..self.groups.len())
                .map(|g| {
                    self.state_master(g).is_some_and(|m| {
                        self.world
                            .masters_up(g, self.now, FENCE_SETTLE)
                            .contains(&m)
                    })
                })
                .collect(),
            restarted_servers: self.restart_servers_at_heal,
            heal_at: self.settings.heal_at,
        }
    }
}
