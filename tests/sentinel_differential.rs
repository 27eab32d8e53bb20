//! Differential test: the daemon's Sentinel-compatible port against a real
//! `redis-server --sentinel`, both watching the same group (one master, two replicas),
//! asked the same commands at three moments: healthy, just after `kill -9` of the
//! master, and after the failover.
//!
//! Replies are reduced to what clients depend on ([`describe`]): reply types, map keys
//! and their order, instance field names, `flags` words, and the values that are not
//! volatile (addresses, roles, link status, quorum, error codes). Timers, run ids,
//! epochs and configured timeouts are left out. Every difference must be in
//! [`INTENDED`], with its reason; any other fails the test.
//!
//! The daemon fails over first (2 s down window) and Sentinel (4 s) then finds the same
//! replica already promoted, promotes it again (a no-op) and re-points nothing new, so
//! both end on the same master.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;
use support::resp3::{RespConn, Value};
use support::{Daemon, RedisServer, Sentinel, free_port, wait_until};

const GROUP: &str = "cache";

/// Differences that are meant, each with its reason: (command prefix, path prefix, why).
const INTENDED: &[(&str, &str, &str)] = &[
    (
        "INFO",
        "sections",
        "the daemon is no Redis server: INFO has its Server and Sentinel sections only, \
         no Clients, Stats or CPU (clients read redis_mode and the Sentinel section)",
    ),
    (
        "INFO",
        "# Clients",
        "no Clients section: the daemon's connections are not Redis clients",
    ),
    ("INFO", "# Stats", "no Stats section: see sections"),
    ("INFO", "# CPU", "no CPU section: see sections"),
    (
        "INFO",
        "# Server.keys",
        "the Server section has the keys that mean something for the daemon (version, \
         mode, process id, run id, port, uptime) plus server_name and \
         redis_failover_version",
    ),
    (
        "CLIENT SETINFO",
        "",
        "CLIENT SETINFO (Redis 7.2+) is accepted with OK, as a 7.2 Sentinel does; an older \
         redis-server answers an error; clients send it on connect and ignore either",
    ),
];

/// Commands asked on one RESP2 connection that switches to RESP3 halfway; the old
/// master's address is filled in.
fn script(old_master: u16) -> Vec<Vec<String>> {
    let down = format!("SENTINEL IS-MASTER-DOWN-BY-ADDR 127.0.0.1 {old_master} 0 *");
    [
        "PING",
        "CLIENT SETINFO LIB-NAME differential",
        "SENTINEL MASTERS",
        "SENTINEL MASTER cache",
        "SENTINEL REPLICAS cache",
        "SENTINEL SLAVES cache",
        "SENTINEL SENTINELS cache",
        "SENTINEL GET-MASTER-ADDR-BY-NAME cache",
        "SENTINEL GET-MASTER-ADDR-BY-NAME nope",
        "SENTINEL MASTER nope",
        "SENTINEL CKQUORUM cache",
        &down,
        "SENTINEL IS-MASTER-DOWN-BY-ADDR 127.0.0.1 x 0 *",
        "SENTINEL IS-MASTER-DOWN-BY-ADDR 127.0.0.1",
        "SENTINEL MYID",
        "SENTINEL MASTERS extra",
        "SENTINEL NO-SUCH-SUBCOMMAND",
        "ROLE",
        "INFO",
        "INFO sentinel",
        "HELLO 3",
        "SENTINEL MASTERS",
        "SENTINEL MASTER cache",
        "SENTINEL REPLICAS cache",
        "SENTINEL GET-MASTER-ADDR-BY-NAME nope",
        "PING",
        "SUBSCRIBE +switch-master",
        "PING",
        "SENTINEL GET-MASTER-ADDR-BY-NAME cache",
        "HELLO 2",
    ]
    .iter()
    .map(|c| c.split_whitespace().map(String::from).collect())
    .collect()
}

/// What one server answered at one moment: (command, reply) in order.
type Answers = Vec<(String, Value)>;

