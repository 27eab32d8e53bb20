//! Durable Raft storage: a write-ahead log and a snapshot file in `raft_data_dir`.
//!
//! raft-rs reads the log through the [`Storage`] trait and leaves writing to us. This
//! module keeps the log in memory for reads and makes every change durable first:
//!
//! - `raft.wal` (in `raft_log_dir`, or the data directory) is an append-only file of
//!   [`frame`] records: log entries and hard states. An entry whose index is already in
//!   the log replaces that entry and everything after it, exactly as Raft truncates a
//!   conflicting suffix, so replaying the file in order rebuilds the log. [`sync`]
//!   (fdatasync) runs before any message that depends on the write leaves the node.
//! - `raft.snapshot` holds the state machine at some index, with the membership. It is
//!   replaced atomically (write a temporary file, fsync, rename, fsync the directory).
//!   After a snapshot the log before it is dropped and the WAL is rewritten the same way.
//!
//! On start the snapshot is read, then the WAL replayed. State is never silently lost:
//!
//! - A record cut short at the very end of the WAL (fewer bytes than its length field
//!   declares, or a zero-filled tail: a crash mid-write) is dropped with a warning,
//!   because nothing in it was ever acknowledged.
//! - A record whose bytes are all there but whose checksum fails is damage, not a torn
//!   write, wherever it is (the last record included): the daemon refuses to start and
//!   names the file. So is a record cut short with more records after it.
//! - A snapshot without a WAL beside it (missing, empty, or without a single whole
//!   record) means the log and the votes that go with the snapshot are gone: refused,
//!   with how to recover. Writes are ordered so that no crash leaves that state: before
//!   the first snapshot of a directory, the WAL gets a hard-state record (synced); after
//!   a snapshot the WAL is replaced atomically, never emptied.
//!
//! [`sync`]: DiskStorage::sync

use super::frame::{self, Decoded};
use super::replay::{lost_wal, replay_wal};
use super::state_machine::{StateMachine, from_bytes, to_bytes};
use crate::error::{Error, Result};
use crate::sync::lock;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const WAL_FILE: &str = "raft.wal";
const SNAPSHOT_FILE: &str = "raft.snapshot";
const LOCK_FILE: &str = "LOCK";

pub(super) const KIND_ENTRY: u8 = 1;
pub(super) const KIND_HARD_STATE: u8 = 2;
const KIND_SNAPSHOT: u8 = 3;

/// The log, hard state and snapshot of one node, kept on disk.
pub struct DiskStorage {
    wal_path: PathBuf,
    snapshot_path: PathBuf,
    wal: File,
    /// Held for the life of the storage: one daemon per data directory.
    _lock: File,
    /// Index and term of the last snapshot: the log starts right after it.
    snapshot_meta: SnapshotMetadata,
    entries: Vec<Entry>,
    hard_state: HardState,
    /// Membership at start (from the snapshot); raft-rs tracks it afterwards.
    conf_state: ConfState,
    machine: Arc<Mutex<StateMachine>>,
    unsynced: bool,
    /// Whether the WAL holds at least one record (a snapshot may be written beside it).
    wal_has_records: bool,
}

