//! `p2p-client nat-type` against our server on loopback (no NAT: the answer is known).

// Test code: a panic with the failing value is the report we want.
#![allow(clippy::unwrap_used)]

mod loopback;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use p2p_servers::ServerHandle;
use shared::stun_server::ServerSocket;

const BIN: &str = env!("CARGO_BIN_EXE_p2p-client");

fn server(alternate: bool) -> ServerHandle {
    let mut options = loopback::stun_options();
    if !alternate {
        options.alternate = None;
    }
    ServerHandle::start(options).unwrap()
}

/// Whether the output shows a panic (exit 101, "failed printing to stdout").
fn assert_no_panic(out: &std::process::Output) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(101), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("failed printing"),
        "{err}"
    );
}

/// Runs `p2p-client ARGS` with its standard output closed before it writes anything (like
/// `p2p-client ... | (exec 0<&-; sleep 1)`).
fn run_with_stdout_closed(args: &[&str]) -> std::process::Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
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
        text.contains("NAT type:         open-internet")
            && text.contains("peers can reach you directly"),
        "{text}"
    );
}

#[test]
fn text_names_the_type_as_json_and_the_readme_do() {
    let s = server(false);
    let primary = s.udp_addr(ServerSocket::PRIMARY).unwrap().to_string();
    let (out, _) = nat_type(&["--server", &primary]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .next()
            .unwrap()
            .starts_with("NAT type:         unsupported-server"),
        "{text}"
    );
    assert!(!text.contains("unknown"), "{text}");
}

#[test]
fn lifetime_without_a_nat_says_there_is_nothing_to_measure() {
    let s = server(true);
    let primary = s.udp_addr(ServerSocket::PRIMARY).unwrap().to_string();
    let (out, _) = nat_type(&["--server", &primary, "--lifetime", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("binding lifetime:"))
        .unwrap_or_else(|| panic!("no lifetime line in {text}"));
    assert!(line.contains("none to measure: no NAT"), "{line}");
}

#[test]
fn a_closed_stdout_is_a_quiet_end_with_the_same_status() {
    let s = server(true);
    let primary = s.udp_addr(ServerSocket::PRIMARY).unwrap().to_string();
    for form in [&[][..], &["--json"][..]] {
        let mut args = vec!["nat-type", "--server", primary.as_str()];
        args.extend_from_slice(form);
        let out = run_with_stdout_closed(&args);
        assert_no_panic(&out);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
    }
    // No answer: exit status 2 even with nobody reading.
    let quiet = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = quiet.local_addr().unwrap().to_string();
    let out = run_with_stdout_closed(&["nat-type", "--server", &addr]);
    assert_no_panic(&out);
    assert_eq!(out.status.code(), Some(2));
    // Like `| head -1`: the reader takes one line and leaves.
    let mut child = Command::new(BIN)
        .args(["nat-type", "--server", &primary])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 1];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut first).unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_no_panic(&out);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn server_takes_host_host_port_and_ipv6_forms_with_3478_by_default() {
    let s = loopback::stun_on_default_ports(78);
    let primary = s.udp_addr(ServerSocket::PRIMARY).unwrap();
    assert_eq!(primary.port(), 3478);
    for given in [primary.ip().to_string(), primary.to_string()] {
        let (out, json) = nat_type(&["--server", &given, "--json"]);
        assert!(
            out.status.success(),
            "{given}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v = json.unwrap();
        assert_eq!(v["nat_type"], "open-internet", "{given}: {v}");
        assert_eq!(v["server"]["address"], primary.to_string(), "{given}");
    }
    // IPv6, bare and in brackets (a single-address server: the parse is what counts here).
    let v6 = loopback::stun_on_ipv6_loopback();
    let port = v6.udp_addr(ServerSocket::PRIMARY).unwrap().port();
    let (out, json) = nat_type(&["--server", &format!("[::1]:{port}"), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json.unwrap();
    assert_eq!(v["nat_type"], "unsupported-server", "{v}");
    assert_eq!(v["server"]["address"], format!("[::1]:{port}"));
    // A bare IPv6 address takes the default port; whether anything answers there does not
    // matter, only where the client asked.
    let (_, json) = nat_type(&["--server", "::1", "--json"]);
    assert_eq!(json.unwrap()["server"]["address"], "[::1]:3478");
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
fn silence_says_the_same_true_thing_everywhere_with_exit_2() {
    let quiet = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = quiet.local_addr().unwrap().to_string();
    let said = "either the server is down or UDP is blocked on the path; we cannot tell which";
    let started = Instant::now();
    let (out, json) = nat_type(&["--server", &addr, "--json"]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(2));
    let v = json.unwrap();
    assert_eq!(v["nat_type"], "udp-blocked");
    assert!(v["meaning"].as_str().unwrap().contains(said), "{v}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("No answer from {addr}")) && err.contains(said),
        "{err}"
    );

    let (out, _) = nat_type(&["--server", &addr]);
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(said), "{text}");
    assert!(
        !text.contains("UDP is blocked:") && !text.contains("RFC 3489"),
        "no claim the client cannot back: {text}"
    );
}

#[test]
fn bad_arguments_fail_with_a_message() {
    let (out, _) = nat_type(&["--server", "127.0.0.1:notaport"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot resolve") && err.contains("HOST, HOST:PORT, IPv6 or [IPv6]:PORT"),
        "{err}"
    );
    let (out, _) = nat_type(&[]);
    assert!(!out.status.success(), "--server is required");
}
