//! `send` and `receive` end to end on loopback: real servers, two client processes, the
//! link made as for `chat`, the files over QUIC inside it.

#![allow(clippy::unwrap_used)]

mod client;
mod loopback;
mod sessions;

use std::path::Path;
use std::time::Duration;

use rand::RngCore;
use serde_json::Value;
use sha2::{Digest, Sha256};

use client::Proc;
use sessions::{Servers, of_kind};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_file(path: &Path, len: usize) -> String {
    let mut data = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut data);
    std::fs::write(path, &data).unwrap();
    hex(&Sha256::digest(&data))
}

/// Where both sides bind their endpoint socket unless a test says otherwise.
const BIND: &str = "127.0.0.1";

fn send(servers: &Servers, user: &str, peer: &str, files: &[&Path], extra: &[&str]) -> Proc {
    send_bound(servers, user, peer, files, BIND, extra)
}

fn send_bound(
    servers: &Servers,
    user: &str,
    peer: &str,
    files: &[&Path],
    bind: &str,
    extra: &[&str],
) -> Proc {
    let mut args = vec!["send", "--json", "--peer", peer, "--bind", bind];
    args.extend_from_slice(extra);
    let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    args.extend(files.iter().map(String::as_str));
    Proc::spawn(user, servers.command(user, &args))
}

fn receive(servers: &Servers, user: &str, peer: &str, out: &Path, extra: &[&str]) -> Proc {
    receive_bound(servers, user, peer, out, BIND, extra)
}

fn receive_bound(
    servers: &Servers,
    user: &str,
    peer: &str,
    out: &Path,
    bind: &str,
    extra: &[&str],
) -> Proc {
    let out = out.display().to_string();
    let mut args = vec![
        "receive", "--json", "--peer", peer, "--bind", bind, "--out", &out,
    ];
    args.extend_from_slice(extra);
    Proc::spawn(user, servers.command(user, &args))
}