fn ask(port: u16, old_master: u16) -> Answers {
    let mut conn = RespConn::connect(port).expect("connect");
    let mut answers = Vec::new();
    let mut resp3 = false;
    for command in script(old_master) {
        let args: Vec<&str> = command.iter().map(String::as_str).collect();
        let reply = conn
            .call(&args)
            .unwrap_or_else(|e| panic!("port {port}: {}: {e}", command.join(" ")));
        let label = if resp3 { "(RESP3) " } else { "" };
        answers.push((format!("{label}{}", command.join(" ")), reply));
        if args[0] == "HELLO" {
            resp3 = args.get(1) == Some(&"3");
        }
    }
    // RESP2 while subscribed: only (P)SUBSCRIBE, PING and the like are allowed.
    let mut sub = RespConn::connect(port).expect("connect");
    for command in ["SUBSCRIBE +switch-master", "PING", "SENTINEL MASTERS"] {
        let args: Vec<&str> = command.split_whitespace().collect();
        let reply = sub.call(&args).expect(command);
        answers.push((format!("(subscribed, RESP2) {command}"), reply));
    }
    answers
}

/// How a command's reply is compared.
#[derive(Clone, Copy)]
enum Mode {
    /// Every value, as sent.
    Strict,
    /// Types, and the values of known fields (instances).
    Instances,
    Info,
    Hello,
    /// Types only.
    Types,
}

fn mode(command: &str) -> Mode {
    // Without the "(RESP3) " or "(subscribed, RESP2) " label.
    let c = command
        .rsplit(") ")
        .next()
        .unwrap_or(command)
        .to_ascii_uppercase();
    let instances = ["MASTERS", "MASTER ", "REPLICAS", "SLAVES", "SENTINELS"];
    if c.starts_with("SENTINEL ") && instances.iter().any(|i| c.contains(i)) && !c.contains("NOPE")
    {
        Mode::Instances
    } else if c.starts_with("INFO") {
        Mode::Info
    } else if c.starts_with("HELLO") {
        Mode::Hello
    } else if c.contains("MYID") || c.starts_with("CLIENT") {
        Mode::Types
    } else {
        Mode::Strict
    }
}

/// Instance fields whose values are compared; the others are timers, ids, epochs and
/// configured timeouts. The replicas' link status settles only with time, so it is
/// compared at stable moments.
const COMPARED_FIELDS: &[&str] = &[
    "name",
    "ip",
    "port",
    "role-reported",
    "master-host",
    "master-port",
    "slave-priority",
    "num-slaves",
    "num-other-sentinels",
    "quorum",
    "replica-announced",
];

/// A reply reduced to path -> description.
type Described = BTreeMap<String, String>;

fn describe(command: &str, reply: &Value, stable: bool) -> Described {
    let mut out = Described::new();
    match mode(command) {
        Mode::Instances => instances("", reply, stable, &mut out),
        Mode::Info => info(reply, &mut out),
        Mode::Hello => hello(reply, &mut out),
        Mode::Strict => walk("", reply, true, &mut out),
        Mode::Types => walk("", reply, false, &mut out),
    }
    out
}

/// Types everywhere; values too when `strict`.
fn walk(path: &str, v: &Value, strict: bool, out: &mut Described) {
    let (kind, text) = match v {
        Value::Simple(s) => ("simple", Some(s.clone())),
        Value::Bulk(s) => ("bulk", Some(s.clone())),
        Value::Verbatim(s) => ("verbatim", Some(s.clone())),
        Value::Int(n) => ("int", Some(n.to_string())),
        Value::Number(n) => ("number", Some(n.clone())),
        Value::Bool(b) => ("bool", Some(b.to_string())),
        // The error code (ERR, NOAUTH, ...): the texts vary between Redis versions.
        Value::Error(e) => ("error", e.split_whitespace().next().map(String::from)),
        Value::Null => ("null", None),
        Value::Array(items) | Value::Set(items) | Value::Push(items) => {
            let kind = match v {
                Value::Array(_) => "array",
                Value::Set(_) => "set",
                _ => "push",
            };
            out.insert(path.into(), format!("{kind}[{}]", items.len()));
            for (i, item) in items.iter().enumerate() {
                walk(&format!("{path}[{i}]"), item, strict, out);
            }
            return;
        }
        Value::Map(pairs) => {
            let keys: Vec<String> = pairs.iter().map(|(k, _)| key(k)).collect();
            out.insert(path.into(), format!("map{{{}}}", keys.join(",")));
            for (k, item) in pairs {
                walk(&format!("{path}.{}", key(k)), item, strict, out);
            }
            return;
        }
    };
    let described = match (strict || kind == "error", text) {
        (true, Some(text)) => format!("{kind}:{text}"),
        _ => kind.to_string(),
    };
    out.insert(path.into(), described);
}

