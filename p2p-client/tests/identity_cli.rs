//! Trust from the command line, against the real rendezvous server and switchboard started
//! in-process (TLS with a self-signed certificate kept in a temporary directory): the server's
//! key pinned on first use and refused when it changes, `--ca`, safety numbers that agree on
//! both sides, `contacts verify`, and a contact whose identity key changed (`chat` exits 3
//! until `--accept-new-key`, and the contact is no longer verified).
//!
//! Alice and Bob share one client home (`P2P_HOME`) per test: identity keys and pins are per
//! user name inside it.

// Test code: a panic with the failing value is the report we want.
#![allow(clippy::unwrap_used)]

mod client;
mod loopback;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use client::{BIN, Proc};
use loopback::KDF;
use p2p_servers::services::Services;
use p2p_servers::tls::{CERT_FILE, ServerTls};
use serde_json::Value;
use shared::identity::Fingerprint;

static NEXT: AtomicU32 = AtomicU32::new(0);

fn temp_dir(tag: &str) -> PathBuf {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("p2p-identity-{tag}-{}-{n}", std::process::id()))
}

/// Rendezvous and switchboard on loopback; the database, the certificate directory and the
/// client home are removed on drop.
struct Servers {
    services: Option<Services>,
    addr: String,
    dir: PathBuf,
    home: PathBuf,
}

impl Servers {
    fn start() -> Servers {
        let dir = temp_dir("server");
        let tls = ServerTls::self_signed_in(&dir, &[IpAddr::from([127, 0, 0, 1])]).unwrap();
        let db = dir.join("rendezvous.db");
        let options = loopback::rendezvous(loopback::any_port(), db, loopback::config(None), tls);
        let services = loopback::services(options, loopback::any_port());
        let addr = services.rendezvous().local_addr().to_string();
        Servers {
            services: Some(services),
            addr,
            dir,
            home: temp_dir("home"),
        }
    }

    fn fingerprint(&self) -> Fingerprint {
        self.services.as_ref().unwrap().fingerprint()
    }

    /// `p2p-client ARGS --server S --user USER` with the shared home and USER's password.
    fn command(&self, user: &str, args: &[&str]) -> Command {
        self.command_at(&self.addr, user, args)
    }

    /// [`command`](Self::command) naming the server `server`.
    fn command_at(&self, server: &str, user: &str, args: &[&str]) -> Command {
        client::command_as(server, &self.home, user, args)
    }

    fn output(&self, user: &str, args: &[&str]) -> Output {
        self.command(user, args).output().unwrap()
    }

    fn run(&self, user: &str, args: &[&str]) -> Output {
        let out = self.output(user, args);
        assert_success(&out, &format!("{args:?} as {user}"));
        out
    }

    /// Registers both users and makes them mutual contacts (their logins register their
    /// device keys).
    fn pair(&self, a: &str, b: &str) {
        for user in [a, b] {
            self.run(user, &["register", "--kdf", KDF]);
        }
        self.run(a, &["contacts", "add", b]);
        self.run(b, &["contacts", "add", a]);
    }

    fn fingerprint_json(&self, user: &str, peer: &str) -> Value {
        let out = self.run(user, &["contacts", "fingerprint", peer, "--json"]);
        serde_json::from_str(&text(&out.stdout)).unwrap()
    }

