//! Sentinel's rules for choosing the replica to promote, as pure functions over the
//! replicas' `INFO` reports: unit-tested without servers, and shared by the failover
//! (a dead master) and the switchover (a live one).
//!
//! Skipped: unreachable replicas, `slave_priority:0`, and replicas whose link has been
//! down much longer than the master's outage (their data is too old). Among the rest:
//! the LOWER non-zero priority wins (Redis's rule; the Go original picked the higher
//! one), then the larger `slave_repl_offset`, then the smaller run id, then the smaller
//! address. LedisDB sends no run id and no link-down time, and always priority 100, so
//! its slaves are chosen by offset (its log id), then address (see `replies.rs`).
//! [`elect`] returns every qualifying replica in that order, so a failover whose first
//! choice cannot be promoted tries the next.

use super::replies::ReplicationInfo;
use crate::address::Addr;
use crate::error::Result;
use std::cmp::Ordering;
use std::time::Duration;

/// A replica's answer to `INFO`, or why there was none: what the election reads.
#[derive(Debug, Clone)]
pub struct ReplicaReport {
    pub addr: Addr,
    pub info: Result<ReplicationInfo>,
}

/// A replica whose link has been down this many down windows longer than the master's
/// outage holds data too old to promote (Sentinel's rule).
pub const STALE_FACTOR: u32 = 10;

/// Whether a reported `master_host:master_port` names `addr`: the same text, or names
/// that resolve to a common address (a master added as `redis-a:6379` whose replicas
/// report `10.0.0.5`).
pub fn is_same_server(reported: &str, addr: &Addr) -> bool {
    let Ok(reported) = Addr::parse(reported) else {
        return false;
    };
    if reported.port != addr.port {
        return false;
    }
    if reported.host == addr.host {
        return true;
    }
    let resolve = |a: &Addr| -> Vec<std::net::IpAddr> {
        std::net::ToSocketAddrs::to_socket_addrs(&(a.host.as_str(), a.port))
            .map(|addrs| addrs.map(|s| s.ip()).collect())
            .unwrap_or_default()
    };
    let mine = resolve(addr);
    resolve(&reported).iter().any(|ip| mine.contains(ip))
}

/// A replica that still hears from `master`, if any: then the master is alive (stalled,
/// or cut off only from the daemons). "Hears" means fresh evidence, not only a link
/// Redis has not timed out yet (that takes `repl-timeout`, 60 s by default): the link is
/// up AND the replica's last I/O from the master is at most `fresh` ago. Every daemon
/// publishes a beacon through each master at every check, which the master replicates,
/// so a live master's replicas hear from it at least that often. A server that does
/// not report its last I/O (LedisDB) is taken at its link status.
pub fn master_seen_alive<'a>(
    master: &Addr,
    reports: &'a [ReplicaReport],
    fresh: Duration,
) -> Option<&'a Addr> {
    reports.iter().find_map(|r| match &r.info {
        Ok(info)
            if info.link_up
                && info
                    .master
                    .as_deref()
                    .is_some_and(|m| is_same_server(m, master))
                && info
                    .last_io_secs
                    .is_none_or(|secs| Duration::from_secs(secs) <= fresh) =>
        {
            Some(&r.addr)
        }
        _ => None,
    })
}

