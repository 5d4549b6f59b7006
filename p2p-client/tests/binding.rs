//! `p2p-client binding` against our server on loopback.

// Test code: a panic with the failing value is the report we want.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use shared::stun_server::ServerSocket;
use stun_server::{ServerHandle, ServerOptions};

const BIN: &str = env!("CARGO_BIN_EXE_p2p-client");

fn server() -> ServerHandle {
    ServerHandle::start(ServerOptions {
        port: 0,
        alt_port: 0,
        workers: 1,
        tcp: false,
        ..Default::default()
    })
    .unwrap()
}

fn json(args: &[&str]) -> serde_json::Value {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn reports_the_mapped_address_in_both_forms() {
    let s = server();
    let primary = s.udp_addr(ServerSocket::PRIMARY).unwrap().to_string();
    for form in [&[][..], &["--classic"][..]] {
        let mut args = vec![
            "binding",
            "--server",
            &primary,
            "--bind",
            "127.0.0.1:0",
            "--json",
        ];
        args.extend_from_slice(form);
        let v = json(&args);
        assert_eq!(
            v["mapped_address"], v["local_address"],
            "no NAT on loopback: {v}"
        );
        assert_eq!(v["reply_from"], primary.as_str());
        assert_eq!(
            v["other_address"],
            s.udp_addr(ServerSocket::PRIMARY.other())
                .unwrap()
                .to_string()
        );
    }
}

#[test]
fn change_request_reply_comes_from_the_other_address() {
    let s = server();
    let primary = s.udp_addr(ServerSocket::PRIMARY).unwrap().to_string();
    let v = json(&[
        "binding",
        "--server",
        &primary,
        "--bind",
        "127.0.0.1:0",
        "--change-ip",
        "--change-port",
        "--json",
    ]);
    assert_eq!(
        v["reply_from"],
        s.udp_addr(ServerSocket::PRIMARY.other())
            .unwrap()
            .to_string()
    );
}

#[test]
fn unreachable_and_unresolvable_servers_fail_clearly() {
    // A port nobody listens on: quick failure with the bounded retry budget.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent = socket.local_addr().unwrap().to_string();
    let out = Command::new(BIN)
        .args([
            "binding",
            "--server",
            &silent,
            "--attempts",
            "2",
            "--rto-ms",
            "50",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no success response") && err.contains("2 attempts"),
        "{err}"
    );

    // Malformed input fails before any name lookup (tests send nothing beyond loopback).
    let out = Command::new(BIN)
        .args(["binding", "--server", "127.0.0.1:not-a-port"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot resolve"));

    let out = Command::new(BIN)
        .args(["binding", "--server", "127.0.0.1"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a missing port is an error");
}
