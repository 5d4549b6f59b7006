//! `p2p-client chat` between two processes on loopback, against the real rendezvous server,
//! switchboard and STUN server started in-process: a direct path, and the relay when punching
//! is switched off. Both users share one fresh client home per test (`P2P_HOME`): identity
//! keys and pins are per user name in it, the pinned server key is shared.

// Test code: a panic with the failing value is the report we want.
#![allow(clippy::unwrap_used)]

mod loopback;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use loopback::KDF;
use p2p_servers::ServerHandle;
use p2p_servers::services::Services;
use p2p_servers::tls::ServerTls;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_p2p-client");
const MESSAGES: usize = 100;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// STUN, rendezvous and switchboard on loopback, with a database removed on drop.
struct Servers {
    services: Option<Services>,
    _stun: ServerHandle,
    rendezvous: String,
    switchboard: SocketAddr,
    db: PathBuf,
    home: PathBuf,
}

impl Servers {
    fn start() -> Servers {
        let stun = loopback::stun(false);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let db = std::env::temp_dir().join(format!("p2p-chat-{}-{n}.db", std::process::id()));
        let config = loopback::config(loopback::stun_addr(&stun));
        let tls = ServerTls::ephemeral().unwrap();
        let rendezvous = loopback::rendezvous(loopback::any_port(), db.clone(), config, tls);
        let services = loopback::services(rendezvous, loopback::any_port());
        let rendezvous = services.rendezvous().local_addr().to_string();
        let switchboard = services.switchboard_addr().unwrap();
        Servers {
            services: Some(services),
            _stun: stun,
            rendezvous,
            switchboard,
            db,
            home: std::env::temp_dir().join(format!("p2p-chat-home-{}-{n}", std::process::id())),
        }
    }

    fn command(&self, user: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        // The test servers take cheap verifiers; the client must accept their KDF.
        cmd.env("P2P_MIN_KDF", "argon2id:m=8:t=1:p=1");
        cmd.args(args)
            .args(["--server", &self.rendezvous, "--user", user])
            .env("P2P_PASSWORD", format!("{user}-password"))
            .env("P2P_HOME", &self.home)
            .env_remove("P2P_USER")
            .env("RUST_LOG", "p2p_client=debug");
        cmd
    }

