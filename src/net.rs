//! Socket options shared by the daemon's long-lived inbound connections (the Sentinel
//! port, the Raft port).

use std::net::TcpStream;
use std::time::Duration;

/// TCP keepalive on an inbound connection, so one whose peer vanished (host crash, NAT
/// drop) fails within about two minutes and frees its thread, instead of waiting
/// forever in `read`.
pub fn keep_alive(stream: &TcpStream) {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(30))
        .with_interval(Duration::from_secs(10));
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
        log::debug!("cannot set TCP keepalive: {e}");
    }
}
