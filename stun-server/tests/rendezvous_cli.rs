//! The `stun-server` binary as an operator runs the rendezvous server and manages accounts.

// Test code: a panic with the failing value is the report we want.
#![allow(clippy::unwrap_used)]

mod rendezvous_support;
mod server_process;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use rendezvous_support::{Client, TempDir, WAIT, tls_handshake};
use server_process::{BIN, CHEAP_KDF as CHEAP, Running, interrupt_and_wait};
use shared::identity::Fingerprint;

/// [`server_process::start_rendezvous`], and the TLS fingerprint the log announced.
fn spawn(args: &[&str]) -> (Running, String, SocketAddr, Fingerprint) {
    let (running, seen, addr) = server_process::start_rendezvous(args);
    let fingerprint = server_process::logged_fingerprint(&seen);
    (running, seen, addr, fingerprint)
}

/// Runs `stun-server user ...` with the password (if any) in `P2P_PASSWORD`.
fn user(db: &str, args: &[&str], password: Option<&str>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("user")
        .args(args)
        .args(["--db", db])
        .env_remove("P2P_PASSWORD")
        .stdin(Stdio::null());
    if let Some(p) = password {
        cmd.env("P2P_PASSWORD", p);
    }
    cmd.output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn rendezvous_only_on_a_free_port_serves_and_says_goodbye_on_ctrl_c() {
    let dir = TempDir::new("serve");
    let db = dir.db();
    let (running, log, addr, fp) = spawn(&server_process::rendezvous_args(&db, false));
    assert!(!log.contains("switchboard listening"), "{log}");
    assert!(log.contains("sb=none"), "{log}");
    assert!(!log.contains("STUN server listening"), "{log}");
    assert!(
        log.contains(&db),
        "the log does not name the database:\n{log}"
    );
    assert_ne!(addr.port(), 0);
    let mut client = Client::connect(addr, fp);
    assert_eq!(client.request("PNG", &[]).command.as_str(), "QNG");
    assert!(interrupt_and_wait(running).success());
    assert_eq!(client.until_closed(WAIT), ["OUT 0 SSD"]);
    assert!(Path::new(&db).exists());
}

#[test]
fn user_add_and_list_and_a_user_added_while_running_can_log_in() {
    let dir = TempDir::new("users");
    let db = dir.db();
    let added = user(&db, &["add", "Alice", "--kdf", CHEAP], Some("alice pw"));
    assert!(added.status.success(), "{}", stderr(&added));
    assert!(
        stdout(&added).contains("added user alice"),
        "{}",
        stdout(&added)
    );
    let again = user(&db, &["add", "alice", "--kdf", CHEAP], Some("x"));
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    let nothing = user(&db, &["add", "bob", "--kdf", CHEAP], None);
    assert!(!nothing.status.success());
    assert!(
        stderr(&nothing).contains("no password"),
        "{}",
        stderr(&nothing)
    );
    let bad_name = user(&db, &["add", "bob smith"], Some("x"));
    assert!(!bad_name.status.success());

    let mut args = server_process::rendezvous_args(&db, true);
    args.extend(["--registration", "closed"]);
    let (running, _, addr, fp) = spawn(&args);
    let mut alice = Client::connect(addr, fp);
    alice.login("alice", "alice pw").unwrap();
    // Added while the server runs, from a password file.
    let file = dir.path("password");
    std::fs::write(&file, "bob pw\n").unwrap();
    let file = file.to_str().unwrap();
    let added = user(
        &db,
        &["add", "bob", "--kdf", CHEAP, "--password-file", file],
        None,
    );
    assert!(added.status.success(), "{}", stderr(&added));
    // The server picks him up on its next database poll and says so; from then on Alice
    // can add him as a contact.
    let line = running.wait_log("user added by the operator");
    assert!(line.contains("bob"), "{line}");
    let answer = alice.request("ADC", &["bob"]);
    assert_eq!(answer.command.as_str(), "ADC", "{answer:?}");
    Client::connect(addr, fp).login("bob", "bob pw").unwrap();
    assert!(interrupt_and_wait(running).success());

    let list = user(&db, &["list"], None);
    assert!(list.status.success(), "{}", stderr(&list));
    let names: Vec<String> = stdout(&list)
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["alice", "bob"]);
    assert!(stdout(&list).contains(CHEAP), "{}", stdout(&list));
}

#[test]
fn a_database_that_cannot_be_created_is_a_one_line_error() {
    let dir = TempDir::new("baddb");
    // A regular file where a directory should be.
    let blocker = dir.path("file");
    std::fs::write(&blocker, "").unwrap();
    let db = blocker.join("sub").join("rendezvous.db");
    let out = Command::new(BIN)
        .args(server_process::rendezvous_args(db.to_str().unwrap(), false))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("cannot create directory"), "{err}");
    let listed = user(db.to_str().unwrap(), &["list"], None);
    assert!(!listed.status.success());
    assert_eq!(stderr(&listed).lines().count(), 1, "{}", stderr(&listed));
}

