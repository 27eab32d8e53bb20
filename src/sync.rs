//! Locks that survive a panic elsewhere.
//!
//! A thread that panics while holding a lock poisons it. Every lock in this crate guards
//! plain data whose invariants hold between statements (a map, a status snapshot), so the
//! daemon keeps going with the data as the panicking thread left it rather than
//! spreading the panic to every thread that reads it. These helpers are the one place
//! that decision is written.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks a mutex, ignoring poison.
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Takes a read lock, ignoring poison.
pub fn read<T: ?Sized>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

/// Takes a write lock, ignoring poison.
pub fn write<T: ?Sized>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}
