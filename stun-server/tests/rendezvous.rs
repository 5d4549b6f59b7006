//! The rendezvous server over real TCP on 127.0.0.1 (port 0, a temporary database per test),
//! with raw clients written here that speak the protocol lines of docs/PROTOCOL.md.

// Test code: a panic with the failing value is the report we want.
#![allow(clippy::unwrap_used)]

mod rendezvous_support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use p2p_servers::rendezvous::Store;
use p2p_servers::{RendezvousHandle, RendezvousOptions};
use rendezvous_support::{CHEAP, Client, WAIT, b64, text};
use shared::rendezvous::scram::derive_credentials;
use shared::rendezvous::{RendezvousConfig, UserName};

// ---------------------------------------------------------------------------------------------
// Server

/// A server on a free port with its own database directory, removed on drop.
struct TestServer {
    handle: Option<RendezvousHandle>,
    options: RendezvousOptions,
    dir: PathBuf,
}

impl TestServer {
    fn start(tag: &str, tweak: impl FnOnce(&mut RendezvousOptions)) -> TestServer {
        let dir = std::env::temp_dir().join(format!("rdv-loopback-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut options = RendezvousOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            db_path: dir.join("rendezvous.db"),
            config: RendezvousConfig {
                min_kdf: CHEAP,
                stun_addr: Some("127.0.0.1:3478".parse().unwrap()),
                ..RendezvousConfig::default()
            },
            ..RendezvousOptions::default()
        };
        tweak(&mut options);
        let handle = RendezvousHandle::start(options.clone()).unwrap();
        TestServer {
            handle: Some(handle),
            options,
            dir,
        }
    }

    fn handle(&self) -> &RendezvousHandle {
        self.handle.as_ref().unwrap()
    }

    fn addr(&self) -> SocketAddr {
        self.handle().local_addr()
    }

    /// Stops the server and starts a new one on the same database (and a new port).
    fn restart(&mut self) {
        self.handle.take().unwrap().shutdown();
        self.handle = Some(RendezvousHandle::start(self.options.clone()).unwrap());
    }

    fn client(&self) -> Client {
        Client::connect(self.addr(), self.handle().fingerprint())
    }

    /// A registered, logged-in client.
    fn user(&self, name: &str) -> Client {
        let mut c = self.client();
        c.register(name, "pw");
        c.login(name, "pw").unwrap();
        c
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Two logged-in users who have each other as contacts, both online (`NLN`).
fn friends(server: &TestServer, a: &str, b: &str) -> (Client, Client) {
    let mut ca = server.user(a);
    let mut cb = server.user(b);
    ca.ok("ADC", &[b]);
    cb.ok("ADC", &[a]);
    ca.ok("CHG", &["NLN"]);
    cb.ok("CHG", &["NLN"]);
    ca.push("NLN", &["NLN", b]);
    cb.push("NLN", &["NLN", a]);
    (ca, cb)
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn register_login_and_a_wrong_password_is_refused() {
    let server = TestServer::start("login", |_| {});
    let mut alice = server.client();
    alice.register("alice", "correct horse");
    let taken = alice.try_register("Alice", "other");
    assert_eq!(taken.command.error_code(), Some(711), "{taken:?}");
    alice.login("alice", "correct horse").unwrap();
    let cfg = alice.wait_for("CFG", |l| l.command.as_str() == "CFG");
    assert!(
        cfg.params.contains(&"stun=127.0.0.1:3478".to_owned()),
        "{cfg:?}"
    );
    assert!(cfg.params.contains(&"ping=30".to_owned()), "{cfg:?}");

    let mut mallory = server.client();
    let refused = mallory.login("alice", "wrong").unwrap_err();
    assert_eq!(refused.command.error_code(), Some(911), "{refused:?}");
    // An unknown user fails the same way, at the same step.
    let unknown = mallory.login("nobody", "wrong").unwrap_err();
    assert_eq!(unknown.command.error_code(), Some(911), "{unknown:?}");
    // The third failure on one connection closes it.
    let third = mallory.login("alice", "wrong again").unwrap_err();
    assert_eq!(third.command.error_code(), Some(911), "{third:?}");
    assert_eq!(mallory.until_closed(WAIT), ["OUT 0 ERR"]);
    assert_eq!(server.handle().online_count(), 1);
}

#[test]
fn contacts_blocks_presence_and_disconnects() {
    let server = TestServer::start("presence", |_| {});
    let mut carol = server.client();
    carol.register("carol", "pw");
    drop(carol);
    let (mut alice, mut bob) = friends(&server, "alice", "bob");

    alice.ok("CHG", &["BSY"]);
    bob.push("NLN", &["BSY", "alice"]);
    let missing = alice.request("ADC", &["nobody"]);
    assert_eq!(missing.command.error_code(), Some(205), "{missing:?}");
    alice.ok("BLK", &["carol"]);
    let list = alice.ok("LST", &[]);
    assert_eq!(
        String::from_utf8(list.payload).unwrap(),
        "bob NLN C\r\ncarol FLN B\r\n"
    );

    // Blocking hides alice from bob; allowing shows her again.
    alice.ok("BLK", &["bob"]);
    bob.push("FLN", &["alice"]);
    alice.ok("ALW", &["bob"]);
    bob.push("ILN", &["BSY", "alice"]);

    // A dropped connection is offline at once.
    drop(bob);
    alice.push("FLN", &["bob"]);
    let deadline = Instant::now() + WAIT;
    while server.handle().online_count() != 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(server.handle().online_count(), 1);
}

#[test]
fn a_restart_keeps_accounts_and_contacts_and_says_goodbye() {
    let mut server = TestServer::start("restart", |_| {});
    let (mut alice, _bob) = friends(&server, "alice", "bob");
    alice.ok("BLK", &["bob"]);
    server.restart();
    let seen = alice.until_closed(WAIT);
    assert_eq!(
        seen.last().map(String::as_str),
        Some("OUT 0 SSD"),
        "{seen:?}"
    );

    let mut alice = server.client();
    alice.login("alice", "pw").unwrap();
    let list = alice.ok("LST", &[]);
    assert_eq!(String::from_utf8(list.payload).unwrap(), "bob FLN CB\r\n");
    server.client().login("bob", "pw").unwrap();
    let taken = server.client().try_register("bob", "pw");
    assert_eq!(taken.command.error_code(), Some(711), "{taken:?}");
}

#[test]
fn closed_registration_refuses_reg() {
    let server = TestServer::start("closed", |o| o.config.registration_open = false);
    let mut c = server.client();
    let refused = c.try_register("alice", "pw");
    assert_eq!(refused.command.error_code(), Some(710), "{refused:?}");
}

#[test]
fn a_user_added_by_the_operator_can_log_in_while_the_server_runs() {
    let mut server = TestServer::start("operator", |o| o.config.registration_open = false);
    let mut store = Store::open(&server.options.db_path).unwrap();
    let credentials = |password: &[u8]| derive_credentials(password, &[7; 16], CHEAP).unwrap();
    let name = |n: &str| UserName::parse(n).unwrap();
    store.add_user(&name("carol"), &credentials(b"pw")).unwrap();
    server.restart();
    let mut carol = server.client();
    carol.login("carol", "pw").unwrap();

    store
        .add_user(&name("dave"), &credentials(b"s3cret"))
        .unwrap();
    // The server picks dave up on its next database poll; from then on carol can add him.
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.handle().users_added_by_operator() < 1 {
        assert!(Instant::now() < deadline, "dave not picked up in 10 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    let answer = carol.request("ADC", &["dave"]);
    assert_eq!(answer.command.as_str(), "ADC", "{answer:?}");
    server.client().login("dave", "s3cret").unwrap();
}

#[test]
fn a_flood_of_bad_lines_and_an_overlong_line_hurt_only_their_sender() {
    let server = TestServer::start("flood", |_| {});
    let mut good = server.user("good");

    // The flooder writes bad lines as fast as it can from another thread (about 1 MB, which
    // the server reads and drops while it lingers after closing), then reads what it was told
    // until the server closes.
    let mut flooder = server.client();
    let flood = std::thread::spawn(move || {
        let garbage = b"this is not a command\r\n".repeat(200);
        for _ in 0..200 {
            if flooder.try_send_raw(&garbage).is_err() {
                break;
            }
        }
        flooder.until_closed(WAIT)
    });
    // Meanwhile the good client is answered promptly.
    for _ in 0..20 {
        let asked = Instant::now();
        let pong = good.request("PNG", &[]);
        assert_eq!(pong.command.as_str(), "QNG");
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "{:?}",
            asked.elapsed()
        );
    }
    // The documented rule: error answers, then `OUT 0 ERR` on the 16th, then the close.
    let seen = flood.join().unwrap();
    let errors = seen.iter().filter(|l| *l == "200 0 syntax error").count();
    assert!((15..=16).contains(&errors), "{seen:?}");
    assert_eq!(
        seen.last().map(String::as_str),
        Some("OUT 0 ERR"),
        "{seen:?}"
    );

    let mut long = server.client();
    long.send_raw(&[b'A'; 3000]);
    let seen = long.until_closed(WAIT);
    assert_eq!(seen, ["200 0 line too long", "OUT 0 ERR"]);
    assert_eq!(good.request("PNG", &[]).command.as_str(), "QNG");
}

#[test]
fn a_client_that_never_reads_is_dropped_and_stalls_nobody() {
    let server = TestServer::start("slow", |o| o.max_queued_lines = 16);
    // 32-character names make every push long, so buffers fill sooner.
    let talker = "t".repeat(32);
    let sleeper = "s".repeat(32);
    // The sleeper's receive buffer is small, so the server's side fills sooner.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&server.addr().into()).unwrap();
    let mut sleep = Client::over(socket.into(), server.handle().fingerprint());
    sleep.register(&sleeper, "pw");
    sleep.login(&sleeper, "pw").unwrap();
    let mut talk = server.user(&talker);
    let mut watcher = server.user("watcher");
    for (a, b) in [(&mut talk, sleeper.as_str()), (&mut sleep, talker.as_str())] {
        a.ok("ADC", &[b]);
    }
    talk.ok("ADC", &["watcher"]);
    watcher.ok("ADC", &[&talker]);
    for c in [&mut talk, &mut sleep, &mut watcher] {
        c.ok("CHG", &["NLN"]);
    }
    talk.push("NLN", &["NLN", "watcher"]);
    assert_eq!(server.handle().online_count(), 3);

    // The talker runs on another thread: it sends each batch it is given and reads its
    // answers (up to the batch's last one), then, when there are no more batches, whatever
    // else comes within 2 s. It returns every line it read.
    let (batches_tx, batches_rx) = std::sync::mpsc::channel::<(Vec<u8>, u32)>();
    let drain = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for (batch, last) in batches_rx {
            talk.send_raw(&batch);
            loop {
                let line = talk.read_line(WAIT).unwrap();
                let done = line.trid.0 == last;
                seen.push(text(&line));
                if done {
                    break;
                }
            }
        }
        while let Ok(line) = talk.read_line(Duration::from_secs(2)) {
            seen.push(text(&line));
        }
        seen
    });
    // Batches of state changes, each pushed to the sleeper (who never reads) and to the
    // watcher (who reads each batch after it is sent). A batch ends in PHN.
    let end_of_batch = format!("NLN 0 PHN {talker}");
    let mut slowest = Duration::ZERO;
    let mut batches = 0;
    let mut trid = 1000;
    while server.handle().online_count() == 3 && batches < 40 {
        let started = Instant::now();
        let mut batch = Vec::new();
        for i in 0..1000 {
            let state = match i {
                999 => "PHN",
                i if i % 2 == 0 => "BSY",
                _ => "AWY",
            };
            trid += 1;
            batch.extend_from_slice(format!("CHG {trid} {state}\r\n").as_bytes());
        }
        batches_tx.send((batch, trid)).unwrap();
        let mut pushes = 0;
        loop {
            let line = watcher.read_line(WAIT).unwrap_or_else(|e| {
                panic!("watcher: {e:?} after {pushes} pushes of batch {batches}")
            });
            pushes += 1;
            if text(&line) == end_of_batch {
                break;
            }
        }
        assert_eq!(pushes, 1000, "batch {batches}");
        slowest = slowest.max(started.elapsed());
        batches += 1;
    }
    assert_eq!(
        server.handle().online_count(),
        2,
        "the sleeper was never dropped"
    );
    assert!(slowest < Duration::from_secs(2), "a batch took {slowest:?}");
    // The sleeper's contact saw it go offline.
    drop(batches_tx);
    let talked = drain.join().unwrap();
    assert!(
        talked.contains(&format!("FLN 0 {sleeper}")),
        "{:?}",
        &talked[talked.len().saturating_sub(5)..]
    );
    drop(sleep);
    assert_eq!(watcher.request("PNG", &[]).command.as_str(), "QNG");
}

#[test]
fn an_introduction_delivers_itr_to_both_and_fills_the_ticket_book() {
    let server = TestServer::start("intro", |o| {
        o.config.switchboard_addr = Some("127.0.0.1:1865".parse().unwrap());
    });
    let (mut alice, mut bob) = friends(&server, "alice", "bob");
    let alice_key = format!("key={}", b64(&[1; 32]));
    let bob_key = format!("key={}", b64(&[2; 32]));
    let inv = alice.ok(
        "INV",
        &[
            "bob",
            &alice_key,
            "nat=port-restricted",
            "cand=host/10.0.1.2:40000",
        ],
    );
    let sid = inv.param(1).unwrap().to_owned();
    assert_eq!(sid.len(), 32, "{inv:?}");
    bob.push("RNG", &[&sid, "alice"]);
    bob.ok(
        "ANS",
        &[
            &sid,
            &bob_key,
            "nat=full-cone",
            "cand=srflx/198.51.100.9:50000",
        ],
    );

    let itr_a = alice.wait_for("ITR", |l| l.command.as_str() == "ITR");
    let itr_b = bob.wait_for("ITR", |l| l.command.as_str() == "ITR");
    assert_eq!(itr_a.params[..2], [sid.as_str(), "bob"], "{itr_a:?}");
    assert_eq!(itr_b.params[..2], [sid.as_str(), "alice"], "{itr_b:?}");
    assert_eq!(itr_a.keyed("role"), Some("initiator"));
    assert_eq!(itr_b.keyed("role"), Some("responder"));
    assert_eq!(itr_a.keyed("key"), Some(&bob_key[4..]));
    assert_eq!(itr_b.keyed("key"), Some(&alice_key[4..]));
    assert_eq!(itr_a.keyed("cand"), Some("srflx/198.51.100.9:50000"));
    assert_eq!(itr_b.keyed("cand"), Some("host/10.0.1.2:40000"));
    assert_eq!(itr_a.keyed("sb"), Some("127.0.0.1:1865"));

    let book = server.handle().tickets().snapshot();
    assert_eq!(book.len(), 2, "{book:?}");
    for (itr, user, peer) in [(&itr_a, "alice", "bob"), (&itr_b, "bob", "alice")] {
        let hex: String = itr.keyed("ticket").unwrap().to_owned();
        let ticket = book
            .iter()
            .find(|t| {
                t.value
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
                    == hex
            })
            .unwrap_or_else(|| panic!("ticket {hex} of {user} not in the book: {book:?}"));
        assert_eq!(ticket.user.as_str(), user);
        assert_eq!(ticket.peer.as_str(), peer);
        assert_eq!(ticket.session.to_string(), sid);
    }
}
