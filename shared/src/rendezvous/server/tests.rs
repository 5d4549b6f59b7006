//! Server tests in virtual time: a harness, then login, presence, lists and the connection rules.
//! Introductions and timers are in `tests_intro.rs`.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::BytesMut;

use super::*;
use crate::rendezvous::scram::{ChannelBinding, MECHANISM, ScramClient, derive_credentials};
use crate::rendezvous::types::Credentials;
use crate::rendezvous::wire;

/// The channel binding the harness's connections export (both ends of a clean TLS session).
pub(super) const CB: ChannelBinding = ChannelBinding([0x5a; 32]);

pub(super) const CHEAP: Kdf = Kdf {
    memory_kib: 8,
    iterations: 1,
    lanes: 1,
};

pub(super) fn config() -> RendezvousConfig {
    RendezvousConfig {
        min_kdf: CHEAP,
        stun_addr: Some("192.0.2.1:3478".parse().unwrap()),
        switchboard_addr: Some("192.0.2.1:1865".parse().unwrap()),
        ..RendezvousConfig::default()
    }
}

pub(super) fn name(n: &str) -> UserName {
    UserName::parse(n).unwrap()
}

pub(super) fn creds(password: &str, salt: &[u8]) -> Credentials {
    derive_credentials(password.as_bytes(), salt, CHEAP).unwrap()
}

pub(super) fn record(user: &str) -> UserRecord {
    UserRecord {
        name: name(user),
        credentials: creds(
            &format!("{user}-pw"),
            format!("salt-of-{user}-16").as_bytes(),
        ),
    }
}

/// A line as text (`CMD TrID params`), payload appended after `\r\n` if any.
pub(super) fn text(line: &Line) -> String {
    let mut out = BytesMut::new();
    wire::encode(line, &mut out, wire::Direction::ToClient).unwrap();
    let s = String::from_utf8(out.to_vec()).unwrap();
    if line.payload.is_empty() {
        s.strip_suffix("\r\n").map(str::to_owned).unwrap_or(s)
    } else {
        s
    }
}

/// A server plus virtual time and a record of everything it output.
pub(super) struct Harness {
    pub(super) server: RendezvousServer,
    pub(super) now: Instant,
    next_conn: u64,
    pub(super) log: Vec<Output>,
}

impl Harness {
    /// Users `users`, with `contacts` as `(owner, contact)` pairs and `blocks` as
    /// `(owner, blocked)`. Every user's password is `<name>-pw`.
    pub(super) fn new(users: &[&str], contacts: &[(&str, &str)], blocks: &[(&str, &str)]) -> Self {
        Self::with_config(config(), users, contacts, blocks)
    }

    pub(super) fn with_config(
        config: RendezvousConfig,
        users: &[&str],
        contacts: &[(&str, &str)],
        blocks: &[(&str, &str)],
    ) -> Self {
        let pairs = |list: &[(&str, &str)]| list.iter().map(|(a, b)| (name(a), name(b))).collect();
        let snapshot = DirectorySnapshot {
            users: users.iter().map(|u| record(u)).collect(),
            contacts: pairs(contacts),
            blocks: pairs(blocks),
            device_keys: Vec::new(),
        };
        Self::with_snapshot(config, snapshot)
    }

    /// A server started from `snapshot` (as loaded from the store).
    pub(super) fn with_snapshot(config: RendezvousConfig, snapshot: DirectorySnapshot) -> Self {
        Harness {
            server: RendezvousServer::new(config, snapshot, [7; 32], [9; 32]),
            now: Instant::now(),
            next_conn: 1,
            log: Vec::new(),
        }
    }

    /// Drains the server's output into the log; returns what was new.
    pub(super) fn drain(&mut self) -> Vec<Output> {
        let mut new = Vec::new();
        while let Some(o) = self.server.poll_output() {
            new.push(o);
        }
        self.log.extend(new.iter().cloned());
        new
    }

    pub(super) fn connect(&mut self) -> ConnId {
        self.connect_bound(CB)
    }

    /// A connection whose server side exports `binding`.
    pub(super) fn connect_bound(&mut self, binding: ChannelBinding) -> ConnId {
        self.connect_from("198.51.100.1:40000".parse().unwrap(), binding)
    }