/// The replicas that may be promoted, best first (never empty), or why none qualifies.
pub fn elect(
    master: &Addr,
    reports: &[ReplicaReport],
    down_for: Duration,
    max_down_time: Duration,
) -> std::result::Result<Vec<Addr>, String> {
    let stale_after = down_for + max_down_time * STALE_FACTOR;
    let mut rejected = Vec::new();
    let mut eligible: Vec<(&Addr, &ReplicationInfo)> = Vec::new();
    for report in reports {
        let why = match &report.info {
            Err(e) => Some(format!("unreachable ({e})")),
            Ok(info) if info.role != "slave" && info.role != "replica" => {
                Some(format!("reports role {}", info.role))
            }
            Ok(info)
                if !info
                    .master
                    .as_deref()
                    .is_some_and(|m| is_same_server(m, master)) =>
            {
                Some(format!(
                    "replicates from {} instead",
                    info.master.as_deref().unwrap_or("nothing")
                ))
            }
            Ok(info) if info.priority == 0 => Some("slave_priority is 0".into()),
            Ok(info)
                if info
                    .link_down_secs
                    .is_some_and(|s| Duration::from_secs(s) > stale_after) =>
            {
                Some(format!(
                    "stale: link down for {} s",
                    info.link_down_secs.unwrap_or(0)
                ))
            }
            Ok(info) => {
                eligible.push((&report.addr, info));
                None
            }
        };
        if let Some(why) = why {
            rejected.push(format!("{} {why}", report.addr));
        }
    }
    if eligible.is_empty() {
        return Err(if rejected.is_empty() {
            "no replicas".to_string()
        } else {
            rejected.join("; ")
        });
    }
    eligible.sort_by(|(addr_a, a), (addr_b, b)| {
        compare_for_promotion(a, b).then_with(|| addr_a.cmp(addr_b))
    });
    Ok(eligible.into_iter().map(|(addr, _)| addr.clone()).collect())
}

