//! Events in Redis Sentinel's vocabulary: a master went down or came back, a failover
//! switched a group's master, an old master was made a replica.
//!
//! The monitor and the failover worker publish them; the Sentinel port delivers them to
//! `SUBSCRIBE`d clients (Jedis and redis-cli listen for `+switch-master`) and the
//! notification script runs on them. Publishing never blocks: a subscriber that does not
//! keep up loses events rather than slowing a failover.

use crate::address::Addr;
use crate::sync::lock;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::sync::{Arc, Mutex};

/// Events a subscriber may hold before it starts losing them.
pub const SUBSCRIBER_BACKLOG: usize = 1024;

/// Something that happened to a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The master stopped answering checks (`+sdown`).
    MasterDown { group: String, master: Addr },
    /// The master answers again (`-sdown`).
    MasterUp { group: String, master: Addr },
    /// The master is down for the whole window: a failover follows (`+odown`).
    FailoverNeeded { group: String, master: Addr },
    /// The group's master changed (`+switch-master`), seen by every daemon of a cluster.
    SwitchMaster {
        group: String,
        old: Addr,
        new: Addr,
        /// Whether this daemon performed the failover (Sentinel's leader), or only saw
        /// its result (an observer).
        performed_here: bool,
    },
    /// A failover attempt ended, whatever its outcome (`+failover-end`, or
    /// `-failover-abort-...` when nothing was promoted).
    FailoverEnded {
        group: String,
        master: Addr,
        succeeded: bool,
        reason: Option<String>,
    },
    /// A server that claimed to be master was made a replica of the group's master
    /// (`+convert-to-slave`).
    ConvertedToReplica {
        group: String,
        addr: Addr,
        master: Addr,
    },
}

impl Event {
    /// The Sentinel event type, which is also its pub/sub channel.
    pub fn channel(&self) -> &'static str {
        match self {
            Event::MasterDown { .. } => "+sdown",
            Event::MasterUp { .. } => "-sdown",
            Event::FailoverNeeded { .. } => "+odown",
            Event::SwitchMaster { .. } => "+switch-master",
            Event::FailoverEnded {
                succeeded: true, ..
            } => "+failover-end",
            Event::FailoverEnded { .. } => "-failover-abort-no-good-slave",
            Event::ConvertedToReplica { .. } => "+convert-to-slave",
        }
    }

    /// The message, formatted as Sentinel formats it.
    pub fn message(&self) -> String {
        let master =
            |group: &str, addr: &Addr| format!("master {group} {} {}", addr.host, addr.port);
        match self {
            Event::MasterDown { group, master: m } | Event::MasterUp { group, master: m } => {
                master(group, m)
            }
            Event::FailoverNeeded { group, master: m } => {
                format!("{} #quorum 1/1", master(group, m))
            }
            Event::SwitchMaster {
                group, old, new, ..
            } => format!(
                "{group} {} {} {} {}",
                old.host, old.port, new.host, new.port
            ),
            Event::FailoverEnded {
                group, master: m, ..
            } => master(group, m),
            Event::ConvertedToReplica {
                group,
                addr,
                master: m,
            } => format!(
                "slave {addr} {} {} @ {group} {} {}",
                addr.host, addr.port, m.host, m.port
            ),
        }
    }

    /// The group the event is about.
    pub fn group(&self) -> &str {
        match self {
            Event::MasterDown { group, .. }
            | Event::MasterUp { group, .. }
            | Event::FailoverNeeded { group, .. }
            | Event::SwitchMaster { group, .. }
            | Event::FailoverEnded { group, .. }
            | Event::ConvertedToReplica { group, .. } => group,
        }
    }
}

/// Tells a subscriber's thread that an event is waiting (an event loop's wake-up).
type Waker = Arc<dyn Fn() + Send + Sync>;

/// One subscription.
struct Subscriber {
    tx: Sender<Event>,
    wake: Option<Waker>,
}

/// Fan-out of events to every subscriber.
#[derive(Default)]
pub struct Events {
    subscribers: Mutex<Vec<Subscriber>>,
}

impl Events {
    /// A new subscription; dropping the receiver ends it.
    pub fn subscribe(&self) -> Receiver<Event> {
        self.add(None)
    }

    /// A new subscription whose holder waits for more than this channel (an event
    /// loop): `wake` runs, without blocking, each time an event is queued for it.
    pub fn subscribe_with_waker(&self, wake: impl Fn() + Send + Sync + 'static) -> Receiver<Event> {
        self.add(Some(Arc::new(wake)))
    }

    fn add(&self, wake: Option<Waker>) -> Receiver<Event> {
        let (tx, rx) = crossbeam_channel::bounded(SUBSCRIBER_BACKLOG);
        lock(&self.subscribers).push(Subscriber { tx, wake });
        rx
    }

    /// Delivers an event to every subscriber without waiting on any of them.
    pub fn publish(&self, event: Event) {
        log::debug!("event {} {}", event.channel(), event.message());
        lock(&self.subscribers).retain(|s| match s.tx.try_send(event.clone()) {
            Ok(()) => {
                if let Some(wake) = &s.wake {
                    wake();
                }
                true
            }
            Err(TrySendError::Full(_)) => {
                log::warn!(
                    "an event subscriber is not keeping up; it lost {}",
                    event.channel()
                );
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> Addr {
        Addr::parse(text).unwrap()
    }

    #[test]
    fn sentinel_formats() {
        let switch = Event::SwitchMaster {
            group: "cache".into(),
            old: addr("10.0.0.1:6379"),
            new: addr("10.0.0.2:6380"),
            performed_here: true,
        };
        assert_eq!(switch.channel(), "+switch-master");
        assert_eq!(switch.message(), "cache 10.0.0.1 6379 10.0.0.2 6380");
        let down = Event::MasterDown {
            group: "cache".into(),
            master: addr("10.0.0.1:6379"),
        };
        assert_eq!(down.message(), "master cache 10.0.0.1 6379");
        let converted = Event::ConvertedToReplica {
            group: "cache".into(),
            addr: addr("10.0.0.1:6379"),
            master: addr("10.0.0.2:6380"),
        };
        assert_eq!(
            converted.message(),
            "slave 10.0.0.1:6379 10.0.0.1 6379 @ cache 10.0.0.2 6380"
        );
    }

    #[test]
    fn a_waker_runs_for_each_event_queued() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let events = Events::default();
        let woken = Arc::new(AtomicUsize::new(0));
        let counter = woken.clone();
        let rx = events.subscribe_with_waker(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        events.publish(Event::MasterUp {
            group: "g".into(),
            master: addr("h:1"),
        });
        assert_eq!(woken.load(Ordering::SeqCst), 1);
        assert!(rx.try_recv().is_ok());
        drop(rx);
        events.publish(Event::MasterUp {
            group: "g".into(),
            master: addr("h:1"),
        });
        assert_eq!(
            woken.load(Ordering::SeqCst),
            1,
            "a closed subscription is not woken"
        );
    }

    #[test]
    fn slow_or_gone_subscribers_never_block() {
        let events = Events::default();
        let slow = events.subscribe();
        drop(events.subscribe());
        for _ in 0..SUBSCRIBER_BACKLOG + 10 {
            events.publish(Event::MasterUp {
                group: "g".into(),
                master: addr("h:1"),
            });
        }
        assert_eq!(slow.len(), SUBSCRIBER_BACKLOG);
        assert_eq!(
            lock(&events.subscribers).len(),
            1,
            "the dropped subscriber is forgotten"
        );
    }
}
