//! The `stun-server` binary with `--store postgres://...`: accounts and lists live in a real
//! PostgreSQL server (started by the test, see `pg_support`) and survive a restart of the
//! rendezvous server; `stun-server user` works on the same database; an unreachable database
//! is a one-line error.

// Test code: a panic with the failing value is the report we want.
#![allow(clippy::unwrap_used)]

mod pg_support;
mod rendezvous_support;
use rendezvous_support::TempDir;
mod server_process;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use rendezvous_support::Client;
use server_process::{BIN, Running, interrupt_and_wait};
use shared::identity::Fingerprint;

const CHEAP: &str = "argon2id:m=8:t=1:p=1";

/// Starts the rendezvous server alone on `store`; returns it, its address and fingerprint.
fn spawn(db: &str, store: &str) -> (Running, String, SocketAddr, Fingerprint) {
    let args = [
        "--no-stun",
        "--rendezvous",
        "127.0.0.1:0",
        "--no-switchboard",
        "--db",
        db,
        "--store",
        store,
        "--min-kdf",
        CHEAP,
    ];
    let marker = "rendezvous listening on ";
    let (running, seen, line) = server_process::start_until(server_process::command(&args), marker);
    let rest = line.split(marker).nth(1).unwrap();
    let addr = rest.split_whitespace().next().unwrap().parse().unwrap();
    let fingerprint = server_process::logged_fingerprint(&seen);
    (running, seen, addr, fingerprint)
}

/// Runs `stun-server user ...` on `store` with the password (if any) in `P2P_PASSWORD`.
fn user(store: &str, args: &[&str], password: Option<&str>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("user")
        .args(args)
        .args(["--store", store])
        .env_remove("P2P_PASSWORD")
        .stdin(Stdio::null());
    if let Some(p) = password {
        cmd.env("P2P_PASSWORD", p);
    }
    cmd.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn accounts_and_contacts_in_postgres_survive_a_restart() {
    let test = "accounts_and_contacts_in_postgres_survive_a_restart";
    let Some(cluster) = pg_support::cluster(test) else {
        return;
    };
    let store = cluster.url(&cluster.create_database("e2e"));
    let dir = TempDir::new("e2e");
    let db = dir.db();

    let (running, log, addr, fp) = spawn(&db, &store);
    // The log names the database, without a password (there is none here), not the file.
    assert!(log.contains(&store), "{log}");
    let mut setup = Client::connect(addr, fp);
    setup.register("alice", "alice pw");
    setup.register("bob", "bob pw");
    setup.register("carol", "carol pw");
    let mut alice = Client::connect(addr, fp);
    alice.login("alice", "alice pw").unwrap();
    alice.ok("ADC", &["bob"]);
    alice.ok("BLK", &["carol"]);
    drop((alice, setup));
    assert!(interrupt_and_wait(running).success());
    assert!(
        !PathBuf::from(&db).exists(),
        "the SQLite file was created although --store names PostgreSQL"
    );

    // The operator adds dave to the same database while no server runs.
    let added = user(&store, &["add", "dave", "--kdf", CHEAP], Some("dave pw"));
    assert!(added.status.success(), "{}", text(&added.stderr));

    let (running, _, addr, fp) = spawn(&db, &store);
    let mut alice = Client::connect(addr, fp);
    alice.login("alice", "alice pw").unwrap();
    let list = text(&alice.ok("LST", &[]).payload);
    assert_eq!(list, "bob FLN C\r\ncarol FLN B\r\n");
    Client::connect(addr, fp).login("bob", "bob pw").unwrap();
    Client::connect(addr, fp).login("dave", "dave pw").unwrap();
    assert!(Client::connect(addr, fp).login("alice", "wrong").is_err());
    drop(alice);
    assert!(interrupt_and_wait(running).success());

    let list = user(&store, &["list"], None);
    assert!(list.status.success(), "{}", text(&list.stderr));
    let names: Vec<String> = text(&list.stdout)
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["alice", "bob", "carol", "dave"]);
}

#[test]
fn an_unreachable_database_is_a_one_line_error_naming_it() {
    // A port nothing listens on: bound and released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let store = format!("postgres://rdv:secret-pw@127.0.0.1:{port}/accounts");
    let dir = TempDir::new("unreachable");
    for out in [
        Command::new(BIN)
            .args([
                "--no-stun",
                "--rendezvous",
                "127.0.0.1:0",
                "--no-switchboard",
            ])
            .args(["--db", &dir.db(), "--store", &store])
            .output()
            .unwrap(),
        user(&store, &["list"], None),
    ] {
        assert!(!out.status.success());
        let err = text(&out.stderr);
        let line = err.lines().last().unwrap();
        assert!(
            line.starts_with("stun-server: error: cannot connect to PostgreSQL at 127.0.0.1:")
                && line.contains(&port.to_string()),
            "{err}"
        );
        assert!(!err.contains("secret-pw"), "the password leaked: {err}");
    }
    // What the server cannot honour is refused before anything starts.
    let out = user("postgres://u@127.0.0.1/db?sslmode=require", &["list"], None);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("without TLS"),
        "{}",
        text(&out.stderr)
    );
}
