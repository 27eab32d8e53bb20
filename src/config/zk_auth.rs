//! [`ZkAuth`]: the identity the daemons log in to ZooKeeper with (`zk_auth` or
//! `zk_auth_file`, ZooKeeper's `digest` scheme, `user:password`). With it, the znodes
//! the daemons create are writable by that identity only (`broker/zk/acl.rs`); without
//! it anyone who can reach ZooKeeper can steer failovers.

use super::Settings;
use crate::error::Result;
use crate::invalid_input;
use crate::secret::Secret;

/// ZooKeeper digest credentials: `user:password`.
#[derive(Debug, Clone, PartialEq)]
pub struct ZkAuth {
    pub user: String,
    pub password: Secret,
}

impl ZkAuth {
    /// `user:password`, both non-empty; the user cannot hold `:` (ZooKeeper splits the
    /// digest credentials at the first one).
    pub fn parse(text: &Secret) -> std::result::Result<ZkAuth, String> {
        let Some((user, password)) = text.expose().split_once(':') else {
            return Err("expected user:password (ZooKeeper's digest scheme)".into());
        };
        if user.is_empty() || password.is_empty() {
            return Err("expected user:password, neither empty".into());
        }
        if user.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err("the user holds whitespace or control characters".into());
        }
        Ok(ZkAuth {
            user: user.to_string(),
            password: Secret::new(password),
        })
    }

    /// What `addauth digest` sends: `user:password`.
    pub fn credentials(&self) -> Vec<u8> {
        format!("{}:{}", self.user, self.password.expose()).into_bytes()
    }
}

impl Settings {
    /// `zk_auth`, or the content of `zk_auth_file` (one of them, or neither).
    pub(super) fn zk_auth(&self) -> Result<Option<ZkAuth>> {
        let file = self.zk_auth_file.as_deref().filter(|f| !f.is_empty());
        let given = self.zk_auth.clone().filter(|s| !s.is_empty());
        let (key, text) = match (given, file) {
            (Some(_), Some(_)) => {
                return Err(invalid_input!(
                    "zk_auth ([zk] auth): give zk_auth or zk_auth_file, not both"
                ));
            }
            (Some(text), None) => ("zk_auth ([zk] auth)", text),
            (None, Some(path)) => (
                "zk_auth_file ([zk] auth_file)",
                super::read_secret_file("zk_auth_file ([zk] auth_file)", path)?,
            ),
            (None, None) => return Ok(None),
        };
        ZkAuth::parse(&text)
            .map(Some)
            .map_err(|e| invalid_input!("{key}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_and_password_are_split_at_the_first_colon() {
        let auth = ZkAuth::parse(&Secret::new("failover:s3:cret")).unwrap();
        assert_eq!(auth.user, "failover");
        assert_eq!(auth.password.expose(), "s3:cret");
        assert_eq!(auth.credentials(), b"failover:s3:cret");
        for bad in ["", "nopassword", ":pw", "user:", "a b:pw"] {
            assert!(ZkAuth::parse(&Secret::new(bad)).is_err(), "{bad:?}");
        }
        assert!(!format!("{auth:?}").contains("s3"), "redacted: {auth:?}");
    }

    #[test]
    fn the_config_file_key_and_the_flag_are_the_same_setting() {
        let from_file = Settings::from_toml("[zk]\nauth = \"failover:pw\"")
            .and_then(Settings::resolve)
            .unwrap();
        let auth = from_file.zk.auth.clone().unwrap();
        assert_eq!(
            (auth.user.as_str(), auth.password.expose()),
            ("failover", "pw")
        );
        assert!(!format!("{:?}", from_file.zk).contains("pw\""), "redacted");
    }

    #[test]
    fn the_file_is_read_and_trimmed_and_not_both_are_given() {
        let dir = std::env::temp_dir().join(format!("zk-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("auth");
        std::fs::write(&file, "failover:pw\n").unwrap();
        let settings = Settings {
            zk_auth_file: Some(file.display().to_string()),
            ..Settings::default()
        };
        let auth = settings.zk_auth().unwrap().unwrap();
        assert_eq!(
            (auth.user.as_str(), auth.password.expose()),
            ("failover", "pw")
        );
        let both = Settings {
            zk_auth: Some(Secret::new("a:b")),
            ..settings
        };
        assert!(both.zk_auth().unwrap_err().to_string().contains("not both"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
