//! The status page in a real browser: a headless Chromium (through chromedriver) opens
//! `/` on a daemon watching real redis-servers, and the test reads what the page shows
//! (its DOM, as a user sees it) while masters are killed with `kill -9`. The page must
//! follow without a reload. Skipped, saying so, only when Chromium is not installed.

mod browser;
mod support;

use browser::Browser;
use serde_json::Value;
use std::time::{Duration, Instant};
use support::groups::topology;
use support::{Daemon, free_port, wait_until};

/// Failovers take a whole down window plus the attempt; CI machines are slow.
const LONG: Duration = Duration::from_secs(40);

/// What the page shows of one group, read from its DOM.
const GROUP_ON_PAGE: &str = r#"
const row = document.querySelector('.group[data-name="cache"]');
if (!row) return null;
const master = row.querySelector('.node.master');
return {
  master: master ? master.firstChild.textContent : null,
  state: row.querySelector('.badge').textContent,
  badges: Array.from(row.querySelectorAll('.badge')).map(b => b.textContent),
  replicas: Array.from(row.querySelectorAll('.node:not(.master)')).map(n => n.firstChild.textContent),
  text: row.innerText,
  history: document.querySelector('#history tbody').innerText,
  marker: window.testMarker || null,
};
"#;

/// A browser, or None (the test then says it was skipped) when Chromium is missing.
fn browser() -> Option<Browser> {
    match browser::binaries() {
        Ok((chromium, driver)) => match Browser::start(&chromium, &driver, free_port()) {
            Ok(browser) => Some(browser),
            Err(e) => panic!("Chromium is installed but could not be started: {e}"),
        },
        Err(why) => {
            eprintln!("SKIPPED: the status page was not tested in a browser: {why}");
            None
        }
    }
}

fn on_page(browser: &Browser) -> Result<Value, String> {
    match browser.run(GROUP_ON_PAGE)? {
        Value::Null => Err("no row for group cache yet".into()),
        group => Ok(group),
    }
}

/// Waits until the page shows `master` as the master of group cache, in state `state`.
fn wait_for_page(browser: &Browser, master: &str, state: &str) -> Value {
    wait_until(
        LONG,
        &format!("the page showing master {master} ({state})"),
        || {
            let group = on_page(browser)?;
            if group["master"] == master && group["state"] == state {
                Ok(group)
            } else {
                Err(group.to_string())
            }
        },
    )
}

fn save_screenshot(browser: &Browser) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/status-page.png");
    match browser
        .screenshot()
        .and_then(|png| std::fs::write(&path, png).map_err(|e| e.to_string()))
    {
        Ok(()) => eprintln!("screenshot saved to {}", path.display()),
        Err(e) => eprintln!("could not save the screenshot to {}: {e}", path.display()),
    }
}

