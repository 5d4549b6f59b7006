//! `tunnel` end to end on loopback: two client processes, a TCP server behind the
//! `--connect` side, 50 concurrent clients on the `--listen` side.

#![allow(clippy::unwrap_used)]

mod client;
mod loopback;
mod sessions;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use client::Proc;
use sessions::{Servers, of_kind};

/// The response to `request`: distinct per request, ~200 KB.
fn response_for(request: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(200_000);
    let mut x: u32 = request.iter().fold(2166136261, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(16777619)
    });
    while out.len() < 200_000 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

/// A server that reads each request to its end (the client half-closes), then answers
/// and closes: it only works if half-close passes through the tunnel.
fn serve(listener: TcpListener) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut request = Vec::new();
                stream.read_to_end(&mut request).unwrap();
                stream.write_all(&response_for(&request)).unwrap();
            });
        }
    });
}

fn tunnel(servers: &Servers, user: &str, peer: &str, side: &[&str]) -> Proc {
    let mut args = vec!["tunnel", "--json", "--peer", peer, "--bind", "127.0.0.1"];
    args.extend_from_slice(side);
    Proc::spawn(user, servers.command(user, &args))
}

#[test]
fn fifty_concurrent_connections_get_their_own_responses_through_the_tunnel() {
    let servers = Servers::start();
    servers.pair("alice", "bob");
    let target = TcpListener::bind("127.0.0.1:0").unwrap();
    let target_addr = target.local_addr().unwrap().to_string();
    serve(target);
    let mut a = tunnel(&servers, "alice", "bob", &["--listen", "127.0.0.1:0"]);
    let mut b = tunnel(&servers, "bob", "alice", &["--connect", &target_addr]);
    let listening = a.expect(Duration::from_secs(30), |e| e["event"] == "listening");
    let addr: SocketAddr = listening["addr"].as_str().unwrap().parse().unwrap();
    // The tunnel is usable once QUIC is up; a connection made before is carried then.
    let clients: Vec<_> = (0..50)
        .map(|i| {
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(addr).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(60)))
                    .unwrap();
                let request = format!("GET /{i} HTTP/1.0\r\n\r\n").into_bytes();
                stream.write_all(&request).unwrap();
                stream.shutdown(Shutdown::Write).unwrap();
                let mut response = Vec::new();
                stream.read_to_end(&mut response).unwrap();
                assert!(
                    response == response_for(&request),
                    "client {i}: {} bytes",
                    response.len()
                );
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    a.drain();
    assert_eq!(of_kind(&a.events(), "tunnel_opened").len(), 50);
    // Ctrl-C on one side ends both.
    a.signal(libc::SIGINT);
    assert!(
        a.wait_exit(Duration::from_secs(20)).success(),
        "{}",
        a.logs()
    );
    assert!(
        b.wait_exit(Duration::from_secs(20)).success(),
        "{}",
        b.logs()
    );
    b.drain();
    let events = b.events();
    let closed = of_kind(&events, "tunnel_closed");
    assert_eq!(closed.len(), 50, "{events:#?}");
    assert!(closed.iter().all(|e| e["error"].is_null()), "{closed:#?}");
}

#[test]
fn an_unreachable_target_resets_the_client_connection() {
    let servers = Servers::start();
    servers.pair("alice", "bob");
    // A port with nothing listening: bound, then closed.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let mut a = tunnel(&servers, "alice", "bob", &["--listen", "127.0.0.1:0"]);
    let mut b = tunnel(&servers, "bob", "alice", &["--connect", &dead]);
    let listening = a.expect(Duration::from_secs(30), |e| e["event"] == "listening");
    let addr: SocketAddr = listening["addr"].as_str().unwrap().parse().unwrap();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(b"hello").unwrap();
    let mut buf = [0u8; 16];
    let read = stream.read(&mut buf);
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    b.expect(Duration::from_secs(10), |e| {
        e["event"] == "tunnel_connect_failed"
    });
    a.signal(libc::SIGINT);
    assert!(
        a.wait_exit(Duration::from_secs(20)).success(),
        "{}",
        a.logs()
    );
    assert!(
        b.wait_exit(Duration::from_secs(20)).success(),
        "{}",
        b.logs()
    );
}

#[test]
fn a_listen_address_in_use_fails_before_logging_in() {
    let servers = Servers::start();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = servers
        .command("alice", &["tunnel", "--peer", "bob", "--listen", &addr])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--listen"), "{stderr}");
    let out = servers
        .command("alice", &["tunnel", "--peer", "bob"])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "one of --listen and --connect is required"
    );
}
