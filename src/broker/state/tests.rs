//! Unit tests of the replicated state: the rules of `apply`, without servers.

use super::*;

fn spec(text: &str) -> GroupSpec {
    MasterSpec::parse(text).unwrap().into()
}

fn record(group: &str, outcome: Outcome, new: Option<&str>) -> FailoverRecord {
    FailoverRecord {
        group: group.into(),
        old_master: Addr::parse("h:1").unwrap(),
        new_master: new.map(|n| Addr::parse(n).unwrap()),
        started_at_ms: 0,
        down_for_ms: 1000,
        duration_ms: 1,
        outcome,
        reason: Some("why".into()),
        begun: false,
        passed_over: vec![],
        count: 1,
        first_started_at_ms: None,
        kind: Default::default(),
        steps: Vec::new(),
    }
}

fn begin(s: &mut ReplicatedState, group: &str, new: &str) {
    s.apply(Action::FailoverBegin {
        group: group.into(),
        old_master: s.groups[group].master.clone(),
        new_master: Addr::parse(new).unwrap(),
        replicas: vec![],
        started_at_ms: 0,
        passed_over: vec![],
    })
    .unwrap();
}

#[test]
fn add_delete_set_keep_names() {
    let mut s = ReplicatedState::default();
    s.apply(Action::Add(vec![spec("cache=h:1"), spec("h:2")]))
        .unwrap();
    assert_eq!(s.groups.len(), 2);
    s.apply(Action::Delete(vec!["h:1".into(), "unknown".into()]))
        .unwrap();
    assert!(!s.groups.contains_key("cache"), "delete by master address");
    assert!(s.apply(Action::Delete(vec!["nope".into()])).is_err());
    // Deleted and added again: a revision never seen before.
    let old = s.groups["h:2"].revision;
    s.apply(Action::Delete(vec!["h:2".into()])).unwrap();
    s.apply(Action::Add(vec![spec("h:2")])).unwrap();
    assert!(s.groups["h:2"].revision > old);
    // Re-added unchanged: same revision (the down window goes on).
    let now = s.groups["h:2"].revision;
    s.apply(Action::Add(vec![spec("h:2")])).unwrap();
    assert_eq!(s.groups["h:2"].revision, now);
    s.apply(Action::Set(vec![spec("a=h:3")])).unwrap();
    assert_eq!(s.groups.keys().collect::<Vec<_>>(), vec!["a"]);
}

#[test]
fn a_deposed_leaders_late_result_is_kept_but_not_applied() {
    let mut s = ReplicatedState::default();
    s.apply(Action::Add(vec![spec("g=h:1")])).unwrap();
    begin(&mut s, "g", "h:2");
    // The new leader finished the attempt (here: aborted, the old master is back).
    s.apply(Action::FailoverEnd(record("g", Outcome::Aborted, None)))
        .unwrap();
    assert!(s.in_progress.is_empty());
    // The deposed leader wakes and reports a promotion of the same attempt.
    s.apply(Action::FailoverEnd(record(
        "g",
        Outcome::Succeeded,
        Some("h:2"),
    )))
    .unwrap();
    assert_eq!(
        s.groups["g"].master.port, 1,
        "the late promotion is not applied"
    );
    let last = s.last_failover("g").unwrap();
    assert!(last.reason.as_deref().unwrap().contains("not applied"));
    // Nor is a late failure of an attempt that had begun.
    let mut late = record("g", Outcome::Failed, None);
    late.begun = true;
    s.apply(Action::FailoverEnd(late)).unwrap();
    assert_eq!(s.groups["g"].failed, None, "a late failure is not applied");
    // A result of another attempt while one is under way is not applied either, and
    // a second begin while one is under way is refused.
    begin(&mut s, "g", "h:3");
    let again = Action::FailoverBegin {
        group: "g".into(),
        old_master: Addr::parse("h:1").unwrap(),
        new_master: Addr::parse("h:4").unwrap(),
        replicas: vec![],
        started_at_ms: 7,
        passed_over: vec![],
    };
    assert!(s.apply(again).is_err());
    let mut other = record("g", Outcome::Failed, None);
    other.started_at_ms = 99;
    s.apply(Action::FailoverEnd(other)).unwrap();
    assert_eq!(s.groups["g"].failed, None);
    assert_eq!(s.in_progress.len(), 1);
}

