//! The trust properties of docs/SECURITY.md, each shown against a real attacker:
//!
//! - a man in the middle who injects a line into the rendezvous connection after login gets
//!   nothing executed (TLS);
//! - one who terminates TLS with its own certificate is refused by a client that pinned the
//!   server, and cannot relay the login of a client that trusts it (SCRAM channel binding);
//! - a malicious rendezvous server that swaps the keys in an introduction is caught
//!   (`key_changed`, exit 3), and no message text reaches it;
//! - a packet capture of a whole session shows no user name, password, address or message
//!   (root and tcpdump; skipped loudly otherwise, a failure in CI).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod client;
mod loopback;
mod trust_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use shared::identity::Fingerprint;

use trust_support::evil::{EVIL_KEY, EvilServer};
use trust_support::proxy::{Mode, Proxy};
use trust_support::*;

/// Waits for `child` at most `timeout`; kills it (our own child, by its handle) on timeout.
fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child's stdout and stderr, read to their end (after it exited).
fn outputs(child: &mut Child) -> (String, String) {
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut pipe) = child.stdout.take() {
        let _ = pipe.read_to_string(&mut out);
    }
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut err);
    }
    (out, err)
}

#[test]
fn a_line_injected_after_login_is_never_executed() {
    let servers = Servers::start();
    let home = TempDir::new("trust-inject");
    ok(
        servers.rendezvous,
        home.path(),
        "carol",
        &["register", "--kdf", KDF],
    );
    ok(
        servers.rendezvous,
        home.path(),
        "alice",
        &["register", "--kdf", KDF],
    );
    let proxy = Proxy::start(servers.rendezvous, servers.tls.fingerprint(), Mode::Forward);

    // alice stays logged in through the proxy.
    let mut status = client(proxy.addr, home.path(), "alice", &["status", "online"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while servers.online() == 0 {
        assert!(Instant::now() < deadline, "alice never logged in");
        std::thread::sleep(Duration::from_millis(20));
    }
    // What the attacker on the path would send to add a contact of its choice (MSN let this
    // through: the line protocol had no integrity).
    proxy.inject(b"ADC 4000000000 carol\r\n");
    let deadline = Instant::now() + Duration::from_secs(5);
    while proxy.seen(|s| s.injected) == 0 {
        assert!(Instant::now() < deadline, "the proxy never injected");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The server's TLS layer rejects the forged record and drops the connection: the client
    // sees its connection lost (and, being a long-lived status, logs in again).
    let stderr = status.stderr.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = String::new();
    let lost = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains("connection lost") => break true,
            Ok(line) => seen.push_str(&line),
            Err(_) => break false,
        }
    };
    let _ = status.kill();
    let _ = status.wait();
    reader.join().unwrap();
    assert!(lost, "the broken connection was not reported: {seen}");
    let list = ok(
        servers.rendezvous,
        home.path(),
        "alice",
        &["contacts", "list", "--json"],
    );
    let contacts: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(contacts, serde_json::json!([]), "the injected ADC ran");
}

#[test]
fn a_tls_terminating_proxy_is_refused_by_a_client_that_pinned_the_server() {
    let servers = Servers::start();
    let home = TempDir::new("trust-pinned");
    let proxy = Proxy::start(servers.rendezvous, servers.tls.fingerprint(), Mode::Forward);
    // First use, through an honest path: the client pins the real server's key.
    let first = ok(
        proxy.addr,
        home.path(),
        "alice",
        &["register", "--kdf", KDF],
    );
    let real = servers.tls.fingerprint().to_string();
    assert!(
        text(&first.stderr).contains(&real),
        "the first connection should print the pinned fingerprint: {}",
        text(&first.stderr)
    );

    proxy.set_mode(Mode::Terminate);
    let out = run(proxy.addr, home.path(), "alice", &["contacts", "list"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let fake = proxy.fingerprint.to_string();
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains(&fake)).collect();
    assert_eq!(lines.len(), 1, "one line names the new key: {stderr}");
    assert!(lines[0].contains(&real), "and the pinned one: {stderr}");
    assert!(lines[0].contains("known_servers"), "and the file: {stderr}");
    // The proxy counts the failed handshake when its side of it ends, which may be just
    // after the client has exited.
    let deadline = Instant::now() + Duration::from_secs(5);
    while proxy.seen(|s| s.failed_handshakes) == 0 {
        assert!(
            Instant::now() < deadline,
            "the client should refuse the handshake"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    proxy.seen(|s| {
        assert!(
            s.from_client.is_empty(),
            "the client sent plaintext to the proxy: {:?}",
            text(&s.from_client)
        );
    });
    assert_eq!(servers.online(), 0);
}

#[test]
fn a_proxy_the_client_trusts_cannot_relay_its_login() {
    let servers = Servers::start();
    let home = TempDir::new("trust-binding");
    ok(
        servers.rendezvous,
        home.path(),
        "alice",
        &["register", "--kdf", KDF],
    );
    // A fresh home has never seen the real server: it pins whatever answers first, here the
    // proxy's own certificate (the client was "told to trust it").
    let fooled = TempDir::new("trust-binding-fooled");
    let proxy = Proxy::start(
        servers.rendezvous,
        servers.tls.fingerprint(),
        Mode::Terminate,
    );
    let out = run(proxy.addr, fooled.path(), "alice", &["contacts", "list"]);
    let stderr = text(&out.stderr);
    assert!(
        !out.status.success(),
        "the relayed login must fail: {stderr}"
    );
    assert!(
        stderr.contains("authentication failed"),
        "SCRAM should refuse the proof made for another TLS session: {stderr}"
    );
    proxy.seen(|s| {
        // The proxy really relayed the exchange in the clear, and still did not get in.
        assert!(contains(&s.from_client, b"USR 1 SCRAM") || contains(&s.from_client, b"USR "));
        assert!(contains(&s.from_server, b"911"), "{}", text(&s.from_server));
    });
    assert_eq!(servers.online(), 0);
    // The same password straight to the server works: only the relay was refused.
    ok(
        servers.rendezvous,
        home.path(),
        "alice",
        &["contacts", "list"],
    );
}

#[test]
fn a_server_that_asks_for_cheap_key_stretching_gets_no_proof() {
    // The test servers take verifiers made with a cheap KDF (m=8 KiB, t=1). A client that was
    // not told to accept that refuses to answer the server-first message: a proof made at
    // that cost could be cracked offline by whoever holds it (a server it should not have
    // trusted, or a man in the middle it was made to trust).
    let servers = Servers::start();
    let home = TempDir::new("trust-weak-kdf");
    ok(
        servers.rendezvous,
        home.path(),
        "alice",
        &["register", "--kdf", KDF],
    );
    let out = client(
        servers.rendezvous,
        home.path(),
        "alice",
        &["contacts", "list"],
    )
    .env_remove("P2P_MIN_KDF")
    .output()
    .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("argon2id:m=8:t=1:p=1") && stderr.contains("weaker than"),
        "{stderr}"
    );
    assert_eq!(servers.online(), 0);
    // Told explicitly, the same client logs in.
    let out = client(
        servers.rendezvous,
        home.path(),
        "alice",
        &["contacts", "list"],
    )
    .args(["--min-kdf", KDF])
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// `chat --json` that will be refused: `lines` are typed at once.
fn refused_chat(server: std::net::SocketAddr, home: &TempDir, user: &str, peer: &str) -> Child {
    let mut child = client(
        server,
        home.path(),
        user,
        &[
            "chat",
            "--json",
            "--peer",
            peer,
            "--bind",
            "127.0.0.1",
            "--wait",
            "20",
        ],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let stdin = child.stdin.as_mut().unwrap();
    writeln!(stdin, "{user}'s secret plan number one").unwrap();
    writeln!(stdin, "{user}'s secret plan number two").unwrap();
    stdin.flush().unwrap();
    child
}

#[test]
fn a_server_that_swaps_keys_is_caught_and_reads_nothing() {
    let mut evil = EvilServer::start();
    let home = TempDir::new("trust-evil");
    pair(evil.addr, home.path(), "alice", "bob");
    // Each pins the other's real key (first sight, while the server is still honest).
    for (me, them) in [("alice", "bob"), ("bob", "alice")] {
        ok(
            evil.addr,
            home.path(),
            me,
            &["contacts", "fingerprint", them],
        );
    }
    evil.turn_evil();
    let mut alice = refused_chat(evil.addr, &home, "alice", "bob");
    let mut bob = refused_chat(evil.addr, &home, "bob", "alice");
    let alice_status = wait_with_timeout(&mut alice, Duration::from_secs(30));
    let bob_status = wait_with_timeout(&mut bob, Duration::from_secs(30));
    let (alice_out, alice_err) = outputs(&mut alice);
    let (_, bob_err) = outputs(&mut bob);
    assert_eq!(alice_status.and_then(|s| s.code()), Some(3), "{alice_err}");
    assert_eq!(bob_status.and_then(|s| s.code()), Some(3), "{bob_err}");

    let events: Vec<Value> = alice_out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let changed: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "key_changed")
        .collect();
    assert_eq!(changed.len(), 1, "{events:#?}");
    assert_eq!(changed[0]["peer"], "bob");
    assert_eq!(
        changed[0]["new"],
        Fingerprint::of_identity_key(&EVIL_KEY).to_string()
    );
    assert_ne!(changed[0]["old"], changed[0]["new"]);
    assert!(
        events.iter().all(|e| e["event"] != "message"),
        "{events:#?}"
    );

    // Nothing the users typed reached the server, and nothing went through its relay.
    for line in evil.received() {
        assert!(!line.contains("secret"), "the server got {line:?}");
    }
    assert_eq!(evil.switchboard_frames(), 0);
}