#[test]
fn print_config_shows_the_rendezvous_keys_and_help_explains_them() {
    let out = Command::new(BIN)
        .args([
            "--no-stun",
            "--registration",
            "closed",
            "--switchboard",
            "127.0.0.1:1865",
            "--advertise-switchboard",
            "203.0.113.5:1865",
        ])
        .args(["--db", "/srv/p2p/r.db", "--print-config"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for key in [
        "stun = false",
        "rendezvous = \"127.0.0.1:1863\"",
        "db = \"/srv/p2p/r.db\"",
        "registration = \"closed\"",
        "min_kdf = \"argon2id:m=19456:t=2:p=1\"",
        "ping_interval = 30",
        "idle_timeout = 75",
        "switchboard = \"127.0.0.1:1865\"",
        "advertise_switchboard = \"203.0.113.5:1865\"",
    ] {
        assert!(text.contains(key), "no {key:?} in:\n{text}");
    }
    let off = Command::new(BIN)
        .args(["--no-rendezvous", "--print-config"])
        .output()
        .unwrap();
    assert!(
        stdout(&off).contains("rendezvous = false"),
        "{}",
        stdout(&off)
    );
    assert!(
        stdout(&off).contains("switchboard = false"),
        "{}",
        stdout(&off)
    );
    let no_sb = Command::new(BIN)
        .args(["--no-switchboard", "--print-config"])
        .output()
        .unwrap();
    assert!(
        stdout(&no_sb).contains("switchboard = false"),
        "{}",
        stdout(&no_sb)
    );
    // A switchboard with nothing to issue its tickets is refused.
    let orphan = Command::new(BIN)
        .args(["--no-rendezvous", "--switchboard", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!orphan.status.success());
    assert!(
        stderr(&orphan).contains("--no-switchboard"),
        "{}",
        stderr(&orphan)
    );

    let help = stdout(&Command::new(BIN).arg("--help").output().unwrap());
    for flag in [
        "--rendezvous",
        "--no-rendezvous",
        "--no-stun",
        "--db",
        "--registration",
        "--min-kdf",
        "--ping-interval",
        "--idle-timeout",
        "--switchboard",
        "--no-switchboard",
        "--advertise-switchboard",
        "user add",
    ] {
        assert!(help.contains(flag), "--help does not mention {flag}");
    }
    let nothing = Command::new(BIN)
        .args(["--no-stun", "--no-rendezvous"])
        .output()
        .unwrap();
    assert!(!nothing.status.success());
}

#[test]
fn switchboard_on_a_free_port_is_logged_advertised_and_stopped_on_ctrl_c() {
    let dir = TempDir::new("sb");
    let db = dir.db();
    let (running, log, addr, fp) = spawn(&server_process::rendezvous_args(&db, true));
    assert!(
        log.contains(&format!("rendezvous listening on {addr}")),
        "{log}"
    );
    let sb: SocketAddr = log
        .split("switchboard listening on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no switchboard line in:\n{log}"))
        .parse()
        .unwrap();
    assert_eq!(sb.ip(), addr.ip());
    assert_ne!(sb.port(), 0);
    assert!(log.contains(&format!("sb={sb}")), "{log}");
    // CFG tells a client the bound address and the key (the same certificate as the
    // rendezvous), and the switchboard answers there with that key.
    let mut alice = Client::connect(addr, fp);
    alice.register("alice", "alice pw");
    alice.login("alice", "alice pw").unwrap();
    let cfg = alice.wait_for("CFG", |l| l.command.as_str() == "CFG");
    assert_eq!(cfg.keyed("sb"), Some(sb.to_string().as_str()), "{cfg:?}");
    assert_eq!(cfg.keyed("sbfp"), Some(fp.to_string().as_str()), "{cfg:?}");
    let sbfp: Fingerprint = cfg.keyed("sbfp").unwrap().parse().unwrap();
    let (mut relay, _) = tls_handshake(std::net::TcpStream::connect(sb).unwrap(), sbfp).unwrap();
    assert!(interrupt_and_wait(running).success());
    assert_eq!(alice.until_closed(WAIT), ["OUT 0 SSD"]);
    // The switchboard closed its connection too, after its ERROR frame.
    let mut rest = Vec::new();
    match std::io::Read::read_to_end(&mut relay, &mut rest) {
        Ok(_) => {}
        Err(e) => assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "the switchboard connection is still open"
        ),
    }
    assert!(!rest.is_empty(), "no ERROR frame before the close");
}

#[test]
fn cluster_access_options_are_checked_and_a_password_is_never_echoed() {
    let refused = |args: &[&str]| -> String {
        let out = Command::new(BIN)
            .args([
                "--no-stun",
                "--rendezvous",
                "127.0.0.1:0",
                "--no-switchboard",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} was accepted");
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        err
    };
    let err = refused(&["--cluster-user", "rdv"]);
    assert!(err.contains("--cluster-user needs --cluster"), "{err}");
    let store = ["--store", "postgres://rdv@127.0.0.1:1/x"];
    let err = refused(
        &[
            &store[..],
            &["--cluster", "nats://rdv:hunter2@10.0.0.5:4222"],
        ]
        .concat(),
    );
    assert!(err.contains("--cluster-password-file"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    let err = refused(
        &[
            &store[..],
            &["--cluster", "tls://10.0.0.5:4222", "--cluster-user", "rdv"],
        ]
        .concat(),
    );
    assert!(
        err.contains("--cluster-user and --cluster-password-file go together"),
        "{err}"
    );
    let err = refused(
        &[
            &store[..],
            &[
                "--cluster",
                "tls://10.0.0.5:4222",
                "--cluster-ca",
                "/nonexistent/ca.pem",
            ],
        ]
        .concat(),
    );
    assert!(err.contains("cannot read /nonexistent/ca.pem"), "{err}");
    let help = stdout(&Command::new(BIN).arg("--help").output().unwrap());
    for flag in [
        "--cluster-ca",
        "--cluster-cert",
        "--cluster-key",
        "--cluster-user",
        "--cluster-password-file",
    ] {
        assert!(help.contains(flag), "--help does not mention {flag}");
    }
}
