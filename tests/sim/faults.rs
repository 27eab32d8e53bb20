//! The fault injector's plan: what goes wrong and when, drawn from the seed. Faults that
//! name "the master" are resolved when they happen (whoever the replicated state says
//! is master then), so that a run keeps hitting the server that matters.

use super::rng::Rng;
use super::world::Ms;

/// One fault.
#[derive(Debug, Clone)]
pub enum Fault {
    /// `kill -9` of the group's current master.
    KillMaster(usize),
    /// The group's current master stops (`SIGSTOP`) for a while: its replicas keep a
    /// link that Redis calls up until `repl-timeout`, hearing nothing.
    FreezeMaster { group: usize, lasts: Ms },
    /// `kill -9` of one server.
    KillServer(usize),
    /// A killed server starts again with its data and its role.
    RestartServer(usize),
    /// The group's current master cut off from every daemon (and, when `from_replicas`,
    /// from its replicas too: its replicas keep a link that Redis calls up until
    /// `repl-timeout`).
    IsolateMaster {
        group: usize,
        from_replicas: bool,
        lasts: Ms,
    },
    /// One daemon cut off from every server.
    IsolateDaemonFromServers { daemon: usize, lasts: Ms },
    /// One daemon cut off from the coordinator (and so from the cluster).
    IsolateDaemon { daemon: usize, lasts: Ms },
    /// The current master's writes stop reaching one replica (one way).
    CutReplication { group: usize, lasts: Ms },
    /// The group's current master's writes stop reaching this server (one way).
    CutReplicationTo { server: usize, lasts: Ms },
    /// A planned switchover of the group asked of the acting daemon (to this server,
    /// or the best replica).
    Switchover { group: usize, to: Option<usize> },
    /// A maintenance pause of the group begins (`on`) or ends, asked of the acting
    /// daemon (scenarios only).
    Pause { group: usize, on: bool },
    /// A daemon stops running (a long pause, a stopped VM) and then goes on.
    Stall { daemon: usize, lasts: Ms },
    /// A daemon's process dies and starts again later with nothing in memory.
    KillDaemon { daemon: usize, down_for: Ms },
    /// A daemon's wall clock jumps.
    ClockJump { daemon: usize, by_ms: u64 },
}

/// What the cluster looks like, for drawing faults.
pub struct Shape {
    pub daemons: usize,
    pub groups: usize,
    pub servers: usize,
}

/// Faults at times within `0..until`, in time order.
pub fn plan(rng: &mut Rng, shape: &Shape, until: Ms) -> Vec<(Ms, Fault)> {
    let count = rng.range(1, 6);
    let mut faults: Vec<(Ms, Fault)> = Vec::new();
    for _ in 0..count {
        let at = rng.range(2_000, until);
        let group = rng.pick(shape.groups);
        let daemon = rng.pick(shape.daemons);
        let lasts = rng.range(500, 12_000);
        let fault = match rng.range(0, 12) {
            0..=1 => Fault::KillMaster(group),
            2 => Fault::FreezeMaster {
                group,
                lasts: rng.range(2_000, 70_000),
            },
            3 => Fault::KillServer(rng.pick(shape.servers)),
            4 => Fault::IsolateMaster {
                group,
                from_replicas: rng.chance(50),
                lasts,
            },
            5 => Fault::IsolateDaemonFromServers { daemon, lasts },
            6 => Fault::IsolateDaemon { daemon, lasts },
            7 => Fault::CutReplication { group, lasts },
            8 => Fault::Stall {
                daemon,
                lasts: rng.range(200, 5_000),
            },
            9 => Fault::KillDaemon {
                daemon,
                down_for: lasts,
            },
            10 => Fault::ClockJump {
                daemon,
                by_ms: rng.range(3_000, 60_000),
            },
            11 => Fault::RestartServer(rng.pick(shape.servers)),
            _ => Fault::KillMaster(group),
        };
        faults.push((at, fault));
    }
    faults.sort_by_key(|(at, _)| *at);
    faults
}
