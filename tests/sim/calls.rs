//! The worker's calls, carried out: each call to servers, the broker or the clock
//! changes the simulated world (or not, when the network says so) and is answered at
//! the simulated time it completes.

use super::coord::Proposed;
use super::daemon::{Answer, Call};
use super::faults::Fault;
use super::run::{Ev, PROPOSAL_TIMEOUT, Reach, Sim, lock};
use super::scenario::Trigger;
use super::world::{Ms, Node, SimRole};
use redis_failover::Addr;
use redis_failover::broker::Action;
use redis_failover::error::Error;
use redis_failover::monitor::core::Input;
use redis_failover::redis::ReplicaReport;
use redis_failover::worker::servers::PromoteReply;
use redis_failover::worker::{WorkerJob, WorkerReport};
use std::sync::Arc;

/// How often a worker waiting for its proposal looks again.
const POLL: Ms = 10;

/// A worker's proposal not applied yet.
pub struct Pending {
    seq: u64,
    deadline: Ms,
    what: String,
    group: Option<String>,
}

impl Sim {
    /// Starts the next queued job when the worker is idle.
    pub(super) fn next_job(&mut self, d: usize) {
        if self.daemons[d].busy.is_some() {
            return;
        }
        let Some(job) = self.daemons[d].queue.pop_front() else {
            return;
        };
        self.jobs += 1;
        self.daemons[d].busy = Some(self.jobs);
        if matches!(job, WorkerJob::Switchover(_)) {
            self.inv.planned(self.jobs);
        }
        let call = self.daemons[d].worker.start_job(job);
        self.on_call(d, call);
    }

