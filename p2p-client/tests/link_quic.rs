//! QUIC over a link's changing path (`p2p_client::link::quic`), on real loopback sockets.
//!
//! Two `tokio::net::UdpSocket`s stand in for the peers' endpoint sockets; a pump per socket
//! does what the endpoint socket's reader does for QUIC: checks the first byte is QUIC class
//! and hands the datagram to the link. The relay is emulated by an mpsc channel per direction
//! (what `Relay::send` feeds) pumped into the other side's inbound handle.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use p2p_client::link::endpoint::{PacketClass, classify};
use p2p_client::link::quic::{
    CertFingerprint, LinkCertificate, MAX_UDP_PAYLOAD, PEER_ADDR, QuicInbound, QuicLink,
    QuicLinkError, QuicRoute, Role,
};
use sha2::{Digest, Sha256};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// What the pumps saw: every datagram the adapters sent, by whichever path.
#[derive(Debug, Default)]
struct Capture {
    datagrams: AtomicU64,
    not_quic: AtomicU64,
    long_headers: AtomicU64,
    short_headers: AtomicU64,
    largest: AtomicU64,
}

impl Capture {
    fn record(&self, datagram: &[u8]) -> bool {
        self.datagrams.fetch_add(1, Ordering::Relaxed);
        self.largest
            .fetch_max(datagram.len() as u64, Ordering::Relaxed);
        if classify(datagram) != PacketClass::Quic {
            self.not_quic.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if datagram[0] & 0x80 != 0 {
            self.long_headers.fetch_add(1, Ordering::Relaxed);
        } else {
            self.short_headers.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// Every datagram seen so far was QUIC class, and both header forms were seen.
    fn assert_all_quic(&self) {
        let total = self.datagrams.load(Ordering::Relaxed);
        assert!(total > 0, "no datagram captured");
        assert_eq!(
            self.not_quic.load(Ordering::Relaxed),
            0,
            "datagrams outside 0x40-0x7F/0xC0-0xFF (fixed bit greased?)"
        );
        assert!(self.long_headers.load(Ordering::Relaxed) > 0);
        assert!(self.short_headers.load(Ordering::Relaxed) > 0);
        // Segmentation-offload batches reach neither the wire nor the relay whole.
        let largest = self.largest.load(Ordering::Relaxed);
        assert!(
            largest <= u64::from(MAX_UDP_PAYLOAD),
            "a {largest}-byte datagram"
        );
    }
}

/// Reads `socket` and delivers its QUIC-class datagrams to `inbound`, like the endpoint
/// socket's reader task.
fn pump(socket: Arc<UdpSocket>, inbound: QuicInbound, capture: Arc<Capture>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        while let Ok((n, _)) = socket.recv_from(&mut buf).await {
            if capture.record(&buf[..n]) {
                inbound.deliver(Bytes::copy_from_slice(&buf[..n]));
            }
        }
    })
}

/// An emulated relay direction: what the route queues comes out at the peer's inbound.
fn relay(inbound: QuicInbound, capture: Arc<Capture>) -> (mpsc::Sender<Bytes>, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Bytes>(512);
    let task = tokio::spawn(async move {
        while let Some(packet) = rx.recv().await {
            if capture.record(&packet) {
                inbound.deliver(packet);
            }
        }
    });
    (tx, task)
}

async fn bind() -> Arc<UdpSocket> {
    Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind"))
}

fn addr(socket: &UdpSocket) -> SocketAddr {
    socket.local_addr().expect("local address")
}

/// One side of the test link.
struct Peer {
    link: QuicLink,
    route: QuicRoute,
    inbound: QuicInbound,
    socket: Arc<UdpSocket>,
}

/// The two sides, direct on loopback, with pumps running.
struct Pair {
    client: Peer,
    server: Peer,
    capture: Arc<Capture>,
    tasks: Vec<JoinHandle<()>>,
    server_fingerprint: CertFingerprint,
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

/// Which fingerprint each side expects: the real one, or a wrong one.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    Right,
    WrongServer,
    WrongClient,
}

async fn pair(expect: Expect) -> Pair {
    let client_cert = LinkCertificate::generate().expect("client certificate");
    let server_cert = LinkCertificate::generate().expect("server certificate");
    let wrong: CertFingerprint = [0x5a; 32];
    let server_fp = if expect == Expect::WrongServer {
        wrong
    } else {
        server_cert.fingerprint()
    };
    let client_fp = if expect == Expect::WrongClient {
        wrong
    } else {
        client_cert.fingerprint()
    };
    let (a, b) = (bind().await, bind().await);
    let client_route = QuicRoute::new();
    let server_route = QuicRoute::new();
    client_route.set_direct(a.clone(), addr(&b));
    server_route.set_direct(b.clone(), addr(&a));
    let (client, client_in) =
        QuicLink::new(Role::Client, &client_cert, server_fp, client_route.clone()).expect("client");
    let (server, server_in) =
        QuicLink::new(Role::Server, &server_cert, client_fp, server_route.clone()).expect("server");
    let capture = Arc::new(Capture::default());
    let tasks = vec![
        pump(a.clone(), client_in.clone(), capture.clone()),
        pump(b.clone(), server_in.clone(), capture.clone()),
    ];
    Pair {
        client: Peer {
            link: client,
            route: client_route,
            inbound: client_in,
            socket: a,
        },
        server: Peer {
            link: server,
            route: server_route,
            inbound: server_in,
            socket: b,
        },
        capture,
        tasks,
        server_fingerprint: server_cert.fingerprint(),
    }
}

/// Connects both sides (within 10 s).
async fn connect(pair: &Pair) -> (quinn::Connection, quinn::Connection) {
    let both = async { tokio::join!(pair.client.link.connection(), pair.server.link.connection()) };
    let (c, s) = tokio::time::timeout(Duration::from_secs(10), both)
        .await
        .expect("connected in time");
    (c.expect("client connection"), s.expect("server connection"))
}

/// Deterministic bytes (xorshift), so both ends can hash the same stream.
struct Source(u64);

impl Source {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            chunk.copy_from_slice(&self.0.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// Writes `len` pseudo-random bytes, finishes the stream; returns their SHA-256.
async fn send_data(mut send: quinn::SendStream, len: usize, seed: u64) -> [u8; 32] {
    let mut source = Source(seed);
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len());
        source.fill(&mut buf[..n]);
        hash.update(&buf[..n]);
        send.write_all(&buf[..n]).await.expect("write");
        left -= n;
    }
    send.finish().expect("finish");
    hash.finalize().into()
}

/// Reads the stream to its end, calling `progress` with the running total; returns the length
/// and the SHA-256.
async fn recv_data(
    mut recv: quinn::RecvStream,
    mut progress: impl FnMut(usize),
) -> (usize, [u8; 32]) {
    let mut hash = Sha256::new();
    let mut total = 0;
    while let Some(chunk) = recv.read_chunk(usize::MAX, true).await.expect("read") {
        hash.update(&chunk.bytes);
        total += chunk.bytes.len();
        progress(total);
    }
    (total, hash.finalize().into())
}

const MB: usize = 1_000_000;

/// (a) Connect, echo on a bidirectional stream, then 20 MB client to server, hashes equal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_echoes_and_transfers_20_mb() {
    let pair = pair(Expect::Right).await;
    let (client, server) = connect(&pair).await;
    assert_eq!(client.remote_address(), PEER_ADDR);
    assert_eq!(server.remote_address(), PEER_ADDR);

