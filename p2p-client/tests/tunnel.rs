//! `tunnel_listen` / `tunnel_connect` over a real quinn pair on loopback.

// Test helpers outside #[test] functions: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod quic_pair;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use p2p_client::tunnel::{
    STREAM_VERSION, TunnelEvent, TunnelStats, UNSUPPORTED_VERSION, tunnel_connect, tunnel_listen,
};
use quinn::VarInt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;

const LOCALHOST: (Ipv4Addr, u16) = (Ipv4Addr::LOCALHOST, 0);
const PATIENCE: Duration = Duration::from_secs(20);

/// A running tunnel: TCP clients connect to `entry`, and reach the target given to it.
struct Tunnel {
    entry: SocketAddr,
    pair: quic_pair::QuicPair,
    listen: JoinHandle<(TunnelStats, Vec<TunnelEvent>)>,
    connect: JoinHandle<(TunnelStats, Vec<TunnelEvent>)>,
}

impl Tunnel {
    async fn to(target: SocketAddr) -> Tunnel {
        let pair = quic_pair::pair().await;
        let listener = TcpListener::bind(LOCALHOST).await.unwrap();
        let entry = listener.local_addr().unwrap();
        let conn = pair.client.clone();
        let listen = tokio::spawn(async move {
            let mut events = Vec::new();
            let stats = tunnel_listen(conn, listener, &mut |e| events.push(e))
                .await
                .unwrap();
            (stats, events)
        });
        let conn = pair.server.clone();
        let connect = tokio::spawn(async move {
            let mut events = Vec::new();
            let stats = tunnel_connect(conn, target, &mut |e| events.push(e)).await;
            (stats, events)
        });
        Tunnel {
            entry,
            pair,
            listen,
            connect,
        }
    }

    /// Closes the QUIC connection; both ends must return promptly.
    async fn close(
        self,
    ) -> (
        (TunnelStats, Vec<TunnelEvent>),
        (TunnelStats, Vec<TunnelEvent>),
    ) {
        self.pair.client.close(VarInt::from_u32(0), b"test over");
        let listen = timeout(PATIENCE, self.listen).await.unwrap().unwrap();
        let connect = timeout(PATIENCE, self.connect).await.unwrap().unwrap();
        self.pair.shutdown().await;
        (listen, connect)
    }
}

