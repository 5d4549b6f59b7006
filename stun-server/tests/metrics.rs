//! `stun-server --metrics`: the binary serves `/metrics` over HTTP, and a scrape shows exactly
//! the traffic the test sent (STUN over UDP on every socket and TCP, drops, rendezvous logins
//! and an introduction, the switchboard's tickets). Without the flag nothing more listens.

// Test code: a panic with the failing value is the report we want.
#![allow(clippy::unwrap_used)]

mod rendezvous_support;
mod server_process;
// The one parser of the tests crate, which this crate cannot depend on; not every helper in
// it is used here.
#[allow(dead_code)]
#[path = "../../tests/src/prometheus/text.rs"]
mod prometheus_text;

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use prometheus_text::{Series, parse};
use rendezvous_support::{Client, b64};
use server_process::{CHEAP_KDF, Running, command, interrupt_and_wait, start_until};
use shared::stun::{ChangeRequest, Class, MessageWriter, Method, TransactionId};

/// The value of `name` with exactly `labels`; panics when there is no such series.
fn value(samples: &BTreeMap<Series, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    prometheus_text::value(samples, name, labels)
        .unwrap_or_else(|| panic!("no series {name} {labels:?}"))
}

/// One HTTP/1.1 request; returns the status line, the headers and the body.
fn http(addr: SocketAddr, method: &str, path: &str) -> (String, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_owned(), headers.to_owned(), body.to_owned())
}

fn scrape(addr: SocketAddr) -> BTreeMap<Series, f64> {
    let (status, headers, body) = http(addr, "GET", "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        headers.contains("Content-Type: text/plain; version=0.0.4"),
        "{headers}"
    );
    parse(&body).unwrap()
}

fn request(tid: TransactionId, build: impl FnOnce(&mut MessageWriter<'_>)) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    let mut w = MessageWriter::new(&mut buf, Method::BINDING, Class::Request, tid).unwrap();
    build(&mut w);
    let len = w.finish();
    buf.truncate(len);
    buf
}

/// Sends `data` to `to` and waits for one reply; returns where it came from.
fn exchange(socket: &UdpSocket, to: SocketAddr, data: &[u8]) -> SocketAddr {
    socket.send_to(data, to).unwrap();
    let mut buf = [0u8; 2048];
    socket.recv_from(&mut buf).unwrap().1
}

/// The text after `marker` in `log`, up to `end`.
fn logged<'a>(log: &'a str, marker: &str, end: &str) -> &'a str {
    let rest = log
        .split(marker)
        .nth(1)
        .unwrap_or_else(|| panic!("no {marker:?} in:\n{log}"));
    rest.split(end).next().unwrap()
}