    // Echo: the server sends back what it reads.
    let echo = tokio::spawn({
        let server = server.clone();
        async move {
            let (mut send, mut recv) = server.accept_bi().await.expect("accept_bi");
            let data = recv.read_to_end(1 << 20).await.expect("read echo");
            send.write_all(&data).await.expect("write echo");
            send.finish().expect("finish echo");
        }
    });
    let (mut send, mut recv) = client.open_bi().await.expect("open_bi");
    send.write_all(b"hello over the link").await.expect("write");
    send.finish().expect("finish");
    let back = recv.read_to_end(1 << 20).await.expect("read back");
    assert_eq!(back, b"hello over the link");
    echo.await.expect("echo task");

    let receiver = tokio::spawn({
        let server = server.clone();
        async move {
            let recv = server.accept_uni().await.expect("accept_uni");
            recv_data(recv, |_| {}).await
        }
    });
    let sent = send_data(client.open_uni().await.expect("open_uni"), 20 * MB, 1).await;
    let (len, got) = receiver.await.expect("receiver");
    assert_eq!(len, 20 * MB);
    assert_eq!(got, sent);

    let stats = pair.client.link.stats();
    assert!(stats.sent_direct > 0 && stats.received > 0, "{stats:?}");
    pair.capture.assert_all_quic();
}

