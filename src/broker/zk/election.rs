//! Who leads: the order of the election znodes.
//!
//! Each daemon creates one ephemeral sequential znode `n_<10 digits>` under
//! `<zk_path>/election`; ZooKeeper hands out the sequence numbers in creation order, and
//! removes a znode when its daemon's session ends. The lowest number leads. Every other
//! daemon watches only the znode just before its own, so a leader's death wakes one
//! daemon, not all of them (no herd effect). These are the pure rules, kept apart from
//! the session code so they can be tested without a server.

/// The name ZooKeeper completes with a sequence number.
pub const PREFIX: &str = "n_";

/// The sequence number of an election znode name, or `None` for a znode that is not
/// one of ours (anything else under the election path is ignored).
pub fn sequence(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(PREFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The election znodes among `children`, lowest sequence (the leader) first.
pub fn ordered(children: &[String]) -> Vec<String> {
    let mut nodes: Vec<(u64, &String)> = children
        .iter()
        .filter_map(|name| sequence(name).map(|seq| (seq, name)))
        .collect();
    nodes.sort();
    nodes.into_iter().map(|(_, name)| name.clone()).collect()
}

/// Where this daemon's znode stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// Lowest: this daemon leads.
    Leader,
    /// Behind `predecessor`, the znode to watch.
    Behind { predecessor: String },
    /// The znode is gone: the session that owned it has ended.
    Absent,
}

/// This daemon's position, given the election znodes in order (see [`ordered`]).
pub fn position(ordered: &[String], mine: &str) -> Position {
    match ordered.iter().position(|name| name == mine) {
        None => Position::Absent,
        Some(0) => Position::Leader,
        Some(i) => Position::Behind {
            predecessor: ordered[i - 1].clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn lowest_sequence_leads_and_each_watches_its_predecessor() {
        let children = names(&[
            "n_0000000012",
            "junk",
            "n_0000000003",
            "n_0000000100",
            "n_x",
        ]);
        let order = ordered(&children);
        assert_eq!(
            order,
            names(&["n_0000000003", "n_0000000012", "n_0000000100"])
        );
        assert_eq!(position(&order, "n_0000000003"), Position::Leader);
        assert_eq!(
            position(&order, "n_0000000100"),
            Position::Behind {
                predecessor: "n_0000000012".into()
            }
        );
        assert_eq!(position(&order, "n_0000000004"), Position::Absent);
    }

    #[test]
    fn sequence_numbers_compare_as_numbers() {
        // ZooKeeper's counter is a signed 32-bit number printed with 10 digits; compare
        // numbers, not text, so a longer name never sorts wrongly.
        let order = ordered(&names(&["n_10000000000", "n_0000000009"]));
        assert_eq!(order[0], "n_0000000009");
        assert_eq!(sequence("n_"), None);
        assert_eq!(sequence("x_0000000001"), None);
    }
}
