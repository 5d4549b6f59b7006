//! The `stun-server` binary as a user runs it.

// Test code: a panic with the failing value is the report we want.
#![allow(clippy::unwrap_used)]

use std::net::UdpSocket;
use std::process::Command;
use std::time::Duration;

use shared::stun::{Class, Message, MessageWriter, Method, TransactionId};

mod server_process;

use server_process::{BIN, Running, interrupt_and_wait};

/// Starts the binary and reads stderr until the "listening" line; returns it and the child.
fn spawn(args: &[&str]) -> (Running, String) {
    spawn_until(args, "STUN server listening")
}

/// Starts the binary and reads stderr until a line containing `marker`; returns the log so far
/// and the child.
fn spawn_until(args: &[&str], marker: &str) -> (Running, String) {
    let mut cmd = server_process::command(args);
    // The rendezvous server runs by default: keep its database out of $HOME.
    cmd.env(
        "XDG_DATA_HOME",
        std::env::temp_dir().join(format!("stun-cli-data-{}", std::process::id())),
    );
    let (running, seen, _) = server_process::start_until(cmd, marker);
    (running, seen)
}

fn binding_answered(to: &str) -> bool {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0u8; 64];
    let tid = TransactionId::Modern([3; 12]);
    let w = MessageWriter::new(&mut buf, Method::BINDING, Class::Request, tid).unwrap();
    let len = w.finish();
    socket.send_to(&buf[..len], to).unwrap();
    let mut reply = [0u8; 512];
    match socket.recv_from(&mut reply) {
        Ok((n, _)) => Message::parse(&reply[..n]).is_ok_and(|m| m.transaction_id() == tid),
        Err(_) => false,
    }
}

/// `--print-config` output for `args`, with the database kept out of $HOME.
fn print_config(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .arg("--print-config")
        .env(
            "XDG_DATA_HOME",
            std::env::temp_dir().join(format!("stun-cli-data-{}", std::process::id())),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The value of `key` in a `--print-config` text.
fn key<'a>(config: &'a str, key: &str) -> &'a str {
    config
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in {config}"))
}

#[test]
fn no_arguments_means_the_loopback_pair_on_the_default_ports() {
    // Checked without binding them: a server may well be running on the defaults.
    let config = print_config(&[]);
    assert_eq!(key(&config, "primary"), "\"127.0.0.1\"");
    assert_eq!(key(&config, "alternate"), "\"127.0.0.2\"");
    assert_eq!(key(&config, "port"), "3478");
    assert_eq!(key(&config, "alt_port"), "3479");
    assert_eq!(key(&config, "tcp"), "true");
    assert_eq!(key(&config, "rendezvous"), "\"127.0.0.1:1863\"");
    assert_eq!(key(&config, "switchboard"), "\"127.0.0.1:1865\"");
}

#[test]
fn a_public_primary_puts_the_rendezvous_and_the_switchboard_on_it() {
    let config = print_config(&["--primary", "198.51.100.1", "--alternate", "198.51.100.2"]);
    assert_eq!(key(&config, "rendezvous"), "\"198.51.100.1:1863\"");
    assert_eq!(key(&config, "switchboard"), "\"198.51.100.1:1865\"");
    let config = print_config(&[
        "--primary",
        "198.51.100.1",
        "--rendezvous",
        "127.0.0.1:4000",
        "--switchboard",
        "127.0.0.1:4001",
    ]);
    assert_eq!(key(&config, "rendezvous"), "\"127.0.0.1:4000\"");
    assert_eq!(key(&config, "switchboard"), "\"127.0.0.1:4001\"");
}

