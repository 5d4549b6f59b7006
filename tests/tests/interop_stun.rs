//! Interoperability of `stun-server` with third-party STUN clients, over loopback only.
//!
//! Each client is the Debian/PyPI binary run as a child process against our server bound on
//! 127.0.0.1 and 127.0.0.2 (ports picked by the kernel, passed to each client explicitly):
//! - Debian `stun` 0.97 (RFC 3489): exit status 0x01 = "Open" with port preservation;
//! - coturn's `turnutils_natdiscovery` (RFC 5780): endpoint-independent mapping and filtering;
//! - `pystun3` (RFC 3489): "Open Internet".
//!
//! The expected outputs are the ones coturn 4.6.1 gives on this machine; docs/INTEROP.md records
//! them, and what each client does and does not check. None of the three clients checks where a
//! CHANGE-REQUEST reply came from, so one test here checks that with a raw socket.
//!
//! A missing tool skips its test with a loud `SKIPPED:` line, except under `CI=true`, where it
//! fails. Every child process is killed (by its pid) after [`TOOL_TIMEOUT`].

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use p2p_servers::{ServerHandle, ServerOptions};

const PRIMARY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const ALTERNATE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// Longest any client may run before it is killed (the slowest case measured is ~8 s).
const TOOL_TIMEOUT: Duration = Duration::from_secs(20);
const INSTALL_HINT: &str = "apt-get install stun-client coturn; pip install pystun3";

/// The clients have fixed habits (pystun3's default source port, shared loopback addresses), so
/// the tests in this file run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------------------------
// The server under test, shut down on drop (also when a test panics).

struct TestServer {
    handle: Option<ServerHandle>,
    /// The port of the socket every client is pointed at (on [`PRIMARY`]).
    port: u16,
    /// The other port, if the server bound one.
    alt_port: Option<u16>,
}

impl TestServer {
    fn start(two_addresses: bool) -> Self {
        let options = ServerOptions {
            primary: IpAddr::V4(PRIMARY),
            alternate: two_addresses.then_some(IpAddr::V4(ALTERNATE)),
            port: 0,
            alt_port: 0,
            workers: 1,
            tcp: false,
            ..ServerOptions::default()
        };
        let handle = ServerHandle::start(options).expect("start the STUN server under test");
        let addrs = handle.udp_addrs();
        // Owned by the guard before anything below can panic.
        let mut server = TestServer {
            handle: Some(handle),
            port: 0,
            alt_port: None,
        };
        eprintln!("server under test bound {addrs:?}");
        let first = *addrs.first().expect("the server reports its UDP addresses");
        assert_eq!(
            first.ip(),
            IpAddr::V4(PRIMARY),
            "first UDP address is on the primary IP"
        );
        server.port = first.port();
        let ports: BTreeSet<u16> = addrs.iter().map(SocketAddr::port).collect();
        server.alt_port = ports.iter().copied().find(|&p| p != server.port);
        let ips: BTreeSet<IpAddr> = addrs.iter().map(SocketAddr::ip).collect();
        if two_addresses {
            let alt = server
                .alt_port
                .expect("a two-address server binds two ports");
            let want: BTreeSet<SocketAddr> = [PRIMARY, ALTERNATE]
                .into_iter()
                .flat_map(|ip| [server.port, alt].map(|p| SocketAddr::new(IpAddr::V4(ip), p)))
                .collect();
            assert_eq!(addrs.iter().copied().collect::<BTreeSet<_>>(), want);
            assert_eq!(addrs.len(), 4);
        } else {
            assert_eq!(
                ips,
                BTreeSet::from([IpAddr::V4(PRIMARY)]),
                "single-address server"
            );
        }
        server
    }

    fn alt_port(&self) -> u16 {
        self.alt_port.expect("the server bound an alternate port")
    }

    fn primary(&self) -> String {
        format!("{PRIMARY}:{}", self.port)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            let _stats = handle.shutdown();
        }
    }
}

fn addr(ip: Ipv4Addr, port: u16) -> String {
    format!("{ip}:{port}")
}