#[test]
fn seed_never_undoes_a_failover() {
    let mut s = ReplicatedState::default();
    s.apply(Action::Seed(vec![spec("h:1"), spec("cache=h:5")]))
        .unwrap();
    begin(&mut s, "h:1", "h:2");
    s.apply(Action::FailoverEnd(record(
        "h:1",
        Outcome::Succeeded,
        Some("h:2"),
    )))
    .unwrap();
    // A restart seeds the config masters again: the failed-over group keeps h:2.
    s.apply(Action::Seed(vec![
        spec("h:1"),
        spec("cache=h:6"),
        spec("h:7"),
    ]))
    .unwrap();
    assert_eq!(s.groups["h:1"].master.port, 2);
    assert_eq!(s.groups["cache"].master.port, 5);
    assert!(s.groups.contains_key("h:7"));
}

#[test]
fn failover_end_moves_master_or_marks_failed() {
    let mut s = ReplicatedState::default();
    s.apply(Action::Add(vec![spec("g=h:1")])).unwrap();
    begin(&mut s, "g", "h:2");
    s.apply(Action::FailoverEnd(record(
        "g",
        Outcome::Succeeded,
        Some("h:2"),
    )))
    .unwrap();
    assert_eq!(s.groups["g"].master.port, 2);
    // Adding the new master's bare address refers to the same group.
    s.apply(Action::Add(vec![spec("h:2")])).unwrap();
    assert_eq!(s.groups.len(), 1);
    // A late record about the old master changes nothing but the history.
    s.apply(Action::FailoverEnd(record("g", Outcome::Failed, None)))
        .unwrap();
    assert_eq!(s.groups["g"].failed, None);
    let mut failed = record("g", Outcome::Failed, None);
    failed.old_master = Addr::parse("h:2").unwrap();
    s.apply(Action::FailoverEnd(failed)).unwrap();
    assert_eq!(s.groups["g"].failed.as_deref(), Some("why"));
    s.apply(Action::Add(vec![spec("g=h:2")])).unwrap();
    assert_eq!(s.groups["g"].failed, None, "re-adding clears failed");
    assert_eq!(s.last_failover("g").unwrap().outcome, Outcome::Failed);
}

fn passed(addrs: &[&str]) -> Vec<PassedOver> {
    addrs
        .iter()
        .map(|a| PassedOver {
            addr: Addr::parse(a).unwrap(),
            reason: format!("{a} refused"),
        })
        .collect()
}

fn next_begin(new: &str, passed_over: &[&str]) -> Action {
    Action::FailoverBegin {
        group: "g".into(),
        old_master: Addr::parse("h:1").unwrap(),
        new_master: Addr::parse(new).unwrap(),
        replicas: vec![],
        started_at_ms: 0,
        passed_over: passed(passed_over),
    }
}

