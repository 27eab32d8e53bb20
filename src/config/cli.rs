//! The command line: the Go original's flags, accepted both Go-style (`-addr=x`,
//! `-addr x`) and GNU-style (`--addr x`, `--addr=x`, `--check-interval`).
//!
//! argh parses `--name value` into [`Settings`] (where every flag is listed, with its
//! help); [`normalize_args`] rewrites the other spellings into that form first, so a user
//! of the Go version can keep their scripts.

use super::Settings;
use crate::error::Result;
use argh::FromArgs;

/// Flags that take true or false and, as with Go's flag package, mean true when given
/// bare (`-api_token_reads`).
const BOOL_FLAGS: &[&str] = &[
    "api-token-reads",
    "tls",
    "tls-insecure-skip-verify",
    "tls-http",
    "tls-sentinel",
    "tls-raft",
];

/// Rewrites Go-style and `=`-joined flags into argh's `--name value` form.
///
/// `-addr=x`, `-addr x`, `--addr=x` and `-check_interval x` all become `--addr x` /
/// `--check-interval x`. A lone `-h` stays as it is for argh's help; `--` ends flags.
pub fn normalize_args(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len() + 4);
    let mut rest = false;
    for (index, arg) in args.iter().enumerate() {
        if rest || !arg.starts_with('-') || arg == "-" || arg == "-h" {
            out.push(arg.clone());
            continue;
        }
        if arg == "--" {
            rest = true;
            out.push(arg.clone());
            continue;
        }
        let body = arg.trim_start_matches('-');
        let (name, value) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (body, None),
        };
        let name = name.replace('_', "-");
        out.push(format!("--{name}"));
        if let Some(value) = value {
            out.push(value.to_string());
        } else if BOOL_FLAGS.contains(&name.as_str()) {
            let next = args.get(index + 1).map(String::as_str);
            if !matches!(next, Some("true" | "false")) {
                out.push("true".into());
            }
        }
    }
    out
}

/// Parses the process arguments (without the program name) into [`Settings`].
///
/// `Err` carries argh's output: the help text (`exit_ok`) or a usage error.
pub fn parse_args(
    program: &str,
    args: &[String],
) -> std::result::Result<Settings, argh::EarlyExit> {
    let normalized = normalize_args(args);
    let refs: Vec<&str> = normalized.iter().map(String::as_str).collect();
    Settings::from_args(&[program], &refs)
}

impl Settings {
    /// The flags layered on top of the config file they name (when they name one).
    pub fn settings(self) -> Result<Settings> {
        let file = match &self.config {
            Some(path) => Settings::from_file(path)?,
            None => Settings::default(),
        };
        Ok(file.overlay(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn go_style_and_gnu_style_flags_are_the_same() {
        let go = parse_args(
            "redis-failover",
            &args(&[
                "-addr=127.0.0.1:11001",
                "-masters=127.0.0.1:6379",
                "-check_interval=100",
            ]),
        )
        .unwrap();
        let gnu = parse_args(
            "redis-failover",
            &args(&[
                "--addr",
                "127.0.0.1:11001",
                "--masters=127.0.0.1:6379",
                "--check_interval",
                "100",
            ]),
        )
        .unwrap();
        assert_eq!(go, gnu);
        assert_eq!(go.addr.as_deref(), Some("127.0.0.1:11001"));
        let spaced = parse_args("x", &args(&["-max_down_time", "0.5"])).unwrap();
        assert_eq!(spaced.max_down_time, Some(0.5));
    }

    #[test]
    fn flags_override_the_config_file() {
        let dir = std::env::temp_dir().join(format!("rf-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("f.toml");
        std::fs::write(&file, "addr = \"127.0.0.1:1\"\ncheck_interval = 50\n").unwrap();
        let a = parse_args(
            "x",
            &args(&[&format!("-config={}", file.display()), "-addr=127.0.0.1:2"]),
        )
        .unwrap();
        let c = a.settings().unwrap().resolve().unwrap();
        assert_eq!(c.addr.port, 2);
        assert_eq!(c.check_interval, Duration::from_millis(50));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bool_flags_may_be_given_bare_like_in_go() {
        for (given, expected) in [
            (&["-api_token_reads"][..], Some(true)),
            (&["-api_token_reads", "-log_level=warn"], Some(true)),
            (&["-api_token_reads=false"], Some(false)),
            (&["--api-token-reads", "false"], Some(false)),
            (&["-log_level=warn"], None),
        ] {
            let parsed = parse_args("x", &args(given)).unwrap();
            assert_eq!(parsed.api_token_reads, expected, "{given:?}");
        }
        let parsed = parse_args("x", &args(&["-redis_password=pw-8e2", "-api_token=t"])).unwrap();
        assert!(!format!("{parsed:?}").contains("pw-8e2"), "{parsed:?}");
        let c = parsed.settings().unwrap().resolve().unwrap();
        assert_eq!(
            c.redis_password.map(|p| p.expose().to_string()),
            Some("pw-8e2".into())
        );
        assert!(c.api_token.is_some());
    }

    #[test]
    fn unknown_flags_and_bad_values_are_errors() {
        assert!(parse_args("x", &args(&["-nope=1"])).is_err());
        assert!(parse_args("x", &args(&["-check_interval=abc"])).is_err());
        let a = parse_args("x", &args(&["-broker=etcd"])).unwrap();
        let err = a.settings().unwrap().resolve().unwrap_err().to_string();
        assert!(err.contains("unknown broker \"etcd\""), "{err}");
    }
}