fn key(k: &Value) -> String {
    k.text().map_or_else(|| format!("{k:?}"), str::to_string)
}

/// Field/value pairs of an instance: a RESP3 map, or a RESP2 flat array.
fn pairs(v: &Value) -> Option<(&'static str, Vec<(String, Value)>)> {
    match v {
        Value::Map(pairs) => Some((
            "map",
            pairs.iter().map(|(k, v)| (key(k), v.clone())).collect(),
        )),
        Value::Array(items)
            if items.len() % 2 == 0 && items.first().is_some_and(|i| i.text() == Some("name")) =>
        {
            Some((
                "flat",
                items
                    .chunks(2)
                    .map(|p| (key(&p[0]), p[1].clone()))
                    .collect(),
            ))
        }
        _ => None,
    }
}

/// One instance, or a list of them keyed by name (their order is not Sentinel's
/// contract: it iterates a hash table).
fn instances(path: &str, v: &Value, stable: bool, out: &mut Described) {
    if let Some((container, fields)) = pairs(v) {
        let keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
        out.insert(
            format!("{path}.keys"),
            format!("{container}{{{}}}", keys.join(",")),
        );
        for (k, value) in &fields {
            let text = value.text().unwrap_or("");
            let described = match k.as_str() {
                "flags" => {
                    let mut words: Vec<&str> = text.split(',').collect();
                    words.sort_unstable();
                    format!("words:{}", words.join(","))
                }
                "master-link-status" if stable => format!("bulk:{text}"),
                k if COMPARED_FIELDS.contains(&k) => format!("bulk:{text}"),
                _ => walk_one(value),
            };
            out.insert(format!("{path}.{k}"), described);
        }
        return;
    }
    match v {
        Value::Array(items) => {
            out.insert(path.into(), format!("array[{}]", items.len()));
            for item in items {
                let name = pairs(item)
                    .and_then(|(_, f)| f.into_iter().find(|(k, _)| k == "name"))
                    .and_then(|(_, v)| v.text().map(String::from))
                    .unwrap_or_else(|| "?".into());
                instances(&format!("{path}[{name}]"), item, stable, out);
            }
        }
        other => walk(path, other, true, out),
    }
}

fn walk_one(v: &Value) -> String {
    let mut out = Described::new();
    walk("", v, false, &mut out);
    out.remove("").unwrap_or_default()
}

/// INFO: its sections, each one's keys, and the Sentinel section's values.
fn info(reply: &Value, out: &mut Described) {
    let Some(text) = reply.text() else {
        return walk("", reply, true, out);
    };
    out.insert("".into(), walk_one(reply));
    let mut sections = Vec::new();
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if line.starts_with('#') {
            sections.push(line.trim().to_string());
            continue;
        }
        let section = sections.last().cloned().unwrap_or_default();
        let (k, v) = line.split_once(':').unwrap_or((line, ""));
        keys.entry(section.clone()).or_default().push(k.to_string());
        if section == "# Sentinel" {
            out.insert(format!("{section}.{k}"), v.trim().to_string());
        }
    }
    out.insert("sections".into(), sections.join(","));
    for (section, mut list) in keys {
        list.sort();
        out.insert(format!("{section}.keys"), list.join(","));
    }
}

/// HELLO: its keys in order, their types, and the values that are not versions or ids.
fn hello(reply: &Value, out: &mut Described) {
    let fields: Vec<(String, Value)> = match reply {
        Value::Map(pairs) => pairs.iter().map(|(k, v)| (key(k), v.clone())).collect(),
        Value::Array(items) => items
            .chunks(2)
            .map(|p| (key(&p[0]), p.get(1).cloned().unwrap_or(Value::Null)))
            .collect(),
        other => return walk("", other, true, out),
    };
    out.insert(
        "".into(),
        walk_one(reply).split('{').next().unwrap_or("").into(),
    );
    let keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
    out.insert("keys".into(), keys.join(","));
    for (k, v) in &fields {
        let strict = !matches!(k.as_str(), "version" | "id");
        walk(&format!(".{k}"), v, strict, out);
    }
}

