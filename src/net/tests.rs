//! The connection server with a toy line protocol: caps, eviction, timeouts, messages
//! from other threads, and shutdown, with short limits so the tests are quick.

use super::server::{Bound, ConnId, Io, Limits, Phase, Protocol, Refusal, Remote, Running};
use crate::shutdown::Shutdown;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Echoes each line; reports each new connection's id so the test can message it.
struct Lines {
    opened: mpsc::Sender<ConnId>,
}

impl Protocol for Lines {
    type Conn = ();
    type Message = String;

    fn open(&mut self, id: ConnId, _peer: SocketAddr) {
        let _ = self.opened.send(id);
    }

    fn input(&mut self, _conn: &mut (), io: &mut Io<'_>) {
        while let Some(end) = io.input().iter().position(|b| *b == b'\n') {
            let line = io.input()[..=end].to_vec();
            io.consume(end + 1);
            io.completed();
            io.write(&line);
        }
        let phase = if io.input().is_empty() {
            Phase::Idle
        } else {
            Phase::Reading
        };
        io.set_phase(phase);
    }

    fn message(&mut self, _conn: &mut (), message: String, io: &mut Io<'_>) {
        io.write(message.as_bytes());
    }

    fn timed_out(&mut self, _conn: &mut (), io: &mut Io<'_>) {
        io.write(b"timeout\n");
    }

    fn refusal(&self, _why: Refusal) -> Vec<u8> {
        b"full\n".to_vec()
    }
}

struct Port {
    addr: SocketAddr,
    remote: Remote<String>,
    opened: mpsc::Receiver<ConnId>,
    shutdown: Shutdown,
    running: Running,
}

impl Drop for Port {
    fn drop(&mut self) {
        self.shutdown.trigger();
        self.running.join();
    }
}

fn limits() -> Limits {
    Limits {
        max_connections: 2,
        max_per_source: 2,
        max_input: 64,
        idle_timeout: Some(Duration::from_secs(30)),
        request_timeout: Duration::from_secs(30),
        write_timeout: Duration::from_secs(30),
        evict_after: Duration::from_secs(30),
    }
}

fn serve(limits: Limits) -> Port {
    let bound = Bound::<String>::bind("127.0.0.1:0").unwrap();
    let (tx, opened) = mpsc::channel();
    let shutdown = Shutdown::new();
    let addr = bound.local_addr();
    let remote = bound.remote();
    let running = bound
        .start("test-port", limits, Lines { opened: tx }, &shutdown)
        .unwrap();
    Port {
        addr,
        remote,
        opened,
        shutdown,
        running,
    }
}

fn connect(port: &Port) -> TcpStream {
    let stream = TcpStream::connect(port.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
}

/// Reads until the peer closes; what came, and whether it did close.
fn read_to_close(stream: &mut TcpStream) -> (String, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                return (String::from_utf8_lossy(&got).into_owned(), true);
            }
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
        }
    }
}

fn read_line(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\n") {
        match stream.read(&mut byte) {
            Ok(1) => got.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn echoes_and_delivers_messages_from_other_threads() {
    let port = serve(limits());
    let mut client = connect(&port);
    client.write_all(b"hello\nwor").unwrap();
    assert_eq!(read_line(&mut client), "hello\n");
    client.write_all(b"ld\n").unwrap();
    assert_eq!(read_line(&mut client), "world\n");
    let id = port.opened.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(port.remote.send(id, "pushed\n".into()));
    assert_eq!(read_line(&mut client), "pushed\n");
}

#[test]
fn beyond_the_cap_a_connection_is_refused_at_once() {
    let port = serve(limits());
    let mut held: Vec<TcpStream> = (0..2).map(|_| connect(&port)).collect();
    for h in held.iter_mut() {
        h.write_all(b"x\n").unwrap();
        assert_eq!(read_line(h), "x\n");
    }
    let mut third = connect(&port);
    let started = Instant::now();
    assert_eq!(read_to_close(&mut third), ("full\n".to_string(), true));
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn at_the_cap_the_connection_idle_longest_makes_room() {
    let port = serve(Limits {
        evict_after: Duration::from_millis(100),
        ..limits()
    });
    let mut oldest = connect(&port);
    oldest.write_all(b"a\n").unwrap();
    assert_eq!(read_line(&mut oldest), "a\n");
    std::thread::sleep(Duration::from_millis(50));
    let mut newer = connect(&port);
    newer.write_all(b"b\n").unwrap();
    assert_eq!(read_line(&mut newer), "b\n");
    std::thread::sleep(Duration::from_millis(150));
    let mut third = connect(&port);
    third.write_all(b"c\n").unwrap();
    assert_eq!(read_line(&mut third), "c\n", "the third got in");
    assert_eq!(read_to_close(&mut oldest), (String::new(), true), "evicted");
    newer.write_all(b"d\n").unwrap();
    assert_eq!(read_line(&mut newer), "d\n", "the newer one stays");
}

#[test]
fn a_request_that_never_ends_times_out_and_an_idle_connection_closes() {
    let port = serve(Limits {
        idle_timeout: Some(Duration::from_millis(300)),
        request_timeout: Duration::from_millis(300),
        ..limits()
    });
    let mut partial = connect(&port);
    partial.write_all(b"never ends").unwrap();
    let mut idle = connect(&port);
    let started = Instant::now();
    assert_eq!(read_to_close(&mut partial), ("timeout\n".to_string(), true));
    assert_eq!(read_to_close(&mut idle), (String::new(), true));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[test]
fn input_over_the_buffer_closes_the_connection() {
    let port = serve(limits());
    let mut client = connect(&port);
    let _ = client.write_all(&[b'x'; 200]);
    assert!(read_to_close(&mut client).1, "closed");
}

#[test]
fn a_shutdown_closes_connections_and_ends_the_loop() {
    let mut port = serve(limits());
    let mut client = connect(&port);
    client.write_all(b"x\n").unwrap();
    assert_eq!(read_line(&mut client), "x\n");
    port.shutdown.trigger();
    port.running.join();
    assert!(read_to_close(&mut client).1);
    assert!(!port.remote.send(
        port.opened.recv_timeout(Duration::from_secs(1)).unwrap(),
        String::new()
    ));
}
