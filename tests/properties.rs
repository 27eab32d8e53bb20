//! Property tests over everything that parses bytes from the network: HTTP parameters
//! (`request_params`, `MasterSpec::parse_list`, `Addr::parse`), RESP replies
//! (`resp::parse`, compared with the `redis` crate's parser) and the `ROLE` / `INFO` readers (`parse_role`,
//! `parse_replication_info`). None may panic, whatever it is given, and where input is
//! well formed the result must be the right one.
//!
//! Each property runs `PARSER_CASES` (10,000) generated cases, or `PROPERTY_CASES` when
//! that is set in the environment; every test prints how many ran (`--nocapture`).

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use redis_failover::api::params::{form_value, group_keys};
use redis_failover::redis::resp::{Reply, parse};
use redis_failover::redis::{Role, parse_replication_info, parse_role};
use redis_failover::{Addr, MasterSpec};
use std::cell::Cell;

/// Cases per property unless `PROPERTY_CASES` says otherwise.
const PARSER_CASES: u32 = 10_000;

fn cases() -> u32 {
    std::env::var("PROPERTY_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(PARSER_CASES)
}

/// Runs `property` over `cases()` values of `strategy`; panics with the shrunk
/// counterexample on failure; prints and returns how many cases ran. The property
/// returns whether the parser accepted its input, so the output shows that both
/// branches were exercised.
fn check<S: Strategy>(
    name: &str,
    strategy: S,
    property: impl Fn(S::Value) -> Result<bool, TestCaseError>,
) -> u32 {
    let wanted = cases();
    let mut runner = TestRunner::new(Config {
        cases: wanted,
        failure_persistence: None,
        ..Config::default()
    });
    let ran = Cell::new(0u32);
    let accepted = Cell::new(0u32);
    let result = runner.run(&strategy, |value| {
        ran.set(ran.get() + 1);
        if property(value)? {
            accepted.set(accepted.get() + 1);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("property {name} failed: {e}");
    }
    println!(
        "property {name}: {} cases, all passed ({} inputs accepted, {} refused)",
        ran.get(),
        accepted.get(),
        ran.get() - accepted.get()
    );
    assert!(ran.get() >= wanted, "{name}: only {} cases ran", ran.get());
    ran.get()
}

// ---- RESP ----------------------------------------------------------------------------

/// Any RESP2 reply, nested up to four levels.
fn reply() -> impl Strategy<Value = Reply> {
    let leaf = prop_oneof![
        Just(Reply::Nil),
        any::<i64>().prop_map(Reply::Int),
        "[^\r\n]{0,20}".prop_map(Reply::Simple),
        "[^\r\n]{0,20}".prop_map(Reply::Error),
        vec(any::<u8>(), 0..40).prop_map(Reply::Bulk),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| vec(inner, 0..8).prop_map(Reply::Array))
}

fn encode(reply: &Reply, out: &mut Vec<u8>) {
    match reply {
        Reply::Nil => out.extend_from_slice(b"$-1\r\n"),
        Reply::Int(n) => out.extend_from_slice(format!(":{n}\r\n").as_bytes()),
        Reply::Simple(s) => out.extend_from_slice(format!("+{s}\r\n").as_bytes()),
        Reply::Error(s) => out.extend_from_slice(format!("-{s}\r\n").as_bytes()),
        Reply::Bulk(b) => {
            out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
            out.extend_from_slice(b);
            out.extend_from_slice(b"\r\n");
        }
        Reply::Array(items) => {
            out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
            for item in items {
                encode(item, out);
            }
        }
    }
}

#[test]
fn resp_parse_never_panics_on_arbitrary_bytes() {
    // Bytes biased towards RESP's own alphabet, so deep paths are reached too.
    let byte = prop_oneof![
        3 => prop::sample::select(b"*$:+-0123456789\r\n".to_vec()),
        1 => any::<u8>(),
    ];
    check("resp::parse(arbitrary bytes)", vec(byte, 0..200), |input| {
        let parsed = parse(&input);
        if let Ok(Some((_, used))) = parsed {
            prop_assert!(used > 0 && used <= input.len());
        }
        // Accepted: a reply, or a valid start that waits for more bytes.
        Ok(parsed.is_ok())
    });
}

#[test]
fn resp_parse_reads_back_every_encoded_reply_and_waits_at_every_cut() {
    check("resp::parse(encoded reply)", reply(), |reply| {
        let mut bytes = Vec::new();
        encode(&reply, &mut bytes);
        prop_assert_eq!(parse(&bytes), Ok(Some((reply.clone(), bytes.len()))));
        // Any strict prefix is incomplete, never an error or a wrong reply.
        let cut = bytes.len() / 2;
        prop_assert_eq!(parse(&bytes[..cut]), Ok(None));
        Ok(true)
    });
}

#[test]
fn resp_parse_survives_corrupted_replies() {
    let corrupted = (reply(), any::<prop::sample::Index>(), any::<u8>());
    check(
        "resp::parse(corrupted reply)",
        corrupted,
        |(reply, at, byte)| {
            let mut bytes = Vec::new();
            encode(&reply, &mut bytes);
            let i = at.index(bytes.len());
            bytes[i] = byte;
            Ok(matches!(parse(&bytes), Ok(Some(_))))
        },
    );
}

/// What `redis::parse_redis_value` (the `redis` crate, a dev-dependency) made of the same
/// bytes, in our terms: `None` when it read something RESP2 has no word for.
fn from_redis_crate(value: &redis::Value) -> Option<Reply> {
    Some(match value {
        redis::Value::Nil => Reply::Nil,
        redis::Value::Int(n) => Reply::Int(*n),
        redis::Value::Okay => Reply::Simple("OK".into()),
        redis::Value::SimpleString(s) => Reply::Simple(s.clone()),
        redis::Value::BulkString(b) => Reply::Bulk(b.clone()),
        redis::Value::Array(items) => Reply::Array(
            items
                .iter()
                .map(from_redis_crate)
                .collect::<Option<Vec<_>>>()?,
        ),
        // Error replies: only that it is one is compared (the crate splits the code).
        redis::Value::ServerError(_) => Reply::Error(String::new()),
        _ => return None,
    })
}

/// Error replies compare as errors, whatever their text.
fn without_error_text(reply: &Reply) -> Reply {
    match reply {
        Reply::Error(_) => Reply::Error(String::new()),
        Reply::Array(items) => Reply::Array(items.iter().map(without_error_text).collect()),
        other => other.clone(),
    }
}

#[test]
fn resp_parse_agrees_with_the_redis_crate() {
    // Encoded replies, some with one byte changed: where our parser reads a whole reply
    // from all of the bytes, the redis crate's parser reads the same one.
    let input = (
        reply(),
        prop::option::weighted(0.3, (any::<prop::sample::Index>(), any::<u8>())),
    );
    check(
        "resp::parse vs redis::parse_redis_value",
        input,
        |(reply, damage)| {
            let mut bytes = Vec::new();
            encode(&reply, &mut bytes);
            if let Some((at, byte)) = damage {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
            let ours = parse(&bytes);
            let theirs = redis::parse_redis_value(&bytes);
            match ours {
                Ok(Some((ours, used))) if used == bytes.len() => {
                    let theirs = theirs.map_err(|e| {
                        TestCaseError::fail(format!(
                            "redis refused {bytes:?}, we read {ours:?}: {e}"
                        ))
                    })?;
                    let theirs = from_redis_crate(&theirs).ok_or_else(|| {
                        TestCaseError::fail(format!("redis read {theirs:?} from {bytes:?}"))
                    })?;
                    prop_assert_eq!(without_error_text(&ours), theirs, "bytes {:?}", bytes);
                    Ok(true)
                }
                // A valid start that waits for more: the crate cannot read a whole
                // reply from these bytes either.
                Ok(None) => {
                    prop_assert!(theirs.is_err(), "redis read {:?} from {:?}", theirs, bytes);
                    Ok(false)
                }
                _ => Ok(false),
            }
        },
    );
}

// ---- ROLE and INFO -------------------------------------------------------------------

/// Text that looks like what servers send: roles, hosts, ports, offsets, and noise.
fn field() -> impl Strategy<Value = Reply> {
    let text = prop_oneof![
        Just("master".to_string()),
        Just("slave".to_string()),
        Just("replica".to_string()),
        Just("sentinel".to_string()),
        Just("127.0.0.1".to_string()),
        Just("::1".to_string()),
        Just("connected".to_string()),
        "[0-9]{1,6}",
        "-?[0-9]{1,20}",
        ".{0,12}",
    ];
    prop_oneof![
        text.clone().prop_map(|t| Reply::Bulk(t.into_bytes())),
        text.prop_map(Reply::Simple),
        any::<i64>().prop_map(Reply::Int),
        Just(Reply::Nil),
    ]
}

/// ROLE-shaped replies: `[role, offset-or-host, [[host, port, offset], ...], ...]` with
/// any field replaced by anything.
fn role_reply() -> impl Strategy<Value = Reply> {
    let entry = prop_oneof![
        3 => vec(field(), 0..5).prop_map(Reply::Array),
        1 => reply(),
    ];
    let replicas = prop_oneof![
        3 => vec(entry, 0..6).prop_map(Reply::Array),
        1 => field(),
    ];
    prop_oneof![
        3 => (field(), field(), replicas, vec(field(), 0..3)).prop_map(|(role, second, third, rest)| {
            let mut items = vec![role, second, third];
            items.extend(rest);
            Reply::Array(items)
        }),
        1 => reply(),
    ]
}

#[test]
fn parse_role_never_panics_and_lists_only_valid_replicas() {
    check(
        "parse_role(ROLE-shaped and arbitrary replies)",
        role_reply(),
        |reply| {
            let parsed = parse_role(&reply);
            match &parsed {
                Ok(Role::Master { replicas, .. }) => {
                    for r in replicas {
                        // Every listed replica is an address the daemon can use again.
                        prop_assert_eq!(
                            Addr::parse(&r.addr.to_string()).ok(),
                            Some(r.addr.clone())
                        );
                    }
                }
                Ok(Role::Replica { master, .. }) => prop_assert!(master.contains(':')),
                Ok(Role::Other(_)) | Err(_) => {}
            }
            Ok(parsed.is_ok())
        },
    );
}

/// `INFO` text: known keys with odd values, unknown keys, blank and broken lines.
fn info_text() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("role"),
        Just("master_host"),
        Just("master_port"),
        Just("master_link_status"),
        Just("master_link_down_since_seconds"),
        Just("slave_priority"),
        Just("replica_priority"),
        Just("slave_repl_offset"),
        Just("run_id"),
        Just("# Replication"),
        Just("x"),
    ];
    let value = prop_oneof![
        Just("up".to_string()),
        Just("slave".to_string()),
        "-?[0-9]{1,25}",
        "[^\r\n]{0,16}",
    ];
    let line = prop_oneof![
        4 => (key, value).prop_map(|(k, v)| format!("{k}:{v}")),
        1 => "[^\n]{0,30}",
    ];
    prop_oneof![
        4 => vec(line, 0..20).prop_map(|lines| lines.join("\r\n")),
        1 => ".{0,200}",
    ]
}

#[test]
fn parse_replication_info_never_panics() {
    check(
        "parse_replication_info(INFO-shaped and arbitrary text)",
        info_text(),
        |text| {
            let parsed = parse_replication_info(&text);
            if let Ok(info) = &parsed {
                prop_assert!(!info.role.is_empty());
                prop_assert!(text.contains("role:"));
            }
            Ok(parsed.is_ok())
        },
    );
}

// ---- HTTP parameters -----------------------------------------------------------------

/// Addresses as users type them, plus mistakes: no port, odd ports, empty or invalid
/// hosts, IPv6 with and without brackets.
fn address() -> impl Strategy<Value = String> {
    let host = prop_oneof![
        3 => Just("127.0.0.1".to_string()),
        1 => Just("[::1]".to_string()),
        1 => Just("::1".to_string()),
        1 => Just("".to_string()),
        3 => "[a-z0-9.-]{1,12}",
        1 => ".{0,6}",
    ];
    let port = prop_oneof![
        6 => "[1-9][0-9]{0,3}",
        1 => "[0-9]{1,6}",
        1 => Just("0".to_string()),
        1 => ".{0,4}",
    ];
    (host, port, prop::bool::weighted(0.9)).prop_map(|(host, port, colon)| {
        if colon {
            format!("{host}:{port}")
        } else {
            host
        }
    })
}

/// Master lists as users type them, plus mistakes: empty items, bad addresses, names
/// with forbidden characters, the same name twice.
fn master_list() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        2 => Just(None),
        2 => "[a-z0-9_.:-]{0,6}".prop_map(Some),
        1 => ".{0,8}".prop_map(Some),
    ];
    let item = (name, address()).prop_map(|(name, addr)| match name {
        Some(n) => format!("{n}={addr}"),
        None => addr,
    });
    prop_oneof![
        4 => vec(item, 0..4).prop_map(|items| items.join(",")),
        1 => ".{0,60}",
    ]
}