impl DiskStorage {
    /// Opens (or creates) the storage in `data_dir`, with the WAL in `log_dir`.
    ///
    /// Returns the storage and the state machine as of the snapshot; the entries after
    /// it are applied again by the raft thread once raft-rs hands them back as committed.
    pub fn open(data_dir: &Path, log_dir: Option<&Path>) -> Result<DiskStorage> {
        let log_dir = log_dir.unwrap_or(data_dir);
        for dir in [data_dir, log_dir] {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::Io(format!(
                    "raft_data_dir: cannot create {}: {e}",
                    dir.display()
                ))
            })?;
        }
        let lock = lock_dir(data_dir)?;
        let snapshot_path = data_dir.join(SNAPSHOT_FILE);
        let wal_path = log_dir.join(WAL_FILE);
        let snapshot = read_snapshot(&snapshot_path)?;
        let machine = match &snapshot {
            Some(snapshot) => StateMachine::from_snapshot(snapshot)
                .map_err(|e| Error::Io(format!("{}: {e}", snapshot_path.display())))?,
            None => StateMachine::default(),
        };
        let mut snapshot_meta = SnapshotMetadata {
            index: machine.applied_index,
            term: machine.applied_term,
            ..SnapshotMetadata::default()
        };
        snapshot_meta.set_conf_state(machine.conf_state.clone());
        let replayed = replay_wal(&wal_path, snapshot_meta.index)?;
        if snapshot.is_some() && replayed.records == 0 {
            return Err(lost_wal(&wal_path, &snapshot_path));
        }
        let entries = replayed.entries;
        let mut hard_state = replayed.hard_state.unwrap_or_default();
        hard_state.commit = hard_state.commit.max(snapshot_meta.index);
        hard_state.term = hard_state.term.max(snapshot_meta.term);
        let wal = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&wal_path)
            .map_err(|e| Error::Io(format!("cannot open {}: {e}", wal_path.display())))?;
        Ok(DiskStorage {
            wal_path,
            snapshot_path,
            wal,
            _lock: lock,
            conf_state: snapshot_meta.get_conf_state().clone(),
            snapshot_meta,
            entries,
            hard_state,
            machine: Arc::new(Mutex::new(machine)),
            unsynced: false,
            wal_has_records: replayed.records > 0,
        })
    }

    /// The state machine this storage snapshots (shared with the raft thread).
    pub fn machine(&self) -> Arc<Mutex<StateMachine>> {
        self.machine.clone()
    }

    /// Whether nothing was ever stored here: no snapshot, no entry, no vote.
    pub fn is_empty(&self) -> bool {
        self.snapshot_meta.index == 0
            && self.entries.is_empty()
            && self.hard_state == HardState::default()
    }

    /// Starts a new cluster: a snapshot at index 1, term 1, with these voters. Every
    /// founding node writes the same one, so their logs agree from the start; a node
    /// added later is behind it and catches up from a snapshot that carries the
    /// membership.
    pub fn bootstrap(&mut self, machine: StateMachine) -> Result<()> {
        let snapshot = machine.to_snapshot()?;
        self.install_snapshot(&snapshot)?;
        *self.lock_machine() = machine;
        Ok(())
    }

    /// Appends entries from a Ready; an entry already in the log replaces it and all
    /// after it.
    pub fn append(&mut self, entries: &[Entry]) -> Result<()> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if first.index <= self.snapshot_meta.index {
            return Err(Error::Io(format!(
                "raft asked to overwrite compacted entry {} (snapshot at {})",
                first.index, self.snapshot_meta.index
            )));
        }
        if first.index > self.last() + 1 {
            return Err(Error::Io(format!(
                "raft asked to append entry {} after {}: a gap in the log",
                first.index,
                self.last()
            )));
        }
        let mut buf = Vec::new();
        for entry in entries {
            buf.extend(frame::encode(KIND_ENTRY, &to_bytes(entry)?));
        }
        self.write_wal(&buf)?;
        self.entries
            .truncate((first.index - self.snapshot_meta.index - 1) as usize);
        self.entries.extend_from_slice(entries);
        Ok(())
    }

    /// Records a new hard state (term, vote, commit).
    pub fn set_hard_state(&mut self, hard_state: &HardState) -> Result<()> {
        if *hard_state == self.hard_state {
            return Ok(());
        }
        self.write_wal(&frame::encode(KIND_HARD_STATE, &to_bytes(hard_state)?))?;
        self.hard_state = hard_state.clone();
        Ok(())
    }

    /// Records a new commit index (from a LightReady).
    pub fn set_commit(&mut self, commit: u64) -> Result<()> {
        let mut hard_state = self.hard_state.clone();
        hard_state.commit = commit;
        self.set_hard_state(&hard_state)
    }

    /// Makes every write so far durable.
    pub fn sync(&mut self) -> Result<()> {
        if self.unsynced {
            self.wal
                .sync_data()
                .map_err(|e| Error::Io(format!("cannot sync {}: {e}", self.wal_path.display())))?;
            self.unsynced = false;
        }
        Ok(())
    }

    /// Installs a snapshot received from the leader: the log is replaced by it. The
    /// caller replaces the state machine.
    pub fn apply_snapshot(&mut self, snapshot: &Snapshot) -> Result<()> {
        self.install_snapshot(snapshot)
    }

    /// Entries applied since the last snapshot.
    pub fn applied_since_snapshot(&self) -> u64 {
        self.lock_machine()
            .applied_index
            .saturating_sub(self.snapshot_meta.index)
    }

    /// Snapshots the state machine at its applied index and drops the log before it.
    pub fn compact(&mut self) -> Result<()> {
        let snapshot = self.lock_machine().to_snapshot()?;
        let meta = snapshot.get_metadata().clone();
        if meta.index <= self.snapshot_meta.index {
            return Ok(());
        }
        write_atomically(
            &self.snapshot_path,
            &frame::encode(KIND_SNAPSHOT, &to_bytes(&snapshot)?),
        )?;
        let keep_from = (meta.index - self.snapshot_meta.index) as usize;
        self.entries.drain(..keep_from.min(self.entries.len()));
        self.snapshot_meta = meta;
        self.rewrite_wal()
    }

    fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<()> {
        let meta = snapshot.get_metadata().clone();
        if !self.wal_has_records {
            // The first snapshot of this directory: the WAL gets a record first, so a
            // crash right after the snapshot is written never leaves it beside an empty
            // WAL (which a start refuses as a lost log).
            self.write_wal(&frame::encode(
                KIND_HARD_STATE,
                &to_bytes(&self.hard_state)?,
            ))?;
            self.sync()?;
        }
        write_atomically(
            &self.snapshot_path,
            &frame::encode(KIND_SNAPSHOT, &to_bytes(snapshot)?),
        )?;
        // Keep the entries after the snapshot only if the log agrees with it there.
        let matches = self.term_of(meta.index) == Some(meta.term);
        if matches && meta.index >= self.snapshot_meta.index {
            let keep_from = (meta.index - self.snapshot_meta.index) as usize;
            self.entries.drain(..keep_from.min(self.entries.len()));
        } else {
            self.entries.clear();
        }
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
        self.hard_state.term = self.hard_state.term.max(meta.term);
        self.conf_state = meta.get_conf_state().clone();
        self.snapshot_meta = meta;
        self.rewrite_wal()
    }

    /// Rewrites the WAL as the current hard state plus the entries after the snapshot.
    fn rewrite_wal(&mut self) -> Result<()> {
        let mut buf = frame::encode(KIND_HARD_STATE, &to_bytes(&self.hard_state)?);
        for entry in &self.entries {
            buf.extend(frame::encode(KIND_ENTRY, &to_bytes(entry)?));
        }
        write_atomically(&self.wal_path, &buf)?;
        self.wal = OpenOptions::new()
            .append(true)
            .open(&self.wal_path)
            .map_err(|e| Error::Io(format!("cannot open {}: {e}", self.wal_path.display())))?;
        self.unsynced = false;
        self.wal_has_records = true;
        Ok(())
    }

    fn write_wal(&mut self, bytes: &[u8]) -> Result<()> {
        self.wal
            .write_all(bytes)
            .map_err(|e| Error::Io(format!("cannot write {}: {e}", self.wal_path.display())))?;
        self.unsynced = true;
        self.wal_has_records = true;
        Ok(())
    }

    fn last(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.snapshot_meta.index, |e| e.index)
    }

    fn term_of(&self, index: u64) -> Option<u64> {
        if index == self.snapshot_meta.index {
            return Some(self.snapshot_meta.term);
        }
        let offset = index.checked_sub(self.snapshot_meta.index + 1)?;
        self.entries.get(offset as usize).map(|e| e.term)
    }

    fn lock_machine(&self) -> std::sync::MutexGuard<'_, StateMachine> {
        lock(&self.machine)
    }
}