/// A UDP port on 127.0.0.1 that nothing listens on (free a moment ago).
fn unused_port() -> u16 {
    let socket = UdpSocket::bind((PRIMARY, 0)).expect("bind an ephemeral port");
    socket.local_addr().expect("local address").port()
}

// ---------------------------------------------------------------------------------------------
// Finding and running the third-party tools.

struct Tool {
    name: &'static str,
    program: PathBuf,
    prefix: Vec<String>,
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The tool, or `None` after a loud skip line (a panic when `CI=true`).
fn tool(name: &'static str) -> Option<Tool> {
    let found = find_on_path(name)
        .map(|program| Tool {
            name,
            program,
            prefix: Vec::new(),
        })
        .or_else(|| (name == "pystun3").then(pystun3_as_module).flatten());
    if found.is_none() {
        let line = format!("SKIPPED: {name} not installed ({INSTALL_HINT})");
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{line}; missing prerequisites fail in CI");
        }
        // Straight to the stderr handle: `eprintln!` would be captured (hidden) for a passing test.
        let _ = writeln!(std::io::stderr(), "{line}");
    }
    found
}

/// `python3 -m stun.cli` when the package is installed but its script is not on PATH.
fn pystun3_as_module() -> Option<Tool> {
    let python = Tool {
        name: "python3",
        program: find_on_path("python3")?,
        prefix: Vec::new(),
    };
    let probe = run(&python, &["-c", "import stun.cli"]);
    (probe.code == Some(0)).then(|| Tool {
        name: "pystun3",
        program: python.program,
        prefix: vec!["-m".into(), "stun.cli".into()],
    })
}

struct Run {
    code: Option<i32>,
    timed_out: bool,
    elapsed: Duration,
    stdout: String,
    stderr: String,
}

