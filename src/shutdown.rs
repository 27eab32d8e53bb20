//! [`Shutdown`]: the one way every thread of the daemon is told to stop.
//!
//! Threads wait in different places: the monitor and the notification runner in
//! `select!`, the seeder between retries, listeners in `accept`, connection readers in
//! `read`. A `Shutdown` serves them all: [`Shutdown::signal`] is a channel that becomes
//! ready (disconnected) once it is triggered, [`Shutdown::wait`] sleeps until then, and
//! [`Shutdown::on_trigger`] registers how to wake a thread blocked in a system call (a
//! connection to its own listener, a socket shutdown). Triggering is idempotent.

use crate::sync::lock;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Waker = Box<dyn FnOnce() + Send>;

/// A stop signal shared by clones; see the module docs.
#[derive(Clone)]
pub struct Shutdown(Arc<Inner>);

struct Inner {
    triggered: AtomicBool,
    /// Dropped when triggered: every receiver of the channel then sees it disconnected.
    sender: Mutex<Option<Sender<()>>>,
    receiver: Receiver<()>,
    wakers: Mutex<Vec<Waker>>,
}

impl Default for Shutdown {
    fn default() -> Shutdown {
        Shutdown::new()
    }
}

impl Shutdown {
    pub fn new() -> Shutdown {
        let (sender, receiver) = crossbeam_channel::bounded(0);
        Shutdown(Arc::new(Inner {
            triggered: AtomicBool::new(false),
            sender: Mutex::new(Some(sender)),
            receiver,
            wakers: Mutex::new(Vec::new()),
        }))
    }

    /// Tells every thread to stop and wakes the blocked ones.
    pub fn trigger(&self) {
        if self.0.triggered.swap(true, Ordering::SeqCst) {
            return;
        }
        lock(&self.0.sender).take();
        let wakers = std::mem::take(&mut *lock(&self.0.wakers));
        for wake in wakers {
            wake();
        }
    }

    pub fn is_triggered(&self) -> bool {
        self.0.triggered.load(Ordering::SeqCst)
    }

    /// A channel for `select!`: ready (disconnected) once the shutdown is triggered.
    pub fn signal(&self) -> Receiver<()> {
        self.0.receiver.clone()
    }

    /// Sleeps up to `timeout`; true when the shutdown was triggered (before or meanwhile).
    pub fn wait(&self, timeout: Duration) -> bool {
        !matches!(
            self.0.receiver.recv_timeout(timeout),
            Err(RecvTimeoutError::Timeout)
        )
    }

    /// Runs `wake` when the shutdown is triggered, or at once if it already was: how a
    /// thread blocked in `accept` or `read` is woken.
    pub fn on_trigger(&self, wake: impl FnOnce() + Send + 'static) {
        let mut wakers = lock(&self.0.wakers);
        if self.is_triggered() {
            drop(wakers);
            wake();
        } else {
            wakers.push(Box::new(wake));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn every_kind_of_waiter_sees_the_trigger_once() {
        let shutdown = Shutdown::new();
        assert!(!shutdown.wait(Duration::from_millis(1)));
        let woken = Arc::new(AtomicUsize::new(0));
        let counter = woken.clone();
        shutdown.on_trigger(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        let signal = shutdown.signal();
        let waiter = {
            let shutdown = shutdown.clone();
            std::thread::spawn(move || shutdown.wait(Duration::from_secs(30)))
        };
        shutdown.trigger();
        shutdown.trigger();
        assert!(waiter.join().unwrap());
        assert!(signal.recv().is_err(), "the signal channel is disconnected");
        assert_eq!(woken.load(Ordering::SeqCst), 1);
        let late = woken.clone();
        shutdown.on_trigger(move || {
            late.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(woken.load(Ordering::SeqCst), 2, "a late waker runs at once");
    }
}
