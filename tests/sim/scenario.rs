//! Scenarios: a cluster, faults at given times and what must be true when, written as
//! text (`tests/scenarios/*.scn`) and run by the simulator in milliseconds, with every
//! invariant of a random run checked too. One line each:
//!
//! ```text
//! daemons 3
//! broker raft                           # or zookeeper (the default): the coordinator
//! group g0: master, replica, replica refuses, replica priority 0
//! end 30s
//! at 5s kill master g0                  # also: freeze master g0 for 3s,
//!                                       # isolate master g0 [from replicas] for 5s,
//!                                       # kill 10.0.0.2, restart 10.0.0.1,
//!                                       # cut replication to 10.0.0.2 for 30s,
//!                                       # cut d0 from servers for 5s, isolate d0 for 5s,
//!                                       # stall d0 for 3s, kill d0 for 10s
//! when failover-begin of g0 is recorded: kill its daemon for 10s
//! at 2s pause g0                        # or: resume g0 (a maintenance pause)
//! expect at 8s: master of g0 is 10.0.0.3
//! expect at 8s: writable in g0: 10.0.0.3   # the servers that say master and answer
//! expect at 8s: g0 is failed                # or: g0 is not failed
//! expect at 8s: trace has "passed over"     # or: trace lacks "..."
//! min-replicas-to-write 1 max-lag 2s        # bounded write loss on (see writes.rs)
//! clients stay with their master            # (always so with bounded loss)
//! expect lost writes within 2.1s            # or: expect lost writes over 5s: the
//!                                           # longest span of one master's lost writes
//! ```
//!
//! Servers are named by their group and place: group `gN`'s servers are `10.0.N.1`
//! (the master), `10.0.N.2`, ... on port 6379.

use super::faults::Fault;
use super::topology::{ServerSpec, Topology};
use super::world::Ms;
use redis_failover::config::MinReplicas;

/// What must be true at a time.
#[derive(Debug, Clone)]
pub enum Expect {
    Master { group: usize, addr: String },
    Writable { group: usize, addrs: Vec<String> },
    Failed { group: usize, failed: bool },
    Trace { text: String, present: bool },
}

/// A fault that waits for a moment rather than a time.
#[derive(Debug, Clone)]
pub enum Trigger {
    /// When a failover-begin of the group is recorded, its daemon is killed.
    KillRecorder { group: usize, down_for: Ms },
}

/// A parsed scenario.
pub struct Script {
    pub topology: Topology,
    pub plan: Vec<(Ms, Fault)>,
    pub triggers: Vec<Trigger>,
    pub expectations: Vec<(Ms, Expect)>,
    pub end_at: Ms,
    /// `broker raft`: the daemons form a Raft cluster (raft-rs) rather than use the
    /// ZooKeeper-like coordinator.
    pub raft: bool,
    pub bounded_loss: Option<MinReplicas>,
    pub sticky_clients: bool,
    /// The longest span of one master's lost writes: at most (`true`) or over this.
    pub loss: Vec<(bool, Ms)>,
}

/// `5s`, `1.5s`, `200ms`.
fn time(word: &str) -> Result<Ms, String> {
    let parse = |n: &str, scale: f64| {
        n.parse::<f64>()
            .map(|v| (v * scale) as Ms)
            .map_err(|_| format!("not a time: {word}"))
    };
    match word.strip_suffix("ms") {
        Some(n) => parse(n, 1.0),
        None => parse(word.strip_suffix('s').unwrap_or(word), 1000.0),
    }
}

fn group(word: &str) -> Result<usize, String> {
    word.strip_prefix('g')
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("not a group: {word}"))
}

fn daemon(word: &str) -> Result<usize, String> {
    word.strip_prefix('d')
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("not a daemon: {word}"))
}

/// The index, in the simulated world, of server `10.0.G.N`.
fn server(word: &str, topology: &Topology) -> Result<usize, String> {
    let host = word.split(':').next().unwrap_or(word);
    let parts: Vec<usize> = host.split('.').filter_map(|p| p.parse().ok()).collect();
    let [10, 0, g, n] = parts[..] else {
        return Err(format!("not a server: {word}"));
    };
    let before: usize = topology.groups.iter().take(g).map(Vec::len).sum();
    if g >= topology.groups.len() || n == 0 || n > topology.groups[g].len() {
        return Err(format!("no such server: {word}"));
    }
    Ok(before + n - 1)
}

fn full(addr: &str) -> String {
    if addr.contains(':') {
        addr.to_string()
    } else {
        format!("{addr}:6379")
    }
}

