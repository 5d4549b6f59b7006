//! The rendezvous server with a real SQLite database that refuses writes: every command that
//! writes (REG, PWD, ADC, REM, BLK, ALW, DEV, and the device key of an INV or ANS on a
//! connection that sent no DEV) is answered `500 TrID internal server error`, nobody is told of
//! the change, the connection stays open, and a fresh connection (and a restarted server) sees
//! the old state.
//!
//! The database is made to fail from outside, like a full disk would: the test opens it itself
//! and adds triggers that abort every write to the tables the server writes. Both backends:
//! the SQLite file, and a real PostgreSQL server the test starts (`pg_support`).

// Test code: a panic with the failing value is the report we want.
#![allow(clippy::unwrap_used)]

mod pg_support;
mod rendezvous_support;

use std::path::{Path, PathBuf};

use p2p_servers::{RendezvousHandle, RendezvousOptions};
use rendezvous_support::{CHEAP, Client, b64, text};
use shared::rendezvous::RendezvousConfig;
use shared::rendezvous::wire::TrId;

const TABLES: [&str; 4] = ["users", "contacts", "blocks", "devices"];

/// Makes every insert, update and delete on the server's tables fail.
fn break_writes(db: &Path) {
    let conn = rusqlite::Connection::open(db).unwrap();
    for table in TABLES {
        for op in ["INSERT", "UPDATE", "DELETE"] {
            let sql = format!(
                "CREATE TRIGGER fail_{table}_{op} BEFORE {op} ON {table} \
                 BEGIN SELECT RAISE(ABORT, 'test: the disk is full'); END;"
            );
            conn.execute_batch(&sql).unwrap();
        }
    }
}

fn mend_writes(db: &Path) {
    let conn = rusqlite::Connection::open(db).unwrap();
    for table in TABLES {
        for op in ["INSERT", "UPDATE", "DELETE"] {
            conn.execute_batch(&format!("DROP TRIGGER fail_{table}_{op};"))
                .unwrap();
        }
    }
}

fn options(dir: &Path) -> RendezvousOptions {
    RendezvousOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        db_path: dir.join("rendezvous.db"),
        config: RendezvousConfig {
            min_kdf: CHEAP,
            ..RendezvousConfig::default()
        },
        ..RendezvousOptions::default()
    }
}

fn connect(server: &RendezvousHandle) -> Client {
    Client::connect(server.local_addr(), server.fingerprint())
}

fn user(server: &RendezvousHandle, name: &str, password: &str) -> Client {
    let mut c = connect(server);
    c.login(name, password).unwrap();
    c
}

/// `command params` must be answered `500 TrID internal server error`, and the connection
/// must still work.
fn refused(client: &mut Client, command: &str, params: &[&str]) {
    let answer = client.request(command, params);
    assert_eq!(
        text(&answer),
        format!("500 {} internal server error", answer.trid),
        "{command} {params:?}"
    );
    assert_eq!(client.request("PNG", &[]).command.as_str(), "QNG");
}

/// The `LST` payload of `client`.
fn list(client: &mut Client) -> String {
    String::from_utf8(client.ok("LST", &[]).payload).unwrap()
}

fn credentials(password: &str) -> [String; 4] {
    let c = shared::rendezvous::scram::derive_credentials(
        password.as_bytes(),
        b"salt-of-16-bytes",
        CHEAP,
    )
    .unwrap();
    [
        CHEAP.to_string(),
        b64(&c.salt),
        b64(&c.stored_key),
        b64(&c.server_key),
    ]
}

