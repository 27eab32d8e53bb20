//! ZooKeeper ACLs (`zk_auth`, `zk_auth_file`) with a real ZooKeeper and real
//! redis-servers: clients without the daemons' identity (none, or another digest) can
//! neither join the election, nor rewrite the state, nor forge views, while the cluster
//! still fails a killed master over; a daemon given a tree others can write refuses to
//! start and names the znode; a secret file others can read is warned about.
//!
//! The hostile clients use the `zookeeper` crate directly, as an attacker would.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::groups::*;
use support::{TempDir, ZkCluster, ZooKeeper, run_until_exit, wait_until};
use zookeeper::{Acl, CreateMode, Permission, ZkError};

const FAST: [&str; 3] = [
    "-check_interval=100",
    "-max_down_time=1",
    "-zk_session_timeout=2000",
];
const ELECTION: Duration = Duration::from_secs(20);
const USER: &str = "failover";
const PASSWORD: &str = "s3cret-pw";

/// Writes `user:password` (with a trailing newline, as an editor leaves it) to a file
/// with `mode`.
fn auth_file(dir: &Path, name: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{USER}:{PASSWORD}\n")).expect("write the auth file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path
}

/// A client of the ensemble, logged in with `digest` (`user:password`) if given.
fn client(zk: &ZooKeeper, digest: Option<&str>) -> zookeeper::ZooKeeper {
    let client = zookeeper::ZooKeeper::connect(&zk.addr(), Duration::from_secs(5), |_| {})
        .expect("connect to ZooKeeper");
    // The crate answers ConnectionLoss to a request sent before its connection is up.
    wait_until(LONG, "a ZooKeeper connection", || {
        client.exists("/", false).map_err(|e| format!("{e:?}"))
    });
    if let Some(digest) = digest {
        client
            .add_auth("digest", digest.as_bytes().to_vec())
            .expect("addauth digest");
    }
    client
}

/// `user:base64(sha1(user:password))`, computed as an operator would (openssl).
fn digest_id(user: &str, password: &str) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf '%s' '{user}:{password}' | openssl dgst -sha1 -binary | base64"
        ))
        .output()
        .expect("run openssl");
    format!("{user}:{}", String::from_utf8_lossy(&out.stdout).trim())
}

fn refused<T: std::fmt::Debug>(what: &str, result: zookeeper::ZkResult<T>) {
    assert_eq!(
        result.as_ref().err(),
        Some(&ZkError::NoAuth),
        "{what}: ZooKeeper should refuse it, got {result:?}"
    );
}