    /// A connection from `remote` whose server side exports `binding`.
    pub(super) fn connect_from(&mut self, remote: SocketAddr, binding: ChannelBinding) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.server
            .handle_connected(self.now, conn, remote, binding);
        conn
    }

    /// Sends `raw` (without `\r\n`) through the real framing, as a driver would.
    pub(super) fn send_raw(&mut self, conn: ConnId, raw: &str) {
        let mut buf = BytesMut::from(format!("{raw}\r\n").as_bytes());
        match wire::decode(&mut buf, wire::Direction::ToServer) {
            Ok(Some(line)) => self.server.handle_line(self.now, conn, line),
            Ok(None) => panic!("incomplete line {raw:?}"),
            Err(e) => self.server.handle_frame_error(self.now, conn, e),
        }
    }

    /// Sends a line and returns the texts of what `conn` got in answer (other outputs are in
    /// the log).
    pub(super) fn ask(&mut self, conn: ConnId, raw: &str) -> Vec<String> {
        self.send_raw(conn, raw);
        let out = self.drain();
        to(&out, conn)
    }

    /// Connects and sends `VER`.
    pub(super) fn hello(&mut self) -> ConnId {
        let conn = self.connect();
        assert_eq!(self.ask(conn, "VER 1 P2P1"), ["VER 1 P2P1"]);
        conn
    }

    /// Runs both SCRAM steps on `conn`; returns the answers to the second.
    pub(super) fn try_login(&mut self, conn: ConnId, user: &str, password: &str) -> Vec<String> {
        self.try_login_bound(conn, user, password, &CB)
    }

    /// [`try_login`](Self::try_login) with the client's side exporting `binding`.
    pub(super) fn try_login_bound(
        &mut self,
        conn: ConnId,
        user: &str,
        password: &str,
        binding: &ChannelBinding,
    ) -> Vec<String> {
        let mut client = ScramClient::new(&name(user), &[user.len() as u8; 18], binding)
            .with_min_kdf(cheap_kdf());
        let first = B64.encode(client.client_first());
        let answer = self.ask(conn, &format!("USR 3 {MECHANISM} I {first}"));
        let server_first = answer[0].rsplit(' ').next().unwrap();
        let server_first = String::from_utf8(B64.decode(server_first).unwrap()).unwrap();
        let client_final = client
            .handle_server_first(&server_first, password.as_bytes())
            .unwrap();
        let answers = self.ask(
            conn,
            &format!("USR 4 {MECHANISM} S {}", B64.encode(client_final)),
        );
        if let Some(ok) = answers[0].strip_prefix(&format!("USR 4 OK {user} ")) {
            let server_final = String::from_utf8(B64.decode(ok).unwrap()).unwrap();
            client.handle_server_final(&server_final).unwrap();
        }
        answers
    }

    /// A fresh connection logged in as `user`.
    pub(super) fn login(&mut self, user: &str) -> ConnId {
        let conn = self.hello();
        let answers = self.try_login(conn, user, &format!("{user}-pw"));
        assert!(
            answers[0].starts_with(&format!("USR 4 OK {user} ")),
            "{answers:?}"
        );
        conn
    }

    /// Logs in and sets a state; drains.
    pub(super) fn online(&mut self, user: &str, state: &str) -> ConnId {
        let conn = self.login(user);
        assert_eq!(
            self.ask(conn, &format!("CHG 9 {state}")),
            [format!("CHG 9 {state}")]
        );
        conn
    }

    /// Moves virtual time on by `by`, firing every timer on the way; returns the new output.
    pub(super) fn advance(&mut self, by: Duration) -> Vec<Output> {
        let end = self.now + by;
        let mut new = Vec::new();
        for _ in 0..100_000 {
            match self.server.poll_timeout() {
                Some(at) if at <= end => {
                    self.now = self.now.max(at);
                    self.server.handle_timeout(self.now);
                    new.extend(self.drain());
                }
                _ => break,
            }
        }
        self.now = end;
        new
    }
}

/// The texts of the lines sent to `conn` in `outputs`, plus `CLOSE` for its close.
pub(super) fn to(outputs: &[Output], conn: ConnId) -> Vec<String> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Send { conn: c, line } if *c == conn => Some(text(line)),
            Output::Close(c) if *c == conn => Some("CLOSE".to_owned()),
            _ => None,
        })
        .collect()
}