/// (b) The server expects another client certificate: it refuses, and the client is told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_refuses_unexpected_client_certificate() {
    let pair = pair(Expect::WrongClient).await;
    let both = async { tokio::join!(pair.client.link.connection(), pair.server.link.connection()) };
    let (client, server) = tokio::time::timeout(Duration::from_secs(10), both)
        .await
        .expect("handshake over in time");
    let server = server.expect_err("server must refuse");
    let client = client.expect_err("client must be refused");
    assert!(
        matches!(server, QuicLinkError::PeerNotAuthenticated),
        "{server}"
    );
    assert!(matches!(client, QuicLinkError::RefusedByPeer), "{client}");
    println!("server: {server}\nclient: {client}");
}

/// (b) The client expects another server certificate: it refuses, and the server is told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_refuses_unexpected_server_certificate() {
    let pair = pair(Expect::WrongServer).await;
    let both = async { tokio::join!(pair.client.link.connection(), pair.server.link.connection()) };
    let (client, server) = tokio::time::timeout(Duration::from_secs(10), both)
        .await
        .expect("handshake over in time");
    let client = client.expect_err("client must refuse");
    let server = server.expect_err("server must be refused");
    assert!(
        matches!(client, QuicLinkError::PeerNotAuthenticated),
        "{client}"
    );
    assert!(matches!(server, QuicLinkError::RefusedByPeer), "{server}");
    println!("client: {client}\nserver: {server}");
}

/// The server takes one connection: a second attempt on the same path (say, the peer's link
/// restarted) is refused, and the first connection carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_refuses_a_second_connection() {
    let mut pair = pair(Expect::Right).await;
    let (first, _server) = connect(&pair).await;
    // A second client on the client's socket: its pump now feeds the newcomer.
    let cert = LinkCertificate::generate().expect("certificate");
    let route = QuicRoute::new();
    route.set_direct(pair.client.socket.clone(), addr(&pair.server.socket));
    let server_fp = pair.server_fingerprint;
    let (second, inbound) = QuicLink::new(Role::Client, &cert, server_fp, route).expect("second");
    pair.tasks[0].abort();
    let newcomer = pump(pair.client.socket.clone(), inbound, pair.capture.clone());
    pair.tasks.push(newcomer);
    let refused = tokio::time::timeout(Duration::from_secs(10), second.connection())
        .await
        .expect("refused in time")
        .expect_err("a second connection is refused");
    println!("{refused}");
    assert!(
        matches!(&refused, QuicLinkError::Handshake(quinn::ConnectionError::ConnectionClosed(c))
            if c.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED),
        "{refused}"
    );
    assert!(first.close_reason().is_none());
}

