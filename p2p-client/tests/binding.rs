//! `p2p-client binding` against our server on loopback.

// Test code: a panic with the failing value is the report we want.
#![allow(clippy::unwrap_used)]

mod loopback;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use p2p_servers::ServerHandle;
use shared::stun_server::ServerSocket;

const BIN: &str = env!("CARGO_BIN_EXE_p2p-client");

fn server() -> ServerHandle {
    loopback::stun(false)
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
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("no answer from {silent} after 2 attempts"))
            && err.contains("either the server is down or UDP is blocked"),
        "{err}"
    );

    // Malformed input fails before any name lookup (tests send nothing beyond loopback).
    let out = Command::new(BIN)
        .args(["binding", "--server", "127.0.0.1:not-a-port"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot resolve") && err.contains("HOST, HOST:PORT, IPv6 or [IPv6]:PORT"),
        "{err}"
    );
}

#[test]
fn silence_gives_up_within_five_seconds_by_default_still_retransmitting() {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent = socket.local_addr().unwrap().to_string();
    let counter = socket.try_clone().unwrap();
    let requests = std::thread::spawn(move || {
        counter
            .set_read_timeout(Some(Duration::from_millis(2500)))
            .unwrap();
        let mut buf = [0u8; 1500];
        let mut n = 0;
        while counter.recv_from(&mut buf).is_ok() {
            n += 1;
        }
        n
    });
    let started = Instant::now();
    let out = Command::new(BIN)
        .args(["binding", "--server", &silent])
        .output()
        .unwrap();
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1));
    assert!(took < Duration::from_secs(6), "took {took:?}");
    assert!(
        took > Duration::from_secs(3),
        "the RFC's RTO of 500 ms: {took:?}"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("after 4 attempts")
            && err.contains(
                "either the server is down or UDP is blocked on the path; we cannot tell which"
            ),
        "{err}"
    );
    assert_eq!(requests.join().unwrap(), 4, "Rc = 4 requests");
    let help = Command::new(BIN)
        .args(["binding", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("give up after 4.5 s"), "{help}");
}

#[test]
fn server_takes_host_host_port_and_ipv6_forms_with_3478_by_default() {
    let s = loopback::stun_on_default_ports(79);
    let primary = s.udp_addr(ServerSocket::PRIMARY).unwrap();
    for given in [primary.ip().to_string(), primary.to_string()] {
        let v = json(&["binding", "--server", &given, "--json"]);
        assert_eq!(v["reply_from"], primary.to_string(), "{given}: {v}");
        assert_eq!(v["server"], primary.to_string(), "{given}: {v}");
    }
    let v6 = loopback::stun_on_ipv6_loopback();
    let port = v6.udp_addr(ServerSocket::PRIMARY).unwrap().port();
    let v = json(&["binding", "--server", &format!("[::1]:{port}"), "--json"]);
    assert_eq!(v["reply_from"], format!("[::1]:{port}"));
    // A bare IPv6 address takes port 3478; whatever answers there, the client asked it.
    let out = Command::new(BIN)
        .args([
            "binding",
            "--server",
            "::1",
            "--json",
            "--attempts",
            "1",
            "--rto-ms",
            "50",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let asked = if out.status.success() {
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["server"] == "[::1]:3478"
    } else {
        err.contains("[::1]:3478")
    };
    assert!(asked, "{err}");
}

#[test]
fn a_closed_stdout_is_a_quiet_end() {
    let s = server();
    let primary = s.udp_addr(ServerSocket::PRIMARY).unwrap().to_string();
    for form in [&[][..], &["--json"][..]] {
        let mut child = Command::new(BIN)
            .args(["binding", "--server", &primary])
            .args(form)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