#[test]
fn with_zk_auth_strangers_cannot_steer_and_a_killed_master_is_still_failed_over() {
    let zk = ZooKeeper::start();
    let dir = TempDir::new("zk-acl");
    // Node 0's file is readable by everyone (warned about), node 1's is not.
    let open_file = auth_file(dir.path(), "open-auth", 0o644);
    let private_file = auth_file(dir.path(), "private-auth", 0o600);
    let (mut master, a, b) = topology(10, 100);
    let masters = format!("-masters=g={}", master.addr());
    let path = "/zk/tests/acl";
    let mut cluster = ZkCluster {
        nodes: Vec::new(),
        zk_addr: zk.addr(),
        zk_path: path.to_string(),
    };
    for file in [&open_file, &private_file] {
        let auth = format!("-zk_auth_file={}", file.display());
        let mut args = FAST.to_vec();
        args.extend([masters.as_str(), auth.as_str()]);
        cluster.add_node(&args, &[]);
    }
    let leader = cluster.wait_for_leader(&[0, 1], ELECTION);
    wait_for_group(
        &cluster.nodes[leader],
        "g",
        "g watched by the leader",
        |g| watched_with_replicas(g, 2),
    );
    let warned = |i: usize, file: &Path| {
        cluster.nodes[i]
            .log()
            .lines()
            .any(|l| l.contains("WARN") && l.contains(&file.display().to_string()))
    };
    assert!(warned(0, &open_file), "{}", cluster.nodes[0].log());
    assert!(cluster.nodes[0].log().contains("mode 644"));
    assert!(!warned(1, &private_file), "{}", cluster.nodes[1].log());
    assert!(!cluster.nodes[1].log().contains("no zk_auth"));

    // What the daemons created: everything for their identity, reading for the world
    // (ZooKeeper shows the digest only to a client logged in with it).
    let operator = client(&zk, Some(&format!("{USER}:{PASSWORD}")));
    let ours = digest_id(USER, PASSWORD);
    let (acl, _) = operator
        .get_acl(&format!("{path}/state"))
        .expect("getAcl state");
    assert_eq!(
        acl,
        vec![
            Acl::new(Permission::ALL, "digest", &ours),
            Acl::new(Permission::READ, "world", "anyone"),
        ]
    );
    let views = format!("{path}/views");
    let view = wait_until(LONG, "the daemons to share their views", || {
        operator
            .get_children(&views, false)
            .map_err(|e| format!("{e:?}"))?
            .into_iter()
            .next()
            .ok_or_else(|| "no view yet".to_string())
    });
    let election = format!("{path}/election");
    let member = operator
        .get_children(&election, false)
        .expect("list the election")
        .into_iter()
        .next()
        .expect("an election znode");
    // Reading stays open (operators inspect the tree without the credentials).
    let (state, _) = client(&zk, None)
        .get_data(&format!("{path}/state"), false)
        .expect("anyone may read the state");
    assert!(
        String::from_utf8_lossy(&state).contains(&master.addr()),
        "{state:?}"
    );

    for (who, digest) in [
        ("no login", None),
        ("another identity", Some("eve:guess")),
        ("the user with a wrong password", Some("failover:wrong")),
    ] {
        let hostile = client(&zk, digest);
        refused(
            &format!("{who}: a permanent election/n_0"),
            hostile.create(
                &format!("{election}/n_"),
                b"127.0.0.1:1".to_vec(),
                Acl::open_unsafe().clone(),
                CreateMode::PersistentSequential,
            ),
        );
        refused(
            &format!("{who}: delete a member's election znode"),
            hostile.delete(&format!("{election}/{member}"), None),
        );
        refused(
            &format!("{who}: rewrite the state"),
            hostile.set_data(&format!("{path}/state"), b"{}".to_vec(), None),
        );
        refused(
            &format!("{who}: add a view"),
            hostile.create(
                &format!("{views}/127.0.0.1:2"),
                b"{}".to_vec(),
                Acl::open_unsafe().clone(),
                CreateMode::Persistent,
            ),
        );
        refused(
            &format!("{who}: change a view"),
            hostile.set_data(&format!("{views}/{view}"), b"{}".to_vec(), None),
        );
        refused(
            &format!("{who}: open the base's ACL"),
            hostile.set_acl(path, Acl::open_unsafe().clone(), None),
        );
        let _ = hostile.close();
    }

    // The cluster still works: a killed master is failed over.
    master.kill();
    let g = wait_for_group(
        &cluster.nodes[leader],
        "g",
        "the failover to succeed",
        |g| g["last_failover"]["outcome"] == "succeeded" && g["state"] == "ok",
    );
    assert_eq!(g["master"], a.addr().as_str(), "priority 10 wins: {g}");
    assert_eq!(role(&a), "master");
    wait_replicating_from(&b, a.port, "the other replica to follow the new master");
    let _ = operator.close();
}

#[test]
fn a_tree_others_can_write_is_refused_at_start_naming_the_znode() {
    let zk = ZooKeeper::start();
    let dir = TempDir::new("zk-acl-open");
    let file = auth_file(dir.path(), "auth", 0o600);
    let operator = client(&zk, Some(&format!("{USER}:{PASSWORD}")));
    let ours = vec![
        Acl::new(Permission::ALL, "digest", digest_id(USER, PASSWORD)),
        Acl::new(Permission::READ, "world", "anyone"),
    ];
    // A tree left by a daemon without zk_auth: the base is the identity's already (an
    // operator started migrating), its state znode is still open.
    for (node, acl) in [
        ("/zk", Acl::open_unsafe().clone()),
        ("/zk/tests", Acl::open_unsafe().clone()),
        ("/zk/tests/open", ours.clone()),
        ("/zk/tests/open/state", Acl::open_unsafe().clone()),
    ] {
        operator
            .create(node, Vec::new(), acl, CreateMode::Persistent)
            .unwrap_or_else(|e| panic!("create {node}: {e:?}"));
    }
    let args = |path: &str| -> Vec<String> {
        vec![
            "-broker=zk".into(),
            format!("-zk_addr={}", zk.addr()),
            format!("-zk_path={path}"),
            format!("-zk_auth_file={}", file.display()),
        ]
    };
    let (code, stderr) = run_until_exit(&args("/zk/tests/open"));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("/zk/tests/open/state can be changed by world:anyone"),
        "the error names the znode and who can write it:\n{stderr}"
    );

    // Another identity owns this one (ZooKeeper shows it as `other:x`): refused too.
    operator
        .create(
            "/zk/tests/theirs",
            Vec::new(),
            vec![
                Acl::new(Permission::ALL, "digest", digest_id("other", "pw")),
                Acl::new(Permission::READ, "world", "anyone"),
            ],
            CreateMode::Persistent,
        )
        .expect("create /zk/tests/theirs");
    let (code, stderr) = run_until_exit(&args("/zk/tests/theirs"));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("/zk/tests/theirs can be changed by digest:other:"),
        "{stderr}"
    );

    // Once migrated (setAcl), the daemon starts.
    operator
        .set_acl("/zk/tests/open/state", ours, None)
        .expect("setAcl state");
    let mut cluster = ZkCluster::start(
        1,
        &zk.addr(),
        "/zk/tests/open",
        &[&format!("-zk_auth_file={}", file.display()), FAST[2]],
    );
    cluster.wait_for_leader(&[0], ELECTION);
    let _ = operator.close();
}

