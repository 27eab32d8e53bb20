//! Who may change the daemons' znodes. ZooKeeper is often shared by many services, and
//! whoever can write `election`, `state` or `views` steers failovers: a permanent
//! `election/n_0` stops them for good, a forged `state` sends every Sentinel client to
//! another Redis, forged views meet or block the quorum.
//!
//! With `zk_auth` (`user:password`) every session logs in with ZooKeeper's `digest`
//! scheme ([`Guard::log_in`]; ZooKeeper forgets a login with its connection and the
//! crate does not replay it, so after a reconnect the session is replaced), and
//! every znode the daemons create gets [`Acl`]s that give that identity everything and
//! everyone else read access only ([`Guard::for_new_znodes`]). Reads stay open so an
//! operator can look at the tree with `zkCli.sh` without the credentials; the tree holds
//! master and daemon addresses, never a secret. Before joining, each session checks the
//! znodes already there ([`Guard::check_tree`]) and refuses a tree that anyone else could
//! write, naming the znode.
//!
//! Without `zk_auth`, znodes are created open (`world:anyone` ALL), as before, and the
//! daemon warns at start ([`check_at_start`], which also refuses a tree others can write
//! before the daemon starts anything).

use super::ZkOptions;
use super::client::{CallError, Client};
use crate::config::ZkAuth;
use crate::error::Error;
use std::time::{Duration, Instant};
use zookeeper::{Acl, Permission, ZkError, ZooKeeper};

/// The scheme of ZooKeeper's user:password logins.
const DIGEST: &str = "digest";

/// The ACL policy of one daemon: its identity, if it logs in.
#[derive(Debug, Clone)]
pub struct Guard {
    auth: Option<ZkAuth>,
    /// `user:base64(sha1(user:password))`, the id ZooKeeper gives the identity.
    id: Option<String>,
}

impl Guard {
    pub fn new(auth: Option<ZkAuth>) -> Guard {
        let id = auth.as_ref().map(digest_id);
        Guard { auth, id }
    }

    pub fn logs_in(&self) -> bool {
        self.auth.is_some()
    }

    /// The ACL of every znode the daemons create.
    pub fn for_new_znodes(&self) -> Vec<Acl> {
        match &self.id {
            Some(id) => vec![
                Acl::new(Permission::ALL, DIGEST, id),
                Acl::new(Permission::READ, "world", "anyone"),
            ],
            None => Acl::open_unsafe().clone(),
        }
    }

    /// Logs the session in (a no-op without `zk_auth`).
    pub fn log_in(&self, zk: &ZooKeeper) -> zookeeper::ZkResult<()> {
        match &self.auth {
            Some(auth) => zk.add_auth(DIGEST, auth.credentials()),
            None => Ok(()),
        }
    }

    /// The first of `paths` that exists and that someone other than this identity may
    /// change, as an error naming it; `Ok(())` without `zk_auth` (nothing to protect).
    pub fn check_tree(
        &self,
        zk: &ZooKeeper,
        paths: &[String],
    ) -> zookeeper::ZkResult<Result<(), String>> {
        let Some(id) = &self.id else {
            return Ok(Ok(()));
        };
        for path in paths {
            let acls = match zk.get_acl(path) {
                Ok((acls, _)) => acls,
                Err(ZkError::NoNode) => continue,
                Err(ZkError::NoAuth) => {
                    return Ok(Err(format!(
                        "{path}: ZooKeeper refuses to show its ACL to this identity; it is not this cluster's"
                    )));
                }
                Err(e) => return Err(e),
            };
            if let Some(open) = writable_by_others(&acls, id) {
                return Ok(Err(format!(
                    "{path} can be changed by {}:{} ({}), not only by the zk_auth identity; \
                     refusing to run on a tree others can write (see docs/zookeeper.md, \
                     \"Migrating an open tree\")",
                    open.scheme, open.id, open.perms
                )));
            }
        }
        Ok(Ok(()))
    }
}