fn done_events(events: &[Value]) -> Vec<(String, u64, String)> {
    of_kind(events, "done")
        .into_iter()
        .map(|e| {
            (
                e["file"].as_str().unwrap().to_owned(),
                e["bytes"].as_u64().unwrap(),
                e["sha256"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Runs one transfer of `files` from alice to bob and checks both sides' reports and the
/// received bytes.
fn transfer(servers: &Servers, files: &[(&Path, String)], out: &Path, extra: &[&str]) {
    transfer_bound(servers, files, out, BIND, extra);
}

/// [`transfer`] with both endpoint sockets bound to `bind`; returns both sides' events.
fn transfer_bound(
    servers: &Servers,
    files: &[(&Path, String)],
    out: &Path,
    bind: &str,
    extra: &[&str],
) -> [Vec<Value>; 2] {
    let paths: Vec<&Path> = files.iter().map(|(p, _)| *p).collect();
    let mut a = send_bound(servers, "alice", "bob", &paths, bind, extra);
    let mut b = receive_bound(servers, "bob", "alice", out, bind, extra);
    let a_status = a.wait_exit(Duration::from_secs(60));
    let b_status = b.wait_exit(Duration::from_secs(60));
    a.drain();
    b.drain();
    assert!(a_status.success(), "sender failed:\n{}", a.logs());
    assert!(b_status.success(), "receiver failed:\n{}", b.logs());
    let received = done_events(&b.events());
    assert_eq!(received.len(), files.len(), "{:#?}", b.events());
    for (path, sha) in files {
        let name = path.file_name().unwrap().to_str().unwrap();
        let got = std::fs::read(out.join(name)).unwrap();
        assert_eq!(&hex(&Sha256::digest(&got)), sha, "{name}");
        assert!(
            received.iter().any(|(f, _, s)| f == name && s == sha),
            "{name}: {received:?}"
        );
        assert!(
            done_events(&a.events())
                .iter()
                .any(|(f, _, s)| f == name && s == sha),
            "sender's report of {name}"
        );
    }
    // Progress was reported, and nothing but the files is left in the output directory.
    assert!(!of_kind(&b.events(), "progress").is_empty());
    let left: Vec<_> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), files.len(), "{left:?}");
    [a.events(), b.events()]
}

#[test]
fn files_arrive_whole_over_a_direct_link() {
    let servers = Servers::start();
    servers.pair("alice", "bob");
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let big = src.path().join("big.bin");
    let empty = src.path().join("empty");
    let big_sha = random_file(&big, 24 << 20);
    let empty_sha = random_file(&empty, 0);
    transfer(
        &servers,
        &[(&big, big_sha), (&empty, empty_sha)],
        out.path(),
        &[],
    );
}

/// Over IPv6 (both ends bound to `::1`: a direct path to `[::1]`, QUIC's segmented sends from
/// an IPv6 socket) and between dual-stack sockets (bound to `::`, the default's kind, whose
/// IPv4 peers travel IPv4-mapped on the wire), files arrive whole, and every path event names
/// the peer in plain form, never as `::ffff:a.b.c.d`.
#[test]
fn files_arrive_whole_over_ipv6_and_between_dual_stack_sockets() {
    let servers = Servers::start();
    servers.pair("alice", "bob");
    for bind in ["::1", "::"] {
        let src = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let file = src.path().join("v6.bin");
        let sha = random_file(&file, 4 << 20);
        let events = transfer_bound(&servers, &[(&file, sha)], out.path(), bind, &[]);
        for side in &events {
            let paths = of_kind(side, "path");
            let direct: Vec<&str> = paths
                .iter()
                .filter(|p| p["path"] == "direct")
                .map(|p| p["remote"].as_str().unwrap())
                .collect();
            assert!(!direct.is_empty(), "{bind}: no direct path: {paths:?}");
            for remote in direct {
                let remote: std::net::SocketAddr = remote.parse().unwrap();
                assert!(
                    !matches!(remote, std::net::SocketAddr::V6(v6) if v6.ip().to_ipv4_mapped().is_some()),
                    "{bind}: {remote}"
                );
                if bind == "::1" {
                    assert_eq!(remote.ip(), std::net::Ipv6Addr::LOCALHOST, "{paths:?}");
                }
            }
        }
    }
}

#[test]
fn files_arrive_whole_over_the_relay() {
    let servers = Servers::start();
    servers.pair("alice", "bob");
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = src.path().join("relayed.bin");
    let sha = random_file(&file, 8 << 20);
    transfer(&servers, &[(&file, sha)], out.path(), &["--no-direct"]);
}

#[test]
fn a_receiver_refuses_to_replace_an_existing_file() {
    let servers = Servers::start();
    servers.pair("alice", "bob");
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = src.path().join("notes.txt");
    random_file(&file, 1000);
    std::fs::write(out.path().join("notes.txt"), b"mine").unwrap();
    let mut a = send(&servers, "alice", "bob", &[&file], &[]);
    let mut b = receive(&servers, "bob", "alice", out.path(), &[]);
    let b_status = b.wait_exit(Duration::from_secs(60));
    let a_status = a.wait_exit(Duration::from_secs(60));
    assert!(!b_status.success(), "{}", b.logs());
    assert!(!a_status.success(), "{}", a.logs());
    assert_eq!(
        std::fs::read(out.path().join("notes.txt")).unwrap(),
        b"mine"
    );
}

#[test]
fn bad_arguments_fail_before_logging_in() {
    let servers = Servers::start();
    let run = |args: &[&str]| servers.command("alice", args).output().unwrap();
    let out = run(&["send", "--peer", "bob", "/nonexistent/file"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/nonexistent/file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["receive", "--peer", "bob", "--out", "/nonexistent/dir"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--out"));
}

/// Ctrl-C on the sender mid-file: both sides stop with an error and the receiver keeps the
/// partial copy under its temporary name only; the same commands run again resume from
/// where it stopped and the file arrives whole.
#[test]
fn an_interrupted_transfer_resumes_where_it_stopped() {
    let servers = Servers::start();
    servers.pair("alice", "bob");
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = src.path().join("large.bin");
    let sha = random_file(&file, 160 << 20);
    let total = 160u64 << 20;

    let mut a = send(&servers, "alice", "bob", &[&file], &[]);
    let mut b = receive(&servers, "bob", "alice", out.path(), &[]);
    b.wait_for("some bytes", Duration::from_secs(60), |events| {
        of_kind(events, "progress")
            .iter()
            .any(|e| e["bytes"].as_u64().unwrap() > 0)
    });
    a.signal(libc::SIGINT);
    assert!(
        !a.wait_exit(Duration::from_secs(20)).success(),
        "{}",
        a.logs()
    );
    assert!(
        !b.wait_exit(Duration::from_secs(30)).success(),
        "{}",
        b.logs()
    );
    assert!(
        !out.path().join("large.bin").exists(),
        "no file under its name"
    );
    let partial = out.path().join(".large.bin.p2p-partial");
    let kept = std::fs::metadata(&partial).unwrap().len();
    assert!(kept > 0 && kept < total, "{kept}");

    let mut a = send(&servers, "alice", "bob", &[&file], &[]);
    let mut b = receive(&servers, "bob", "alice", out.path(), &[]);
    assert!(
        a.wait_exit(Duration::from_secs(60)).success(),
        "{}",
        a.logs()
    );
    assert!(
        b.wait_exit(Duration::from_secs(60)).success(),
        "{}",
        b.logs()
    );
    b.drain();
    let events = b.events();
    let resumed = of_kind(&events, "resumed");
    assert_eq!(resumed.len(), 1, "{events:#?}");
    assert!(resumed[0]["from"].as_u64().unwrap() > 0);
    let got = std::fs::read(out.path().join("large.bin")).unwrap();
    assert_eq!(hex(&Sha256::digest(&got)), sha);
    assert!(!partial.exists());
}