    fn user_dir(&self, user: &str) -> PathBuf {
        self.home.join("users").join(user)
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        if let Some(services) = self.services.take() {
            services.shutdown();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: status {:?}, stdout {:?}, stderr {:?}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// `chat --json` as `user` with `peer`.
fn chat(servers: &Servers, user: &str, peer: &str, extra: &[&str]) -> Proc {
    Proc::spawn(user, servers.command(user, &client::chat_args(peer, extra)))
}

/// Closes the chat's input, waits (at most 20 s) for its exit and returns the exit code, every
/// event and the stderr text.
fn finish(mut chat: Proc) -> (Option<i32>, Vec<Value>, String) {
    let status = chat.finish(Duration::from_secs(20));
    (status.code(), chat.events(), chat.logs())
}

fn messages(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["event"] == "message")
        .map(|e| e["text"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_first_connection_pins_the_server_and_says_so() {
    let s = Servers::start();
    let fp = s.fingerprint().to_string();
    let out = s.run("alice", &["register", "--kdf", KDF]);
    let notice = format!("p2p-client: pinned the server {} with key {fp}", s.addr);
    assert_eq!(text(&out.stderr).trim(), notice);
    let known = std::fs::read_to_string(s.home.join("known_servers")).unwrap();
    assert_eq!(known, format!("{} {fp}\n", s.addr));
    assert_eq!(mode(&s.home), 0o700);
    // Known now: nothing more is said.
    let out = s.run("alice", &["contacts", "list"]);
    assert_eq!(text(&out.stderr), "");
    // The login made alice's identity key, private to her.
    let key = s.user_dir("alice").join("identity.key");
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(&s.user_dir("alice")), 0o700);

    // --home wins over P2P_HOME; a chat --json says it pinned the server as an event too.
    let other = temp_dir("other-home");
    let mut cmd = s.command("alice", &["chat", "--json", "--peer", "bob", "--wait", "1"]);
    let mut child = cmd
        .arg("--home")
        .arg(&other)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Input stays open: the chat waits for bob (who never comes), not for input.
    let _stdin = child.stdin.take();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let first: Value = serde_json::from_str(text(&out.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(
        first,
        serde_json::json!({"event": "server_pinned", "server": s.addr, "fingerprint": fp})
    );
    assert!(text(&out.stderr).contains(&notice), "{}", text(&out.stderr));
    assert!(other.join("known_servers").exists());
    let _ = std::fs::remove_dir_all(&other);
}

#[test]
fn a_server_whose_key_changed_is_refused_naming_both_keys() {
    let s = Servers::start();
    s.run("alice", &["register", "--kdf", KDF]);
    let known = s.home.join("known_servers");
    let other = Fingerprint([9; 32]);
    std::fs::write(&known, format!("{} {other}\n", s.addr)).unwrap();
    for args in [&["contacts", "list"][..], &["chat", "--peer", "bob"]] {
        let out = s.output("alice", args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err:?}");
        assert!(err.starts_with("p2p-client: error: "), "{err}");
        for needle in [
            other.to_string(),
            s.fingerprint().to_string(),
            known.display().to_string(),
        ] {
            assert!(err.contains(&needle), "{needle} not in {err}");
        }
    }
    // The pin was not replaced.
    let line = std::fs::read_to_string(&known).unwrap();
    assert_eq!(line, format!("{} {other}\n", s.addr));
}

#[test]
fn a_ca_file_verifies_strictly_and_pins_nothing() {
    let s = Servers::start();
    let ca = s.dir.join(CERT_FILE);
    let by_name = s.addr.replace("127.0.0.1", "localhost");
    for server in [&s.addr, &by_name] {
        let out = s
            .command_at(server, "alice", &["register", "--kdf", KDF])
            .args(["--ca", ca.to_str().unwrap()])
            .output()
            .unwrap();
        if server == &s.addr {
            assert_success(&out, "register with --ca");
        } else {
            // Registered already: the server answered, so TLS was fine.
            assert!(
                text(&out.stderr).contains("name taken"),
                "{}",
                text(&out.stderr)
            );
        }
        assert!(!text(&out.stderr).contains("pinned"));
    }
    assert!(!s.home.join("known_servers").exists());
    // Another CA: refused, and still nothing pinned.
    let wrong_dir = temp_dir("wrong-ca");
    ServerTls::self_signed_in(&wrong_dir, &[]).unwrap();
    let out = s
        .command("alice", &["contacts", "list"])
        .args(["--ca", wrong_dir.join(CERT_FILE).to_str().unwrap()])
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("TLS with"), "{err}");
    assert!(!s.home.join("known_servers").exists());
    let _ = std::fs::remove_dir_all(&wrong_dir);
}

#[test]
fn safety_numbers_agree_and_verify_marks_the_contact() {
    let s = Servers::start();
    s.pair("alice", "bob");
    let out = s.run("alice", &["contacts", "fingerprint", "bob"]);
    let alice_view = text(&out.stdout);
    assert!(
        text(&out.stderr).contains("pinned bob's identity key"),
        "{}",
        text(&out.stderr)
    );
    let bob_view = text(&s.run("bob", &["contacts", "fingerprint", "alice"]).stdout);
    let number = alice_view.lines().next().unwrap();
    assert_eq!(number, bob_view.lines().next().unwrap());
    let groups: Vec<&str> = number.split(' ').collect();
    assert_eq!(groups.len(), 12, "{number}");
    assert!(
        groups
            .iter()
            .all(|g| g.len() == 5 && g.bytes().all(|b| b.is_ascii_digit()))
    );
    assert!(alice_view.contains("bob is not verified"), "{alice_view}");

    let a = s.fingerprint_json("alice", "bob");
    let b = s.fingerprint_json("bob", "alice");
    assert_eq!(a["safety_number"], number);
    assert_eq!(a["peer"], "bob");
    assert_eq!(a["my_fingerprint"], b["peer_fingerprint"]);
    assert_eq!(a["peer_fingerprint"], b["my_fingerprint"]);
    assert_eq!(a["verified"], false);

    let out = s.run("alice", &["contacts", "verify", "bob"]);
    assert!(
        text(&out.stdout).contains("verified"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(s.fingerprint_json("alice", "bob")["verified"], true);
    assert_eq!(s.fingerprint_json("bob", "alice")["verified"], false);
    let pins = std::fs::read_to_string(s.user_dir("alice").join("contacts.pins")).unwrap();
    assert!(
        pins.starts_with("bob ") && pins.trim_end().ends_with(" verified"),
        "{pins}"
    );

    // Nothing pinned for carol: an error, and nothing is sent for it.
    let out = s.output("alice", &["contacts", "verify", "carol"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no identity key is pinned for carol"));
}

#[test]
fn a_changed_identity_key_stops_the_chat_until_accepted() {
    let s = Servers::start();
    s.pair("alice", "bob");
    let before = s.fingerprint_json("alice", "bob");
    s.run("alice", &["contacts", "verify", "bob"]);
    // Bob's device gets a new identity key, and registers it with his next login.
    std::fs::remove_file(s.user_dir("bob").join("identity.key")).unwrap();
    s.run("bob", &["contacts", "list"]);
    let new = s.fingerprint_json("bob", "alice")["my_fingerprint"].clone();
    assert_ne!(new, before["peer_fingerprint"]);

    let mut alice = chat(&s, "alice", "bob", &[]);
    let mut bob = chat(&s, "bob", "alice", &[]);
    alice.send_lines(&["secret from alice".to_owned()]);
    bob.send_lines(&["secret from bob".to_owned()]);
    let (code, alice_events, alice_err) = finish(alice);
    assert_eq!(code, Some(3), "{alice_events:#?}\n{alice_err}");
    // The safety number alice is shown for bob's new key is what bob sees on his side.
    let bobs_view = s.fingerprint_json("bob", "alice")["safety_number"].clone();
    assert_ne!(bobs_view, before["safety_number"]);
    let changed = serde_json::json!({
        "event": "key_changed",
        "peer": "bob",
        "old": before["peer_fingerprint"],
        "new": new,
        "safety_number": bobs_view,
    });
    assert_eq!(alice_events, vec![changed], "{alice_err}");
    let line = format!(
        "p2p-client: bob's identity key changed from {} to {}; not chatting. With the new key \
         the safety number is {}: if bob sees the same number (p2p-client contacts fingerprint \
         YOU, on their side), run again with --accept-new-key {}",
        before["peer_fingerprint"].as_str().unwrap(),
        new.as_str().unwrap(),
        bobs_view.as_str().unwrap(),
        new.as_str().unwrap()
    );
    assert!(alice_err.lines().any(|l| l == line), "{alice_err}");
    let (bob_code, bob_events, bob_err) = finish(bob);
    assert!(messages(&bob_events).is_empty(), "{bob_events:#?}");
    assert_ne!(bob_code, None, "bob ends when alice leaves: {bob_err}");
    // Still the old pin, still verified.
    assert_eq!(s.fingerprint_json("alice", "bob"), before_verified(&before));

    // Accepting some other key lets nothing through: still exit 3, still the old pin.
    let other = shared::identity::Fingerprint::of_identity_key(&[7; 32]).to_string();
    let mut alice = chat(&s, "alice", "bob", &["--accept-new-key", &other]);
    let mut bob = chat(&s, "bob", "alice", &[]);
    alice.send_lines(&["not for a key nobody compared".to_owned()]);
    bob.send_lines(&["nor this".to_owned()]);
    let (code, _, alice_err) = finish(alice);
    assert_eq!(code, Some(3), "{alice_err}");
    let (_, bob_events, _) = finish(bob);
    assert!(messages(&bob_events).is_empty(), "{bob_events:#?}");
    assert_eq!(s.fingerprint_json("alice", "bob"), before_verified(&before));

    // Accepted by its fingerprint: the chat goes on, and bob is pinned again, unverified.
    let accepted = new.as_str().unwrap().to_owned();
    let mut alice = chat(&s, "alice", "bob", &["--accept-new-key", &accepted]);
    let mut bob = chat(&s, "bob", "alice", &[]);
    alice.send_lines(&["hello bob".to_owned()]);
    bob.send_lines(&["hello alice".to_owned()]);
    let message_from =
        |from: &'static str| move |e: &Value| e["event"] == "message" && e["from"] == from;
    alice.wait_for("bob's message", Duration::from_secs(20), |events| {
        events.iter().any(message_from("bob"))
    });
    bob.wait_for("alice's message", Duration::from_secs(20), |events| {
        events.iter().any(message_from("alice"))
    });
    let (code, alice_events, alice_err) = finish(alice);
    let (bob_code, bob_events, bob_err) = finish(bob);
    assert_eq!(code, Some(0), "{alice_err}");
    assert_eq!(bob_code, Some(0), "{bob_err}");
    assert_eq!(messages(&alice_events), ["hello alice"]);
    assert_eq!(messages(&bob_events), ["hello bob"]);
    assert!(alice_err.contains("no longer verified"), "{alice_err}");
    let after = s.fingerprint_json("alice", "bob");
    assert_eq!(after["peer_fingerprint"], new);
    assert_eq!(after["verified"], false);
    assert_ne!(after["safety_number"], before["safety_number"]);
}

/// `before` with the verified mark set.
fn before_verified(before: &Value) -> Value {
    let mut v = before.clone();
    v["verified"] = Value::Bool(true);
    v
}

#[test]
fn help_explains_the_trust_options() {
    let help = |args: &[&str]| {
        let out = Command::new(BIN).args(args).output().unwrap();
        text(&out.stdout)
    };
    let chat = help(&["chat", "--help"]);
    for needle in [
        "--accept-new-key",
        "--ca",
        "--home",
        "key_changed",
        "exits 3",
    ] {
        assert!(
            chat.contains(needle),
            "{needle} not in chat --help:\n{chat}"
        );
    }
    let contacts = help(&["contacts", "--help"]);
    for needle in ["fingerprint", "verify"] {
        assert!(contacts.contains(needle), "{needle} not in:\n{contacts}");
    }
    let fingerprint = help(&["contacts", "fingerprint", "--help"]);
    assert!(fingerprint.contains("safety number"), "{fingerprint}");
    let top = help(&["--help"]);
    assert!(top.contains("P2P_HOME"), "{top}");
}
