//! A ZooKeeper client whose calls never block a caller past a deadline.
//!
//! The `zookeeper` crate (0.8) is synchronous and has no per-call timeout: a call waits
//! for its reply until the client's io loop gives up, and the io loop only gives up after
//! a socket error plus a whole session timeout. A server that keeps the TCP connection
//! open but stops answering (frozen, or cut off without a reset) is never noticed at
//! all. Dropping a `ZooKeeper` blocks too: its `Drop` sends `CloseSession` and waits.
//!
//! So every call here runs on a short-lived thread of its own and the caller waits at
//! most until its deadline. A call left behind holds only its thread, and ends with
//! `ConnectionLoss` when the io loop ends. A client is closed on a thread of its own,
//! and the caller waits for that at most a given time too.
//!
//! Also worked around: `ZooKeeper::connect` unwraps the result of its first socket
//! connect (it panics if the address family is unusable), so it runs under
//! `catch_unwind`; and the client's state listeners and watchers run on the crate's io
//! and event threads, so the ones given here only send on channels.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use zookeeper::{ZkError, ZkResult, ZkState, ZooKeeper};

/// Why a call did not return a value.
#[derive(Debug, Clone, PartialEq)]
pub enum CallError {
    /// ZooKeeper answered with an error (or the client reported `ConnectionLoss`).
    Zk(ZkError),
    /// No answer before the deadline; the connection is probably broken.
    TimedOut(Duration),
    /// No thread could be started for the call.
    NoThread(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Zk(ZkError::ConnectionLoss) => {
                f.write_str("connection loss (ZooKeeper is unreachable)")
            }
            CallError::Zk(e) => write!(f, "ZooKeeper error {e:?}"),
            CallError::TimedOut(after) => {
                write!(
                    f,
                    "no answer from ZooKeeper within {} ms",
                    after.as_millis()
                )
            }
            CallError::NoThread(e) => write!(f, "cannot start a thread for a ZooKeeper call: {e}"),
        }
    }
}

/// The crate's client plus whether it was closed: a closed one is never dropped, since
/// its `Drop` would send a second `CloseSession` and log an error when that fails.
struct Inner {
    zk: Option<ZooKeeper>,
    closed: AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.closed.load(Ordering::SeqCst) {
            // A few hundred bytes per closed session; sessions end rarely.
            std::mem::forget(self.zk.take());
        }
    }
}

/// One ZooKeeper session's client, shared by the session thread and proposers.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl Client {
    /// Starts a client (the crate connects in the background; calls wait for it).
    /// `listener` receives every change of the connection state, on the crate's io
    /// thread: it must not block.
    pub fn connect(
        servers: &str,
        session_timeout: Duration,
        listener: impl Fn(ZkState) + Send + 'static,
    ) -> Result<Client, String> {
        let servers_owned = servers.to_string();
        let connected = catch_unwind(AssertUnwindSafe(move || {
            ZooKeeper::connect(&servers_owned, session_timeout, |_event| {})
        }));
        let zk = match connected {
            Ok(Ok(zk)) => zk,
            Ok(Err(ZkError::BadArguments)) => {
                return Err(format!(
                    "cannot resolve the ZooKeeper addresses {servers} (zk_addr)"
                ));
            }
            Ok(Err(e)) => return Err(format!("cannot start a ZooKeeper client: {e:?}")),
            Err(_) => {
                return Err(format!(
                    "the ZooKeeper client panicked while connecting to {servers}"
                ));
            }
        };
        zk.add_listener(listener);
        Ok(Client {
            inner: Arc::new(Inner {
                zk: Some(zk),
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// Runs `call` on its own thread; waits at most `limit` for its result.
    pub fn call<T: Send + 'static>(
        &self,
        limit: Duration,
        call: impl FnOnce(&ZooKeeper) -> ZkResult<T> + Send + 'static,
    ) -> Result<T, CallError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let inner = self.inner.clone();
        std::thread::Builder::new()
            .name("zk-call".into())
            .spawn(move || {
                let result = match inner.zk.as_ref() {
                    Some(zk) => call(zk),
                    None => Err(ZkError::ConnectionLoss),
                };
                let _ = tx.send(result);
            })
            .map_err(|e| CallError::NoThread(e.to_string()))?;
        match rx.recv_timeout(limit) {
            Ok(result) => result.map_err(CallError::Zk),
            Err(_) => Err(CallError::TimedOut(limit)),
        }
    }

    /// Ends the session (its ephemeral znodes go at once) on a thread of its own;
    /// waits at most `wait` for ZooKeeper to confirm. Returns whether it did.
    pub fn close(&self, wait: Duration) -> bool {
        if self.inner.closed.swap(true, Ordering::SeqCst) {
            return true;
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        let inner = self.inner.clone();
        let spawned = std::thread::Builder::new()
            .name("zk-close".into())
            .spawn(move || {
                let result = inner.zk.as_ref().map(|zk| zk.close());
                let _ = tx.send(result);
            });
        if spawned.is_err() {
            return false;
        }
        matches!(rx.recv_timeout(wait), Ok(Some(Ok(()))))
    }
}
