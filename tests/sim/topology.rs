//! The cluster a run simulates: its daemons and each group's servers, drawn from the
//! seed or written in a scenario, and the servers' addresses.

use super::rng::Rng;
use redis_failover::Addr;

/// One server of a cluster to simulate.
pub struct ServerSpec {
    pub priority: u32,
    pub refuses_promotion: bool,
    pub run_id: String,
}

/// A cluster to simulate: its daemons, and each group's servers (the master first).
pub struct Topology {
    pub daemons: usize,
    pub groups: Vec<Vec<ServerSpec>>,
}

impl Topology {
    /// 1 to 5 daemons, 1 or 2 groups of a master and 1 to 3 replicas, some replicas
    /// with priority 0 or refusing promotion.
    pub fn draw(rng: &mut Rng) -> Topology {
        let daemons = [1, 2, 3, 3, 3, 5][rng.pick(6)];
        let groups = (0..rng.range(1, 2))
            .map(|_| {
                let replicas = rng.range(1, 3) as usize;
                (0..=replicas)
                    .map(|i| ServerSpec {
                        priority: if i > 0 && rng.chance(15) { 0 } else { 100 },
                        refuses_promotion: i > 0 && rng.chance(20),
                        run_id: format!("{:040x}", rng.next_u64()),
                    })
                    .collect()
            })
            .collect();
        Topology { daemons, groups }
    }
}

/// The address of server `index` of group `group` (the master is index 0).
pub fn addr(group: usize, index: usize) -> Addr {
    Addr {
        host: format!("10.0.{group}.{}", index + 1),
        port: 6379,
    }
}
