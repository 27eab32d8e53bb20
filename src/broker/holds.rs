//! What holds an automatic failover back, kept in the replicated state so that every
//! daemon (and the next leader) sees it: a maintenance pause, of one group or of every
//! group, and the anti-flapping block (`failover_block`) after an automatic failover,
//! lifted by an acknowledgement. Both hold back only *automatic* failovers: checks,
//! fencing, the Sentinel port, manual failovers and switchovers go on.
//!
//! The rule is one pure function, [`held_back`], given the time: the monitor's core
//! asks it before it hands a down master to the worker.

use super::state::{Group, Pause};
use std::time::Duration;

/// Why an automatic failover of `group` must wait at `now_ms`, if it must: a pause of
/// the group or of every group, or a block (`failover_block` after the group's last
/// automatic failover, not acknowledged since).
pub fn held_back(
    group: &Group,
    paused_all: Option<&Pause>,
    failover_block: Duration,
    now_ms: u64,
) -> Option<String> {
    let pause = [group.paused.as_ref(), paused_all]
        .into_iter()
        .flatten()
        .find(|p| p.active(now_ms));
    if let Some(pause) = pause {
        let scope = if group.paused.as_ref() == Some(pause) {
            "the group is paused"
        } else {
            "every group is paused"
        };
        return Some(format!(
            "held back: {scope} for maintenance; resume with DELETE /api/v1/{}pause",
            if scope == "the group is paused" {
                format!("groups/{}/", group.name)
            } else {
                String::new()
            }
        ));
    }
    blocked(group, failover_block, now_ms)
}

/// Why the group is blocked at `now_ms` (see [`held_back`]), if it is.
pub fn blocked(group: &Group, failover_block: Duration, now_ms: u64) -> Option<String> {
    let block_ms = failover_block.as_millis() as u64;
    let last = group.failed_over_at_ms?;
    let acknowledged = group.acknowledged_at_ms.is_some_and(|ack| ack >= last);
    if block_ms == 0 || acknowledged || now_ms >= last.saturating_add(block_ms) {
        return None;
    }
    Some(format!(
        "held back: blocked for {} s after the automatic failover at {last} (failover_block); acknowledge with POST /api/v1/groups/{}/ack",
        failover_block.as_secs(),
        group.name
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::Addr;

    fn group() -> Group {
        Group {
            name: "g".into(),
            master: Addr {
                host: "10.0.0.1".into(),
                port: 6379,
            },
            failed: None,
            revision: 1,
            known_replicas: Vec::new(),
            paused: None,
            failed_over_at_ms: None,
            acknowledged_at_ms: None,
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_pause_holds_until_it_ends_or_forever() {
        let mut g = group();
        g.paused = Some(Pause {
            since_ms: 1_000,
            until_ms: Some(5_000),
        });
        let why = held_back(&g, None, Duration::ZERO, 4_999).expect("paused");
        assert!(why.contains("the group is paused"), "{why}");
        assert_eq!(held_back(&g, None, Duration::ZERO, 5_000), None);
        let all = Pause {
            since_ms: 0,
            until_ms: None,
        };
        let why = held_back(&group(), Some(&all), Duration::ZERO, u64::MAX - 1).expect("all");
        assert!(why.contains("every group is paused"), "{why}");
    }

    #[test]
    fn a_block_holds_after_an_automatic_failover_until_acknowledged_or_over() {
        let mut g = group();
        assert_eq!(held_back(&g, None, HOUR, 10), None, "no failover yet");
        g.failed_over_at_ms = Some(1_000);
        let why = held_back(&g, None, HOUR, 2_000).expect("blocked");
        assert!(why.contains("/api/v1/groups/g/ack"), "{why}");
        assert_eq!(held_back(&g, None, Duration::ZERO, 2_000), None, "off");
        assert_eq!(held_back(&g, None, HOUR, 1_000 + 3_600_000), None, "over");
        g.acknowledged_at_ms = Some(1_500);
        assert_eq!(held_back(&g, None, HOUR, 2_000), None, "acknowledged");
        g.failed_over_at_ms = Some(1_600);
        assert!(
            held_back(&g, None, HOUR, 2_000).is_some(),
            "a newer failover"
        );
    }
}