pub(super) fn stores(outputs: &[Output]) -> Vec<StoreOp> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Store { op, .. } => Some(op.clone()),
            _ => None,
        })
        .collect()
}

// ---- version and login ----

#[test]
fn version_negotiation() {
    let mut h = Harness::new(&[], &[], &[]);
    let a = h.connect();
    assert_eq!(h.ask(a, "VER 1 P2P9 P2P1"), ["VER 1 P2P1"]);
    assert_eq!(h.ask(a, "VER 2 P2P1"), ["715 2 not expected now"]);
    let b = h.connect();
    assert_eq!(
        h.ask(b, "VER 1 P2P2"),
        ["731 1 unsupported version", "OUT 0 ERR", "CLOSE"]
    );
    assert_eq!(h.server.connection_count(), 1);
}

#[test]
fn first_line_must_be_ver() {
    let mut h = Harness::new(&["alice"], &[], &[]);
    let c = h.connect();
    assert_eq!(
        h.ask(c, "USR 1 x I y"),
        ["715 1 not expected now", "OUT 0 ERR", "CLOSE"]
    );
    let c = h.connect();
    assert_eq!(
        h.ask(c, "PNG 1"),
        ["715 1 not expected now", "OUT 0 ERR", "CLOSE"]
    );
    assert_eq!(h.server.connection_count(), 0);
    // Lines for a forgotten connection are ignored.
    assert!(h.ask(c, "VER 1 P2P1").is_empty());
}

#[test]
fn login_succeeds_and_pushes_cfg() {
    let mut h = Harness::new(&["alice"], &[], &[]);
    let c = h.hello();
    let answers = h.try_login(c, "Alice", "alice-pw");
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert!(answers[0].starts_with("USR 4 OK alice "));
    assert_eq!(
        answers[1],
        "CFG 0 stun=192.0.2.1:3478 sb=192.0.2.1:1865 ping=30"
    );
    assert_eq!(h.server.online_count(), 1);
    // Logged in: USR again is out of place.
    assert_eq!(
        h.ask(c, &format!("USR 5 {MECHANISM} I bixuPWE=")),
        ["715 5 not expected now"]
    );
}

#[test]
fn login_is_bound_to_the_tls_session() {
    let mut h = Harness::new(&["alice"], &[], &[]);
    // The client's side of its TLS session exports CB; the server's side of another session
    // (a man in the middle terminating TLS) exports something else: the right password fails
    // like a wrong one, and counts as a failed login.
    let other = ChannelBinding([0xa5; 32]);
    let c = h.connect_bound(other);
    assert_eq!(h.ask(c, "VER 1 P2P1"), ["VER 1 P2P1"]);
    for _ in 0..2 {
        assert_eq!(
            h.try_login(c, "alice", "alice-pw"),
            ["911 4 authentication failed"]
        );
    }
    assert_eq!(
        h.try_login(c, "alice", "alice-pw"),
        ["911 4 authentication failed", "OUT 0 ERR", "CLOSE"]
    );
    assert_eq!(h.server.online_count(), 0);
    // Same bytes on both ends: logged in.
    let c = h.connect_bound(other);
    assert_eq!(h.ask(c, "VER 1 P2P1"), ["VER 1 P2P1"]);
    assert!(h.try_login_bound(c, "alice", "alice-pw", &other)[0].starts_with("USR 4 OK alice "));
}