/// The TCP ports `pid` listens on: its socket inodes matched against /proc/net/tcp{,6}.
fn listening_ports(pid: u32) -> HashSet<u16> {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            Some(link.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let mut ports = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address is fields[1] (ADDR:PORT in hex), st fields[3] (0A = LISTEN), inode
            // fields[9].
            if fields[3] == "0A" && inodes.contains(fields[9]) {
                let port = fields[1].rsplit(':').next().unwrap();
                ports.insert(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    ports
}

/// A temporary database directory, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("metrics-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn db(&self) -> String {
        self.0.join("rendezvous.db").to_str().unwrap().to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every service on free loopback ports, one UDP worker (so one rate limiter sees every
/// request), a small rate limit, and `extra` flags.
fn start(db: &str, extra: &[&str]) -> (Running, String) {
    let mut args = vec![
        "--port",
        "0",
        "--alt-port",
        "0",
        "--workers",
        "1",
        "--rate-limit",
        "1",
        "--rate-burst",
        "10",
        "--rendezvous",
        "127.0.0.1:0",
        "--switchboard",
        "127.0.0.1:0",
        "--min-kdf",
        CHEAP_KDF,
        "--db",
        db,
    ];
    args.extend(extra);
    let (running, log, _) = start_until(command(&args), "rendezvous listening on ");
    (running, log)
}

/// The ports every service of [`start`] listens on over TCP: STUN, rendezvous, switchboard.
fn service_ports(log: &str) -> (SocketAddr, SocketAddr, SocketAddr) {
    let tcp = logged(log, "tcp=", " ").parse().unwrap();
    let rendezvous = logged(log, "rendezvous listening on ", " ").trim().parse();
    let switchboard = logged(log, "switchboard listening on ", " ").trim().parse();
    (tcp, rendezvous.unwrap(), switchboard.unwrap())
}

#[test]
fn a_scrape_counts_exactly_what_was_served() {
    let dir = TempDir::new("counts");
    let (running, log) = start(&dir.db(), &["--metrics", "127.0.0.1:0"]);
    let metrics: SocketAddr = logged(&log, "metrics listening on http://", "/metrics")
        .parse()
        .unwrap();
    let udp: Vec<SocketAddr> = logged(&log, "udp=", " tcp=")
        .split(", ")
        .map(|a| a.parse().unwrap())
        .collect();
    let [a1p1, a1p2, a2p1, a2p2] = udp[..] else {
        panic!("four UDP sockets: {udp:?}")
    };
    let (stun_tcp, rendezvous, switchboard) = service_ports(&log);
    // What listens is the three services and the metrics endpoint, nothing else.
    let ports: HashSet<u16> = [stun_tcp, rendezvous, switchboard, metrics]
        .map(|a| a.port())
        .into();
    assert_eq!(listening_ports(running.0.id()), ports);

    // STUN over UDP: two bare classic requests and garbage on A1P1, a bare modern one on
    // A1P2, a modern CHANGE-REQUEST on A1P1 answered from A2P2, a classic one with an unknown
    // comprehension-required attribute on A2P1 (an error answer).
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let classic = |n: u8| TransactionId::Classic([n; 16]);
    let modern = |n: u8| TransactionId::Modern([n; 12]);
    socket.send_to(b"not STUN, just noise", a1p1).unwrap();
    assert_eq!(exchange(&socket, a1p1, &request(classic(1), |_| {})), a1p1);
    assert_eq!(exchange(&socket, a1p1, &request(classic(2), |_| {})), a1p1);
    assert_eq!(exchange(&socket, a1p2, &request(modern(3), |_| {})), a1p2);
    let both = ChangeRequest {
        change_ip: true,
        change_port: true,
    };
    let changed = request(modern(4), |w| w.add_change_request(both).unwrap());
    assert_eq!(exchange(&socket, a1p1, &changed), a2p2);
    let unknown = request(classic(5), |w| w.add_raw(0x7F01, b"abcd").unwrap());
    assert_eq!(exchange(&socket, a2p1, &unknown), a2p1);
    // A flood at A2P2 runs into the rate limit: what is not answered was dropped.
    let flood = 40;
    for n in 0..flood {
        socket
            .send_to(&request(modern(100 + n), |_| {}), a2p2)
            .unwrap();
    }
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut answered: u8 = 0;
    let mut buf = [0u8; 2048];
    while socket.recv_from(&mut buf).is_ok() {
        answered += 1;
    }
    assert!(0 < answered && answered < flood, "{answered} of {flood}");
    // One modern request over TCP.
    let mut tcp = TcpStream::connect(stun_tcp).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    tcp.write_all(&request(modern(6), |_| {})).unwrap();
    let mut header = [0u8; 20];
    tcp.read_exact(&mut header).unwrap();

    // The rendezvous: alice and bob log in, a third connection gets alice's password wrong,
    // and alice is introduced to bob (which grants the switchboard two tickets of one session).
    let fingerprint = server_process::logged_fingerprint(&log);
    let online = |name: &str| {
        let mut client = Client::connect(rendezvous, fingerprint);
        client.register(name, &format!("{name} pw"));
        client.login(name, &format!("{name} pw")).unwrap();
        client
    };
    let (mut alice, mut bob) = (online("alice"), online("bob"));
    let mut guesser = Client::connect(rendezvous, fingerprint);
    let refused = guesser.login("alice", "wrong").unwrap_err();
    assert_eq!(refused.command.error_code(), Some(911));
    alice.ok("ADC", &["bob"]);
    bob.ok("ADC", &["alice"]);
    alice.ok("CHG", &["NLN"]);
    bob.ok("CHG", &["NLN"]);
    let alice_key = format!("key={}", b64(&[1; 32]));
    let inv = alice.ok("INV", &["bob", &alice_key, "cand=host/127.0.0.1:40000"]);
    let sid = inv.param(1).unwrap().to_owned();
    bob.push("RNG", &[&sid, "alice"]);
    bob.ok("ANS", &[&sid, &format!("key={}", b64(&[2; 32]))]);
    alice.wait_for("ITR", |l| l.command.as_str() == "ITR");

    // STUN workers publish every 250 ms: scrape until the last request shows, then compare.
    let deadline = Instant::now() + Duration::from_secs(5);
    let udp_labels = |socket, kind| [("transport", "udp"), ("socket", socket), ("kind", kind)];
    let samples = loop {
        let samples = scrape(metrics);
        let flood_seen = value(
            &samples,
            "stun_requests_total",
            &udp_labels("a2p2", "modern"),
        );
        let tcp_seen = value(
            &samples,
            "stun_requests_total",
            &[("transport", "tcp"), ("socket", "a1p1"), ("kind", "modern")],
        );
        if (flood_seen, tcp_seen) == (f64::from(flood), 1.0) || Instant::now() > deadline {
            break samples;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let requests = |socket, kind| value(&samples, "stun_requests_total", &udp_labels(socket, kind));
    let responses = |socket, kind, class| {
        let [a, b, c] = udp_labels(socket, kind);
        value(
            &samples,
            "stun_responses_total",
            &[a, b, c, ("class", class)],
        )
    };
    assert_eq!(requests("a1p1", "classic"), 2.0);
    assert_eq!(requests("a1p1", "modern"), 1.0);
    assert_eq!(requests("a1p2", "modern"), 1.0);
    assert_eq!(requests("a2p1", "classic"), 1.0);
    assert_eq!(requests("a2p2", "modern"), f64::from(flood));
    for (socket, kind) in [("a1p2", "classic"), ("a2p1", "modern"), ("a2p2", "classic")] {
        assert_eq!(requests(socket, kind), 0.0, "{socket} {kind}");
    }
    assert_eq!(responses("a1p1", "classic", "success"), 2.0);
    assert_eq!(responses("a1p1", "modern", "success"), 0.0);
    assert_eq!(responses("a1p2", "modern", "success"), 1.0);
    assert_eq!(responses("a2p1", "classic", "error"), 1.0);
    assert_eq!(responses("a2p1", "classic", "success"), 0.0);
    // The CHANGE-REQUEST's answer and the flood's answered part left from A2P2.
    assert_eq!(
        responses("a2p2", "modern", "success"),
        f64::from(1 + answered)
    );
    let dropped = |transport, reason| {
        value(
            &samples,
            "stun_dropped_total",
            &[("transport", transport), ("reason", reason)],
        )
    };
    assert_eq!(dropped("udp", "rate_limited"), f64::from(flood - answered));
    assert_eq!(dropped("udp", "malformed"), 1.0);
    assert_eq!(dropped("udp", "change_refused"), 0.0);
    assert_eq!(dropped("tcp", "rate_limited"), 0.0);
    let tcp_responses = [
        ("transport", "tcp"),
        ("socket", "a1p1"),
        ("kind", "modern"),
        ("class", "success"),
    ];
    assert_eq!(value(&samples, "stun_responses_total", &tcp_responses), 1.0);
    let accepted = [("outcome", "accepted")];
    assert_eq!(
        value(&samples, "stun_tcp_connections_total", &accepted),
        1.0
    );

    let logins = |outcome| value(&samples, "rendezvous_logins_total", &[("outcome", outcome)]);
    assert_eq!(logins("ok"), 2.0);
    assert_eq!(logins("auth_failed"), 1.0);
    assert_eq!(logins("throttled"), 0.0);
    assert_eq!(logins("other"), 0.0);
    assert_eq!(value(&samples, "rendezvous_introductions_total", &[]), 1.0);
    assert_eq!(value(&samples, "rendezvous_users_online", &[]), 2.0);
    assert_eq!(value(&samples, "rendezvous_sessions_online", &[]), 2.0);
    assert_eq!(value(&samples, "rendezvous_connections", &[]), 3.0);
    assert_eq!(value(&samples, "switchboard_sessions", &[]), 1.0);
    assert_eq!(value(&samples, "switchboard_connections", &[]), 0.0);
    assert_eq!(value(&samples, "switchboard_relayed_bytes_total", &[]), 0.0);

    // Only GET /metrics is served.
    assert_eq!(http(metrics, "GET", "/").0, "HTTP/1.1 404 Not Found");
    assert_eq!(
        http(metrics, "GET", "/metricsx").0,
        "HTTP/1.1 404 Not Found"
    );
    let (status, headers, _) = http(metrics, "POST", "/metrics");
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    assert!(headers.contains("Allow: GET"), "{headers}");
    drop((alice, bob, guesser));
    assert!(interrupt_and_wait(running).success());
}

#[test]
fn without_the_flag_nothing_more_listens() {
    let dir = TempDir::new("off");
    let (running, log) = start(&dir.db(), &[]);
    assert!(!log.contains("metrics listening"), "{log}");
    let (stun_tcp, rendezvous, switchboard) = service_ports(&log);
    let ports: HashSet<u16> = [stun_tcp, rendezvous, switchboard].map(|a| a.port()).into();
    assert_eq!(listening_ports(running.0.id()), ports);
    assert!(interrupt_and_wait(running).success());
}