/// Checks the ACLs of the existing tree before anything starts, so a daemon given a tree
/// others can write exits at once, naming the znode. With no ZooKeeper answering yet it
/// starts anyway: every session checks again before joining (session.rs).
pub fn check_at_start(options: &ZkOptions, guard: &Guard) -> crate::error::Result<()> {
    if !guard.logs_in() {
        log::warn!(
            "zk: no zk_auth: the znodes under {} are open, anyone who can reach ZooKeeper at {} can stop or steer failovers (see docs/zookeeper.md)",
            options.base,
            options.servers.join(",")
        );
        return Ok(());
    }
    let servers = options.servers.join(",");
    let postpone = |why: String| {
        log::warn!(
            "zk: cannot check the ACLs under {} at start ({why}); each session checks them before joining",
            options.base
        );
        Ok(())
    };
    if !super::session::any_server_listens(&options.servers) {
        return postpone(format!("no server accepts connections at {servers}"));
    }
    let client = match Client::connect(&servers, options.session_timeout, |_| {}) {
        Ok(client) => client,
        Err(e) => return postpone(e),
    };
    let deadline = Instant::now() + options.call_timeout().max(Duration::from_secs(5));
    let checked = loop {
        let (login, paths) = (guard.clone(), options.guarded_paths());
        let limit = deadline.saturating_duration_since(Instant::now());
        let result = client.call(limit, move |zk| {
            login.log_in(zk)?;
            login.check_tree(zk, &paths)
        });
        // The crate drops requests queued while its first connection is set up.
        match result {
            Err(CallError::Zk(ZkError::ConnectionLoss)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            other => break other,
        }
    };
    client.close(Duration::from_secs(1));
    match checked {
        Ok(Ok(())) => {
            log::info!(
                "zk: logged in as {:?}; only it may change the znodes under {}",
                options
                    .auth
                    .as_ref()
                    .map(|a| a.user.as_str())
                    .unwrap_or_default(),
                options.base
            );
            Ok(())
        }
        Ok(Err(why)) => Err(Error::InvalidInput(format!("zk: {why}"))),
        Err(e) => postpone(e.to_string()),
    }
}

/// The first entry that grants more than reading to anyone but `own_id`.
fn writable_by_others<'a>(acls: &'a [Acl], own_id: &str) -> Option<&'a Acl> {
    acls.iter().find(|acl| {
        let mine = acl.scheme == DIGEST && acl.id == own_id;
        let read_only = acl.perms & Permission::READ == acl.perms;
        !mine && !read_only
    })
}

/// ZooKeeper's digest id: `user:base64(sha1("user:password"))`.
fn digest_id(auth: &ZkAuth) -> String {
    let hash = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &auth.credentials());
    format!("{}:{}", auth.user, base64(hash.as_ref()))
}

/// Standard base64 with padding (what ZooKeeper's `DigestAuthenticationProvider` uses).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn auth(text: &str) -> ZkAuth {
        ZkAuth::parse(&Secret::new(text)).unwrap()
    }

    #[test]
    fn digest_ids_are_zookeepers() {
        // As `DigestAuthenticationProvider.generateDigest` and `openssl dgst -sha1 -binary | base64` give it.
        assert_eq!(
            digest_id(&auth("super:superpw")),
            "super:g9oN2HttPfn8MMWJZ2r45Np/LIA="
        );
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
    }

    #[test]
    fn only_the_identity_may_write() {
        let guard = Guard::new(Some(auth("failover:pw")));
        let id = guard.id.clone().unwrap();
        let ours = guard.for_new_znodes();
        assert_eq!(writable_by_others(&ours, &id), None);
        let open = Acl::open_unsafe().clone();
        assert_eq!(writable_by_others(&open, &id), open.first());
        let other = vec![Acl::new(Permission::WRITE, DIGEST, "eve:xyz")];
        assert_eq!(writable_by_others(&other, &id), other.first());
        let ip = vec![Acl::new(Permission::CREATE, "ip", "10.0.0.1")];
        assert_eq!(writable_by_others(&ip, &id), ip.first());
        assert_eq!(
            Guard::new(None).for_new_znodes(),
            Acl::open_unsafe().clone()
        );
    }
}
