//! The library API: an App started in-process, with hooks around failovers.

mod support;

use redis_failover::{Addr, App, Config, MasterSpec, Outcome};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{RedisServer, free_port, wait_until};

fn config() -> Config {
    Config {
        addr: Addr::parse(&format!("127.0.0.1:{}", free_port())).unwrap(),
        check_interval: Duration::from_millis(100),
        max_down_time: Duration::from_millis(500),
        ..Config::default()
    }
}

#[test]
fn hooks_can_veto_and_see_the_failover() {
    let mut master = RedisServer::master();
    let a = RedisServer::replica_of(master.port, 100);
    master.wait_for_replicas(1);
    let app = App::start(config()).unwrap();
    let vetoes = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let v = vetoes.clone();
    app.on_before_failover(move |group, old| {
        assert_eq!(group, "emb");
        // Veto the first attempt only.
        if v.fetch_add(1, Ordering::SeqCst) == 0 {
            Err(format!("not now for {old}"))
        } else {
            Ok(())
        }
    });
    let s = seen.clone();
    app.on_after_failover(move |group, old, new| {
        s.lock()
            .unwrap()
            .push((group.to_string(), old.clone(), new.clone()));
    });
    app.add_masters(MasterSpec::parse_list(&format!("emb={}", master.addr())).unwrap())
        .unwrap();
    assert_eq!(app.masters(), vec![Addr::parse(&master.addr()).unwrap()]);
    wait_until(Duration::from_secs(10), "group ok", || {
        let g = &app.groups()[0];
        if g.state == redis_failover::WatchState::Ok {
            Ok(())
        } else {
            Err(format!("{g:?}"))
        }
    });
    master.kill();
    wait_until(Duration::from_secs(20), "the after hook", || {
        let seen = seen.lock().unwrap();
        if seen.is_empty() {
            Err(format!("{:?}", app.groups()))
        } else {
            Ok(())
        }
    });
    assert_eq!(vetoes.load(Ordering::SeqCst), 2, "one veto, then allowed");
    let (group, old, new) = seen.lock().unwrap()[0].clone();
    assert_eq!(
        (group.as_str(), old.port, new.port),
        ("emb", master.port, a.port)
    );
    assert_eq!(app.masters(), vec![new]);
    let last = app.groups()[0].last_failover.clone().unwrap();
    assert_eq!(last.outcome, Outcome::Succeeded);

    app.remove_masters(vec!["emb".into()]).unwrap();
    assert!(app.masters().is_empty());
    let started = Instant::now();
    app.shutdown();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
}

#[test]
fn set_masters_replaces_and_bad_input_is_an_error() {
    let app = App::start(config()).unwrap();
    app.set_masters(MasterSpec::parse_list("a=127.0.0.1:6390,b=127.0.0.1:6391").unwrap())
        .unwrap();
    assert_eq!(app.masters().len(), 2);
    app.set_masters(MasterSpec::parse_list("b=127.0.0.1:6392").unwrap())
        .unwrap();
    assert_eq!(app.masters(), vec![Addr::parse("127.0.0.1:6392").unwrap()]);
    assert!(app.remove_masters(vec!["zzz".into()]).is_err());
    // A second App on the same address cannot bind, and says so.
    let clash = Config {
        addr: Addr::parse(&app.http_addr().to_string()).unwrap(),
        ..Config::default()
    };
    let err = App::start(clash).err().expect("the port is taken");
    assert!(err.to_string().contains("cannot listen"), "{err}");
    app.shutdown();
}