impl Script {
    pub fn parse(text: &str) -> Result<Script, String> {
        let mut script = Script {
            topology: Topology {
                daemons: 1,
                groups: Vec::new(),
            },
            plan: Vec::new(),
            triggers: Vec::new(),
            expectations: Vec::new(),
            end_at: 30_000,
            raft: false,
            bounded_loss: None,
            sticky_clients: false,
            loss: Vec::new(),
        };
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            script
                .line(line)
                .map_err(|e| format!("line {}: {e}: {line}", n + 1))?;
        }
        script.plan.sort_by_key(|(at, _)| *at);
        Ok(script)
    }

    fn line(&mut self, line: &str) -> Result<(), String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words[..] {
            ["daemons", n] => self.topology.daemons = n.parse().map_err(|_| "not a count")?,
            ["end", t] => self.end_at = time(t)?,
            ["broker", "raft"] => self.raft = true,
            ["broker", "zookeeper"] => self.raft = false,
            ["min-replicas-to-write", n, "max-lag", t] => {
                self.bounded_loss = Some(MinReplicas {
                    to_write: n.parse().map_err(|_| "not a count")?,
                    max_lag_secs: (time(t)? / 1000) as u32,
                })
            }
            ["clients", "stay", "with", "their", "master"] => self.sticky_clients = true,
            ["expect", "lost", "writes", "within", t] => self.loss.push((true, time(t)?)),
            ["expect", "lost", "writes", "over", t] => self.loss.push((false, time(t)?)),
            ["group", name, ..] => {
                let g = group(name.trim_end_matches(':'))?;
                if g != self.topology.groups.len() {
                    return Err("groups are declared in order, g0 first".into());
                }
                let rest = line.split_once(':').map_or("", |(_, r)| r);
                let servers = rest
                    .split(',')
                    .enumerate()
                    .map(|(i, spec)| {
                        let words: Vec<&str> = spec.split_whitespace().collect();
                        let priority = match words.iter().position(|w| *w == "priority") {
                            Some(p) => words
                                .get(p + 1)
                                .and_then(|v| v.parse().ok())
                                .ok_or("priority needs a number")?,
                            None => 100,
                        };
                        Ok(ServerSpec {
                            priority,
                            refuses_promotion: words.contains(&"refuses"),
                            run_id: format!("{:040x}", g * 16 + i),
                        })
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                self.topology.groups.push(servers);
            }
            ["at", t, ..] => {
                let at = time(t)?;
                let fault = self.fault(&words[2..])?;
                self.plan.push((at, fault));
            }
            [
                "when",
                "failover-begin",
                "of",
                g,
                "is",
                "recorded:",
                "kill",
                "its",
                "daemon",
                "for",
                t,
            ] => {
                self.triggers.push(Trigger::KillRecorder {
                    group: group(g)?,
                    down_for: time(t)?,
                });
            }
            ["expect", "at", t, ..] => {
                let at = time(t.trim_end_matches(':'))?;
                let expect = self.expect(&words[3..], line)?;
                self.expectations.push((at, expect));
            }
            _ => return Err("not understood".into()),
        }
        Ok(())
    }

    fn fault(&self, words: &[&str]) -> Result<Fault, String> {
        let topology = &self.topology;
        Ok(match words {
            ["kill", "master", g] => Fault::KillMaster(group(g)?),
            ["pause", g] => Fault::Pause {
                group: group(g)?,
                on: true,
            },
            ["resume", g] => Fault::Pause {
                group: group(g)?,
                on: false,
            },
            ["switchover", g] => Fault::Switchover {
                group: group(g)?,
                to: None,
            },
            ["switchover", g, "to", s] => Fault::Switchover {
                group: group(g)?,
                to: Some(server(s, topology)?),
            },
            ["freeze", "master", g, "for", t] => Fault::FreezeMaster {
                group: group(g)?,
                lasts: time(t)?,
            },
            ["isolate", "master", g, "for", t] => Fault::IsolateMaster {
                group: group(g)?,
                from_replicas: false,
                lasts: time(t)?,
            },
            ["isolate", "master", g, "from", "replicas", "for", t] => Fault::IsolateMaster {
                group: group(g)?,
                from_replicas: true,
                lasts: time(t)?,
            },
            ["kill", d, "for", t] if d.starts_with('d') => Fault::KillDaemon {
                daemon: daemon(d)?,
                down_for: time(t)?,
            },
            ["kill", s] => Fault::KillServer(server(s, topology)?),
            ["restart", s] => Fault::RestartServer(server(s, topology)?),
            ["cut", "replication", "to", s, "for", t] => Fault::CutReplicationTo {
                server: server(s, topology)?,
                lasts: time(t)?,
            },
            ["cut", d, "from", "servers", "for", t] => Fault::IsolateDaemonFromServers {
                daemon: daemon(d)?,
                lasts: time(t)?,
            },
            ["isolate", d, "for", t] => Fault::IsolateDaemon {
                daemon: daemon(d)?,
                lasts: time(t)?,
            },
            ["stall", d, "for", t] => Fault::Stall {
                daemon: daemon(d)?,
                lasts: time(t)?,
            },
            _ => return Err("no such fault".into()),
        })
    }

    fn expect(&self, words: &[&str], line: &str) -> Result<Expect, String> {
        let quoted = || {
            line.split('"')
                .nth(1)
                .map(String::from)
                .ok_or_else(|| "the text goes in double quotes".to_string())
        };
        Ok(match words {
            ["master", "of", g, "is", a] => Expect::Master {
                group: group(g)?,
                addr: full(a),
            },
            ["writable", "in", g, addrs @ ..] => Expect::Writable {
                group: group(g.trim_end_matches(':'))?,
                addrs: addrs
                    .iter()
                    .map(|a| full(a.trim_end_matches(',')))
                    .collect(),
            },
            [g, "is", "failed"] => Expect::Failed {
                group: group(g)?,
                failed: true,
            },
            [g, "is", "not", "failed"] => Expect::Failed {
                group: group(g)?,
                failed: false,
            },
            ["trace", "has", ..] => Expect::Trace {
                text: quoted()?,
                present: true,
            },
            ["trace", "lacks", ..] => Expect::Trace {
                text: quoted()?,
                present: false,
            },
            _ => return Err("no such expectation".into()),
        })
    }
}
