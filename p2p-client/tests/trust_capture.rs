//! A packet capture of a whole session (register, login, contacts, presence, an introduction
//! and a chat through the switchboard relay) shows no user name, password, candidate address,
//! ticket or message text: everything on the rendezvous and switchboard connections is inside
//! TLS (docs/SECURITY.md section 2).
//!
//! Needs root and tcpdump: without them the test says SKIPPED and passes, except in CI
//! (`CI=true`), where a missing prerequisite fails it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod client;
mod loopback;
mod trust_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use trust_support::*;

fn prerequisites() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root (to capture on the loopback interface)".into());
    }
    match Command::new("tcpdump").arg("--version").output() {
        Ok(out) if out.status.success() => Ok(()),
        _ => Err("needs tcpdump (apt-get install tcpdump)".into()),
    }
}

/// Skips loudly, or fails in CI.
fn skip(why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true and the capture test cannot run: {why}");
    }
    eprintln!("SKIPPED: packet capture test: {why}");
}

/// tcpdump on `lo` for the two TCP ports, writing to `file`; returns once it listens.
fn start_capture(file: &std::path::Path, ports: [u16; 2]) -> Child {
    let filter = format!("tcp port {} or tcp port {}", ports[0], ports[1]);
    let mut child = Command::new("tcpdump")
        .args(["-i", "lo", "--immediate-mode", "-U", "-n", "-s", "0", "-w"])
        .arg(file)
        .arg(&filter)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tcpdump");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        line.clear();
        assert!(Instant::now() < deadline, "tcpdump did not start");
        if stderr.read_line(&mut line).unwrap() == 0 {
            panic!("tcpdump exited: {line}");
        }
        if line.contains("listening on") {
            break;
        }
    }
    // Keep draining its stderr so it never blocks on a full pipe; shown if the test fails.
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = stderr.read_to_string(&mut rest);
        eprintln!("tcpdump: {rest}");
    });
    child
}

/// Stops our tcpdump with SIGINT (it then flushes the file) and waits for it. First a marker
/// is sent to `port` on loopback and awaited in `file`: tcpdump writes packets in the order it
/// captured them (`-U`), so once the marker is there, so is everything sent before it.
fn stop_capture(mut child: Child, file: &std::path::Path, port: u16) {
    const MARKER: &[u8] = b"end-of-capture-marker";
    let mut marker = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    marker.write_all(MARKER).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read(file).is_ok_and(|bytes| contains(&bytes, MARKER)) {
        assert!(Instant::now() < deadline, "tcpdump never wrote the marker");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(marker);
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.wait();
}

/// TCP payload bytes per destination port in a pcap file (Ethernet, IPv4, no options assumed
/// beyond what the header lengths say).
fn tcp_payload_by_port(pcap: &[u8]) -> std::collections::HashMap<u16, usize> {
    let mut out = std::collections::HashMap::new();
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap()) as usize;
    let mut at = 24; // the file header
    while at + 16 <= pcap.len() {
        let captured = u32_at(pcap, at + 8);
        let frame = &pcap[at + 16..(at + 16 + captured).min(pcap.len())];
        at += 16 + captured;
        // Ethernet II with IPv4 and TCP.
        if frame.len() < 14 + 20 || frame[12..14] != [0x08, 0x00] || frame[14 + 9] != 6 {
            continue;
        }
        let ip = &frame[14..];
        let ip_header = usize::from(ip[0] & 0x0F) * 4;
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        let Some(tcp) = ip.get(ip_header..total.min(ip.len())) else {
            continue;
        };
        if tcp.len() < 20 {
            continue;
        }
        let port = u16::from_be_bytes([tcp[2], tcp[3]]);
        let data = tcp.len() - usize::from(tcp[12] >> 4) * 4;
        *out.entry(port).or_insert(0) += data;
    }
    out
}

fn chat(servers: &Servers, home: &TempDir, user: &str, peer: &str, lines: &[String]) -> Child {
    let mut child = client(
        servers.rendezvous,
        home.path(),
        user,
        &[
            "chat",
            "--json",
            "--no-direct",
            "--peer",
            peer,
            "--bind",
            "127.0.0.1",
        ],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for line in lines {
        writeln!(stdin, "{line}").unwrap();
    }
    // Closing stdin ends the chat once every message is acknowledged.
    drop(stdin);
    child
}

fn finish(mut child: Child, who: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{who}'s chat did not end");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    let mut err = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{who}: {status}\n{err}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_capture_of_a_whole_session_shows_no_names_passwords_addresses_or_messages() {
    if let Err(why) = prerequisites() {
        skip(&why);
        return;
    }
    let servers = Servers::start();
    let home = TempDir::new("trust-capture");
    let pcap = home.path().join("session.pcap");
    let capture = start_capture(
        &pcap,
        [servers.rendezvous.port(), servers.switchboard.port()],
    );

    let (alice, bob) = ("quokkanova", "wombatvega");
    pair(servers.rendezvous, home.path(), alice, bob);
    // Presence: alice is busy while bob looks at his contacts.
    let mut status = client(servers.rendezvous, home.path(), alice, &["status", "busy"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = ok(
            servers.rendezvous,
            home.path(),
            bob,
            &["contacts", "list", "--json"],
        );
        let list: Value = serde_json::from_slice(&list.stdout).unwrap();
        if list[0]["presence"] == "busy" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "bob never saw alice busy: {list}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(status.stdin.take());
    let _ = status.wait();

    // A relayed chat.
    let texts = |who: &str| -> Vec<String> {
        (0..3)
            .map(|i| format!("{who}-whispers-marmalade-{i}"))
            .collect()
    };
    let a = chat(&servers, &home, alice, bob, &texts(alice));
    let b = chat(&servers, &home, bob, alice, &texts(bob));
    let a_events = finish(a, alice);
    let b_events = finish(b, bob);
    let received = |events: &[Value]| events.iter().filter(|e| e["event"] == "message").count();
    assert_eq!(received(&a_events), 3, "{a_events:#?}");
    assert_eq!(received(&b_events), 3, "{b_events:#?}");
    stop_capture(capture, &pcap, servers.rendezvous.port());

    let bytes = std::fs::read(&pcap).unwrap();
    // The capture really holds the session, on both services: TCP payload to each port, and
    // TLS 1.3 application data records (0x17 0x03 0x03).
    let payload = tcp_payload_by_port(&bytes);
    for port in [servers.rendezvous.port(), servers.switchboard.port()] {
        let n = payload.get(&port).copied().unwrap_or(0);
        assert!(n > 1_000, "only {n} payload bytes to port {port} captured");
    }
    assert!(
        contains(&bytes, &[0x17, 0x03, 0x03]),
        "no TLS records captured"
    );
    let mut needles: Vec<String> = vec![
        alice.into(),
        bob.into(),
        format!("{alice}-password"),
        format!("{bob}-password"),
        "SCRAM".into(),
        "P2P1".into(),
        "cand=".into(),
        "host/".into(),
        "srflx/".into(),
        "ticket=".into(),
        "127.0.0.1:".into(),
        "marmalade".into(),
    ];
    needles.extend(texts(alice));
    needles.extend(texts(bob));
    for needle in &needles {
        assert!(
            !contains(&bytes, needle.as_bytes()),
            "the capture contains {needle:?}"
        );
    }
}
