//! `p2p-client nat-type` against our server on loopback (no NAT: the answer is known).

// Test code: a panic with the failing value is the report we want.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use shared::stun_server::ServerSocket;
use stun_server::{ServerHandle, ServerOptions};

const BIN: &str = env!("CARGO_BIN_EXE_p2p-client");

fn server(alternate: bool) -> ServerHandle {
    let mut options = ServerOptions {
        port: 0,
        alt_port: 0,
        workers: 1,
        tcp: false,
        ..Default::default()
    };
    if !alternate {
        options.alternate = None;
    }
    ServerHandle::start(options).unwrap()
}

fn nat_type(args: &[&str]) -> (std::process::Output, Option<serde_json::Value>) {
    let mut argv = vec!["nat-type"];
    argv.extend_from_slice(args);
    let out = Command::new(BIN).args(&argv).output().unwrap();
    let json = serde_json::from_slice(&out.stdout).ok();
    (out, json)
}

#[test]
fn no_nat_is_open_internet_with_the_documented_json_keys() {
    let s = server(true);
    let primary = s.udp_addr(ServerSocket::PRIMARY).unwrap().to_string();
    for form in [&[][..], &["--classic"][..]] {
        let mut args = vec!["--server", primary.as_str(), "--json"];
        args.extend_from_slice(form);
        let (out, json) = nat_type(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v = json.unwrap();
        assert_eq!(v["nat_type"], "open-internet", "{v}");
        assert_eq!(v["mapping"], "endpoint-independent");
        assert!(
            v["filtering"].is_null(),
            "no NAT means no filter to describe: {v}"
        );
        assert!(v["hairpinning"].is_null() && v["port_allocation"].is_null());
        assert_eq!(v["mapped_address"], v["local_address"]);
        assert!(v["elapsed_ms"].as_f64().unwrap() < 1000.0);
        assert_eq!(v["server"]["change_request"], true);
    }
}

#[test]
fn human_report_says_what_it_means_for_punching() {
    let s = server(true);
    let primary = s.udp_addr(ServerSocket::PRIMARY).unwrap().to_string();
    let (out, _) = nat_type(&["--server", &primary]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("open internet") && text.contains("peers can reach you directly"),
        "{text}"
    );
}

#[test]
fn single_address_server_is_unsupported_never_a_nat_type() {
    let s = server(false);
    let primary = s.udp_addr(ServerSocket::PRIMARY).unwrap().to_string();
    let (out, json) = nat_type(&["--server", &primary, "--json"]);
    assert!(out.status.success());
    let v = json.unwrap();
    assert_eq!(v["nat_type"], "unsupported-server");
    assert!(v["mapping"].is_null() && v["filtering"].is_null());
    assert!(
        v["unsupported_reason"]
            .as_str()
            .unwrap()
            .contains("alternate")
    );
}

#[test]
fn silence_is_reported_as_blocked_or_unreachable_with_exit_2() {
    let quiet = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = quiet.local_addr().unwrap().to_string();
    let started = Instant::now();
    let (out, json) = nat_type(&["--server", &addr, "--json"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(json.unwrap()["nat_type"], "udp-blocked");
    assert!(String::from_utf8_lossy(&out.stderr).contains("unreachable"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn bad_arguments_fail_with_a_message() {
    let (out, _) = nat_type(&["--server", "127.0.0.1:notaport"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot resolve"));
    let (out, _) = nat_type(&[]);
    assert!(!out.status.success(), "--server is required");
}