fn named(s: &ReplicatedState) -> u16 {
    match &s.in_progress["g"] {
        Action::FailoverBegin { new_master, .. } => new_master.port,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_begin_moves_the_attempt_on_to_its_next_candidate_only_in_order() {
    let mut s = ReplicatedState::default();
    s.apply(Action::Add(vec![spec("g=h:1")])).unwrap();
    begin(&mut s, "g", "h:2");
    // Passing over h:2: the attempt now names h:3.
    s.apply(next_begin("h:3", &["h:2"])).unwrap();
    assert_eq!(named(&s), 3);
    // Refused: a begin that passes over a replica the attempt does not name, one
    // that skips the list so far, one that names a passed-over replica again, and
    // one of another attempt.
    for wrong in [
        next_begin("h:4", &["h:2"]),
        next_begin("h:4", &["h:3"]),
        next_begin("h:2", &["h:2", "h:3"]),
    ] {
        assert!(s.apply(wrong.clone()).is_err(), "{wrong:?}");
    }
    let mut other = next_begin("h:4", &["h:2", "h:3"]);
    if let Action::FailoverBegin { started_at_ms, .. } = &mut other {
        *started_at_ms = 1;
    }
    assert!(s.apply(other).is_err());
    assert_eq!(named(&s), 3, "refused begins change nothing");
    s.apply(next_begin("h:4", &["h:2", "h:3"])).unwrap();
    assert_eq!(named(&s), 4);
    // The end of the attempt applies as usual.
    let mut end = record("g", Outcome::Succeeded, Some("h:4"));
    end.begun = true;
    end.passed_over = passed(&["h:2", "h:3"]);
    s.apply(Action::FailoverEnd(end)).unwrap();
    assert!(s.in_progress.is_empty());
    assert_eq!(s.groups["g"].master.port, 4);
    // No attempt under way: a moving-on begin is refused (its master is gone too).
    assert!(s.apply(next_begin("h:5", &["h:4"])).is_err());
}

fn stopped(at: u64, reason: &str) -> FailoverRecord {
    let mut r = record("g", Outcome::Aborted, None);
    r.started_at_ms = at;
    r.down_for_ms = 1000 + at;
    r.reason = Some(reason.into());
    r
}

#[test]
fn sixty_stopped_attempts_in_a_row_are_one_record() {
    let mut s = ReplicatedState::default();
    s.apply(Action::Add(vec![spec("g=h:1"), spec("o=h:9")]))
        .unwrap();
    for i in 0..60 {
        s.apply(Action::FailoverEnd(stopped(1_000 * i, "link up")))
            .unwrap();
        // Another group's records in between do not break the run.
        if i % 10 == 0 {
            let mut other = record("o", Outcome::Aborted, None);
            other.old_master = Addr::parse("h:9").unwrap();
            other.reason = Some(format!("other {i}"));
            s.apply(Action::FailoverEnd(other)).unwrap();
        }
    }
    let runs: Vec<&FailoverRecord> = s.history.iter().filter(|r| r.group == "g").collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    let last = s.last_failover("g").unwrap();
    assert_eq!(last.count, 60);
    assert_eq!(last.first_started_at_ms, Some(0));
    assert_eq!(last.started_at_ms, 59_000);
    assert_eq!(last.down_for_ms, 60_000, "the last attempt's figures");
    assert_eq!(s.history.back(), Some(last), "the run is the latest record");
    // Another reason, or a real failover in between, starts a new record.
    s.apply(Action::FailoverEnd(stopped(60_000, "vetoed")))
        .unwrap();
    s.apply(Action::FailoverEnd(stopped(61_000, "link up")))
        .unwrap();
    assert_eq!(s.last_failover("g").unwrap().count, 1);
    begin(&mut s, "g", "h:2");
    let mut failed = record("g", Outcome::Failed, None);
    failed.begun = true;
    s.apply(Action::FailoverEnd(failed)).unwrap();
    s.apply(Action::FailoverEnd(stopped(62_000, "link up")))
        .unwrap();
    assert_eq!(s.last_failover("g").unwrap().count, 1);
    assert_eq!(s.history.iter().filter(|r| r.group == "g").count(), 5);
}

#[test]
fn a_full_history_drops_stopped_attempts_before_real_failovers() {
    let mut s = ReplicatedState::default();
    s.apply(Action::Add(vec![spec("g=h:1")])).unwrap();
    let real = |s: &mut ReplicatedState, n: u64| {
        for i in 0..n {
            let mut r = record("g", Outcome::Aborted, None);
            r.begun = true;
            r.started_at_ms = i;
            s.apply(Action::FailoverEnd(r)).unwrap();
        }
    };
    real(&mut s, 10);
    for i in 0..(FAILOVER_HISTORY as u64) {
        s.apply(Action::FailoverEnd(stopped(i, &format!("reason {i}"))))
            .unwrap();
    }
    assert_eq!(s.history.len(), FAILOVER_HISTORY);
    assert_eq!(s.history.iter().filter(|r| !r.is_stopped()).count(), 10);
    assert_eq!(s.history.front().map(|r| r.is_stopped()), Some(false));
    // Real failovers push out the stopped attempts, oldest first, then each other.
    real(&mut s, 85);
    assert_eq!(s.history.len(), FAILOVER_HISTORY);
    let stopped_left: Vec<u64> = s
        .history
        .iter()
        .filter(|r| r.is_stopped())
        .map(|r| r.started_at_ms)
        .collect();
    assert_eq!(stopped_left, vec![95, 96, 97, 98, 99]);
    real(&mut s, 10);
    assert!(s.history.iter().all(|r| !r.is_stopped()));
    // A stopped attempt never pushes a real failover out.
    s.apply(Action::FailoverEnd(stopped(500, "late"))).unwrap();
    assert!(s.history.iter().all(|r| !r.is_stopped()));
    assert_eq!(s.history.len(), FAILOVER_HISTORY);
}

#[test]
fn records_and_begins_written_before_these_fields_still_load() {
    let old_record = r#"{"group":"g","old_master":"h:1","new_master":null,
        "started_at_ms":5,"down_for_ms":1000,"duration_ms":3,"outcome":"aborted",
        "reason":"why","begun":false}"#;
    let r: FailoverRecord = serde_json::from_str(old_record).unwrap();
    assert_eq!((r.count, r.first_started_at_ms), (1, None));
    assert!(r.passed_over.is_empty());
    let old_begin = r#"{"FailoverBegin":{"group":"g","old_master":"h:1",
        "new_master":"h:2","replicas":["h:3"],"started_at_ms":5}}"#;
    match serde_json::from_str::<Action>(old_begin).unwrap() {
        Action::FailoverBegin { passed_over, .. } => assert!(passed_over.is_empty()),
        other => panic!("{other:?}"),
    }
}