impl Storage for DiskStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.snapshot_meta.index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let from = (low - self.snapshot_meta.index - 1) as usize;
        let to = (high - self.snapshot_meta.index - 1) as usize;
        let mut entries = self.entries[from..to].to_vec();
        raft::util::limit_size(&mut entries, max_size.into());
        Ok(entries)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        if index < self.snapshot_meta.index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        self.term_of(index)
            .ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.snapshot_meta.index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    /// A snapshot of the state machine as applied now (for a peer that is too far
    /// behind for the log).
    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let machine = self.lock_machine();
        if machine.applied_index < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        machine.to_snapshot().map_err(|e| {
            log::error!("raft: {e}");
            raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable)
        })
    }
}

/// Takes an exclusive lock on the data directory, so two daemons never share one.
fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::Io(format!("cannot open {}: {e}", path.display())))?;
    // SAFETY: flock on a file descriptor we own; no memory is shared.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if locked != 0 {
        return Err(Error::Io(format!(
            "raft_data_dir: {} is in use by another redis-failover (cannot lock {})",
            dir.display(),
            path.display()
        )));
    }
    Ok(file)
}

fn read_snapshot(path: &Path) -> Result<Option<Snapshot>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::Io(format!("cannot read {}: {e}", path.display()))),
    };
    match frame::decode(&bytes) {
        Decoded::Record {
            kind: KIND_SNAPSHOT,
            payload,
            size,
        } if size == bytes.len() => from_bytes(payload, "raft snapshot")
            .map(Some)
            .map_err(|e| Error::Io(format!("{}: {e}", path.display()))),
        Decoded::Corrupt(why) => Err(Error::Io(format!(
            "{} is damaged ({why}); restore it from a backup or remove the data directory to rejoin the cluster as a new node",
            path.display()
        ))),
        _ => Err(Error::Io(format!(
            "{} is not a redis-failover raft snapshot",
            path.display()
        ))),
    }
}