    fn run(&self, user: &str, args: &[&str]) -> Output {
        let out = self
            .command(user, args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?} as {user}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Registers both users and makes them mutual contacts.
    fn pair(&self, a: &str, b: &str) {
        for user in [a, b] {
            self.run(user, &["register", "--kdf", KDF]);
        }
        self.run(a, &["contacts", "add", b]);
        self.run(b, &["contacts", "add", a]);
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        if let Some(services) = self.services.take() {
            services.shutdown();
        }
        let _ = std::fs::remove_file(&self.db);
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

/// One `chat --json` process: its stdout parsed line by line, its stderr kept for failures.
struct Chat {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    events: mpsc::Receiver<Value>,
    seen: Vec<Value>,
    stderr: Arc<Mutex<String>>,
}

impl Chat {
    fn start(servers: &Servers, user: &str, peer: &str, extra: &[&str]) -> Chat {
        let mut args = vec!["chat", "--json", "--peer", peer, "--bind", "127.0.0.1"];
        args.extend_from_slice(extra);
        let mut child = servers
            .command(user, &args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, events) = mpsc::channel();
        let who = user.to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let line = line.unwrap();
                // Nothing but JSON objects on stdout in JSON mode.
                let value: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("{who}: stdout line {line:?} is not JSON: {e}"));
                assert!(value.is_object(), "{who}: {line}");
                if tx.send(value).is_err() {
                    return;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Chat {
            name: user.to_owned(),
            stdin: child.stdin.take(),
            child,
            events,
            seen: Vec::new(),
            stderr,
        }
    }

    fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Reads events until `done` holds for what was seen so far.
    fn wait_for(&mut self, what: &str, timeout: Duration, done: impl Fn(&[Value]) -> bool) {
        let deadline = Instant::now() + timeout;
        while !done(&self.seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(value) => self.seen.push(value),
                Err(e) => panic!(
                    "{}: no {what} within {timeout:?} ({e}); events: {:#?}\nstderr:\n{}",
                    self.name,
                    self.seen,
                    self.logs()
                ),
            }
        }
    }

    fn send_lines(&mut self, lines: &[String]) {
        let stdin = self.stdin.as_mut().unwrap();
        for line in lines {
            writeln!(stdin, "{line}").unwrap();
        }
        stdin.flush().unwrap();
    }

    /// Ends the input, as Ctrl-D would.
    fn close_stdin(&mut self) {
        drop(self.stdin.take());
    }

    /// Waits for the exit (after [`Chat::close_stdin`]); returns every event.
    fn finish(mut self, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{}: did not exit within {timeout:?}; events: {:#?}\nstderr:\n{}",
                    self.name,
                    self.seen,
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The stdout reader ends with the process.
        while let Ok(value) = self.events.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(value);
        }
        assert!(
            status.success(),
            "{}: exit {status}; events: {:#?}\nstderr:\n{}",
            self.name,
            self.seen,
            self.logs()
        );
        std::mem::take(&mut self.seen)
    }
}

impl Drop for Chat {
    fn drop(&mut self) {
        // Only if the test failed before `finish`: kill our own child by its handle.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn paths(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|e| e["event"] == "path")
        .map(|e| {
            (
                e["path"].as_str().unwrap().to_owned(),
                e["remote"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn messages(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|e| e["event"] == "message")
        .map(|e| {
            (
                e["from"].as_str().unwrap().to_owned(),
                e["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn count_messages(events: &[Value]) -> usize {
    events.iter().filter(|e| e["event"] == "message").count()
}

fn lines_of(user: &str) -> Vec<String> {
    (0..MESSAGES)
        .map(|i| format!("{user} says {i}: \"quoted\" \\ ünïcode"))
        .collect()
}

/// Both chats exchange 100 lines each way; asserts in-order, exactly-once delivery and a clean
/// exit, and returns every event of each side.
fn exchange(mut a: Chat, mut b: Chat) -> (Vec<Value>, Vec<Value>) {
    let (a_lines, b_lines) = (lines_of(&a.name), lines_of(&b.name));
    a.send_lines(&a_lines);
    b.send_lines(&b_lines);
    let all = |events: &[Value]| count_messages(events) >= MESSAGES;
    a.wait_for("all messages", Duration::from_secs(30), all);
    b.wait_for("all messages", Duration::from_secs(30), all);
    let (a_name, b_name) = (a.name.clone(), b.name.clone());
    a.close_stdin();
    b.close_stdin();
    let a_events = a.finish(Duration::from_secs(20));
    let b_events = b.finish(Duration::from_secs(20));
    let expect = |from: &str, lines: &[String]| -> Vec<(String, String)> {
        lines.iter().map(|l| (from.to_owned(), l.clone())).collect()
    };
    assert_eq!(messages(&a_events), expect(&b_name, &b_lines));
    assert_eq!(messages(&b_events), expect(&a_name, &a_lines));
    for events in [&a_events, &b_events] {
        assert!(events.iter().all(|e| e["event"] != "error"), "{events:#?}");
        assert_eq!(events[0]["event"], "connected", "{events:#?}");
    }
    (a_events, b_events)
}

#[test]
fn two_peers_on_loopback_chat_over_a_direct_path() {
    let servers = Servers::start();
    servers.pair("alice", "bob");
    let mut a = Chat::start(&servers, "alice", "bob", &[]);
    let mut b = Chat::start(&servers, "bob", "alice", &[]);
    let direct = |events: &[Value]| paths(events).last().is_some_and(|(p, _)| p == "direct");
    a.wait_for("direct path", Duration::from_secs(20), direct);
    b.wait_for("direct path", Duration::from_secs(20), direct);
    let (a_events, b_events) = exchange(a, b);
    for (events, name) in [(&a_events, "alice"), (&b_events, "bob")] {
        let paths = paths(events);
        let (last, remote) = paths.last().unwrap();
        assert_eq!(last, "direct", "{name}: {paths:?}");
        let remote: SocketAddr = remote.parse().unwrap();
        assert!(remote.ip().is_loopback(), "{name}: {remote}");
        assert_ne!(remote, servers.switchboard);
    }
}

#[test]
fn without_punching_the_chat_goes_through_the_switchboard() {
    let servers = Servers::start();
    servers.pair("carol", "dave");
    let mut a = Chat::start(&servers, "carol", "dave", &["--no-direct"]);
    let mut b = Chat::start(&servers, "dave", "carol", &["--no-direct"]);
    let relayed = |events: &[Value]| !paths(events).is_empty();
    a.wait_for("a path", Duration::from_secs(20), relayed);
    b.wait_for("a path", Duration::from_secs(20), relayed);
    let (a_events, b_events) = exchange(a, b);
    let sb = servers.switchboard.to_string();
    for events in [&a_events, &b_events] {
        assert_eq!(paths(events), vec![("relayed".to_owned(), sb.clone())]);
    }
}

#[test]
fn a_peer_that_never_comes_is_a_clear_error() {
    let servers = Servers::start();
    servers.pair("erin", "frank");
    // stdin stays open: the chat waits for the peer, not for input.
    let mut a = Chat::start(&servers, "erin", "frank", &["--wait", "1"]);
    let error = |events: &[Value]| events.iter().any(|e| e["event"] == "error");
    a.wait_for("an error", Duration::from_secs(10), error);
    let status = a.child.wait().unwrap();
    assert!(!status.success());
    let last = a.seen.last().unwrap();
    assert_eq!(last["event"], "error", "{:?}", a.seen);
    assert!(
        last["message"].as_str().unwrap().contains("frank"),
        "{last}"
    );
}
