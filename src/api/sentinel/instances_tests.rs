//! Unit tests of the instance fields and flags (`instances.rs`).

use super::*;
use crate::broker::Group;

const NOW: u64 = 1_000_000;

fn addr(port: u16) -> Addr {
    Addr {
        host: "127.0.0.1".into(),
        port,
    }
}

fn group(state: WatchState) -> GroupStatus {
    GroupStatus {
        name: "cache".into(),
        master: addr(6379),
        state,
        disconnected: false,
        down_votes: 0,
        down_since_ms: None,
        last_ok_ms: Some(NOW - 40),
        reason: None,
        last_error: None,
        replicas: vec![ReplicaStatus {
            addr: addr(6380),
            offset: 42,
            link: "up",
            priority: Some(10),
        }],
        last_failover: None,
        tilt: false,
        paused: None,
        blocked: None,
    }
}

fn view(g: &GroupStatus, known: Vec<Addr>) -> View {
    let mut state = ReplicatedState::default();
    state.groups.insert(
        g.name.clone(),
        Group {
            name: g.name.clone(),
            master: g.master.clone(),
            failed: None,
            revision: 7,
            known_replicas: known,
            paused: None,
            failed_over_at_ms: None,
            acknowledged_at_ms: None,
        },
    );
    View {
        groups: vec![g.clone()],
        state: state.into(),
        cluster: ClusterStatus::default(),
        now_ms: NOW,
        started_ms: NOW - 60_000,
        down_after_ms: 1000,
        quorum: 1,
        daemons_reporting: 1,
        tilt_since_ms: None,
    }
}

fn get<'a>(fields: &'a Fields, key: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.as_str())
}

fn keys(fields: &Fields) -> Vec<&str> {
    fields.iter().map(|(k, _)| *k).collect()
}

#[test]
fn a_healthy_master_has_sentinels_fields_in_order() {
    let g = group(WatchState::Ok);
    let fields = master_fields(&view(&g, vec![]), &g);
    assert_eq!(
        keys(&fields),
        [
            "name",
            "ip",
            "port",
            "runid",
            "flags",
            "link-pending-commands",
            "link-refcount",
            "last-ping-sent",
            "last-ok-ping-reply",
            "last-ping-reply",
            "down-after-milliseconds",
            "info-refresh",
            "role-reported",
            "role-reported-time",
            "config-epoch",
            "num-slaves",
            "num-other-sentinels",
            "quorum",
            "failover-timeout",
            "parallel-syncs",
        ]
    );
    assert_eq!(get(&fields, "flags"), Some("master"));
    assert_eq!(get(&fields, "last-ping-sent"), Some("0"));
    // The latest check of an `ok` group succeeded.
    assert_eq!(get(&fields, "last-ok-ping-reply"), Some("0"));
    assert_eq!(get(&fields, "config-epoch"), Some("7"));
    assert_eq!(get(&fields, "num-slaves"), Some("1"));
    assert_eq!(get(&fields, "quorum"), Some("1"));
}

