//! An account command pointed at a port that is not a rendezvous server (the STUN server's
//! TCP port, the switchboard) says so at once.

// Test code: a panic with the failing value is the report we want.
#![allow(clippy::unwrap_used)]

mod client;
mod loopback;
mod sessions;

use std::process::Stdio;
use std::time::{Duration, Instant};

use sessions::Servers;

fn contacts_list_at(servers: &Servers, server: &str) -> (bool, String, Duration) {
    let started = Instant::now();
    let out = std::process::Command::new(client::BIN)
        .args(["contacts", "list", "--server", server, "--user", "alice"])
        .env("P2P_PASSWORD", "alice-password")
        .env("P2P_HOME", &servers.home)
        .env("P2P_MIN_KDF", "argon2id:m=8:t=1:p=1")
        .env_remove("P2P_USER")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        started.elapsed(),
    )
}

#[test]
fn the_stun_and_switchboard_ports_are_not_rendezvous_servers() {
    let servers = Servers::start();
    servers.pair("alice", "bob");
    let stun_tcp = servers.stun.tcp_addr().unwrap().to_string();
    let switchboard = servers.switchboard.to_string();
    for server in [stun_tcp, switchboard] {
        let (ok, stderr, took) = contacts_list_at(&servers, &server);
        assert!(!ok, "{server}: {stderr}");
        eprintln!("{server} ({took:?}): {stderr}");
        assert!(
            stderr.contains(&format!("{server} is not a rendezvous server (")),
            "{server}: {stderr}"
        );
        assert!(!stderr.contains("bytes remaining"), "{stderr}");
        assert!(took < Duration::from_secs(5), "{server}: took {took:?}");
    }
    // The real one still works.
    let (ok, stderr, _) = contacts_list_at(&servers, &servers.rendezvous.to_string());
    assert!(ok, "{stderr}");
}