#[test]
fn client_first_without_tls_exporter_binding_is_refused() {
    let mut h = Harness::new(&["alice"], &[], &[]);
    let c = h.hello();
    let nonce = B64.encode([1u8; 18]);
    for header in ["n,,", "y,,", "p=tls-unique,,", "p=tls-exporter,a=bob,"] {
        let first = B64.encode(format!("{header}n=alice,r={nonce}"));
        assert_eq!(
            h.ask(c, &format!("USR 3 {MECHANISM} I {first}")),
            ["201 3 invalid parameter"],
            "{header}"
        );
    }
    // An unbound client-final (c=biws) after a bound client-first is a failed login.
    let mut client = ScramClient::new(&name("alice"), &[1; 18], &CB).with_min_kdf(cheap_kdf());
    let first = B64.encode(client.client_first());
    let answer = h.ask(c, &format!("USR 3 {MECHANISM} I {first}"));
    let sf = String::from_utf8(B64.decode(answer[0].rsplit(' ').next().unwrap()).unwrap()).unwrap();
    let cf = client.handle_server_first(&sf, b"alice-pw").unwrap();
    let (_, rest) = cf.split_once(',').unwrap();
    let unbound = B64.encode(format!("c=biws,{rest}"));
    assert_eq!(
        h.ask(c, &format!("USR 4 {MECHANISM} S {unbound}")),
        ["911 4 authentication failed"]
    );
    assert!(h.try_login(c, "alice", "alice-pw")[0].starts_with("USR 4 OK alice "));
}

#[test]
fn cfg_carries_the_switchboard_fingerprint_after_sb() {
    let fp = crate::identity::Fingerprint([0x11; 32]);
    let with_fp = RendezvousConfig {
        switchboard_fingerprint: Some(fp),
        ..config()
    };
    let mut h = Harness::with_config(with_fp.clone(), &["alice"], &[], &[]);
    let c = h.hello();
    let answers = h.try_login(c, "alice", "alice-pw");
    assert_eq!(
        answers[1],
        format!("CFG 0 stun=192.0.2.1:3478 sb=192.0.2.1:1865 sbfp={fp} ping=30")
    );
    assert!(answers[1].contains(" sbfp=SHA256:"));
    // No switchboard address: no fingerprint either.
    let no_sb = RendezvousConfig {
        switchboard_addr: None,
        ..with_fp
    };
    let mut h = Harness::with_config(no_sb, &["alice"], &[], &[]);
    let c = h.hello();
    assert_eq!(
        h.try_login(c, "alice", "alice-pw")[1],
        "CFG 0 stun=192.0.2.1:3478 ping=30"
    );
}

#[test]
fn server_first_carries_salt_and_kdf() {
    let mut h = Harness::new(&["alice"], &[], &[]);
    let c = h.hello();
    let client = ScramClient::new(&name("alice"), &[1; 18], &CB).with_min_kdf(cheap_kdf());
    let first = B64.encode(client.client_first());
    let answer = h.ask(c, &format!("USR 3 {MECHANISM} I {first}"));
    let sf = answer[0]
        .strip_prefix(&format!("USR 3 {MECHANISM} S "))
        .unwrap();
    let sf = String::from_utf8(B64.decode(sf).unwrap()).unwrap();
    let salt = B64.encode(b"salt-of-alice-16");
    assert!(
        sf.ends_with(&format!(",s={salt},i=1,k=argon2id:m=8:t=1:p=1")),
        "{sf}"
    );
    assert!(sf.starts_with(&format!("r={}", B64.encode([1u8; 18]))));
}

/// The server-first-message an unknown or known user gets.
fn server_first_for(h: &mut Harness, user: &str) -> String {
    let c = h.hello();
    let client = ScramClient::new(&name(user), &[1; 18], &CB).with_min_kdf(cheap_kdf());
    let first = B64.encode(client.client_first());
    let answer = h.ask(c, &format!("USR 3 {MECHANISM} I {first}"));
    let sf = answer[0].rsplit(' ').next().unwrap();
    String::from_utf8(B64.decode(sf).unwrap()).unwrap()
}

#[test]
fn unknown_user_fails_like_a_wrong_password() {
    let mut h = Harness::new(&["alice"], &[], &[]);
    // A fake salt and the default KDF, stable for a given secret.
    let sf = server_first_for(&mut h, "mallory");
    let (_, rest) = sf.split_once(",s=").unwrap();
    let (salt, kdf) = rest.split_once(",i=").unwrap();
    assert_eq!(B64.decode(salt).unwrap().len(), 16);
    assert_eq!(kdf, "2,k=argon2id:m=19456:t=2:p=1");
    let mut again = Harness::new(&[], &[], &[]);
    let sf2 = server_first_for(&mut again, "mallory");
    assert_eq!(sf2.split_once(",s=").unwrap().1, rest);
    assert_ne!(
        server_first_for(&mut h, "trudy")
            .split_once(",s=")
            .unwrap()
            .1,
        rest
    );

    // Both fail at the last step with the same answer. (The client runs the default KDF for
    // mallory: a test-only cost of one real Argon2id.)
    let c = h.hello();
    let unknown = h.try_login(c, "mallory", "whatever");
    let c = h.hello();
    let wrong = h.try_login(c, "alice", "not-alices-pw");
    assert_eq!(unknown, ["911 4 authentication failed"]);
    assert_eq!(wrong, unknown);
    assert_eq!(h.server.online_count(), 0);
}