/// One path where the two servers differ.
struct Difference {
    moment: &'static str,
    command: String,
    path: String,
    ours: Option<String>,
    theirs: Option<String>,
}

impl Difference {
    /// Why it is meant, if it is.
    fn reason(&self) -> Option<&'static str> {
        INTENDED
            .iter()
            .find(|(command, path, _)| {
                self.command.starts_with(command) && self.path.starts_with(path)
            })
            .map(|(_, _, why)| *why)
    }
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "[{}] {} {:?}: ours {:?}, Sentinel {:?}",
            self.moment,
            self.command,
            self.path,
            self.ours.as_deref().unwrap_or("(absent)"),
            self.theirs.as_deref().unwrap_or("(absent)")
        )
    }
}

fn compare(
    moment: &'static str,
    stable: bool,
    ours: &Answers,
    theirs: &Answers,
) -> Vec<Difference> {
    let mut differences = Vec::new();
    let mut compared = 0;
    for ((command, mine), (_, real)) in ours.iter().zip(theirs) {
        let mine = describe(command, mine, stable);
        let real = describe(command, real, stable);
        let paths: std::collections::BTreeSet<&String> = mine.keys().chain(real.keys()).collect();
        compared += paths.len();
        for path in paths {
            let (a, b) = (mine.get(path), real.get(path));
            if a != b {
                differences.push(Difference {
                    moment,
                    command: command.clone(),
                    path: path.clone(),
                    ours: a.cloned(),
                    theirs: b.cloned(),
                });
            }
        }
    }
    println!(
        "[{moment}] {} commands, {compared} paths compared, {} differences",
        ours.len(),
        differences.len()
    );
    differences
}

/// Field/value pairs of `SENTINEL MASTER <group>` or of each `SENTINEL REPLICAS` entry.
fn instance_list(port: u16, args: &[&str]) -> Result<Vec<BTreeMap<String, String>>, String> {
    let reply = RespConn::connect(port)?.call(args)?;
    let one = |v: &Value| {
        pairs(v).map(|(_, fields)| {
            fields
                .into_iter()
                .map(|(k, v)| (k, v.text().unwrap_or("").to_string()))
                .collect::<BTreeMap<_, _>>()
        })
    };
    if let Some(fields) = one(&reply) {
        return Ok(vec![fields]);
    }
    match &reply {
        Value::Array(items) => items
            .iter()
            .map(|i| one(i).ok_or(format!("odd instance {i:?}")))
            .collect(),
        other => Err(format!("{args:?}: {other:?}")),
    }
}

/// The group's master as `(port, flags)`, and its replicas as `name -> flags/link`.
fn topology_seen(port: u16) -> Result<(String, String, BTreeMap<String, String>), String> {
    let master = instance_list(port, &["SENTINEL", "MASTER", GROUP])?;
    let master = master.first().ok_or("no master")?;
    let replicas = instance_list(port, &["SENTINEL", "REPLICAS", GROUP])?
        .into_iter()
        .map(|r| {
            let seen = format!("{}/{}", r["flags"], r["master-link-status"]);
            (r["name"].clone(), seen)
        })
        .collect();
    Ok((master["port"].clone(), master["flags"].clone(), replicas))
}

/// Waits until both servers show `master` (its port and flags) and `replicas`.
fn wait_for_both(what: &str, ports: [u16; 2], master: u16, replicas: &[(u16, &str)], secs: u64) {
    let expected: BTreeMap<String, String> = replicas
        .iter()
        .map(|(port, seen)| (format!("127.0.0.1:{port}"), seen.to_string()))
        .collect();
    for port in ports {
        wait_until(Duration::from_secs(secs), what, || {
            let (master_port, flags, seen) = topology_seen(port)?;
            (master_port == master.to_string() && flags == "master" && seen == expected)
                .then_some(())
                .ok_or(format!(
                    "port {port}: master {master_port} {flags}, replicas {seen:?}"
                ))
        });
    }
}

