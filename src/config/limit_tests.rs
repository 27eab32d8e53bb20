//! Tests of the floors on intervals and of `raft_secret` / `raft_secret_file`.

use super::*;

#[test]
fn intervals_have_floors_that_name_their_key() {
    for (toml, key) in [
        ("check_interval = 5", "check_interval"),
        (
            "check_interval = 100\nmax_down_time = 0.05",
            "max_down_time",
        ),
        ("check_interval = 5000", "max_down_time"),
    ] {
        let err = resolve_error(toml);
        assert!(err.starts_with(key), "{toml:?} gave {err:?}");
    }
    let err = resolve_error("check_interval = 5000");
    assert!(err.contains("(the default)"), "{err}");
    let c = Settings::from_toml("check_interval = 10\nmax_down_time = 0.01")
        .unwrap()
        .resolve()
        .unwrap();
    assert_eq!(c.check_interval, c.max_down_time, "the floors themselves");
}

#[test]
fn raft_secret_from_the_config_or_a_file() {
    let dir = std::env::temp_dir().join(format!("rf-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let c = Settings::from_toml("[raft]\nsecret = \"s3cr3t-e1f\"")
        .unwrap()
        .resolve()
        .unwrap();
    assert_eq!(
        c.raft.secret.as_ref().map(Secret::expose),
        Some("s3cr3t-e1f")
    );
    assert!(!format!("{c:?}").contains("s3cr3t-e1f"), "never printed");
    // A file: read at start, whitespace around it trimmed.
    let file = dir.join("secret");
    std::fs::write(&file, "  from-a-file \n").unwrap();
    let text = format!("[raft]\nsecret_file = \"{}\"", file.display());
    let c = Settings::from_toml(&text).unwrap().resolve().unwrap();
    assert_eq!(
        c.raft.secret.as_ref().map(Secret::expose),
        Some("from-a-file")
    );
    // Flags override the file's choice, whichever of the two keys either used.
    let flags = Settings {
        raft_secret: Some(Secret::new("from-a-flag")),
        ..Settings::default()
    };
    let c = Settings::from_toml(&text)
        .unwrap()
        .overlay(flags)
        .resolve()
        .unwrap();
    assert_eq!(
        c.raft.secret.as_ref().map(Secret::expose),
        Some("from-a-flag")
    );
    // Unreadable, empty, too large, or both keys: errors that name the key.
    std::fs::write(dir.join("empty"), " \n").unwrap();
    std::fs::write(dir.join("large"), vec![b'x'; MAX_SECRET_FILE as usize + 1]).unwrap();
    for (toml, key, says) in [
        (
            "[raft]\nsecret_file = \"/nonexistent/secret\"".to_string(),
            "raft_secret_file",
            "/nonexistent/secret",
        ),
        (
            format!("[raft]\nsecret_file = \"{}\"", dir.join("empty").display()),
            "raft_secret_file",
            "is empty",
        ),
        (
            format!("[raft]\nsecret_file = \"{}\"", dir.join("large").display()),
            "raft_secret_file",
            "larger than",
        ),
        (
            format!(
                "[raft]\nsecret = \"a\"\nsecret_file = \"{}\"",
                file.display()
            ),
            "raft_secret",
            "not both",
        ),
    ] {
        let err = resolve_error(&toml);
        assert!(
            err.starts_with(key) && err.contains(says),
            "{toml:?} gave {err:?}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