/// Runs `tool args`, killing it by pid after [`TOOL_TIMEOUT`]. Output goes to files, not pipes,
/// so nothing can block on a full pipe or on a grandchild holding one open.
fn run(tool: &Tool, args: &[&str]) -> Run {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let base = std::env::temp_dir().join(format!("interop_stun_{}_{n}", std::process::id()));
    let (out_path, err_path) = (base.with_extension("out"), base.with_extension("err"));
    let out = File::create(&out_path).expect("create stdout file");
    let err = File::create(&err_path).expect("create stderr file");
    let cmdline = std::iter::once(tool.name)
        .chain(tool.prefix.iter().map(String::as_str))
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");

    let started = Instant::now();
    let mut child = Command::new(&tool.program)
        .args(&tool.prefix)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn `{cmdline}`: {e}"));
    let deadline = started + TOOL_TIMEOUT;
    let (status, timed_out) = loop {
        match child.try_wait().expect("poll the child") {
            Some(status) => break (Some(status), false),
            None if Instant::now() >= deadline => {
                let _ = child.kill(); // SIGKILL to this child's pid only
                break (child.wait().ok(), true);
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    let elapsed = started.elapsed();
    let read =
        |p: &PathBuf| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    let (stdout, stderr) = (read(&out_path), read(&err_path));
    let _ = std::fs::remove_file(&out_path);
    let _ = std::fs::remove_file(&err_path);
    let code = status.and_then(|s| s.code());
    eprintln!(
        "$ {cmdline}\n  exit {code:?} after {elapsed:.2?}{}\n--- stdout\n{stdout}\n--- stderr\n{stderr}---",
        if timed_out {
            " (KILLED: timed out)"
        } else {
            ""
        }
    );
    Run {
        code,
        timed_out,
        elapsed,
        stdout,
        stderr,
    }
}

// ---------------------------------------------------------------------------------------------
// Debian `stun` (stun-client 0.97).

/// One reply as `stun -v` prints it (on stderr): its attributes, then
/// `Received message of type T  id=N`, N being the test number in the transaction id's first byte.
#[derive(Debug, Default, Clone)]
struct StunReply {
    msg_type: u16,
    id: u8,
    mapped: Option<String>,
    source: Option<String>,
    changed: Option<String>,
}

fn stun_replies(verbose: &str) -> Vec<StunReply> {
    let mut replies = Vec::new();
    let mut current = StunReply::default();
    for line in verbose.lines().map(str::trim) {
        if line.starts_with("Received stun message") {
            current = StunReply::default();
        } else if let Some(v) = line.strip_prefix("MappedAddress = ") {
            current.mapped = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("SourceAddress = ") {
            current.source = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("ChangedAddress = ") {
            current.changed = Some(v.to_owned());
        } else if let Some(rest) = line.strip_prefix("Received message of type ") {
            let mut parts = rest.split_whitespace();
            current.msg_type = parts.next().and_then(|t| t.parse().ok()).unwrap_or(0);
            current.id = parts
                .next()
                .and_then(|t| t.strip_prefix("id="))
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            replies.push(std::mem::take(&mut current));
        }
    }
    replies
}

/// Exit status bits of `stun` (client.cxx): 0x00 open, 0x02 full cone, 0x04 restricted,
/// 0x06 port-restricted, 0x08 symmetric NAT, 0x0A symmetric firewall, 0x0C blocked;
/// `| 0x01` ports preserved, `| 0x10` no hairpin.
const STUN_OPEN_PRESERVING: i32 = 0x01;
const STUN_FIREWALL_PRESERVING: i32 = 0x0B;
const STUN_BLOCKED_NO_HAIRPIN: i32 = 0x1C;
const BINDING_SUCCESS: u16 = 0x0101;

#[test]
fn debian_stun_client_reports_open() {
    let _serial = serial();
    let Some(stun) = tool("stun") else { return };
    let server = TestServer::start(true);
    let (p, q) = (server.port, server.alt_port());
    let target = server.primary();
    let r = run(&stun, &[&target, "-v"]);

    assert!(!r.timed_out, "stun hung");
    assert_eq!(
        r.code,
        Some(STUN_OPEN_PRESERVING),
        "stun must exit 0x01 (Open, ports preserved, hairpin), as against coturn"
    );
    assert!(r.stdout.contains("Primary: Open"), "stdout: {}", r.stdout);
    for line in [
        "test I = 1",
        "test II = 1",
        "test III = 1",
        "test I(2) = 1",
        "is nat  = 0",
        "hairpin = 1",
        "preserver port = 1",
    ] {
        assert!(r.stderr.contains(line), "`stun -v` lacks {line:?}");
    }

    // What the server claims in each reply (stun itself never checks where a reply came from).
    // Test 1: plain; 2: change IP; 3: change port; all sent to the primary socket.
    // Test 10 ("I(2)"): plain, sent to CHANGED-ADDRESS's IP with the primary port.
    let replies = stun_replies(&r.stderr);
    let expect = [
        (1, addr(PRIMARY, p), addr(ALTERNATE, q)),
        (2, addr(ALTERNATE, p), addr(ALTERNATE, q)),
        (3, addr(PRIMARY, q), addr(ALTERNATE, q)),
        (10, addr(ALTERNATE, p), addr(PRIMARY, q)),
    ];
    for (id, source, changed) in expect {
        let got: Vec<&StunReply> = replies.iter().filter(|x| x.id == id).collect();
        assert!(!got.is_empty(), "no reply to test {id}: {replies:?}");
        for reply in got {
            assert_eq!(reply.msg_type, BINDING_SUCCESS, "test {id}: {reply:?}");
            assert_eq!(
                reply.source.as_deref(),
                Some(source.as_str()),
                "test {id} SOURCE-ADDRESS"
            );
            assert_eq!(
                reply.changed.as_deref(),
                Some(changed.as_str()),
                "test {id} CHANGED-ADDRESS"
            );
            let mapped = reply.mapped.as_deref().unwrap_or_default();
            assert!(
                mapped.starts_with("127.0.0.1:"),
                "test {id} MAPPED-ADDRESS {mapped}"
            );
        }
    }
}

#[test]
fn debian_stun_client_can_fail() {
    let _serial = serial();
    let Some(stun) = tool("stun") else { return };

    // Nobody listening: "Blocked" (0x0C) and no hairpin test either (0x10).
    let target = addr(PRIMARY, unused_port());
    let r = run(&stun, &[&target]);
    assert_eq!(
        r.code,
        Some(STUN_BLOCKED_NO_HAIRPIN),
        "no server must read as blocked"
    );
    assert!(
        r.stdout.contains("Primary: Blocked"),
        "stdout: {}",
        r.stdout
    );

    // A single-address server cannot honour change-IP. stun counts ANY reply to test II as
    // success (even coturn's 420 error, which makes coturn with one IP read as "Open"), so ours
    // stays silent to a classic change-IP request: the client reads "Firewall" (0x0A | 0x01).
    let server = TestServer::start(false);
    let target = server.primary();
    let r = run(&stun, &[&target, "-v"]);
    assert_eq!(
        r.code,
        Some(STUN_FIREWALL_PRESERVING),
        "single-address server must not read as Open"
    );
    assert!(
        r.stdout.contains("Primary: Firewall"),
        "stdout: {}",
        r.stdout
    );
    assert!(r.stderr.contains("test I = 1") && r.stderr.contains("test II = 0"));
    let replies = stun_replies(&r.stderr);
    assert!(
        !replies.iter().any(|x| x.id == 2),
        "change-IP must get no reply from a single-address server: {replies:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// coturn's turnutils_natdiscovery (RFC 5780).

/// The text of each "RFC 5780 response N" section of natdiscovery's output, in order.
fn natdiscovery_sections(out: &str) -> Vec<&str> {
    out.split("RFC 5780 response ").skip(1).collect()
}

fn natdiscovery_args(port: u16) -> Vec<String> {
    [
        "-m",
        "-f",
        "-L",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "127.0.0.1",
    ]
    .map(String::from)
    .to_vec()
}

#[test]
fn natdiscovery_reports_endpoint_independent_mapping_and_filtering() {
    let _serial = serial();
    let Some(natdiscovery) = tool("turnutils_natdiscovery") else {
        return;
    };
    let server = TestServer::start(true);
    let (p, q) = (server.port, server.alt_port());
    let args = natdiscovery_args(p);
    let r = run(
        &natdiscovery,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );

    assert!(!r.timed_out, "natdiscovery hung");
    assert_eq!(r.code, Some(0));
    let out = &r.stdout;
    for line in [
        "No NAT! (Endpoint Independent Mapping)",
        "NAT with Endpoint Independent Mapping!",
        "NAT with Endpoint Independent Filtering!",
    ] {
        assert!(out.contains(line), "natdiscovery lacks {line:?}");
    }
    for bad in [
        "Dependent",
        "timeout",
        "error",
        "ALG detected",
        "Cannot read",
        "not a",
    ] {
        assert!(!out.contains(bad), "natdiscovery printed {bad:?}");
    }

    // Four RFC 5780 responses: mapping test I (primary), mapping test II (alternate IP, primary
    // port), filtering test I (primary), filtering test II (change IP and port). natdiscovery
    // reads replies without checking their source; RESPONSE-ORIGIN is what the server claims.
    let sections = natdiscovery_sections(out);
    assert_eq!(sections.len(), 4, "expected 4 RFC 5780 responses");
    let origins = [
        addr(PRIMARY, p),
        addr(ALTERNATE, p),
        addr(PRIMARY, p),
        addr(ALTERNATE, q),
    ];
    for (i, (section, origin)) in sections.iter().zip(&origins).enumerate() {
        let n = i + 1;
        assert!(
            section.contains(&format!("Response origin: : {origin}")),
            "response {n} origin"
        );
        // No NAT: the reflexive address is the local one.
        let reflexive = section
            .lines()
            .find_map(|l| l.split("UDP reflexive addr: ").nth(1))
            .map(str::trim);
        let local = section
            .lines()
            .find_map(|l| l.split("Local addr: : ").nth(1))
            .map(str::trim);
        assert!(
            reflexive.is_some() && reflexive == local,
            "response {n}: {reflexive:?} vs {local:?}"
        );
    }
    // OTHER-ADDRESS of the primary socket: the other IP and the other port.
    for n in [0, 2] {
        assert!(sections[n].contains(&format!("Other addr: : {}", addr(ALTERNATE, q))));
    }
}

#[test]
fn natdiscovery_can_fail_without_an_alternate_address() {
    let _serial = serial();
    let Some(natdiscovery) = tool("turnutils_natdiscovery") else {
        return;
    };
    // One address: no OTHER-ADDRESS, so natdiscovery runs no RFC 5780 test and can say nothing
    // about filtering (as with coturn or stund with one address).
    let server = TestServer::start(false);
    let args = natdiscovery_args(server.port);
    let r = run(
        &natdiscovery,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_eq!(r.code, Some(0));
    assert!(r.stdout.contains("No NAT! (Endpoint Independent Mapping)"));
    assert!(
        !r.stdout.contains("RFC 5780 response"),
        "no OTHER-ADDRESS expected"
    );
    assert!(!r.stdout.contains("Endpoint Independent Filtering"));
}

// ---------------------------------------------------------------------------------------------
// pystun3.

#[test]
fn pystun3_reports_open_internet() {
    let _serial = serial();
    let Some(pystun3) = tool("pystun3") else {
        return;
    };
    let server = TestServer::start(true);
    let port = server.port.to_string();
    let source_port = unused_port().to_string();
    let r = run(
        &pystun3,
        &[
            "-H",
            "127.0.0.1",
            "-P",
            &port,
            "-i",
            "127.0.0.1",
            "-p",
            &source_port,
        ],
    );
    assert!(
        !r.timed_out,
        "pystun3 hung (it loops forever on error responses)"
    );
    assert_eq!(
        r.code,
        Some(0),
        "pystun3 failed (it crashes on unaligned attributes)"
    );
    assert!(
        r.stdout.contains("NAT Type: Open Internet"),
        "stdout: {}",
        r.stdout
    );
    assert!(r.stdout.contains("External IP: 127.0.0.1"));
    assert!(r.stdout.contains(&format!("External Port: {source_port}")));
    assert!(
        r.elapsed < Duration::from_secs(4),
        "an unanswered test costs pystun3 8 s"
    );
}

#[test]
fn pystun3_can_fail() {
    let _serial = serial();
    let Some(pystun3) = tool("pystun3") else {
        return;
    };
    let server = TestServer::start(true);
    let port = server.port.to_string();
    let source_port = unused_port().to_string();
    // Without -i pystun3 compares the mapped IP to 0.0.0.0 and reads "no NAT" as a NAT, so the
    // same server reads as "Full Cone" (as coturn does): the "Open Internet" check discriminates.
    let r = run(
        &pystun3,
        &["-H", "127.0.0.1", "-P", &port, "-p", &source_port],
    );
    assert_eq!(r.code, Some(0));
    assert!(
        r.stdout.contains("NAT Type: Full Cone"),
        "stdout: {}",
        r.stdout
    );
    assert!(!r.stdout.contains("Open Internet"));
}

// ---------------------------------------------------------------------------------------------
// What none of the clients checks: the real source address of CHANGE-REQUEST replies.

const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];

fn binding_request(tid: &[u8; 16], change: u32) -> Vec<u8> {
    let mut m = vec![0x00, 0x01, 0x00, 0x08];
    m.extend_from_slice(tid);
    m.extend_from_slice(&[0x00, 0x03, 0x00, 0x04]);
    m.extend_from_slice(&change.to_be_bytes());
    m
}

/// (type, value) of each attribute; panics on a malformed message.
fn attributes(m: &[u8]) -> Vec<(u16, &[u8])> {
    assert!(m.len() >= 20, "short reply");
    let len = usize::from(u16::from_be_bytes([m[2], m[3]]));
    assert_eq!(m.len(), 20 + len, "length field vs datagram size");
    let mut out = Vec::new();
    let mut rest = &m[20..];
    while !rest.is_empty() {
        assert!(rest.len() >= 4, "truncated attribute header");
        let t = u16::from_be_bytes([rest[0], rest[1]]);
        let l = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        let padded = l.div_ceil(4) * 4;
        assert!(rest.len() >= 4 + padded, "truncated attribute {t:#06x}");
        out.push((t, &rest[4..4 + l]));
        rest = &rest[4 + padded..];
    }
    out
}

fn plain_address(v: &[u8]) -> SocketAddr {
    assert_eq!(v.len(), 8, "IPv4 address attribute");
    assert_eq!(v[1], 0x01, "IPv4 family");
    let port = u16::from_be_bytes([v[2], v[3]]);
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(v[4], v[5], v[6], v[7])), port)
}

#[test]
fn change_request_is_answered_from_the_changed_address() {
    let _serial = serial();
    let server = TestServer::start(true);
    let (p, q) = (server.port, server.alt_port());
    let to = SocketAddr::new(IpAddr::V4(PRIMARY), p);
    let sock = |ip: Ipv4Addr, port: u16| SocketAddr::new(IpAddr::V4(ip), port);
    let cases = [
        (0, sock(PRIMARY, p)),
        (2, sock(PRIMARY, q)),
        (4, sock(ALTERNATE, p)),
        (6, sock(ALTERNATE, q)),
    ];
    for classic in [true, false] {
        for (i, &(change, expected_from)) in cases.iter().enumerate() {
            let client = UdpSocket::bind((PRIMARY, 0)).expect("bind client");
            client
                .set_read_timeout(Some(Duration::from_millis(300)))
                .expect("set timeout");
            let mut tid = [0u8; 16];
            tid[..4].copy_from_slice(if classic { b"clas" } else { &MAGIC_COOKIE });
            tid[4] = u8::try_from(i).expect("small");
            tid[5..].copy_from_slice(b"interop-tst");
            let request = binding_request(&tid, change);
            let mut buf = [0u8; 1500];
            // Up to 3 tries (loopback does not lose packets, but be fair to a busy machine).
            let mut reply = None;
            for _ in 0..3 {
                client.send_to(&request, to).expect("send");
                if let Ok((n, from)) = client.recv_from(&mut buf) {
                    reply = Some((n, from));
                    break;
                }
            }
            let kind = if classic { "classic" } else { "modern" };
            let (n, from) = reply.unwrap_or_else(|| panic!("{kind} change={change}: no reply"));
            let m = &buf[..n];
            assert_eq!(
                from, expected_from,
                "{kind} change={change}: reply's real source"
            );
            assert_eq!(
                &m[..2],
                &[0x01, 0x01],
                "{kind} change={change}: Binding success"
            );
            assert_eq!(&m[4..20], &tid, "transaction id echoed");
            let attrs = attributes(m);
            let find = |t: u16| attrs.iter().find(|(ty, _)| *ty == t).map(|(_, v)| *v);
            let me = client.local_addr().expect("local address");
            if classic {
                // RFC 3489 answer only; every length a multiple of 4 (pystun3 ignores padding).
                for (t, v) in &attrs {
                    assert!(
                        v.len() % 4 == 0,
                        "classic attribute {t:#06x} has length {}",
                        v.len()
                    );
                    assert!(
                        *t >= 0x8000 || [1, 4, 5].contains(t),
                        "classic reply has {t:#06x}"
                    );
                }
                assert_eq!(find(0x0001).map(plain_address), Some(me), "MAPPED-ADDRESS");
                assert_eq!(
                    find(0x0004).map(plain_address),
                    Some(from),
                    "SOURCE-ADDRESS"
                );
                assert_eq!(
                    find(0x0005).map(plain_address),
                    Some(sock(ALTERNATE, q)),
                    "CHANGED"
                );
            } else {
                assert_eq!(
                    find(0x802B).map(plain_address),
                    Some(from),
                    "RESPONSE-ORIGIN"
                );
                assert_eq!(
                    find(0x802C).map(plain_address),
                    Some(sock(ALTERNATE, q)),
                    "OTHER"
                );
                let x = find(0x0020).expect("XOR-MAPPED-ADDRESS");
                assert_eq!(x.len(), 8);
                let port = u16::from_be_bytes([x[2] ^ 0x21, x[3] ^ 0x12]);
                let ip = Ipv4Addr::new(x[4] ^ 0x21, x[5] ^ 0x12, x[6] ^ 0xA4, x[7] ^ 0x42);
                assert_eq!(
                    SocketAddr::new(IpAddr::V4(ip), port),
                    me,
                    "XOR-MAPPED-ADDRESS"
                );
            }
        }
    }
}