#[test]
fn after_a_zookeeper_restart_the_daemons_are_logged_in_and_write() {
    let mut zk = ZooKeeper::start();
    let dir = TempDir::new("zk-acl-restart");
    let file = auth_file(dir.path(), "auth", 0o600);
    let auth = format!("-zk_auth_file={}", file.display());
    // The longest session the test ZooKeeper grants, so sessions outlive its restart
    // and the client reconnects to them.
    let mut cluster = ZkCluster::start(
        2,
        &zk.addr(),
        "/zk/tests/acl-restart",
        &[&auth, "-zk_session_timeout=5000"],
    );
    cluster.wait_for_leader(&[0, 1], ELECTION);
    zk.restart();
    let leader = cluster.wait_for_leader(&[0, 1], ELECTION);
    // ZooKeeper keeps logins per connection: a session that went on without logging in
    // again could not write (and logging in again on a busy client garbles replies).
    write_ok(
        &cluster.nodes[leader],
        "POST",
        "/master?masters=after=127.0.0.1:3",
    );
    wait_for_groups(
        &cluster.nodes,
        &[0, 1],
        "after=127.0.0.1:3",
        "a write after the restart",
    );
    let replaced = (0..2)
        .filter(|&i| cluster.nodes[i].log().contains("without the zk_auth login"))
        .count();
    println!("daemons that replaced a reconnected session: {replaced}");
}

#[test]
fn a_config_file_others_can_read_is_warned_about_and_a_private_one_is_not() {
    let dir = TempDir::new("config-modes");
    let mut logs = Vec::new();
    for mode in [0o644, 0o600] {
        let config = dir.path().join(format!("failover-{mode:o}.toml"));
        std::fs::write(&config, "check_interval = 1000\n").expect("write the config");
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let daemon = support::Daemon::start(&[&format!("-config={}", config.display())]);
        let log = wait_until(LONG, "the daemon to be up", || {
            let log = daemon.log();
            if log.contains("listening on") {
                Ok(log)
            } else {
                Err(log)
            }
        });
        logs.push((config, log));
    }
    let (open, log) = &logs[0];
    let line = log
        .lines()
        .find(|l| l.contains(&open.display().to_string()) && l.contains("WARN"))
        .unwrap_or_else(|| panic!("no warning naming {}:\n{log}", open.display()));
    assert!(line.contains("mode 644"), "{line}");
    let (private, log) = &logs[1];
    assert!(
        !log.lines()
            .any(|l| l.contains("WARN") && l.contains(&private.display().to_string())),
        "no warning for a file only its owner reads:\n{log}"
    );
}

#[test]
fn a_tree_found_open_by_a_later_session_is_not_joined() {
    let mut zk = ZooKeeper::start();
    let dir = TempDir::new("zk-acl-late");
    let file = auth_file(dir.path(), "auth", 0o600);
    let operator = client(&zk, None);
    for node in ["/zk", "/zk/tests", "/zk/tests/late", "/zk/tests/late/state"] {
        operator
            .create(
                node,
                Vec::new(),
                Acl::open_unsafe().clone(),
                CreateMode::Persistent,
            )
            .unwrap_or_else(|e| panic!("create {node}: {e:?}"));
    }
    let _ = operator.close();
    // ZooKeeper is down when the daemon starts, so the check at start is postponed to
    // the first session.
    zk.kill();
    let mut cluster = ZkCluster {
        nodes: Vec::new(),
        zk_addr: zk.addr(),
        zk_path: "/zk/tests/late".to_string(),
    };
    cluster.add_node(
        &[
            &format!("-zk_auth_file={}", file.display()),
            "-zk_session_timeout=2000",
        ],
        &[],
    );
    zk.restart();
    let status = wait_until(LONG, "the session to refuse the tree", || {
        let status = cluster.status(0)?;
        let error = status["error"].as_str().unwrap_or_default().to_string();
        if error.contains("/zk/tests/late") && error.contains("world:anyone") {
            Ok(status)
        } else {
            Err(status.to_string())
        }
    });
    assert_ne!(status["role"], "leader", "{status}");
    assert_eq!(status["acting"], false, "{status}");
    let election = client(&zk, None).get_children("/zk/tests/late/election", false);
    assert!(
        matches!(&election, Err(ZkError::NoNode)) || matches!(&election, Ok(c) if c.is_empty()),
        "the daemon did not join: {election:?}"
    );
    let log = cluster.nodes[0].log();
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains("/zk/tests/late")),
        "{log}"
    );
}