/// The response the test server gives to request number `n`: distinct per request, 100 KB
/// to about 1 MB.
fn response(n: u32) -> Vec<u8> {
    let len = 100_000 + (n as usize * 18_000);
    let mut state = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// An HTTP/1.0-like server: reads `GET /n` up to the blank line, writes the response for
/// `n`, closes.
async fn http_like_server() -> SocketAddr {
    let listener = TcpListener::bind(LOCALHOST).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 256];
                while !request.ends_with(b"\r\n\r\n") {
                    let n = tcp.read(&mut buf).await.unwrap();
                    assert!(n > 0, "request cut short");
                    request.extend_from_slice(&buf[..n]);
                }
                let line = std::str::from_utf8(&request).unwrap();
                let n: u32 = line
                    .trim_start_matches("GET /")
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap();
                tcp.write_all(&response(n)).await.unwrap();
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_clients_get_their_own_responses() {
    let tunnel = Tunnel::to(http_like_server().await).await;
    let entry = tunnel.entry;
    let clients: Vec<_> = (0..50u32)
        .map(|n| {
            tokio::spawn(async move {
                let mut tcp = TcpStream::connect(entry).await.unwrap();
                tcp.write_all(format!("GET /{n} HTTP/1.0\r\n\r\n").as_bytes())
                    .await
                    .unwrap();
                let mut body = Vec::new();
                tcp.read_to_end(&mut body).await.unwrap();
                assert!(body == response(n), "client {n}: {} bytes", body.len());
                body.len() as u64
            })
        })
        .collect();
    let mut total = 0;
    for client in clients {
        total += timeout(PATIENCE, client).await.unwrap().unwrap();
    }
    let ((listen, listen_events), (connect, _)) = tunnel.close().await;
    assert_eq!(listen.connections, 50);
    assert_eq!(connect.connections, 50);
    assert_eq!(listen.failed, 0);
    assert_eq!(listen.bytes_from_peer, total);
    assert_eq!(connect.bytes_to_peer, total);
    let clean = listen_events
        .iter()
        .filter(|e| matches!(e, TunnelEvent::Closed { error: None, .. }))
        .count();
    assert_eq!(clean, 50, "{listen_events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_half_closes_and_still_reads_the_reply() {
    // The target reads to end of input, then answers with what it got, reversed.
    let target = TcpListener::bind(LOCALHOST).await.unwrap();
    let target_addr = target.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut tcp, _) = target.accept().await.unwrap();
        let mut request = Vec::new();
        tcp.read_to_end(&mut request).await.unwrap();
        request.reverse();
        tcp.write_all(&request).await.unwrap();
    });
    let tunnel = Tunnel::to(target_addr).await;
    let mut tcp = TcpStream::connect(tunnel.entry).await.unwrap();
    let request = response(3);
    tcp.write_all(&request).await.unwrap();
    tcp.shutdown().await.unwrap();
    let mut reply = Vec::new();
    timeout(PATIENCE, tcp.read_to_end(&mut reply))
        .await
        .unwrap()
        .unwrap();
    let mut expected = request;
    expected.reverse();
    assert!(reply == expected, "{} bytes", reply.len());
    tunnel.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_target_half_closes_and_still_reads_the_upload() {
    // The target speaks first and shuts its write half, then reads the client's upload.
    let target = TcpListener::bind(LOCALHOST).await.unwrap();
    let target_addr = target.local_addr().unwrap();
    let (got_tx, got_rx) = oneshot::channel();
    tokio::spawn(async move {
        let (mut tcp, _) = target.accept().await.unwrap();
        tcp.write_all(&response(1)).await.unwrap();
        tcp.shutdown().await.unwrap();
        let mut upload = Vec::new();
        tcp.read_to_end(&mut upload).await.unwrap();
        got_tx.send(upload).unwrap();
    });
    let tunnel = Tunnel::to(target_addr).await;
    let mut tcp = TcpStream::connect(tunnel.entry).await.unwrap();
    let mut greeting = Vec::new();
    timeout(PATIENCE, tcp.read_to_end(&mut greeting))
        .await
        .unwrap()
        .unwrap();
    assert!(greeting == response(1));
    // Our read side is at its end; the write side still carries the upload.
    tcp.write_all(&response(2)).await.unwrap();
    tcp.shutdown().await.unwrap();
    let upload = timeout(PATIENCE, got_rx).await.unwrap().unwrap();
    assert!(upload == response(2), "{} bytes", upload.len());
    tunnel.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_target_closes_the_client_promptly() {
    // A bound socket that never listens: its port is ours for the whole test (no other test
    // can take it) and connections to it are refused.
    let nobody = tokio::net::TcpSocket::new_v4().unwrap();
    nobody.bind(LOCALHOST.into()).unwrap();
    let target = nobody.local_addr().unwrap();
    let tunnel = Tunnel::to(target).await;
    let told = async {
        // The reset can come so fast that it beats the connect's own completion.
        let mut tcp = match TcpStream::connect(tunnel.entry).await {
            Ok(tcp) => tcp,
            Err(e) => return Err(e),
        };
        let _ = tcp.write_all(b"hello?").await;
        let mut buf = [0u8; 16];
        tcp.read(&mut buf).await
    };
    let read = timeout(Duration::from_secs(5), told)
        .await
        .expect("the client is told promptly");
    assert!(
        matches!(&read, Ok(0))
            || read
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "{read:?}"
    );
    let ((listen, _), (connect, connect_events)) = tunnel.close().await;
    drop(nobody);
    assert_eq!(listen.failed, 1);
    assert_eq!(connect.failed, 1);
    assert!(
        connect_events
            .iter()
            .any(|e| matches!(e, TunnelEvent::ConnectFailed { id: 0, .. })),
        "{connect_events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_stream_version_is_reset() {
    let tunnel = Tunnel::to(http_like_server().await).await;
    let (mut send, mut recv) = tunnel.pair.client.open_bi().await.unwrap();
    send.write_all(&[STREAM_VERSION + 1]).await.unwrap();
    let read = timeout(PATIENCE, recv.read_to_end(1024)).await.unwrap();
    assert!(
        matches!(
            read,
            Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code)))
                if code == VarInt::from_u32(UNSUPPORTED_VERSION)
        ),
        "{read:?}"
    );
    tunnel.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_connections_end_with_the_quic_connection() {
    // A target that accepts and then says nothing, holding the connection open.
    let target = TcpListener::bind(LOCALHOST).await.unwrap();
    let target_addr = target.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let (mut tcp, _) = target.accept().await.unwrap();
        let mut rest = Vec::new();
        // Ends (EOF or reset) once the tunnel lets go of the connection.
        let _ = tcp.read_to_end(&mut rest).await;
    });
    let tunnel = Tunnel::to(target_addr).await;
    let mut tcp = TcpStream::connect(tunnel.entry).await.unwrap();
    tcp.write_all(b"x").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ((listen, _), (connect, _)) = tunnel.close().await;
    assert_eq!(listen.connections, 1);
    assert_eq!(connect.connections, 1);
    // Neither tunnelled half outlives the tunnel.
    timeout(PATIENCE, held).await.unwrap().unwrap();
    // The local client sees a reset, not a clean end of a stream that was cut short.
    let mut buf = [0u8; 1];
    let read = timeout(PATIENCE, tcp.read(&mut buf)).await.unwrap();
    assert!(read.is_err(), "{read:?}");
}
