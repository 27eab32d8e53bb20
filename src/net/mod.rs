//! The daemon's network plumbing, below the API: socket options for long-lived inbound
//! connections ([`keep_alive`], also used by the Raft port), and the bounded,
//! non-blocking connection server that the HTTP API and the Sentinel port run on.
//!
//! - `server.rs`: one event-loop thread per port (epoll through `polling`): accepting,
//!   bounded per-connection buffers, a connection cap with eviction of the longest-idle
//!   connection, idle / request / write timeouts, and a listener that survives
//!   descriptor exhaustion (`accept.rs`). A protocol plugs in through
//!   [`server::Protocol`].
//! - `event_loop.rs`: the loop itself.
//! - `conn.rs`: one connection's buffers, timers and lingering close.
//! - `transport.rs`: the byte transport of a connection (plain TCP, or TLS).
//! - `tls/`: TLS for everything the daemon dials or serves: the reloadable material,
//!   the rustls configurations, a non-blocking session (a [`transport::Transport`]) and
//!   a blocking stream.
//! - `http/`: HTTP/1.1 on that server (`httparse`, Content-Length and chunked bodies,
//!   keep-alive) with a fixed pool of handler threads.
//!
//! Nothing here knows the daemon: routes and commands live in `api/`, settings in
//! `config/`.

mod accept;
mod conn;
mod event_loop;
pub mod http;
pub mod server;
#[cfg(test)]
mod tests;
pub mod tls;
pub mod transport;

use std::net::TcpStream;
use std::time::Duration;

/// The kernel send buffer of a served connection. Left to autotuning it grows to 4 MB,
/// which a client that stops reading then holds in kernel memory; 256 KiB (the kernel
/// doubles it) still covers a fast LAN's bandwidth-delay product.
pub const SEND_BUFFER: usize = 256 * 1024;

/// Caps the kernel send buffer of a served connection at [`SEND_BUFFER`].
pub fn cap_send_buffer(stream: &TcpStream) {
    if let Err(e) = socket2::SockRef::from(stream).set_send_buffer_size(SEND_BUFFER) {
        log::debug!("cannot set the send buffer size: {e}");
    }
}

/// TCP keepalive on an inbound connection, so one whose peer vanished (host crash, NAT
/// drop) fails within about two minutes instead of holding its slot (or, on the Raft
/// port, its thread) forever.
pub fn keep_alive(stream: &TcpStream) {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(30))
        .with_interval(Duration::from_secs(10));
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
        log::debug!("cannot set TCP keepalive: {e}");
    }
}
