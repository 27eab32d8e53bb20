//! `GET /api/v1/history`: the replicated failover history (every attempt, with its
//! outcome, reason, candidates passed over and whatever else the record holds), newest
//! first, so an operator (or the status page) can audit recoveries without reading the
//! logs of whichever daemon was leader at the time.
//!
//! `?group=NAME` keeps one group's records (a group no longer watched keeps its past
//! records; an unknown name gives an empty list), `?limit=N` the newest N (default 100,
//! at most what the state keeps, [`FAILOVER_HISTORY`]). Records are serialized as the
//! state holds them, so fields added to [`FailoverRecord`] show up here unchanged.

use crate::broker::{FAILOVER_HISTORY, FailoverRecord};
use crate::daemon::Daemon;

use super::params::form_value;

/// Records returned when no `limit` is given.
pub const DEFAULT_LIMIT: usize = 100;

/// Answers `/api/v1/history`: (status, content type, body); `None` for other paths.
pub fn route(
    daemon: &Daemon,
    method: &str,
    path: &str,
    query: &str,
) -> Option<(u16, &'static str, String)> {
    if path != "/api/v1/history" {
        return None;
    }
    let plain = |status: u16, body: String| Some((status, "text/plain; charset=utf-8", body));
    if !matches!(method, "GET" | "HEAD") {
        return plain(405, "only GET is allowed on /api/v1/history\n".into());
    }
    let filter = match Filter::parse(query) {
        Ok(filter) => filter,
        Err(reason) => return plain(400, format!("{reason}\n")),
    };
    let state = daemon.broker.state();
    let records = filter.select(state.history.iter());
    match serde_json::to_string_pretty(&records) {
        Ok(body) => Some((200, "application/json", body + "\n")),
        Err(e) => plain(500, format!("cannot encode the history: {e}\n")),
    }
}

/// What `?group=` and `?limit=` ask for.
#[derive(Debug, PartialEq)]
struct Filter {
    group: Option<String>,
    limit: usize,
}

impl Filter {
    fn parse(query: &str) -> Result<Filter, String> {
        let group = form_value(query.as_bytes(), "group")?.filter(|g| !g.is_empty());
        let limit = match form_value(query.as_bytes(), "limit")? {
            None => DEFAULT_LIMIT,
            Some(text) => match text.trim().parse::<usize>() {
                Ok(0) | Err(_) => {
                    return Err(format!(
                        "limit: {text:?} is not a number of records from 1 to {FAILOVER_HISTORY}"
                    ));
                }
                Ok(n) => n.min(FAILOVER_HISTORY),
            },
        };
        Ok(Filter { group, limit })
    }

    /// The matching records, newest first (the state keeps them oldest first).
    fn select<'a>(
        &self,
        history: impl DoubleEndedIterator<Item = &'a FailoverRecord>,
    ) -> Vec<&'a FailoverRecord> {
        history
            .rev()
            .filter(|r| self.group.as_ref().is_none_or(|g| &r.group == g))
            .take(self.limit)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_numbers_from_one_and_capped_at_what_is_kept() {
        assert_eq!(
            Filter::parse(""),
            Ok(Filter {
                group: None,
                limit: DEFAULT_LIMIT
            })
        );
        assert_eq!(Filter::parse("limit=1&group=a").map(|f| f.limit), Ok(1));
        assert_eq!(
            Filter::parse("limit=100000").map(|f| f.limit),
            Ok(FAILOVER_HISTORY)
        );
        for bad in ["limit=0", "limit=-1", "limit=x", "limit=", "limit=%FF"] {
            assert!(Filter::parse(bad).is_err(), "{bad}");
        }
    }
}