    /// The worker's next call: carried out, its answer due when it completes.
    pub(super) fn on_call(&mut self, d: usize, call: Option<Call>) {
        let Some(call) = call else {
            self.daemons[d].busy = None;
            return;
        };
        let who = format!("d{d}");
        let job = self.daemons[d].busy.unwrap_or(0);
        let timeout = self.settings.worker_timeout;
        let (answer, took) = match call {
            Call::Done(report) => {
                self.daemons[d].busy = None;
                let attempted = matches!(report, WorkerReport::Attempted { .. });
                if let WorkerReport::Attempted { group, outcome, .. } = &report {
                    self.log(&who, &format!("attempt on {group} ended: {outcome:?}"));
                }
                self.step(d, Input::Worker(report));
                if attempted {
                    let state = lock(&self.daemons[d].belief).state.clone();
                    self.step(d, Input::State(Arc::new(state)));
                }
                return self.next_job(d);
            }
            Call::Sleep(how_long) => (Answer::Done(Ok(())), how_long.as_millis() as Ms),
            Call::Infos(addrs) => {
                let mut took = 1;
                let reports = addrs
                    .iter()
                    .map(|a| {
                        let info = match self.reach(d, a) {
                            Reach::Up(s) => Ok(self.world.info(s, &self.net, self.now)),
                            Reach::Refused => Err(refused(a)),
                            Reach::Silent => {
                                took = timeout;
                                Err(timed_out(a))
                            }
                        };
                        ReplicaReport {
                            addr: a.clone(),
                            info,
                        }
                    })
                    .collect();
                (Answer::Infos(reports), took)
            }
            Call::Role(a) => match self.reach(d, &a) {
                Reach::Up(s) => (Answer::Role(Ok(self.world.role(s, &self.net))), 1),
                Reach::Refused => (Answer::Role(Err(refused(&a))), 1),
                Reach::Silent => (Answer::Role(Err(timed_out(&a))), timeout),
            },
            Call::Promote(a) => match self.reach(d, &a) {
                Reach::Up(s) => {
                    let group = self.world.servers[s].group;
                    self.inv
                        .on_command(group, d, job, self.now, &format!("SLAVEOF NO ONE on {a}"));
                    let master = self
                        .state_master(group)
                        .filter(|&m| self.world.servers[m].role == SimRole::Master);
                    let reply = self.world.promote(s, self.now);
                    self.log(&who, &format!("SLAVEOF NO ONE on {a}: {reply:?}"));
                    if reply.is_ok() {
                        let health = self.health();
                        self.inv.on_promotion(job, group, master, s, &health);
                    }
                    let reply = match reply {
                        Ok(()) => PromoteReply::Accepted,
                        Err(text) => PromoteReply::Refused(text),
                    };
                    (Answer::Promote(reply), 1)
                }
                Reach::Refused => (Answer::Promote(PromoteReply::NoReply(refused(&a))), 1),
                Reach::Silent => (
                    Answer::Promote(PromoteReply::NoReply(timed_out(&a))),
                    timeout,
                ),
            },
            Call::Repoint(addrs, to) => {
                let mut took = 1;
                let mut failures = Vec::new();
                for a in &addrs {
                    match self.reach(d, a) {
                        Reach::Up(s) => {
                            let group = self.world.servers[s].group;
                            self.inv.on_command(
                                group,
                                d,
                                job,
                                self.now,
                                &format!("SLAVEOF {to} on {a}"),
                            );
                            self.world.follow(s, &to, self.now);
                        }
                        Reach::Refused => failures.push(refused(a).to_string()),
                        Reach::Silent => {
                            took = timeout;
                            failures.push(timed_out(a).to_string());
                        }
                    }
                }
                self.log(
                    &who,
                    &format!(
                        "re-point {} to {to}: {} failed",
                        list(&addrs),
                        failures.len()
                    ),
                );
                (Answer::Failures(failures), took)
            }
            Call::FollowAfresh(a, master) => match self.reach(d, &a) {
                Reach::Up(s) => {
                    let group = self.world.servers[s].group;
                    self.inv
                        .on_command(group, d, job, self.now, &format!("fence {a} to {master}"));
                    self.world.follow(s, &master, self.now);
                    self.log(&who, &format!("fenced {a}: now a replica of {master}"));
                    (Answer::Done(Ok(())), 1)
                }
                Reach::Refused => (Answer::Done(Err(refused(&a))), 1),
                Reach::Silent => (Answer::Done(Err(timed_out(&a))), timeout),
            },
            Call::Pause(a, pause) => match self.reach(d, &a) {
                Reach::Up(s) => {
                    let until = pause.map_or(0, |ms| self.now + ms);
                    self.world.servers[s].paused_until = until;
                    let what = pause.map_or("CLIENT UNPAUSE".into(), |ms| {
                        format!("CLIENT PAUSE {ms} WRITE")
                    });
                    self.log(&who, &format!("{what} on {a}"));
                    (Answer::Done(Ok(())), 1)
                }
                Reach::Refused => (Answer::Done(Err(refused(&a))), 1),
                Reach::Silent => (Answer::Done(Err(timed_out(&a))), timeout),
            },
            Call::Configure(a, settings) => match self.reach(d, &a) {
                Reach::Up(s) => {
                    let lag = Ms::from(settings.max_lag_secs) * 1000;
                    self.world.servers[s].min_replicas = Some((settings.to_write as usize, lag));
                    let what = format!(
                        "CONFIG SET min-replicas-to-write {} min-replicas-max-lag {} on {a}",
                        settings.to_write, settings.max_lag_secs
                    );
                    self.log(&who, &what);
                    (Answer::Done(Ok(())), 1)
                }
                Reach::Refused => (Answer::Done(Err(refused(&a))), 1),
                Reach::Silent => (Answer::Done(Err(timed_out(&a))), timeout),
            },
            Call::Propose(action) => {
                let what = describe_action(&action);
                let action_group = match &action {
                    Action::FailoverBegin { group, .. } => Some(group.clone()),
                    _ => None,
                };
                if let Action::FailoverEnd(record) = &action
                    && record.outcome == redis_failover::Outcome::Failed
                {
                    let g = self.groups.iter().position(|n| *n == record.group);
                    if let Some(g) = g {
                        let candidate = self.promotable(d, g, record.down_for_ms);
                        let reason = record.reason.clone().unwrap_or_default();
                        self.inv.on_failed(g, self.now, candidate, &reason);
                    }
                }
                let running = self.running();
                match self
                    .coord
                    .propose(d, &self.net, self.now, action, &running, true)
                {
                    Ok(Proposed::Done) => {
                        self.recorded(d, &what, &action_group);
                        (Answer::Done(Ok(())), 2)
                    }
                    Ok(Proposed::Pending(seq)) => {
                        let pending = Pending {
                            seq,
                            deadline: self.now + PROPOSAL_TIMEOUT,
                            what,
                            group: action_group,
                        };
                        let i = self.daemons[d].incarnation;
                        let ev = Ev::ProposalDue(d, i, Box::new(pending));
                        return self.at(self.now + POLL, ev);
                    }
                    Err(refusal) => {
                        let why = refusal.why;
                        self.log(&who, &format!("cannot record {what}: {why}"));
                        (Answer::Done(Err(Error::Server(why))), refusal.after)
                    }
                }
            }
        };
        let i = self.daemons[d].incarnation;
        self.at(self.now + took, Ev::Worker(d, i, answer));
    }

    /// The worker's proposal was applied by its daemon's node.
    fn recorded(&mut self, d: usize, what: &str, group: &Option<String>) {
        self.log(&format!("d{d}"), &format!("recorded {what}"));
        self.refresh_belief(d);
        self.fire_triggers(d, group);
    }