#[test]
fn out_of_order_and_malformed_login_steps() {
    let mut h = Harness::new(&["alice"], &[], &[]);
    let c = h.hello();
    assert_eq!(
        h.ask(c, &format!("USR 4 {MECHANISM} S Yz1iaXdz")),
        ["715 4 not expected now"]
    );
    assert_eq!(
        h.ask(c, "USR 5 SCRAM-SHA-1 I bixuPWEscj1hYmM="),
        ["201 5 invalid parameter"]
    );
    assert_eq!(
        h.ask(c, &format!("USR 6 {MECHANISM} X bixu")),
        ["201 6 invalid parameter"]
    );
    assert_eq!(
        h.ask(c, &format!("USR 7 {MECHANISM} I !!!")),
        ["201 7 invalid parameter"]
    );
    // A nonce shorter than 18 bytes of base64.
    let short = B64.encode("p=tls-exporter,,n=alice,r=abc");
    assert_eq!(
        h.ask(c, &format!("USR 8 {MECHANISM} I {short}")),
        ["201 8 invalid parameter"]
    );
    assert_eq!(h.ask(c, "CHG 9 NLN"), ["302 9 not logged in"]);
    // Still able to log in.
    assert!(h.try_login(c, "alice", "alice-pw")[0].starts_with("USR 4 OK alice"));
    // Five refusals that were neither a wrong password nor the brake, then one login.
    let counted = *h.server.counters();
    assert_eq!((counted.logins_other, counted.logins_ok), (5, 1));
    assert_eq!(counted.logins_auth_failed + counted.logins_throttled, 0);
}

#[test]
fn login_step_times_out() {
    let mut h = Harness::new(&["alice"], &[], &[]);
    let c = h.hello();
    let mut client = ScramClient::new(&name("alice"), &[1; 18], &CB).with_min_kdf(cheap_kdf());
    let first = B64.encode(client.client_first());
    let answer = h.ask(c, &format!("USR 3 {MECHANISM} I {first}"));
    let sf = String::from_utf8(B64.decode(answer[0].rsplit(' ').next().unwrap()).unwrap()).unwrap();
    let cf = B64.encode(client.handle_server_first(&sf, b"alice-pw").unwrap());
    h.advance(Duration::from_secs(29));
    h.send_raw(c, "PNG 5");
    h.advance(Duration::from_secs(2));
    assert_eq!(
        h.ask(c, &format!("USR 4 {MECHANISM} S {cf}")),
        ["715 4 not expected now"]
    );
    assert_eq!(h.server.online_count(), 0);
}

#[test]
fn three_failed_logins_close() {
    let mut h = Harness::new(&["alice"], &[], &[]);
    let c = h.hello();
    assert_eq!(
        h.try_login(c, "alice", "x"),
        ["911 4 authentication failed"]
    );
    assert_eq!(
        h.try_login(c, "alice", "y"),
        ["911 4 authentication failed"]
    );
    assert_eq!(
        h.try_login(c, "alice", "z"),
        ["911 4 authentication failed", "OUT 0 ERR", "CLOSE"]
    );
    assert_eq!(h.server.connection_count(), 0);
}