#[test]
fn the_page_shows_the_new_master_after_a_kill_without_a_reload() {
    let Some(browser) = browser() else { return };
    let (mut master, a, b) = topology(10, 20);
    let masters = format!("-masters=cache={}", master.addr());
    let daemon = Daemon::start(&[&masters, "-check_interval=100", "-max_down_time=1"]);
    daemon.wait_group_ok("cache", 2);

    browser
        .goto(&format!("http://127.0.0.1:{}/", daemon.port))
        .expect("open the page");
    let group = wait_for_page(&browser, &master.addr(), "ok");
    let mut replicas: Vec<String> = group["replicas"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|a| a.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    replicas.sort();
    let mut expected = vec![a.addr(), b.addr()];
    expected.sort();
    assert_eq!(replicas, expected, "the replicas on the page: {group}");
    assert!(
        group["text"]
            .as_str()
            .is_some_and(|t| t.contains("link up")),
        "{group}"
    );
    // Set in the page's window: a reload would lose it.
    browser
        .run("window.testMarker = 'same page'; return null;")
        .expect("mark the page");

    let old = master.addr();
    master.kill();
    // The daemon's API first, then how long the page takes to show it.
    let new = wait_until(LONG, "the daemon reporting the failover", || {
        let g = daemon.group("cache");
        match g["master"].as_str() {
            Some(m) if m != old && g["state"] == "ok" => Ok(m.to_string()),
            _ => Err(g.to_string()),
        }
    });
    let api_at = Instant::now();
    assert_eq!(
        new,
        a.addr(),
        "the replica with the best priority is promoted"
    );
    let group = wait_for_page(&browser, &new, "ok");
    let lag = api_at.elapsed();
    eprintln!("the page showed the new master {lag:?} after the API did");
    assert!(
        lag < Duration::from_secs(5),
        "the page took {lag:?} to show the new master"
    );
    assert_eq!(
        group["marker"], "same page",
        "the page was reloaded: {group}"
    );
    // The failover is in the page's history, with its outcome.
    let history = wait_until(LONG, "the failover in the page's history", || {
        let group = on_page(&browser)?;
        let text = group["history"].as_str().unwrap_or("").to_string();
        if text.contains(&old) && text.contains(&new) && text.contains("succeeded") {
            Ok(text)
        } else {
            Err(group.to_string())
        }
    });
    assert!(history.contains("cache"), "{history}");
    // The other replica follows the new master, as the topology shows.
    wait_until(LONG, "the other replica under the new master", || {
        let group = on_page(&browser)?;
        let text = group["text"].as_str().unwrap_or("");
        if group["replicas"] == serde_json::json!([b.addr()]) && text.contains("link up") {
            Ok(())
        } else {
            Err(group.to_string())
        }
    });
    // The name filter hides the groups that do not match, and shows them again.
    let shown =
        || browser.run(r#"return !document.querySelector('.group[data-name="cache"]').hidden"#);
    browser
        .type_into("#filter", "nomatch")
        .expect("type a filter");
    assert_eq!(shown(), Ok(Value::Bool(false)), "filtered out");
    browser.clear("#filter").expect("clear the filter");
    browser.type_into("#filter", "CAC").expect("type a filter");
    assert_eq!(shown(), Ok(Value::Bool(true)), "matches, whatever the case");
    browser.clear("#filter").expect("clear the filter");
    assert_eq!(shown(), Ok(Value::Bool(true)), "no filter");
    let count = browser.run("return document.getElementById('shown').textContent");
    assert_eq!(
        count,
        Ok(Value::from("")),
        "a cleared filter shows no count"
    );
    save_screenshot(&browser);
}

/// With `api_token` (reads too), the page asks for the token, then shows the group; its
/// switchover button, confirmed, moves the master with the token in the header.
#[test]
fn the_page_asks_for_the_token_and_its_switchover_button_moves_the_master() {
    let Some(browser) = browser() else { return };
    let (master, a, _b) = topology(10, 20);
    let masters = format!("-masters=cache={}", master.addr());
    let token = "page-test-token";
    let daemon = Daemon::start(&[
        &masters,
        "-check_interval=100",
        "-max_down_time=1",
        &format!("-api_token={token}"),
        "-api_token_reads",
    ]);
    let (status, _) = daemon
        .http_with(
            "GET",
            "/api/v1/groups",
            "",
            &[&format!("Authorization: Bearer {token}")],
        )
        .expect("GET /api/v1/groups");
    assert_eq!(status, 200);
    let bearer = format!("Authorization: Bearer {token}");
    wait_until(LONG, "group cache ok with 2 replicas", || {
        let (_, body) = daemon.http_with("GET", "/api/v1/groups", "", &[&bearer])?;
        if body.contains("\"state\": \"ok\"") && body.contains(&a.addr()) {
            Ok(())
        } else {
            Err(body)
        }
    });

    browser
        .goto(&format!("http://127.0.0.1:{}/", daemon.port))
        .expect("open the page");
    wait_until(LONG, "the page asking for the token", || {
        match browser.run("return document.getElementById('auth').hidden")? {
            Value::Bool(false) => Ok(()),
            seen => Err(format!("token form hidden: {seen}")),
        }
    });
    browser.type_into("#token", token).expect("type the token");
    browser
        .click("#auth-form button[type=submit]")
        .expect("submit the token");
    wait_for_page(&browser, &master.addr(), "ok");

    browser
        .click(r#".group[data-name="cache"] button[data-action="switchover"]"#)
        .expect("click switchover");
    browser.accept_dialog().expect("confirm the switchover");
    let group = wait_for_page(&browser, &a.addr(), "ok");
    assert!(
        group["replicas"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r == &master.addr())),
        "the old master is a replica now: {group}"
    );
    let notice = browser
        .run("return document.getElementById('notice').textContent")
        .expect("the notice");
    assert_eq!(notice, "switchover: done", "{group}");
}

/// Pause from the page, kill the new master: nothing is promoted and the page says
/// paused; resume from the page: the group is failed over.
#[test]
fn a_group_paused_from_the_page_is_not_failed_over_until_resumed() {
    let Some(browser) = browser() else { return };
    let (mut master, mut a, b) = topology(10, 20);
    let masters = format!("-masters=cache={}", master.addr());
    let daemon = Daemon::start(&[&masters, "-check_interval=100", "-max_down_time=1"]);
    daemon.wait_group_ok("cache", 2);
    browser
        .goto(&format!("http://127.0.0.1:{}/", daemon.port))
        .expect("open the page");
    wait_for_page(&browser, &master.addr(), "ok");
    master.kill();
    wait_for_page(&browser, &a.addr(), "ok");
    daemon.wait_group_ok("cache", 1);

    browser
        .click(r#".group[data-name="cache"] button[data-action="pause"]"#)
        .expect("click pause");
    wait_until(LONG, "the page saying paused", || {
        let group = on_page(&browser)?;
        let paused = group["badges"].as_array().is_some_and(|b| {
            b.iter()
                .any(|b| b.as_str().is_some_and(|b| b.contains("paused")))
        });
        if paused {
            Ok(())
        } else {
            Err(group.to_string())
        }
    });
    let (status, body) = daemon
        .http("GET", "/api/v1/groups", "")
        .expect("GET /api/v1/groups");
    assert_eq!(status, 200, "{body}");
    assert!(!daemon.group("cache")["paused"].is_null(), "{body}");

    // Kill the new master: the cluster finds it down and holds the failover back
    // (recorded), and nothing is promoted.
    let old = a.addr();
    a.kill();
    let g = wait_until(LONG, "a failover held back by the pause", || {
        let g = daemon.group("cache");
        let last = &g["last_failover"];
        if last["kind"] == "held_back" {
            Ok(g)
        } else {
            Err(g.to_string())
        }
    });
    assert_eq!(g["master"], old, "promoted while paused: {g}");
    let group = on_page(&browser).expect("the page");
    assert_eq!(group["master"], old, "{group}");
    assert!(
        group["text"].as_str().is_some_and(|t| t.contains("paused")),
        "the page says paused: {group}"
    );

    // Resume from the page: the group is failed over to the last replica.
    browser
        .click(r#".group[data-name="cache"] button[data-action="resume"]"#)
        .expect("click resume");
    wait_for_page(&browser, &b.addr(), "ok");
}