/// Reads pub/sub messages until a `+switch-master` one; returns its payload.
fn switch_master(conn: &mut RespConn) -> Result<String, String> {
    loop {
        let message = conn.read(Duration::from_secs(60))?;
        if let Value::Array(items) | Value::Push(items) = &message
            && items.first().and_then(Value::text) == Some("message")
            && items.get(1).and_then(Value::text) == Some("+switch-master")
        {
            return items
                .get(2)
                .and_then(Value::text)
                .map(String::from)
                .ok_or("no payload".into());
        }
    }
}

fn subscribe(port: u16) -> RespConn {
    let mut conn = RespConn::connect(port).expect("connect");
    let reply = conn
        .call(&["SUBSCRIBE", "+switch-master"])
        .expect("SUBSCRIBE");
    assert!(matches!(reply, Value::Array(_)), "{reply:?}");
    conn
}

#[test]
fn the_sentinel_port_answers_like_redis_sentinel_before_during_and_after_a_failover() {
    let mut master = RedisServer::master();
    let a = RedisServer::replica_of(master.port, 10);
    let b = RedisServer::replica_of(master.port, 100);
    master.wait_for_replicas(2);
    let port = free_port();
    let _daemon = Daemon::start(&[
        &format!("-masters={GROUP}={}", master.addr()),
        &format!("-sentinel_addr=127.0.0.1:{port}"),
        "-check_interval=100",
        "-max_down_time=2",
    ]);
    let sentinel = Sentinel::start(master.port, GROUP, 4000, 1);
    let ports = [port, sentinel.port];
    let old = master.port;

    // 1. Healthy: both see the master and two linked replicas.
    let linked = [(a.port, "slave/ok"), (b.port, "slave/ok")];
    wait_for_both("both to see a healthy group", ports, old, &linked, 30);
    let mut differences = compare("healthy", true, &ask(port, old), &ask(sentinel.port, old));

    // 2. Just killed: both see the closed link before either calls the master down.
    let mut subscriptions = [subscribe(port), subscribe(sentinel.port)];
    master.kill();
    for p in ports {
        wait_until(
            Duration::from_secs(5),
            "the master flagged disconnected",
            || {
                let (_, flags, _) = topology_seen(p)?;
                flags.contains("disconnected").then_some(()).ok_or(flags)
            },
        );
    }
    let (ours, theirs) = (ask(port, old), ask(sentinel.port, old));
    for (who, answers) in [("daemon", &ours), ("Sentinel", &theirs)] {
        let flags = describe("SENTINEL MASTER cache", &answers[3].1, false);
        assert_eq!(
            flags.get(".flags").map(String::as_str),
            Some("words:disconnected,master"),
            "{who} must still see the master only disconnected when asked (a machine too \
             slow for the 2 s window fails here)"
        );
    }
    differences.extend(compare("just killed", false, &ours, &theirs));

    // 3. After the failover: a is the master, b its replica, the old master a dead
    // replica.
    let after = [(b.port, "slave/ok"), (old, "s_down,slave,disconnected/err")];
    wait_for_both(
        "both to settle on the new master",
        ports,
        a.port,
        &after,
        60,
    );
    differences.extend(compare(
        "after the failover",
        true,
        &ask(port, old),
        &ask(sentinel.port, old),
    ));

    // Both told their subscribers the same.
    let [ours_sub, theirs_sub] = &mut subscriptions;
    let (mine, real) = (switch_master(ours_sub), switch_master(theirs_sub));
    assert_eq!(mine, real, "+switch-master messages");
    assert_eq!(
        mine,
        Ok(format!("{GROUP} 127.0.0.1 {old} 127.0.0.1 {}", a.port))
    );

    report(&differences);
}

/// Prints the intended differences seen, and fails on any other.
fn report(differences: &[Difference]) {
    let (intended, unexpected): (Vec<&Difference>, Vec<&Difference>) =
        differences.iter().partition(|d| d.reason().is_some());
    println!("{} intended differences:", intended.len());
    for d in &intended {
        println!("  {d}\n    because {}", d.reason().unwrap_or_default());
    }
    let list: Vec<String> = unexpected.iter().map(|d| format!("  {d}")).collect();
    assert!(
        unexpected.is_empty(),
        "{} differences from redis-server --sentinel that are not in INTENDED:\n{}",
        unexpected.len(),
        list.join("\n")
    );
}