/// Reconnecting does not reset the count: a source address that failed `burst` logins gets
/// `800` for new ones, before any SCRAM work, until one failure's refill time has passed;
/// another address and the right password after the wait are not affected.
#[test]
fn failed_logins_are_braked_per_source_address() {
    let config = RendezvousConfig {
        login_failure_burst: 4,
        login_failure_refill: Duration::from_secs(6),
        ..config()
    };
    let mut h = Harness::with_config(config, &["alice"], &[], &[]);
    let guesser: SocketAddr = "203.0.113.9:5000".parse().unwrap();
    let hello_from = |h: &mut Harness, from: SocketAddr| {
        let c = h.connect_from(from, CB);
        assert_eq!(h.ask(c, "VER 1 P2P1"), ["VER 1 P2P1"]);
        c
    };
    for attempt in 0..4 {
        let c = hello_from(&mut h, guesser);
        assert_eq!(
            h.try_login(c, "alice", &format!("guess{attempt}"))[0],
            "911 4 authentication failed"
        );
    }
    let c = hello_from(&mut h, guesser);
    let first = B64.encode(ScramClient::new(&name("alice"), &[1; 18], &CB).client_first());
    assert_eq!(
        h.ask(c, &format!("USR 3 {MECHANISM} I {first}")),
        ["800 3 too many failed logins from your address; try again later"]
    );
    // Someone else logs in as usual.
    let other = hello_from(&mut h, "198.51.100.7:6000".parse().unwrap());
    assert!(h.try_login(other, "alice", "alice-pw")[0].starts_with("USR 4 OK alice "));
    // One refill later the guesser's address may try once more.
    h.now += Duration::from_secs(6);
    let c = hello_from(&mut h, guesser);
    assert!(h.try_login(c, "alice", "alice-pw")[0].starts_with("USR 4 OK alice "));
    let counted = *h.server.counters();
    assert_eq!(
        (
            counted.logins_ok,
            counted.logins_auth_failed,
            counted.logins_throttled
        ),
        (2, 4, 1)
    );
    assert_eq!(counted.logins_other, 0);
}

#[test]
fn a_second_login_is_a_second_session() {
    let mut h = Harness::new(
        &["alice", "bob"],
        &[("alice", "bob"), ("bob", "alice")],
        &[],
    );
    let bob = h.online("bob", "NLN");
    let old = h.online("alice", "BSY");
    h.drain();
    let new = h.login("alice");
    // Nobody is kicked, and bob sees no change: the new session has not sent CHG.
    assert!(!to(&h.log, old).contains(&"OUT 0 OTH".to_owned()));
    assert_eq!(to(&h.log, bob).last().unwrap(), "NLN 0 BSY alice");
    assert_eq!(h.server.online_count(), 2);
    assert_eq!(h.server.session_count(), 3);
    assert_eq!(h.server.connection_count(), 3);
    // Both sessions work.
    assert_eq!(h.ask(new, "CHG 5 NLN"), ["CHG 5 NLN"]);
    assert_eq!(h.ask(old, "CHG 6 AWY"), ["CHG 6 AWY"]);
    h.server.handle_disconnected(h.now, old);
    assert_eq!(h.server.online_count(), 2);
    assert_eq!(h.server.session_count(), 2);
    h.server.handle_disconnected(h.now, new);
    assert_eq!(h.server.online_count(), 1);
    assert_eq!(h.server.session_count(), 1);
}

// ---- accounts ----

fn reg_params(user: &str, kdf: &str) -> String {
    let c = creds(
        &format!("{}-pw", user.to_ascii_lowercase()),
        b"0123456789abcdef",
    );
    format!(
        "{user} {kdf} {} {} {}",
        B64.encode(&c.salt),
        B64.encode(c.stored_key),
        B64.encode(c.server_key)
    )
}

