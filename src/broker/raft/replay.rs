//! Reading the write-ahead log back at start, and telling a torn write from damage.
//!
//! A crash in the middle of an append leaves the last record short of the bytes its
//! length field declares (or, on some file systems, a zero-filled tail): nothing in it
//! was acknowledged, so it is dropped with a warning and the file truncated. Everything
//! else that does not decode is damage, and refused with the file named, because a
//! record that was whole on disk may hold a vote or an entry this node acknowledged:
//!
//! - a record whose bytes are all there but whose checksum fails, even the last one;
//! - a record cut short with more records after it (a damaged length field);
//! - a snapshot with no WAL record beside it (see [`lost_wal`]).

use super::frame::{self, Decoded};
use super::state_machine::from_bytes;
use super::storage::{KIND_ENTRY, KIND_HARD_STATE};
use crate::error::{Error, Result};
use raft::eraftpb::{Entry, HardState};
use std::fs::OpenOptions;
use std::path::Path;

/// What a replay of the WAL found.
pub struct Replayed {
    /// The entries after the snapshot.
    pub entries: Vec<Entry>,
    /// The last hard state recorded.
    pub hard_state: Option<HardState>,
    /// Whole records read (0 when the file is missing or empty).
    pub records: usize,
}

/// Replays the WAL: the entries after `snapshot_index` and the last hard state.
pub fn replay_wal(path: &Path, snapshot_index: u64) -> Result<Replayed> {
    let mut replayed = Replayed {
        entries: Vec::new(),
        hard_state: None,
        records: 0,
    };
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(replayed),
        Err(e) => return Err(Error::Io(format!("cannot read {}: {e}", path.display()))),
    };
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        match frame::decode(rest) {
            Decoded::Record {
                kind,
                payload,
                size,
            } => {
                let what = format!("{} at byte {at}", path.display());
                match kind {
                    KIND_ENTRY => {
                        let entry: Entry = from_bytes(payload, &what)?;
                        push_entry(&mut replayed.entries, entry, snapshot_index, &what)?;
                    }
                    KIND_HARD_STATE => replayed.hard_state = Some(from_bytes(payload, &what)?),
                    other => {
                        return Err(Error::Io(format!("{what}: unknown record kind {other}")));
                    }
                }
                replayed.records += 1;
                at += size;
            }
            // Fewer bytes than the record declares: a write cut short, if nothing follows.
            Decoded::Incomplete if !more_records_after(rest) => {
                drop_torn_tail(path, at, "cut short")?;
                break;
            }
            // What a crash can leave past the last write on some file systems.
            Decoded::Corrupt(_) if rest.iter().all(|b| *b == 0) => {
                drop_torn_tail(path, at, "zero-filled")?;
                break;
            }
            Decoded::Incomplete => {
                return Err(corrupt(path, at, &bytes, "cut short with records after it"));
            }
            Decoded::Corrupt(why) => {
                let whole = if more_records_after(rest) {
                    "with records after it"
                } else {
                    "the last record: its bytes are all there, so this is damage, not a torn write"
                };
                return Err(corrupt(path, at, &bytes, &format!("{why}; {whole}")));
            }
        }
    }
    Ok(replayed)
}

fn drop_torn_tail(path: &Path, at: usize, how: &str) -> Result<()> {
    log::warn!(
        "raft: dropping the torn last record of {} at byte {at} ({how}); it was never acknowledged",
        path.display()
    );
    truncate(path, at as u64)
}

fn corrupt(path: &Path, at: usize, bytes: &[u8], why: &str) -> Error {
    Error::Io(format!(
        "{} is corrupt at byte {at} of {} ({why}); refusing to start rather than lose state. Restore the file from a backup, or remove this node from the cluster and add it back with an empty data directory (docs/raft.md, Membership)",
        path.display(),
        bytes.len()
    ))
}

/// The error for a snapshot whose WAL is gone.
pub fn lost_wal(wal: &Path, snapshot: &Path) -> Error {
    Error::Io(format!(
        "{} is missing or empty, but {} exists: the log and the votes that go with the snapshot are lost, and this node would vote with a forgotten log. Recover it as a lost member: remove it from the cluster (DELETE /api/v1/cluster/peers?addr=<its raft_addr> on another member), empty its data directory, start it with a raft_cluster that does not list it, and add it back (POST /api/v1/cluster/peers?addr=<its raft_addr>); it catches up from a snapshot. If raft_log_dir was changed, point it back to the directory that holds raft.wal",
        wal.display(),
        snapshot.display()
    ))
}

/// Adds a replayed entry, truncating any conflicting suffix as Raft did when it wrote it.
fn push_entry(
    entries: &mut Vec<Entry>,
    entry: Entry,
    snapshot_index: u64,
    what: &str,
) -> Result<()> {
    if entry.index <= snapshot_index {
        return Ok(());
    }
    let last = entries.last().map_or(snapshot_index, |e| e.index);
    if entry.index > last + 1 {
        return Err(Error::Io(format!(
            "{what}: entry {} follows entry {last}: the log has a gap",
            entry.index
        )));
    }
    entries.truncate((entry.index - snapshot_index - 1) as usize);
    entries.push(entry);
    Ok(())
}

/// Whether a damaged record is followed by what looks like more data: a length field
/// that ends before the file does, followed by a decodable record.
fn more_records_after(rest: &[u8]) -> bool {
    (1..rest.len()).any(|skip| matches!(frame::decode(&rest[skip..]), Decoded::Record { .. }))
}

