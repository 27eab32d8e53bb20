//! Server addresses and monitored-group specifications as users type them.
//!
//! A master is given as `host:port` or `name=host:port` (on the command line, in the
//! config file and in `?masters=` over HTTP). Parsing is strict and the errors say what
//! was wrong, because a typo here would otherwise surface as a master that is "down".

use crate::error::Result;
use crate::invalid_input;
use std::fmt;

/// A `host:port` address of a Redis-compatible server.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Addr {
    pub host: String,
    pub port: u16,
}

impl Addr {
    /// Parses `host:port`; an IPv6 host is written `[::1]:6379`.
    pub fn parse(text: &str) -> Result<Addr> {
        let text = text.trim();
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| invalid_input!("address {text:?} has no port (expected host:port)"))?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return Err(invalid_input!("address {text:?} has an empty host"));
        }
        if host.contains(':') && !text.starts_with('[') {
            return Err(invalid_input!(
                "address {text:?} is ambiguous: write an IPv6 host in brackets, [::1]:6379"
            ));
        }
        if !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
        {
            return Err(invalid_input!(
                "address {text:?} has an invalid host {host:?}"
            ));
        }
        // A host passed on to a notification script or a shell could be read as an
        // option.
        if host.starts_with('-') {
            return Err(invalid_input!(
                "address {text:?}: a host may not begin with '-'"
            ));
        }
        let port: u16 = port
            .parse()
            .map_err(|_| invalid_input!("address {text:?} has an invalid port {port:?}"))?;
        if port == 0 {
            return Err(invalid_input!("address {text:?} has port 0"));
        }
        Ok(Addr {
            host: host.to_string(),
            port,
        })
    }

    /// Builds an address from the host and port a server reports (ROLE, INFO).
    pub fn from_reported(host: &str, port: &str) -> Result<Addr> {
        Addr::parse(&format!("{}:{port}", bracket_if_ipv6(host)))
    }
}

fn bracket_if_ipv6(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

impl From<std::net::SocketAddr> for Addr {
    fn from(socket: std::net::SocketAddr) -> Addr {
        Addr {
            host: socket.ip().to_string(),
            port: socket.port(),
        }
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", bracket_if_ipv6(&self.host), self.port)
    }
}

impl serde::Serialize for Addr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Addr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Addr, D::Error> {
        let text = String::deserialize(d)?;
        Addr::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A monitored group as a user specifies it: a stable name and its master's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterSpec {
    pub name: String,
    pub addr: Addr,
}

impl MasterSpec {
    /// Parses `host:port` (named after the address) or `name=host:port`.
    pub fn parse(text: &str) -> Result<MasterSpec> {
        let text = text.trim();
        match text.split_once('=') {
            Some((name, addr)) => {
                let name = name.trim();
                validate_group_name(name)?;
                Ok(MasterSpec {
                    name: name.to_string(),
                    addr: Addr::parse(addr)?,
                })
            }
            None => {
                let addr = Addr::parse(text)?;
                Ok(MasterSpec {
                    name: addr.to_string(),
                    addr,
                })
            }
        }
    }

    /// Parses a comma-separated list (`a:1,b=c:2`), refusing empty items and duplicates.
    pub fn parse_list(text: &str) -> Result<Vec<MasterSpec>> {
        let mut specs: Vec<MasterSpec> = Vec::new();
        for item in text.split(',') {
            if item.trim().is_empty() {
                return Err(invalid_input!("empty master in list {text:?}"));
            }
            let spec = MasterSpec::parse(item)?;
            if specs.iter().any(|s| s.name == spec.name) {
                return Err(invalid_input!("group {:?} is given twice", spec.name));
            }
            specs.push(spec);
        }
        Ok(specs)
    }
}

impl fmt::Display for MasterSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.name == self.addr.to_string() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}={}", self.name, self.addr)
        }
    }
}

/// Group names travel in URLs, the Sentinel protocol and the notification script's
/// arguments: keep them printable, and never an option (`-x`) to a program.
pub fn validate_group_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(invalid_input!("group name is empty"));
    }
    if name.starts_with('-') {
        return Err(invalid_input!("group name {name:?} may not begin with '-'"));
    }
    if name.len() > 128 {
        return Err(invalid_input!(
            "group name {name:?} is longer than 128 bytes"
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '[' | ']'))
    {
        return Err(invalid_input!(
            "group name {name:?} may only hold letters, digits and . - _ : [ ]"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_port_and_ipv6() {
        assert_eq!(
            Addr::parse("127.0.0.1:6379").unwrap(),
            Addr {
                host: "127.0.0.1".into(),
                port: 6379
            }
        );
        let v6 = Addr::parse("[::1]:6380").unwrap();
        assert_eq!(v6.host, "::1");
        assert_eq!(v6.to_string(), "[::1]:6380");
        assert_eq!(Addr::from_reported("::1", "7000").unwrap().port, 7000);
    }

    #[test]
    fn refuses_malformed_addresses_with_a_reason() {
        for (bad, says) in [
            ("127.0.0.1", "no port"),
            (":6379", "empty host"),
            ("h:0", "port 0"),
            ("h:99999", "invalid port"),
            ("h:abc", "invalid port"),
            ("::1:6379", "ambiguous"),
            ("a b:1", "invalid host"),
            ("-oProxyCommand:1", "may not begin with '-'"),
        ] {
            let err = Addr::parse(bad).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn parses_named_and_bare_masters() {
        let list = MasterSpec::parse_list("cache=127.0.0.1:6379, 127.0.0.1:6380").unwrap();
        assert_eq!(list[0].name, "cache");
        assert_eq!(list[1].name, "127.0.0.1:6380");
        assert_eq!(list[0].to_string(), "cache=127.0.0.1:6379");
        assert!(MasterSpec::parse_list("a:1,,b:2").is_err());
        assert!(
            MasterSpec::parse_list("x=a:1,x=b:2")
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
        assert!(MasterSpec::parse("=a:1").is_err());
        assert!(MasterSpec::parse("bad name=a:1").is_err());
        let dash = MasterSpec::parse("-x=a:1").unwrap_err().to_string();
        assert!(dash.contains("may not begin with '-'"), "{dash}");
    }
}