#[test]
fn flags_follow_the_link_the_detector_and_the_failover() {
    let mut g = group(WatchState::Suspect);
    g.disconnected = true;
    g.down_since_ms = Some(NOW - 300);
    let flags = |g: &GroupStatus| master_fields(&view(g, vec![]), g);
    let fields = flags(&g);
    assert_eq!(get(&fields, "flags"), Some("master,disconnected"));
    assert_eq!(get(&fields, "last-ping-sent"), Some("300"));
    assert_eq!(get(&fields, "last-ok-ping-reply"), Some("40"));
    assert_eq!(get(&fields, "s-down-time"), None);

    g.down_since_ms = Some(NOW - 1500);
    g.state = WatchState::Down;
    // Down here, before the daemons' views are counted: s_down only.
    let fields = flags(&g);
    assert_eq!(get(&fields, "flags"), Some("s_down,master,disconnected"));
    assert_eq!(get(&fields, "o-down-time"), None);
    // Enough daemons (a quorum of one) find it down.
    g.down_votes = 1;
    let fields = flags(&g);
    assert_eq!(
        get(&fields, "flags"),
        Some("s_down,o_down,master,disconnected")
    );
    assert_eq!(get(&fields, "s-down-time"), Some("500"));
    assert_eq!(get(&fields, "o-down-time"), Some("500"));
    let at = |key| keys(&fields).iter().position(|k| *k == key);
    assert!(at("o-down-time") < at("down-after-milliseconds"));

    g.state = WatchState::FailingOver;
    let fields = flags(&g);
    assert_eq!(
        get(&fields, "flags"),
        Some("s_down,o_down,master,disconnected,failover_in_progress")
    );
    assert_eq!(get(&fields, "failover-state"), Some("select_slave"));
    assert_eq!(keys(&fields)[7], "failover-state");

    let mut g = group(WatchState::SwitchingOver);
    g.last_ok_ms = None;
    let fields = flags(&g);
    assert_eq!(
        get(&fields, "flags"),
        Some("master,failover_in_progress,force_failover")
    );
    assert_eq!(get(&fields, "last-ok-ping-reply"), Some("60000"));

    let g = group(WatchState::NotMaster);
    let fields = flags(&g);
    assert_eq!(get(&fields, "flags"), Some("s_down,master"));
    assert_eq!(get(&fields, "role-reported"), Some("slave"));
}

#[test]
fn replicas_include_known_ones_the_master_does_not_list_as_down() {
    let g = group(WatchState::Ok);
    let mut v = view(&g, vec![addr(6380), addr(6381), addr(6379)]);
    std::sync::Arc::make_mut(&mut v.state).in_progress.insert(
        "cache".into(),
        Action::FailoverBegin {
            group: "cache".into(),
            old_master: addr(6379),
            new_master: addr(6380),
            replicas: vec![],
            started_at_ms: NOW,
            passed_over: vec![],
        },
    );
    let list = replica_list(&v, &g);
    assert_eq!(list.len(), 2, "the master itself is never its replica");
    assert_eq!(get(&list[0], "flags"), Some("slave,promoted"));
    assert_eq!(get(&list[0], "master-link-status"), Some("ok"));
    assert_eq!(get(&list[0], "master-port"), Some("6379"));
    assert_eq!(get(&list[0], "slave-priority"), Some("10"));
    assert_eq!(get(&list[0], "slave-repl-offset"), Some("42"));
    assert_eq!(get(&list[1], "name"), Some("127.0.0.1:6381"));
    assert_eq!(get(&list[1], "flags"), Some("s_down,slave,disconnected"));
    assert_eq!(get(&list[1], "master-link-status"), Some("err"));
    assert_eq!(get(&list[1], "master-host"), Some("?"));
    assert!(get(&list[1], "s-down-time").is_some());

    // A daemon that does not check the group lists only what it saw.
    let follower = group(WatchState::Follower);
    let v = view(&follower, vec![addr(6381)]);
    assert_eq!(replica_list(&v, &follower).len(), 1);
}

#[test]
fn the_old_masters_down_state_is_not_shown_for_the_new_master() {
    // The failover is recorded (the group names the new master) before the monitor
    // watches it: the observation still describes the old master's failing checks.
    let mut g = group(WatchState::FailingOver);
    g.disconnected = true;
    g.down_since_ms = Some(NOW - 1500);
    let mut v = view(&g, vec![]);
    std::sync::Arc::make_mut(&mut v.state)
        .history
        .push_back(crate::broker::FailoverRecord {
            group: "cache".into(),
            old_master: addr(6378),
            new_master: Some(addr(6379)),
            started_at_ms: NOW - 400,
            down_for_ms: 1100,
            duration_ms: 20,
            outcome: Outcome::Succeeded,
            reason: None,
            begun: true,
            passed_over: vec![],
            count: 1,
            first_started_at_ms: None,
            kind: Default::default(),
            steps: Vec::new(),
        });
    let fields = master_fields(&v, &g);
    assert_eq!(get(&fields, "flags"), Some("master"));
    // A new run of failures of the new master counts.
    g.down_since_ms = Some(NOW - 100);
    let fields = master_fields(&v, &g);
    assert_eq!(
        get(&fields, "flags"),
        Some("s_down,o_down,master,disconnected,failover_in_progress")
    );
}