/// Replaces `path` with `bytes` so that a crash leaves either the old or the new file.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let io = |e: std::io::Error| Error::Io(format!("cannot write {}: {e}", path.display()));
    let mut file = File::create(&tmp).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::address::MasterSpec;
    use crate::broker::Action;
    use crate::testing::temp_dir;

    /// An entry at `index` of `term` holding `data` (shared with `replay.rs`'s tests).
    pub(in crate::broker::raft) fn entry(index: u64, term: u64, data: &str) -> Entry {
        Entry {
            index,
            term,
            data: data.as_bytes().to_vec().into(),
            ..Entry::default()
        }
    }

    #[test]
    fn log_survives_reopen_with_truncation_and_compaction() {
        let dir = temp_dir("reopen");
        {
            let mut s = DiskStorage::open(&dir, None).unwrap();
            assert!(s.is_empty());
            let mut machine = StateMachine {
                applied_index: 1,
                applied_term: 1,
                ..StateMachine::default()
            };
            machine.conf_state.voters = vec![1, 2, 3];
            s.bootstrap(machine).unwrap();
            s.append(&[entry(2, 1, "a"), entry(3, 1, "b"), entry(4, 1, "c")])
                .unwrap();
            // A new leader overwrites 3.. with its own entries.
            s.append(&[entry(3, 2, "B")]).unwrap();
            let hs = HardState {
                term: 2,
                vote: 2,
                commit: 3,
                ..HardState::default()
            };
            s.set_hard_state(&hs).unwrap();
            s.sync().unwrap();
        }
        let mut s = DiskStorage::open(&dir, None).unwrap();
        assert_eq!(s.last_index().unwrap(), 3);
        assert_eq!(s.term(3).unwrap(), 2);
        assert_eq!(s.initial_state().unwrap().hard_state.vote, 2);
        assert_eq!(s.initial_state().unwrap().conf_state.voters, vec![1, 2, 3]);
        // Apply up to 3 and compact: the log now starts at 4.
        {
            let machine = s.machine();
            let mut m = machine.lock().unwrap();
            let spec = MasterSpec::parse("g=127.0.0.1:1").unwrap().into();
            m.data.state.apply(Action::Add(vec![spec])).unwrap();
            m.applied_index = 3;
            m.applied_term = 2;
        }
        s.compact().unwrap();
        s.append(&[entry(4, 2, "d")]).unwrap();
        s.sync().unwrap();
        drop(s);
        let s = DiskStorage::open(&dir, None).unwrap();
        assert_eq!(s.first_index().unwrap(), 4);
        assert_eq!(s.term(3).unwrap(), 2);
        assert_eq!(
            s.entries(4, 5, None, GetEntriesContext::empty(false))
                .unwrap()[0]
                .data,
            "d".as_bytes()
        );
        assert!(
            s.machine()
                .lock()
                .unwrap()
                .data
                .state
                .groups
                .contains_key("g")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn torn_tail_is_dropped_but_corruption_stops_start() {
        let dir = temp_dir("torn");
        {
            let mut s = DiskStorage::open(&dir, None).unwrap();
            s.append(&[entry(1, 1, "a"), entry(2, 1, "b")]).unwrap();
            s.sync().unwrap();
        }
        let wal = dir.join(WAL_FILE);
        let whole = std::fs::read(&wal).unwrap();
        // A crash mid-write: the last record is cut short.
        std::fs::write(&wal, &whole[..whole.len() - 3]).unwrap();
        let s = DiskStorage::open(&dir, None).unwrap();
        assert_eq!(s.last_index().unwrap(), 1);
        drop(s);
        // Damage in the first record with an intact one after it: refuse to start.
        let mut damaged = whole.clone();
        damaged[frame::HEADER + 3] ^= 0xff;
        std::fs::write(&wal, &damaged).unwrap();
        let err = DiskStorage::open(&dir, None)
            .err()
            .expect("corruption refused");
        assert!(err.to_string().contains("raft.wal"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_second_daemon_cannot_share_the_directory() {
        let dir = temp_dir("lock");
        let _first = DiskStorage::open(&dir, None).unwrap();
        let err = DiskStorage::open(&dir, None).err().expect("locked");
        assert!(err.to_string().contains("in use"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
