// Test code: a panic with the failing value is the report we want.
#![allow(clippy::unwrap_used)]

//! `p2p-client tunnel` between two real processes behind real kernel NATs (two sites behind
//! port-restricted routers, so the link ends direct): an HTTP server (Python's `http.server`)
//! on loopback in site 1 behind `tunnel --connect`, `tunnel --listen` on loopback in site 0,
//! and 50 concurrent HTTP clients in site 0, each fetching a file of its own (100-300 KB of
//! distinct random bytes) through the tunnel. Every response must equal its file byte for
//! byte (SHA-256 compared), the listening side must report 50 tunnelled connections, and
//! both tunnels must exit 0 after Ctrl-C on the listening side.
//!
//! Needs root, `ip`, `nft`, `conntrack` and `python3`; otherwise a loud `SKIPPED:` line, or a
//! failure when `CI=true`.

use std::time::Duration;

use tests::lab::chat::{ChatPeer, ChatServer};
use tests::lab::transfer::{TransferDir, sha256_of};
use tests::lab::{Lab, require_lab, require_tool, serial};
use tests::nat_types::PunchNat;

/// Concurrent HTTP clients.
const CLIENTS: usize = 50;
/// The HTTP server's port in site 1 (its own namespace: nothing else listens there).
const HTTP_PORT: u16 = 8080;
/// The tunnel's listening port in site 0.
const TUNNEL_PORT: u16 = 9090;

/// Fetches /file0 ... /file49 from 127.0.0.1:TUNNEL_PORT at once, one thread each, and prints
/// `index sha256 length` per file (or `index error ...`).
const CLIENT_SCRIPT: &str = r#"
import hashlib, http.client, sys, threading
port, n = int(sys.argv[1]), int(sys.argv[2])
results = [None] * n
def fetch(i):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        c.request("GET", "/file%d" % i)
        r = c.getresponse()
        body = r.read()
        results[i] = "%d %s %d" % (i, hashlib.sha256(body).hexdigest(), len(body)) if r.status == 200 else "%d error status %d" % (i, r.status)
    except Exception as e:
        results[i] = "%d error %r" % (i, e)
threads = [threading.Thread(target=fetch, args=(i,)) for i in range(n)]
for t in threads: t.start()
for t in threads: t.join()
print("\n".join(results))
"#;

#[test]
fn fifty_http_clients_get_their_own_responses_through_a_tunnel() {
    if !(require_lab() && require_tool("python3") && require_tool("sha256sum")) {
        return;
    }
    let _serial = serial();
    let lab = Lab::two_peers(
        PunchNat::PortRestrictedCone.router_options(),
        PunchNat::PortRestrictedCone.router_options(),
    )
    .unwrap();
    let server = ChatServer::start(&lab).unwrap();
    server.register_pair(&lab, "alice", "bob").unwrap();

    // The files the HTTP server in site 1 serves, each different.
    let dir = TransferDir::new("tunnel").unwrap();
    let root = dir.src();
    let mut expected = Vec::new();
    for i in 0..CLIENTS {
        let len = 100_000 + i * 4_000;
        let data: Vec<u8> = (0..len)
            .map(|j| (j as u64 * 2_654_435_761 + i as u64 * 97) as u8)
            .collect();
        let path = root.join(format!("file{i}"));
        std::fs::write(&path, &data).unwrap();
        expected.push((sha256_of(&path).unwrap(), len));
    }
    let http = lab
        .command(
            &lab.client(1).ns,
            &[
                "python3",
                "-m",
                "http.server",
                &HTTP_PORT.to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
                root.to_str().unwrap(),
            ],
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _http = KillOnDrop(http);

    let listen = format!("127.0.0.1:{TUNNEL_PORT}");
    let connect = format!("127.0.0.1:{HTTP_PORT}");
    let mut a = ChatPeer::start_command(
        &lab,
        lab.client(0),
        "alice",
        &["tunnel", "--json", "--peer", "bob"],
        &["--listen", &listen],
    )
    .unwrap();
    let b = ChatPeer::start_command(
        &lab,
        lab.client(1),
        "bob",
        &["tunnel", "--json", "--peer", "alice"],
        &["--connect", &connect],
    )
    .unwrap();
    assert!(
        a.wait_for(Duration::from_secs(30), |events| events
            .iter()
            .any(|e| e.kind() == "listening")),
        "no listening event:\n{}",
        a.logs()
    );
    // Wait for the direct path, so the clients' bytes take it (the relay would do too).
    let direct = a.wait_for(Duration::from_secs(20), |events| {
        events
            .iter()
            .any(|e| e.kind() == "path" && e.get("path") == "direct")
    });
    assert!(direct, "the link did not go direct:\n{}", a.logs());

    let out = lab
        .command(
            &lab.client(0).ns,
            &[
                "python3",
                "-c",
                CLIENT_SCRIPT,
                &TUNNEL_PORT.to_string(),
                &CLIENTS.to_string(),
            ],
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "clients failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), CLIENTS, "{stdout}");
    for (i, line) in lines.iter().enumerate() {
        let (sha, len) = &expected[i];
        assert_eq!(*line, format!("{i} {sha} {len}"), "client {i}");
    }

    // Ctrl-C on the listening side ends both tunnels cleanly.
    let _ = a.seen();
    let kill = std::process::Command::new("kill")
        .args(["-INT", &a.pid().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let a = a.finish(Duration::from_secs(20));
    let b = b.finish(Duration::from_secs(20));
    let opened = a
        .events
        .iter()
        .filter(|e| e.kind() == "tunnel_opened")
        .count();
    assert_eq!(opened, CLIENTS, "{}", a.stderr);
    let closed_clean = b
        .events
        .iter()
        .filter(|e| e.kind() == "tunnel_closed" && e.get("error") == "null")
        .count();
    assert_eq!(closed_clean, CLIENTS, "{}", b.stderr);
    assert!(
        a.status.is_some_and(|s| s.success()),
        "alice: {:?}\n{}",
        a.status,
        a.stderr
    );
    assert!(
        b.status.is_some_and(|s| s.success()),
        "bob: {:?}\n{}",
        b.status,
        b.stderr
    );
    drop(server);
}

/// Stops the HTTP server (started by this test, by its handle) however the test ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