#[test]
fn registration_and_its_errors() {
    let mut h = Harness::new(&["alice"], &[], &[]);
    let c = h.hello();
    let kdf = CHEAP.to_string();
    h.send_raw(c, &format!("REG 2 {}", reg_params("Carol", &kdf)));
    let out = h.drain();
    let [StoreOp::CreateUser(rec)] = &stores(&out[..1])[..] else {
        panic!("{out:?}")
    };
    assert_eq!(rec.name, name("carol"));
    assert_eq!(to(&out, c), ["REG 2 carol"]);
    let errors = [
        (reg_params("carol", &kdf), "711 3 name taken"),
        (reg_params("ALICE", &kdf), "711 3 name taken"),
        (reg_params("bad,name", &kdf), "209 3 invalid user name"),
        (
            reg_params("dave", "argon2id:m=8:t=0:p=1"),
            "716 3 KDF too weak or malformed",
        ),
        (
            reg_params("dave", "scrypt"),
            "716 3 KDF too weak or malformed",
        ),
        ("dave x y z".to_owned(), "201 3 invalid parameter"),
    ];
    for (params, expect) in errors {
        assert_eq!(h.ask(c, &format!("REG 3 {params}")), [expect], "{params}");
    }
    let weak = reg_params("dave", &kdf).replace(&kdf, "argon2id:m=8:t=1:p=1");
    assert_eq!(h.ask(c, &format!("REG 4 {weak}")), ["REG 4 dave"]);
    let bad_salt = format!(
        "erin {kdf} c2hvcnQ= {} {}",
        B64.encode([0; 32]),
        B64.encode([0; 32])
    );
    assert_eq!(
        h.ask(c, &format!("REG 5 {bad_salt}")),
        ["201 5 invalid parameter"]
    );
    // The new account can log in.
    assert!(h.try_login(c, "carol", "carol-pw")[0].starts_with("USR 4 OK carol"));
    assert_eq!(
        h.ask(c, &format!("REG 6 {}", reg_params("frank", &kdf))),
        ["715 6 not expected now"]
    );
}

#[test]
fn registration_closed_and_weak_kdf() {
    let strict = RendezvousConfig {
        registration_open: false,
        ..config()
    };
    let mut h = Harness::with_config(strict, &[], &[], &[]);
    let c = h.hello();
    let p = reg_params("carol", &CHEAP.to_string());
    assert_eq!(
        h.ask(c, &format!("REG 2 {p}")),
        ["710 2 registration is closed"]
    );
    let mut h = Harness::with_config(RendezvousConfig::default(), &[], &[], &[]);
    let c = h.hello();
    assert_eq!(
        h.ask(c, &format!("REG 2 {p}")),
        ["716 2 KDF too weak or malformed"]
    );
    let strong = reg_params("carol", "argon2id:m=19456:t=2:p=1");
    assert_eq!(h.ask(c, &format!("REG 3 {strong}")), ["REG 3 carol"]);
    assert!(stores(&h.log).len() == 1);
}

#[test]
fn password_change() {
    let mut h = Harness::new(&["alice"], &[], &[]);
    let c = h.login("alice");
    let new = creds("new-pw", b"fedcba9876543210");
    let line = format!(
        "PWD 5 {CHEAP} {} {} {}",
        B64.encode(&new.salt),
        B64.encode(new.stored_key),
        B64.encode(new.server_key)
    );
    h.send_raw(c, &line);
    let out = h.drain();
    assert_eq!(
        stores(&out[..1]),
        [StoreOp::SetCredentials {
            name: name("alice"),
            credentials: new
        }]
    );
    assert_eq!(to(&out, c), ["PWD 5"]);
    assert_eq!(
        h.ask(c, &line.replace(&CHEAP.to_string(), "argon2id:m=8")),
        ["716 5 KDF too weak or malformed"]
    );
    let d = h.hello();
    assert_eq!(
        h.try_login(d, "alice", "alice-pw"),
        ["911 4 authentication failed"]
    );
    assert!(h.try_login(d, "alice", "new-pw")[0].starts_with("USR 4 OK alice"));
    // The password change and the new login leave the first session alone.
    assert!(!to(&h.log, c).contains(&"CLOSE".to_owned()));
    assert_eq!(h.ask(c, "PNG 6"), ["QNG 6"]);
}

#[test]
fn user_added_behind_the_back_can_log_in() {
    let mut h = Harness::new(&[], &[], &[]);
    let c = h.hello();
    assert_eq!(
        h.try_login(c, "zoe", "zoe-pw"),
        ["911 4 authentication failed"]
    );
    h.server.handle_user_added(record("zoe"));
    assert!(h.try_login(c, "zoe", "zoe-pw")[0].starts_with("USR 4 OK zoe"));
    assert!(stores(&h.log).is_empty());
}

/// The cheap KDF the tests register with; the client must be told to accept it.
fn cheap_kdf() -> crate::rendezvous::Kdf {
    crate::rendezvous::Kdf {
        memory_kib: 8,
        iterations: 1,
        lanes: 1,
    }
}