/// The addresses after `prefix` in `log` (up to the end of the field).
fn addrs_after(log: &str, prefix: &str) -> Vec<String> {
    let rest = &log[log
        .find(prefix)
        .unwrap_or_else(|| panic!("no {prefix:?} in {log}"))
        + prefix.len()..];
    let field = rest
        .split(|c: char| c == '\n' || c.is_ascii_alphabetic())
        .next()
        .unwrap();
    field
        .split([',', ' '])
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_loopback_pair_serves_on_free_ports_and_ctrl_c_stops_it() {
    // The rendezvous line comes last, after STUN's and the switchboard's.
    let (running, log) = spawn_until(
        &[
            "--stats-interval",
            "0",
            "--port",
            "0",
            "--alt-port",
            "0",
            "--rendezvous",
            "127.0.0.1:0",
            "--switchboard",
            "127.0.0.1:0",
        ],
        "rendezvous listening on",
    );
    let udp = addrs_after(&log, "udp=");
    assert_eq!(udp.len(), 4, "{log}");
    for (addr, ip) in udp
        .iter()
        .zip(["127.0.0.1", "127.0.0.1", "127.0.0.2", "127.0.0.2"])
    {
        assert!(addr.starts_with(&format!("{ip}:")), "{log}");
        assert!(binding_answered(addr), "no answer on {addr}");
    }
    assert!(log.contains(&format!("tcp={}", udp[0])), "{log}");
    let sb = addrs_after(&log, "switchboard listening on ");
    let rendezvous = addrs_after(&log, "rendezvous listening on ");
    assert!(log.contains(&format!("sb={}", sb[0])), "{log}");
    for addr in [&sb[0], &rendezvous[0]] {
        assert!(addr.starts_with("127.0.0.1:"), "{log}");
        assert!(
            std::net::TcpStream::connect(addr).is_ok(),
            "nothing listens on {addr}"
        );
    }
    // Logs to a pipe carry no colour codes.
    assert!(!log.contains('\u{1b}'), "{log:?}");
    assert!(interrupt_and_wait(running).success());
    let _ = std::fs::remove_dir_all(
        std::env::temp_dir().join(format!("stun-cli-data-{}", std::process::id())),
    );
}

#[test]
fn free_ports_and_single_address_mode_from_flags() {
    let (running, log) = spawn(&[
        "--primary",
        "127.0.0.1",
        "--port",
        "0",
        "--alt-port",
        "0",
        "--no-rendezvous",
    ]);
    assert!(log.contains("single-address mode"), "{log}");
    assert!(!log.contains("127.0.0.2"), "{log}");
    assert!(interrupt_and_wait(running).success());
}

#[test]
fn an_address_not_on_this_host_is_a_one_line_error() {
    // 192.0.2.0/24 is TEST-NET-1: never configured here, so binding must fail.
    let out = Command::new(BIN)
        .args([
            "--primary",
            "192.0.2.1",
            "--alternate",
            "192.0.2.2",
            "--port",
            "40000",
            "--alt-port",
            "40001",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains("192.0.2.1:40000") && lines[0].contains("not available"),
        "{stderr}"
    );
}

#[test]
fn contradictory_flags_are_refused() {
    let out = Command::new(BIN)
        .args([
            "--primary",
            "127.0.0.1",
            "--alternate",
            "127.0.0.1",
            "--port",
            "0",
            "--alt-port",
            "0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("must differ"));
    let out = Command::new(BIN)
        .args(["--port", "not-a-number"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn help_explains_every_flag() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--primary",
        "--alternate",
        "--port",
        "--alt-port",
        "--config",
        "--advertise-primary",
        "--advertise-alternate",
        "--workers",
        "--rate-limit",
        "--no-tcp",
        "--single-address",
        "RESPONSE-ADDRESS",
    ] {
        assert!(help.contains(flag), "--help does not mention {flag}");
    }
}

#[test]
fn print_config_output_is_a_valid_config_file() {
    let out = Command::new(BIN)
        .args(["--rate-limit", "7", "--print-config"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("rate_limit = 7"), "{text}");
    let path = std::env::temp_dir().join(format!("stun-print-config-{}.toml", std::process::id()));
    std::fs::write(&path, &text).unwrap();
    let again = Command::new(BIN)
        .args(["-c", path.to_str().unwrap(), "--print-config"])
        .output()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(String::from_utf8(again.stdout).unwrap(), text);
}
