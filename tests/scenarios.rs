//! Scenarios of the failover decisions (`tests/scenarios/*.scn`): a cluster, faults at
//! given times and what must be true when, run by the deterministic simulator with the
//! real monitor core and failover worker, each in a few milliseconds. The format is in
//! `tests/sim/scenario.rs`; every invariant of the random runs is checked as well.

#[allow(dead_code, unused_imports)]
mod sim;

use sim::{Script, Settings, run_script};

fn run(name: &str) {
    let path = format!("{}/tests/scenarios/{name}.scn", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let script = Script::parse(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    let outcome = run_script(script, &Settings::default());
    assert!(
        outcome.violations.is_empty(),
        "{name}.scn:\n  {}\ntrace:\n{}",
        outcome.violations.join("\n  "),
        outcome.trace.join("\n")
    );
}

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run(stringify!($name));
            }
        )*
    };
}

scenarios!(
    detector,
    quorum,
    veto,
    election,
    pass_over,
    resume,
    fencing,
    failed_group,
    tilt,
    isolated_leader,
    raft_resume,
    raft_isolated_leader,
);
