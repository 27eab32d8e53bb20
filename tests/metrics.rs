//! `GET /metrics` scraped as Prometheus would, from a daemon watching a real master that
//! is then killed and failed over.

mod support;

use std::collections::HashMap;
use std::time::Duration;
use support::{Daemon, RedisServer, wait_until};

/// One scrape: `name{labels}` -> value, after checking every line's syntax.
fn scrape(daemon: &Daemon) -> Result<HashMap<String, f64>, String> {
    let (status, body) = daemon.http("GET", "/metrics", "")?;
    if status != 200 {
        return Err(format!("GET /metrics -> {status}: {body}"));
    }
    let mut samples = HashMap::new();
    let mut typed = Vec::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                return Err(format!("bad TYPE line {line:?}"));
            };
            if !["counter", "gauge", "histogram"].contains(&kind) {
                return Err(format!("unknown type in {line:?}"));
            }
            typed.push(name.to_string());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| format!("no value in {line:?}"))?;
        let value: f64 = value
            .parse()
            .map_err(|_| format!("value not a number in {line:?}"))?;
        let name = series.split('{').next().unwrap_or("");
        if !name.starts_with("redis_failover_") {
            return Err(format!("unprefixed series {line:?}"));
        }
        let family = typed.last().cloned().unwrap_or_default();
        if !name.starts_with(&family) {
            return Err(format!("{line:?} does not follow its TYPE line ({family})"));
        }
        samples.insert(series.to_string(), value);
    }
    Ok(samples)
}

fn value(samples: &HashMap<String, f64>, series: &str) -> Result<f64, String> {
    samples.get(series).copied().ok_or_else(|| {
        let mut names: Vec<&String> = samples.keys().collect();
        names.sort();
        format!("no {series} among {names:?}")
    })
}

/// Waits until `series` has a value for which `wanted` holds.
fn wait_for(daemon: &Daemon, series: &str, wanted: impl Fn(f64) -> bool) -> f64 {
    wait_until(Duration::from_secs(20), series, || {
        let v = value(&scrape(daemon)?, series)?;
        if wanted(v) {
            Ok(v)
        } else {
            Err(format!("{series} = {v}"))
        }
    })
}

#[test]
fn checks_are_counted_and_a_failover_shows_up() {
    let mut master = RedisServer::master();
    let a = RedisServer::replica_of(master.port, 100);
    let b = RedisServer::replica_of(master.port, 100);
    master.wait_for_replicas(2);
    let daemon = Daemon::start(&[
        &format!("-masters=g={}", master.addr()),
        "-check_interval=100",
        "-max_down_time=1",
    ]);
    wait_for(&daemon, "redis_failover_master_up{group=\"g\"}", |v| {
        v == 1.0
    });
    let samples = scrape(&daemon).unwrap();
    for series in [
        format!(
            "redis_failover_master_info{{group=\"g\",addr=\"{}\"}}",
            master.addr()
        ),
        "redis_failover_check_failures_total{group=\"g\"}".into(),
        "redis_failover_check_duration_seconds_bucket{le=\"0.001\"}".into(),
        "redis_failover_check_duration_seconds_bucket{le=\"+Inf\"}".into(),
        "redis_failover_check_duration_seconds_sum".into(),
        "redis_failover_failovers_total{group=\"g\",outcome=\"succeeded\"}".into(),
        "redis_failover_failovers_total{group=\"g\",outcome=\"aborted\"}".into(),
        "redis_failover_failovers_total{group=\"g\",outcome=\"failed\"}".into(),
        "redis_failover_monitor_heartbeat_age_seconds".into(),
    ] {
        value(&samples, &series).unwrap();
    }
    assert_eq!(value(&samples, "redis_failover_is_leader"), Ok(1.0));
    let checks = value(&samples, "redis_failover_checks_total{group=\"g\"}").unwrap();
    assert!(checks >= 1.0, "{checks}");
    // Checked every 100 ms: the counter grows, and the histogram counts every check.
    wait_for(&daemon, "redis_failover_checks_total{group=\"g\"}", |v| {
        v >= checks + 3.0
    });
    let samples = scrape(&daemon).unwrap();
    let count = value(&samples, "redis_failover_check_duration_seconds_count").unwrap();
    let inf = value(
        &samples,
        "redis_failover_check_duration_seconds_bucket{le=\"+Inf\"}",
    )
    .unwrap();
    assert_eq!(count, inf);
    assert!(count >= checks + 3.0, "{count} < {checks} + 3");
    assert!(value(&samples, "redis_failover_monitor_heartbeat_age_seconds").unwrap() < 2.0);

    master.kill();
    wait_for(
        &daemon,
        "redis_failover_failovers_total{group=\"g\",outcome=\"succeeded\"}",
        |v| v == 1.0,
    );
    let samples = scrape(&daemon).unwrap();
    assert!(
        value(&samples, "redis_failover_check_failures_total{group=\"g\"}").unwrap() >= 2.0,
        "the down rule needs two failed checks"
    );
    assert_eq!(
        value(
            &samples,
            "redis_failover_failovers_total{group=\"g\",outcome=\"aborted\"}"
        ),
        Ok(0.0)
    );
    let took = value(
        &samples,
        "redis_failover_last_failover_duration_seconds{group=\"g\"}",
    )
    .unwrap();
    assert!((0.0..10.0).contains(&took), "{took}");
    let new_master = [&a, &b]
        .into_iter()
        .find(|r| {
            samples.contains_key(&format!(
                "redis_failover_master_info{{group=\"g\",addr=\"{}\"}}",
                r.addr()
            ))
        })
        .unwrap_or_else(|| panic!("master_info names neither replica: {samples:?}"));
    assert_eq!(new_master.role().unwrap(), "master");
    // The new master is checked and up.
    wait_for(&daemon, "redis_failover_master_up{group=\"g\"}", |v| {
        v == 1.0
    });

    // The log has one line per failover step, each with its duration.
    let log = daemon.log();
    for step in [
        "hooks", "info", "elect", "begin", "promote", "repoint", "record",
    ] {
        let line = log
            .lines()
            .find(|l| l.contains(&format!("failover step {step}: ")))
            .unwrap_or_else(|| panic!("no line for step {step} in\n{log}"));
        assert!(line.contains(" ms (at "), "{line}");
    }
}