fn truncate(path: &Path, len: u64) -> Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(len).and(f.sync_all()).map(|_| f));
    file.map(|_| ())
        .map_err(|e| Error::Io(format!("cannot truncate {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::raft::state_machine::{StateMachine, to_bytes};
    use crate::broker::raft::storage::DiskStorage;
    use crate::broker::raft::storage::tests::entry;
    use crate::testing::temp_dir;
    use raft::Storage;

    fn record(index: u64) -> Vec<u8> {
        let entry = Entry {
            index,
            term: 1,
            data: format!("entry {index}").into_bytes().into(),
            ..Entry::default()
        };
        frame::encode(KIND_ENTRY, &to_bytes(&entry).unwrap())
    }

    /// A WAL of three entries in a fresh directory; returns its path and bytes.
    fn wal(tag: &str) -> (std::path::PathBuf, Vec<u8>) {
        let dir = std::env::temp_dir().join(format!(
            "rf-replay-{tag}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let bytes = [record(1), record(2), record(3)].concat();
        let path = dir.join("raft.wal");
        std::fs::write(&path, &bytes).unwrap();
        (path, bytes)
    }

    fn cleanup(path: &Path) {
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_record_cut_short_at_the_end_is_dropped_and_the_file_truncated() {
        let (path, bytes) = wal("torn");
        let whole = bytes.len() - record(3).len();
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        let replayed = replay_wal(&path, 0).unwrap();
        assert_eq!(replayed.entries.len(), 2);
        assert_eq!(replayed.records, 2);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), whole as u64);
        // A zero-filled tail (what some file systems leave after a crash) too.
        let mut zeros = bytes.clone();
        zeros.extend([0u8; 100]);
        std::fs::write(&path, &zeros).unwrap();
        assert_eq!(replay_wal(&path, 0).unwrap().records, 3);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), bytes.len() as u64);
        cleanup(&path);
    }

    #[test]
    fn a_whole_last_record_with_a_bad_checksum_is_damage() {
        let (path, mut bytes) = wal("flip");
        let last = bytes.len() - record(3).len();
        // A bit flip inside the last record's payload: every declared byte is there.
        bytes[last + frame::HEADER + 4] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        let err = replay_wal(&path, 0)
            .err()
            .expect("damage refused")
            .to_string();
        assert!(
            err.contains("raft.wal") && err.contains("corrupt") && err.contains("last record"),
            "{err}"
        );
        assert_eq!(
            std::fs::read(&path).unwrap(),
            bytes,
            "a refused file is left as it was"
        );
        cleanup(&path);
    }

    #[test]
    fn damage_with_records_after_it_is_refused() {
        let (path, mut bytes) = wal("middle");
        // The first record's length claims more than the file holds.
        bytes[0] = 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let err = replay_wal(&path, 0).err().expect("refused").to_string();
        assert!(err.contains("records after it"), "{err}");
        cleanup(&path);
    }

    #[test]
    fn a_missing_file_is_an_empty_log() {
        let replayed = replay_wal(Path::new("/nonexistent/raft.wal"), 0).unwrap();
        assert_eq!((replayed.records, replayed.entries.len()), (0, 0));
        let _: Option<HardState> = replayed.hard_state;
    }

    /// A bootstrapped directory with a few entries, closed; returns its path.
    fn bootstrapped(tag: &str) -> std::path::PathBuf {
        let dir = temp_dir(tag);
        let mut s = DiskStorage::open(&dir, None).unwrap();
        let mut machine = StateMachine {
            applied_index: 1,
            applied_term: 1,
            ..StateMachine::default()
        };
        machine.conf_state.voters = vec![1];
        s.bootstrap(machine).unwrap();
        s.append(&[entry(2, 1, "a")]).unwrap();
        s.sync().unwrap();
        dir
    }

    #[test]
    fn a_snapshot_without_its_wal_is_refused_with_the_way_back() {
        for (tag, damage) in [("missing", None), ("empty", Some(&b""[..]))] {
            let dir = bootstrapped(tag);
            let wal = dir.join("raft.wal");
            match damage {
                None => std::fs::remove_file(&wal).unwrap(),
                Some(bytes) => std::fs::write(&wal, bytes).unwrap(),
            }
            let err = DiskStorage::open(&dir, None)
                .err()
                .expect("refused")
                .to_string();
            assert!(err.contains(&wal.display().to_string()), "{tag}: {err}");
            assert!(err.contains("cluster/peers"), "{tag}: {err}");
            assert!(
                !wal.exists() || damage.is_some(),
                "{tag}: no WAL was created"
            );
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn a_crash_between_the_first_snapshot_and_the_wal_rewrite_still_starts() {
        // What the disk holds if a bootstrap stops right after renaming the snapshot:
        // the WAL has only the hard-state record written before it.
        let dir = bootstrapped("crash");
        std::fs::write(
            dir.join("raft.wal"),
            frame::encode(KIND_HARD_STATE, &to_bytes(&HardState::default()).unwrap()),
        )
        .unwrap();
        let s = DiskStorage::open(&dir, None).unwrap();
        let state = s.initial_state().unwrap();
        assert_eq!((state.hard_state.commit, state.hard_state.term), (1, 1));
        assert_eq!(state.conf_state.voters, vec![1]);
        assert_eq!(s.first_index().unwrap(), 2);
        drop(s);
        std::fs::remove_dir_all(&dir).unwrap();
        // And a bootstrap writes a WAL record before it tries to write the snapshot: here
        // the snapshot's temporary file cannot be created, and the WAL has its record.
        let dir = temp_dir("order");
        std::fs::create_dir(dir.join("raft.tmp")).unwrap();
        let mut s = DiskStorage::open(&dir, None).unwrap();
        let founding = StateMachine {
            applied_index: 1,
            applied_term: 1,
            ..StateMachine::default()
        };
        assert!(s.bootstrap(founding).is_err());
        assert!(!dir.join("raft.snapshot").exists());
        assert!(std::fs::metadata(dir.join("raft.wal")).unwrap().len() > 0);
        drop(s);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