#[test]
fn a_database_that_refuses_writes_gets_500_and_nothing_changes() {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("rdv-store-failure-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let options = options(&dir);
    let db = options.db_path.clone();
    check(options, || break_writes(&db), || mend_writes(&db));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_postgres_database_that_refuses_writes_gets_500_and_nothing_changes() {
    let test = "a_postgres_database_that_refuses_writes_gets_500_and_nothing_changes";
    let Some(cluster) = pg_support::cluster(test) else {
        return;
    };
    let database = cluster.create_database("failure");
    let dir: PathBuf =
        std::env::temp_dir().join(format!("rdv-store-failure-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut options = options(&dir);
    options.postgres = Some(cluster.url(&database).parse().unwrap());
    check(
        options,
        || pg_support::break_writes(&cluster, &database),
        || pg_support::mend_writes(&cluster, &database),
    );
    // The SQLite file was never made.
    assert!(!dir.join("rendezvous.db").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The scenario, on whichever database `options` names; `break_writes` and `mend_writes` make
/// it refuse writes and take them again.
fn check(options: RendezvousOptions, break_writes: impl Fn(), mend_writes: impl Fn()) {
    let server = RendezvousHandle::start(options.clone()).unwrap();
    // Before the disk fills up: alice and bob are mutual contacts, alice blocks carol, bob's
    // device key is known.
    let mut setup = connect(&server);
    for name in ["alice", "bob", "carol"] {
        setup.register(name, "pw");
    }
    let mut alice = user(&server, "alice", "pw");
    let mut bob = user(&server, "bob", "pw");
    alice.ok("ADC", &["bob"]);
    alice.ok("BLK", &["carol"]);
    bob.ok("ADC", &["alice"]);
    bob.ok("DEV", &[&b64(&[2; 32])]);
    alice.ok("CHG", &["NLN"]);
    bob.ok("CHG", &["NLN"]);
    alice.push("NLN", &["NLN", "bob"]);
    bob.push("NLN", &["NLN", "alice"]);
    let before = list(&mut alice);
    assert_eq!(before, "bob NLN C\r\ncarol FLN B\r\n");

    break_writes();
    let [kdf, salt, stored, server_key] = credentials("new-pw");
    let fresh = [kdf.as_str(), &salt, &stored, &server_key];
    refused(&mut setup, "REG", &[&["dave"][..], &fresh].concat());
    refused(&mut alice, "PWD", &fresh);
    refused(&mut alice, "ADC", &["carol"]);
    refused(&mut alice, "REM", &["bob"]);
    refused(&mut alice, "BLK", &["bob"]);
    refused(&mut alice, "ALW", &["carol"]);
    let alice_key = format!("key={}", b64(&[1; 32]));
    let session: String = std::iter::repeat_n('a', 32).collect();
    refused(&mut alice, "DEV", &[&b64(&[1; 32]), &session]);
    // No DEV stuck: an offer's key would be registered now, and cannot be.
    refused(&mut alice, "INV", &["bob", &alice_key]);
    let inv = bob.ok("INV", &["alice", &format!("key={}", b64(&[2; 32]))]);
    let sid = inv.param(1).unwrap().to_owned();
    alice.push("RNG", &[&sid, "bob"]);
    refused(&mut alice, "ANS", &[&sid, &alice_key]);

    // Bob was told nothing: no presence change, no introduction.
    assert_eq!(bob.request("PNG", &[]).command.as_str(), "QNG");
    let told: Vec<String> = bob.take_backlog().iter().map(text).collect();
    assert!(
        told.iter()
            .all(|l| !l.contains("alice") && !l.starts_with("ITR")),
        "{told:?}"
    );
    // A fresh connection sees the old state: old password, old lists, no device key.
    let mut again = user(&server, "alice", "pw");
    assert!(connect(&server).login("alice", "new-pw").is_err());
    assert!(connect(&server).login("dave", "new-pw").is_err());
    assert_eq!(list(&mut again), before);
    assert_eq!(text(&bob.request("KEY", &["alice"])).split(' ').count(), 3);

    // The database agrees: a restarted server on it sees the same.
    drop((alice, bob, again, setup));
    server.shutdown();
    mend_writes();
    let server = RendezvousHandle::start(options).unwrap();
    let mut alice = user(&server, "alice", "pw");
    assert_eq!(list(&mut alice), "bob FLN C\r\ncarol FLN B\r\n");
    let mut bob = user(&server, "bob", "pw");
    let keys = bob.request("KEY", &["alice"]);
    assert_eq!(keys.params, ["alice"], "{keys:?}");
    assert_ne!(keys.trid, TrId::PUSH);
    server.shutdown();
}
