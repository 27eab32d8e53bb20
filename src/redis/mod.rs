//! Speaking to the monitored servers: the RESP codec (`resp.rs`), one server and its
//! kept connection (`node.rs`), what their replies mean for Redis and LedisDB
//! (`replies.rs`), and the failover path's rules (`election.rs`: which replica to
//! promote). What the failover worker does to servers with these (ask replicas, promote,
//! re-point) is `worker/servers.rs`.

mod election;
mod node;
pub mod replies;
pub mod resp;

pub use election::{ReplicaReport, STALE_FACTOR, elect, is_same_server, master_seen_alive};
pub use node::{INFO_COMMANDS, NodeOptions, RedisNode, read_replication_info};
pub use replies::{ListedReplica, ReplicationInfo, Role, parse_replication_info, parse_role};
pub use resp::Reply;