/// (c) Direct, then relayed, then direct from a new client port, all during one 20 MB
/// transfer: it completes intact, and QUIC never sees another address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_path_changes_mid_transfer() {
    let mut pair = pair(Expect::Right).await;
    let (client, server) = connect(&pair).await;

    let (to_server, relay_up) = relay(pair.server.inbound.clone(), pair.capture.clone());
    let (to_client, relay_down) = relay(pair.client.inbound.clone(), pair.capture.clone());
    let moved = bind().await;
    let moved_pump = pump(
        moved.clone(),
        pair.client.inbound.clone(),
        pair.capture.clone(),
    );
    pair.tasks.extend([relay_up, relay_down, moved_pump]);

    let (client_route, server_route) = (pair.client.route.clone(), pair.server.route.clone());
    let server_socket = pair.server.socket.clone();
    let mut step = 0;
    let receiver = tokio::spawn(async move {
        let recv = server.accept_uni().await.expect("accept_uni");
        let got = recv_data(recv, |total| {
            if step == 0 && total >= 4 * MB {
                // The driver's fallback: both sides over the relay, one after the other.
                client_route.set_relayed(to_server.clone());
                server_route.set_relayed(to_client.clone());
                step = 1;
            } else if step == 1 && total >= 10 * MB {
                // Re-punched: direct again, the client now behind another port.
                client_route.set_direct(moved.clone(), addr(&server_socket));
                server_route.set_direct(server_socket.clone(), addr(&moved));
                step = 2;
            }
        })
        .await;
        (got, step, server)
    });
    let sent = send_data(client.open_uni().await.expect("open_uni"), 20 * MB, 2).await;
    let ((len, got), step, server) = receiver.await.expect("receiver");
    assert_eq!(step, 2, "both path changes happened");
    assert_eq!(len, 20 * MB);
    assert_eq!(got, sent);
    assert_eq!(client.remote_address(), PEER_ADDR);
    assert_eq!(server.remote_address(), PEER_ADDR);

    let (c, s) = (pair.client.link.stats(), pair.server.link.stats());
    println!("client {c:?}\nserver {s:?}");
    assert!(c.sent_relayed > 0 && s.sent_relayed > 0);
    assert!(c.sent_direct > 0 && s.sent_direct > 0);
    pair.capture.assert_all_quic();
}

/// (d) No path at all for 2 s mid-transfer: the transfer stalls, then resumes and completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_after_two_seconds_without_a_path() {
    let pair = pair(Expect::Right).await;
    let (client, server) = connect(&pair).await;

    let (client_route, server_route) = (pair.client.route.clone(), pair.server.route.clone());
    let (a, b) = (pair.client.socket.clone(), pair.server.socket.clone());
    let mut cut = None;
    let receiver = tokio::spawn(async move {
        let recv = server.accept_uni().await.expect("accept_uni");
        let got = recv_data(recv, |total| {
            if cut.is_none() && total >= 5 * MB {
                client_route.set_none();
                server_route.set_none();
                cut = Some(Instant::now());
                let (client_route, server_route) = (client_route.clone(), server_route.clone());
                let (a, b) = (a.clone(), b.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    client_route.set_direct(a.clone(), addr(&b));
                    server_route.set_direct(b.clone(), addr(&a));
                });
            }
        })
        .await;
        (got, cut)
    });
    let sent = send_data(client.open_uni().await.expect("open_uni"), 20 * MB, 3).await;
    let ((len, got), cut) = tokio::time::timeout(Duration::from_secs(60), receiver)
        .await
        .expect("transfer done in time")
        .expect("receiver");
    let cut = cut.expect("the path was cut");
    println!("resumed and done {:?} after the cut", cut.elapsed());
    assert!(cut.elapsed() >= Duration::from_secs(2));
    assert_eq!(len, 20 * MB);
    assert_eq!(got, sent);
    let stats = pair.client.link.stats();
    assert!(stats.dropped_no_route > 0, "{stats:?}");
    pair.capture.assert_all_quic();
}

/// (e) Every datagram either side sends, handshake included, starts with a QUIC-class byte:
/// the fixed bit is never greased, so the endpoint socket's demultiplexer is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_datagram_is_quic_class() {
    let pair = pair(Expect::Right).await;
    let (client, server) = connect(&pair).await;
    let receiver = tokio::spawn(async move {
        let recv = server.accept_uni().await.expect("accept_uni");
        recv_data(recv, |_| {}).await
    });
    let sent = send_data(client.open_uni().await.expect("open_uni"), 2 * MB, 4).await;
    let (_, got) = receiver.await.expect("receiver");
    assert_eq!(got, sent);
    client.close(0u32.into(), b"done");
    pair.client.link.close(b"done").await;
    pair.capture.assert_all_quic();
    println!("{:?}", pair.capture);
}