#[test]
fn master_lists_parse_to_unique_groups_that_read_back_the_same() {
    check("MasterSpec::parse_list", master_list(), |text| {
        let parsed = MasterSpec::parse_list(&text);
        if let Ok(specs) = &parsed {
            prop_assert!(!specs.is_empty());
            for (i, spec) in specs.iter().enumerate() {
                prop_assert!(specs[..i].iter().all(|s| s.name != spec.name));
                // What the API shows parses back to the same group.
                prop_assert_eq!(
                    MasterSpec::parse(&spec.to_string()).ok(),
                    Some(spec.clone())
                );
            }
        }
        let _ = group_keys(&text);
        Ok(parsed.is_ok())
    });
}

#[test]
fn form_values_never_panic_and_decode_what_was_encoded() {
    let raw = prop_oneof![
        2 => vec(any::<u8>(), 0..80),
        2 => "((masters|[a-z]{1,8})=[%0-9A-Fa-f+&=a-z\u{80}-\u{10FFFF}]{0,12}&?){0,5}"
            .prop_map(String::into_bytes),
    ];
    check("form_value(arbitrary bytes)", raw, |bytes| {
        let parsed = form_value(&bytes, "masters");
        if let Ok(Some(value)) = &parsed {
            prop_assert!(!value.contains(char::REPLACEMENT_CHARACTER), "{:?}", value);
        }
        Ok(matches!(parsed, Ok(Some(_))))
    });
    check("form_value(encoded master list)", master_list(), |list| {
        if list.contains('\u{FFFD}') {
            // Refused on purpose: it is how a bad percent-escape decodes.
            return Ok(false);
        }
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("other", "x")
            .append_pair("masters", &list)
            .finish();
        prop_assert_eq!(
            form_value(form.as_bytes(), "masters"),
            Ok(Some(list.clone()))
        );
        Ok(true)
    });
}

#[test]
fn addresses_never_panic_and_read_back_the_same() {
    let text = prop_oneof![3 => address(), 1 => ".{0,40}"];
    check("Addr::parse(typed and arbitrary text)", text, |text| {
        let parsed = Addr::parse(&text);
        if let Ok(addr) = &parsed {
            prop_assert!(addr.port != 0);
            prop_assert_eq!(Addr::parse(&addr.to_string()).ok(), Some(addr.clone()));
        }
        Ok(parsed.is_ok())
    });
}