/// Sentinel's order: lower priority, larger offset, smaller run id (none sorts last).
/// Ties left (LedisDB has no run id) go to the smaller address, so the choice does not
/// depend on the order replicas were listed in (LedisDB lists them in random order).
fn compare_for_promotion(a: &ReplicationInfo, b: &ReplicationInfo) -> Ordering {
    a.priority
        .cmp(&b.priority)
        .then(b.offset.cmp(&a.offset))
        .then_with(|| match (&a.run_id, &b.run_id) {
            (Some(x), Some(y)) => x.cmp(y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::replies::ReplicationInfo;

    const MASTER: &str = "127.0.0.1:6379";

    fn report(port: u16, priority: u32, offset: i64, run_id: Option<&str>) -> ReplicaReport {
        ReplicaReport {
            addr: Addr::parse(&format!("127.0.0.1:{port}")).unwrap(),
            info: Ok(ReplicationInfo {
                role: "slave".into(),
                master: Some(MASTER.into()),
                link_up: false,
                link_down_secs: Some(1),
                last_io_secs: None,
                priority,
                offset,
                run_id: run_id.map(String::from),
                replicas: Vec::new(),
                ledisdb_version: None,
            }),
        }
    }

    fn ranked_ports(reports: &[ReplicaReport]) -> std::result::Result<Vec<u16>, String> {
        elect(
            &Addr::parse(MASTER).unwrap(),
            reports,
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
        .map(|ranked| ranked.iter().map(|a| a.port).collect())
    }

    fn elect_port(reports: &[ReplicaReport]) -> std::result::Result<u16, String> {
        ranked_ports(reports).map(|ranked| ranked[0])
    }

    #[test]
    fn every_qualifying_replica_is_ranked_by_the_same_rules() {
        let mut unreachable = report(9, 1, 1_000_000, None);
        unreachable.info = Err(crate::error::Error::Server("refused".into()));
        let r = [
            report(1, 100, 5, Some("b")),
            report(2, 10, 1, None),
            report(3, 0, 900, None),
            report(4, 100, 9, None),
            unreachable,
            report(5, 100, 5, Some("a")),
        ];
        assert_eq!(ranked_ports(&r), Ok(vec![2, 4, 5, 1]));
    }

    #[test]
    fn lower_nonzero_priority_wins_over_offset() {
        let r = [
            report(1, 100, 500, None),
            report(2, 10, 1, None),
            report(3, 0, 900, None),
        ];
        assert_eq!(elect_port(&r), Ok(2));
    }

    #[test]
    fn larger_offset_then_smaller_run_id() {
        let r = [report(1, 100, 5, Some("b")), report(2, 100, 9, Some("z"))];
        assert_eq!(elect_port(&r), Ok(2));
        let r = [
            report(1, 100, 9, Some("b")),
            report(2, 100, 9, Some("a")),
            report(3, 100, 9, None),
        ];
        assert_eq!(elect_port(&r), Ok(2));
    }

    #[test]
    fn unreachable_priority_zero_and_stale_are_skipped_with_reasons() {
        let mut stale = report(3, 1, 999, None);
        if let Ok(info) = &mut stale.info {
            info.link_down_secs = Some(3600);
        }
        let unreachable = ReplicaReport {
            addr: Addr::parse("127.0.0.1:4").unwrap(),
            info: Err(crate::error::Error::Server("refused".into())),
        };
        let err = elect_port(&[report(2, 0, 5, None), stale, unreachable]).unwrap_err();
        assert!(
            err.contains("slave_priority is 0")
                && err.contains("stale")
                && err.contains("unreachable"),
            "{err}"
        );
    }

    /// LedisDB's `INFO server` + `INFO replication` of a slave after its master was
    /// killed, in the shape captured from LedisDB at commit d35789e (see `replies.rs`),
    /// with the offset (log id) and priority varied.
    fn ledis_report(port: u16, priority: u32, offset: i64) -> ReplicaReport {
        let text = format!(
            "# Server\r\nos:linux\r\naddr:127.0.0.1:{port}\r\nreadonly:true\r\nledisdb_version:0.5\r\n\r\n\n# Replication\r\nrole:slave\r\npub_log_num:0\r\npub_log_ack_per_time:0\r\nslaveof:{MASTER}\r\nlast_log_id:{offset}\r\nfirst_log_id:1\r\ncommit_log_id:{offset}\r\nmaster_last_log_id:{offset}\r\nmaster_link_status:down\r\nslave_priority:{priority}\r\nslave_repl_offset:{offset}\r\n\r\n"
        );
        ReplicaReport {
            addr: Addr::parse(&format!("127.0.0.1:{port}")).unwrap(),
            info: crate::redis::parse_replication_info(&text).map_err(crate::error::Error::Server),
        }
    }

    #[test]
    fn ledisdb_slaves_by_offset_then_priority_then_address() {
        // LedisDB's own shape (priority always 100): the larger log id wins.
        let r = [ledis_report(7821, 100, 6), ledis_report(7822, 100, 9)];
        assert_eq!(elect_port(&r), Ok(7822));
        // Priority, were it ever other than 100, decides before the offset.
        let r = [ledis_report(7821, 10, 6), ledis_report(7822, 100, 9)];
        assert_eq!(elect_port(&r), Ok(7821));
        // No run id and equal offsets: the smaller address, whatever the order.
        let r = [ledis_report(7822, 100, 6), ledis_report(7821, 100, 6)];
        assert_eq!(elect_port(&r), Ok(7821));
        // No link-down time: not stale however long the master has been down.
        let chosen = elect(
            &Addr::parse(MASTER).unwrap(),
            &[ledis_report(7821, 100, 6)],
            Duration::from_secs(3600),
            Duration::from_secs(1),
        );
        assert_eq!(chosen.map(|ranked| ranked[0].port), Ok(7821));
    }

    #[test]
    fn a_replica_with_its_link_up_means_the_master_is_alive() {
        let mut r = report(1, 100, 5, None);
        if let Ok(info) = &mut r.info {
            info.link_up = true;
            info.master = Some("localhost:6379".into());
        }
        let master = Addr::parse(MASTER).unwrap();
        let fresh = Duration::from_secs(1);
        assert_eq!(
            master_seen_alive(&master, &[r.clone()], fresh).map(|a| a.port),
            Some(1)
        );
        assert_eq!(
            master_seen_alive(&master, &[report(2, 1, 1, None)], fresh),
            None
        );
        // A link Redis has not timed out yet, but silent for longer: no evidence.
        if let Ok(info) = &mut r.info {
            info.last_io_secs = Some(5);
        }
        assert_eq!(master_seen_alive(&master, &[r.clone()], fresh), None);
        if let Ok(info) = &mut r.info {
            info.last_io_secs = Some(1);
        }
        assert!(master_seen_alive(&master, &[r], fresh).is_some());
    }
}