/// User and system CPU time of this process: a measure of cost that holds up better than wall
/// time on a machine shared with other work.
fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct it is given; all-zero is a valid rusage.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut usage), 0);
        usage
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// Sends `LEN` bytes client to server and prints the goodput.
async fn probe(label: &str, client: quinn::Connection, server: quinn::Connection) {
    const LEN: usize = 256 << 20;
    let receiver = tokio::spawn(async move {
        let mut recv = server.accept_uni().await.expect("accept_uni");
        let mut total = 0;
        while let Some(chunk) = recv.read_chunk(usize::MAX, false).await.expect("read") {
            total += chunk.bytes.len();
        }
        total
    });
    let start = Instant::now();
    let cpu_start = cpu_time();
    let mut send = client.open_uni().await.expect("open_uni");
    let block = Bytes::from(vec![0xa5u8; 1 << 20]);
    for _ in 0..LEN >> 20 {
        send.write_chunk(block.clone()).await.expect("write");
    }
    send.finish().expect("finish");
    let total = receiver.await.expect("receiver");
    let elapsed = start.elapsed();
    let cpu = cpu_time() - cpu_start;
    assert_eq!(total, LEN);
    let stats = client.stats();
    println!(
        "{label}: 256 MiB in {elapsed:?}: {:.0} MB/s, {:.0} MB per CPU-second (both sides); \
         lost {} of {} packets, path MTU {}",
        LEN as f64 / elapsed.as_secs_f64() / 1e6,
        LEN as f64 / cpu.as_secs_f64() / 1e6,
        stats.path.lost_packets,
        stats.path.sent_packets,
        stats.path.current_mtu,
    );
}

/// Throughput probe, not a test of speed: 256 MiB client to server on loopback, direct.
/// `cargo test --release -p p2p-client --test link_quic -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a throughput probe; run by hand in release"]
async fn throughput_probe_256_mib_direct() {
    let pair = pair(Expect::Right).await;
    let (client, server) = connect(&pair).await;
    probe("link adapter", client, server).await;
    println!(
        "  client {:?}\n  server {:?}",
        pair.client.link.stats(),
        pair.server.link.stats()
    );
}

/// The same probe with quinn on sockets of its own (GSO, GRO, recvmmsg), same TLS and transport
/// parameters: what the adapter costs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a throughput probe; run by hand in release"]
async fn throughput_probe_256_mib_plain_quinn_baseline() {
    use p2p_client::link::quic::{SERVER_NAME, auth, transport_config};
    let client_cert = LinkCertificate::generate().expect("client certificate");
    let server_cert = LinkCertificate::generate().expect("server certificate");
    let transport = Arc::new(transport_config());
    let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(
        auth::server_crypto(&server_cert, client_cert.fingerprint()).expect("server tls"),
    ));
    server_config.transport_config(transport.clone());
    let mut client_config = quinn::ClientConfig::new(Arc::new(
        auth::client_crypto(&client_cert, server_cert.fingerprint()).expect("client tls"),
    ));
    client_config.transport_config(transport);
    let mut endpoint_config = quinn::EndpointConfig::default();
    endpoint_config
        .grease_quic_bit(false)
        .max_udp_payload_size(MAX_UDP_PAYLOAD)
        .expect("payload size");
    let bind = |config: Option<quinn::ServerConfig>| {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        quinn::Endpoint::new(
            endpoint_config.clone(),
            config,
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .expect("endpoint")
    };
    let server_endpoint = bind(Some(server_config));
    let client_endpoint = bind(None);
    let server_addr = server_endpoint.local_addr().expect("server address");
    let connecting = client_endpoint
        .connect_with(client_config, server_addr, SERVER_NAME)
        .expect("connect");
    let (client, server) = tokio::join!(connecting, async {
        server_endpoint
            .accept()
            .await
            .expect("incoming")
            .await
            .expect("accepted")
    });
    probe("plain quinn (own sockets)", client.expect("client"), server).await;
}
