//! What the Raft log builds: the replicated state plus the cluster's address book, with
//! the log position they reflect.
//!
//! The raft thread applies committed entries to it; the broker reads the state from it;
//! the storage turns it into a snapshot when a lagging peer needs one or the log is
//! compacted. All three share one `Arc<Mutex<StateMachine>>`, so a snapshot always
//! pairs the state with the exact index and membership it was built from.

use crate::broker::ReplicatedState;
use crate::error::{Error, Result};
use raft::eraftpb::{ConfState, Snapshot};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The part of the state machine carried in a snapshot's data (as JSON).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotData {
    pub state: ReplicatedState,
    /// Raft address of each member, by peer id.
    pub members: BTreeMap<u64, String>,
}

/// The applied state and where in the log it stands.
#[derive(Debug, Clone, Default)]
pub struct StateMachine {
    pub data: SnapshotData,
    /// Index and term of the last applied entry.
    pub applied_index: u64,
    pub applied_term: u64,
    /// Membership as of the last applied entry.
    pub conf_state: ConfState,
}

impl StateMachine {
    /// A snapshot of exactly this state.
    pub fn to_snapshot(&self) -> Result<Snapshot> {
        let data = serde_json::to_vec(&self.data)
            .map_err(|e| Error::Io(format!("cannot encode a raft snapshot: {e}")))?;
        let mut snapshot = Snapshot {
            data: data.into(),
            ..Snapshot::default()
        };
        let meta = snapshot.mut_metadata();
        meta.index = self.applied_index;
        meta.term = self.applied_term;
        meta.set_conf_state(self.conf_state.clone());
        Ok(snapshot)
    }

    /// The state a snapshot describes.
    pub fn from_snapshot(snapshot: &Snapshot) -> Result<StateMachine> {
        let data: SnapshotData = serde_json::from_slice(&snapshot.data).map_err(|e| {
            Error::Io(format!(
                "raft snapshot at index {} holds unreadable data: {e}",
                snapshot.get_metadata().index
            ))
        })?;
        let meta = snapshot.get_metadata();
        Ok(StateMachine {
            data,
            applied_index: meta.index,
            applied_term: meta.term,
            conf_state: meta.get_conf_state().clone(),
        })
    }
}

/// Encodes a protobuf message (raft's own types) to bytes.
pub fn to_bytes(message: &impl protobuf::Message) -> Result<Vec<u8>> {
    message
        .write_to_bytes()
        .map_err(|e| Error::Io(format!("cannot encode a raft message: {e}")))
}

/// Decodes a protobuf message, naming `what` in the error.
pub fn from_bytes<M: protobuf::Message>(bytes: &[u8], what: &str) -> Result<M> {
    M::parse_from_bytes(bytes).map_err(|e| Error::Io(format!("unreadable {what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::MasterSpec;
    use crate::broker::{Action, GroupSpec};

    #[test]
    fn snapshot_round_trip() {
        let mut machine = StateMachine::default();
        let spec: GroupSpec = MasterSpec::parse("cache=127.0.0.1:6379").unwrap().into();
        machine.data.state.apply(Action::Add(vec![spec])).unwrap();
        machine.data.members.insert(7, "127.0.0.1:12000".into());
        machine.applied_index = 42;
        machine.applied_term = 3;
        machine.conf_state.voters = vec![7];
        let snapshot = machine.to_snapshot().unwrap();
        let bytes = to_bytes(&snapshot).unwrap();
        let back = StateMachine::from_snapshot(&from_bytes(&bytes, "snapshot").unwrap()).unwrap();
        assert_eq!(back.data, machine.data);
        assert_eq!((back.applied_index, back.applied_term), (42, 3));
        assert_eq!(back.conf_state.voters, vec![7]);
    }
}