    /// A worker's pending proposal: answered once applied, or failed at the broker's
    /// proposal timeout (as the real broker answers its caller).
    pub(super) fn proposal_due(&mut self, d: usize, p: Pending) {
        let give_up = self.now >= p.deadline;
        let answer = match self.coord.poll(d, p.seq, give_up) {
            Some(Ok(())) => {
                self.recorded(d, &p.what, &p.group);
                Ok(())
            }
            Some(Err(why)) => Err(why),
            None if give_up => {
                Err("not committed within 5 s: is a majority of the raft cluster up?".to_string())
            }
            None => {
                let i = self.daemons[d].incarnation;
                return self.at(self.now + POLL, Ev::ProposalDue(d, i, Box::new(p)));
            }
        };
        if let Err(why) = &answer {
            let what = &p.what;
            self.log(&format!("d{d}"), &format!("cannot record {what}: {why}"));
        }
        let i = self.daemons[d].incarnation;
        let answer = Answer::Done(answer.map_err(Error::Server));
        self.at(self.now, Ev::Worker(d, i, answer));
    }

    /// A failover-begin of `group` was recorded by daemon `d`: the scenario's faults
    /// waiting for that moment happen now (each once).
    pub(super) fn fire_triggers(&mut self, d: usize, group: &Option<String>) {
        let Some(group) = group else { return };
        let Some(g) = self.groups.iter().position(|n| n == group) else {
            return;
        };
        let (fire, keep): (Vec<Trigger>, Vec<Trigger>) = std::mem::take(&mut self.triggers)
            .into_iter()
            .partition(|t| matches!(t, Trigger::KillRecorder { group, .. } if *group == g));
        self.triggers = keep;
        for trigger in fire {
            let Trigger::KillRecorder { down_for, .. } = trigger;
            self.apply_fault(Fault::KillDaemon {
                daemon: d,
                down_for,
            });
        }
    }

    /// A replica of group `g`'s current master that daemon `d` can reach and that
    /// would accept promotion, if any.
    /// One whose link has been down for ten windows more than the master's outage
    /// (`down_for`) holds data too old (Sentinel's rule, `redis/election.rs`).
    pub(super) fn promotable(&self, d: usize, g: usize, down_for: Ms) -> Option<String> {
        let master = &self.coord.state().groups.get(&self.groups[g])?.master;
        let stale_after = (down_for + 10 * self.settings.max_down_time) / 1000;
        self.world
            .servers
            .iter()
            .find(|s| {
                s.group == g
                    && s.priority > 0
                    && !s.refuses_promotion
                    && matches!(&s.role, SimRole::Replica { master: m, link_up, down_since, .. }
                        if m == master && (*link_up || (self.now - down_since) / 1000 <= stale_after))
                    && matches!(self.reach(d, &s.addr), Reach::Up(_))
            })
            .map(|s| s.addr.to_string())
    }

    pub(super) fn reach(&self, d: usize, a: &Addr) -> Reach {
        let Some(s) = self.world.index(a) else {
            return Reach::Refused;
        };
        if !self.net.connected(Node::Daemon(d), Node::Server(s)) {
            Reach::Silent
        } else if !self.world.servers[s].up {
            Reach::Refused
        } else if !self.world.servers[s].answers(self.now) {
            Reach::Silent
        } else {
            Reach::Up(s)
        }
    }
}

pub(super) fn describe_job(job: &WorkerJob) -> String {
    match job {
        WorkerJob::Failover(r) => format!(
            "failover of {} master {}{}",
            r.group,
            r.master,
            r.resume
                .as_ref()
                .map_or(String::new(), |x| format!(" (resume to {})", x.new_master))
        ),
        WorkerJob::Fence(f) => format!("fence {} in {} to {}", list(&f.targets), f.group, f.master),
        WorkerJob::Switchover(_) => "switchover".into(),
        WorkerJob::Configure(c) => format!("configure {}", c.master),
    }
}

pub(super) fn describe_action(action: &Action) -> String {
    match action {
        Action::FailoverBegin {
            group,
            new_master,
            passed_over,
            ..
        } => {
            format!(
                "failover-begin of {group} to {new_master} ({} passed over)",
                passed_over.len()
            )
        }
        Action::FailoverEnd(r) => format!(
            "failover-end of {}: {:?} {:?}",
            r.group, r.outcome, r.reason
        ),
        Action::KnownReplicas {
            group, replicas, ..
        } => format!("known replicas of {group}: {}", list(replicas)),
        other => format!("{other:?}"),
    }
}

pub(super) fn refused(a: &Addr) -> Error {
    Error::Server(format!("{a}: connection refused"))
}

pub(super) fn timed_out(a: &Addr) -> Error {
    Error::Server(format!("{a}: timed out"))
}

pub(super) fn list(addrs: &[Addr]) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",")
}
