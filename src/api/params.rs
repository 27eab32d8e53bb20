//! Reading the parameters of an HTTP request: urlencoded forms (query string or body)
//! and the group names of `DELETE /master`.
//!
//! These functions see bytes straight off the network, so they are pure, never panic,
//! and answer every bad input with a sentence for the 400 reply. They are separate from
//! `http.rs` so the property tests (`tests/properties.rs`) can drive them directly.

use crate::address::{MasterSpec, validate_group_name};
use crate::error::Result;

/// The first value of `key` in an `application/x-www-form-urlencoded` form (a query
/// string or a body). Input that is not UTF-8, or that percent-decodes to something that
/// is not, is refused with a reason.
pub fn form_value(form: &[u8], key: &str) -> std::result::Result<Option<String>, String> {
    if std::str::from_utf8(form).is_err() {
        return Err("parameters are not UTF-8".into());
    }
    for (k, v) in form_urlencoded::parse(form) {
        if k == key {
            if v.contains('\u{FFFD}') {
                return Err(format!("parameter {key} is not UTF-8"));
            }
            return Ok(Some(v.into_owned()));
        }
    }
    Ok(None)
}

/// Group names or master addresses for `DELETE /master`: each item must be one or the
/// other (`name=host:port` names its group).
pub fn group_keys(list: &str) -> Result<Vec<String>> {
    let mut keys = Vec::new();
    for item in list.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(crate::invalid_input!("empty master in list {list:?}"));
        }
        let key = match MasterSpec::parse(item) {
            Ok(spec) if item.contains('=') => spec.name,
            _ => {
                validate_group_name(item)?;
                item.to_string()
            }
        };
        keys.push(key);
    }
    Ok(keys)
}

/// A percent-encoded URL path segment (a group name in `/api/v1/groups/<name>/...`),
/// decoded. `+` stays `+`, as in paths; bad escapes and non-UTF-8 are refused.
pub fn path_segment(text: &str) -> std::result::Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent escape in {text:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{text:?} is not UTF-8 once decoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_forms_and_refuses_what_is_not_utf8() {
        assert_eq!(
            form_value(b"a=1&masters=x%3Dh%3A1", "masters"),
            Ok(Some("x=h:1".into()))
        );
        assert_eq!(form_value(b"a=1", "masters"), Ok(None));
        assert!(form_value(b"masters=%FF", "masters").is_err());
        assert!(form_value(b"masters=\xff", "masters").is_err());
    }

    #[test]
    fn group_keys_take_names_and_addresses() {
        assert_eq!(
            group_keys("cache, 127.0.0.1:1, web=h:2").unwrap(),
            vec!["cache", "127.0.0.1:1", "web"]
        );
        assert!(group_keys("a,,b").is_err());
        assert!(group_keys("bad name").is_err());
    }

    #[test]
    fn path_segments_decode_percent_escapes_only() {
        assert_eq!(
            path_segment("127.0.0.1%3A6379"),
            Ok("127.0.0.1:6379".into())
        );
        assert_eq!(path_segment("a+b"), Ok("a+b".into()));
        for bad in ["%", "%4", "%+1", "%zz", "%FF"] {
            assert!(path_segment(bad).is_err(), "{bad}");
        }
    }
}
