//! Two rendezvous nodes (real `stun-server` processes on loopback, one PostgreSQL started by
//! the test, one shared TLS key) and real `p2p-client` processes: a list of servers with a
//! dead one, a full node that sends a login to the other (`XFR`), a draining node whose
//! `status` and `chat` sessions move to the other node with nothing lost, and redirect loops
//! that end with a clear error (docs/CLUSTER.md, docs/PROTOCOL.md section 11).

// Test code: a panic with the failing value is the report we want.
#![allow(clippy::unwrap_used)]

#[path = "../../stun-server/tests/pg_support/mod.rs"]
mod pg_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::lab::chat::{Binaries, TEST_KDF, binaries};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A temporary directory of the test's own, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("cluster-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A free loopback port (bound and released: the node binds it right after).
fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A child process whose stdout lines go to a channel and whose stderr is kept; killed on
/// drop if it still runs (ours, by its handle).
struct Proc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let (sink, mut pipe) = (stderr.clone(), child.stderr.take().unwrap());
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
        Proc {
            name: name.to_owned(),
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn events(&self) -> Vec<Value> {
        self.seen
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Reads stdout until `done` holds for the JSON objects seen so far.
    fn wait_for(&mut self, what: &str, timeout: Duration, done: impl Fn(&[Value]) -> bool) {
        let deadline = Instant::now() + timeout;
        while !done(&self.events()) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(e) => panic!(
                    "{}: no {what} within {timeout:?} ({e}); stdout: {:#?}\nstderr:\n{}",
                    self.name,
                    self.seen,
                    self.logs()
                ),
            }
        }
    }

    /// Waits until stderr contains `text`.
    fn wait_stderr(&self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.logs().contains(text) {
            assert!(
                Instant::now() < deadline,
                "{}: {text:?} not on stderr within {timeout:?}:\n{}",
                self.name,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{}: did not exit within {timeout:?}; stderr:\n{}",
                self.name,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One cluster: its nodes share the TLS key in `dir` (and a PostgreSQL database, if given).
struct Cluster {
    bins: &'static Binaries,
    dir: TempDir,
    store: Option<String>,
    home: PathBuf,
}

/// A running node.
struct Node {
    proc: Proc,
    addr: SocketAddr,
    metrics: SocketAddr,
}

impl Cluster {
    fn new(tag: &str, store: Option<String>) -> Cluster {
        let bins = binaries().unwrap();
        let dir = TempDir::new(tag);
        // The one key of the cluster: generated once, given to every node.
        let out = Command::new(&bins.server)
            .args(["--print-fingerprint", "--no-stun", "--db"])
            .arg(dir.0.join("key.db"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let home = dir.0.join("home");
        Cluster {
            bins,
            dir,
            store,
            home,
        }
    }

    /// Starts a node on `addr` with `extra` flags, waits until it is ready.
    fn node(&self, name: &str, addr: SocketAddr, extra: &[&str]) -> Node {
        self.start_node(name, addr, extra, true)
    }

    /// `node`, with a key of its own (`shared_key` false: a self-signed one next to its
    /// database) instead of the cluster's.
    fn start_node(&self, name: &str, addr: SocketAddr, extra: &[&str], shared_key: bool) -> Node {
        let own_dir = self.dir.0.join(name);
        std::fs::create_dir_all(&own_dir).unwrap();
        let mut cmd = Command::new(&self.bins.server);
        cmd.args(["--no-stun", "--rendezvous", &addr.to_string()])
            .args(["--switchboard", "127.0.0.1:0", "--metrics", "127.0.0.1:0"])
            .args(["--min-kdf", TEST_KDF, "--drain-timeout", "20", "--db"])
            .arg(own_dir.join("rendezvous.db"))
            .args(extra)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1");
        if shared_key {
            cmd.arg("--tls-cert")
                .arg(self.dir.0.join("tls-cert.pem"))
                .arg("--tls-key")
                .arg(self.dir.0.join("tls-key.pem"));
        }
        if let Some(store) = &self.store {
            cmd.args(["--store", store]);
        }
        let proc = Proc::spawn(name, cmd);
        proc.wait_stderr("rendezvous node ready", Duration::from_secs(15));
        let logs = proc.logs();
        let metrics = logs
            .split("metrics listening on http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap()
            .parse()
            .unwrap();
        Node {
            proc,
            addr,
            metrics,
        }
    }

    /// `p2p-client ARGS --server SERVERS` as `user` (password `USER-password`).
    fn client(&self, servers: &str, user: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bins.client);
        cmd.args(args)
            .args(["--server", servers, "--user", user])
            .env("P2P_PASSWORD", format!("{user}-password"))
            .env("P2P_MIN_KDF", TEST_KDF)
            .env("P2P_HOME", &self.home)
            .env("RUST_LOG", "p2p_client=info")
            .env("NO_COLOR", "1")
            .env_remove("P2P_USER");
        cmd
    }

    fn run(&self, servers: &str, user: &str, args: &[&str]) -> Output {
        let out = self
            .client(servers, user, args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?} as {user} on {servers}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Registers both and makes them mutual contacts, through `servers`.
    fn pair(&self, servers: &str, a: &str, b: &str) {
        for user in [a, b] {
            self.run(servers, user, &["register", "--kdf", TEST_KDF]);
        }
        self.run(servers, a, &["contacts", "add", b]);
        self.run(servers, b, &["contacts", "add", a]);
    }
}

/// The value of the series `name` (with its labels, as written) in `/metrics`.
fn metric(node: &Node, name: &str) -> u64 {
    let mut stream = TcpStream::connect(node.metrics).unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

/// A PostgreSQL database for the cluster, or `None` (skipped loudly) without PostgreSQL.
fn shared_store(test: &str) -> Option<(Arc<pg_support::Cluster>, String)> {
    let pg = pg_support::cluster(test)?;
    let url = pg.url(&pg.create_database(test));
    Some((pg, url))
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_list_with_a_dead_server_reaches_the_live_one() {
    let cluster = Cluster::new("dead", None);
    let node = cluster.node("n1", free_addr(), &[]);
    let dead = free_addr();
    let list = format!("{dead},{}", node.addr);
    cluster.run(&list, "alice", &["register", "--kdf", TEST_KDF]);
    // The order is random: enough runs that the dead one comes first at least once (the
    // chance it never does in 12 runs is 1 in 4096).
    let mut said_so = 0;
    for _ in 0..12 {
        let out = cluster.run(&list, "alice", &["contacts", "list"]);
        let logs = String::from_utf8_lossy(&out.stderr);
        if logs.contains("trying the next one") {
            assert!(logs.contains(&dead.to_string()), "{logs}");
            said_so += 1;
        }
    }
    assert!(said_so > 0, "the dead server was never tried first");
    // All dead: one error that names each address and what it did.
    let other_dead = free_addr();
    let out = cluster
        .client(
            &format!("{dead},{other_dead}"),
            "alice",
            &["contacts", "list"],
        )
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no rendezvous server could be used (2 address(es) tried)"),
        "{err}"
    );
    assert!(
        err.contains(&dead.to_string()) && err.contains(&other_dead.to_string()),
        "{err}"
    );
}

#[test]
fn a_full_node_sends_a_login_to_the_other_node() {
    let test = "a_full_node_sends_a_login_to_the_other_node";
    let Some((_pg, store)) = shared_store(test) else {
        return;
    };
    let cluster = Cluster::new("full", Some(store));
    let (a1, a2) = (free_addr(), free_addr());
    let n1 = cluster.node(
        "n1",
        a1,
        &["--max-sessions", "1", "--peer-node", &a2.to_string()],
    );
    let only_n1 = n1.addr.to_string();
    // Accounts and contacts made through node 1 are in the shared database; node 2 reads
    // them when it starts (contact changes do not cross running nodes yet: docs/CLUSTER.md).
    cluster.pair(&only_n1, "alice", "bob");
    let n2 = cluster.node("n2", a2, &["--peer-node", &a1.to_string()]);
    let mut alice = Proc::spawn(
        "alice",
        cluster.client(&only_n1, "alice", &["status", "online", "--json"]),
    );
    alice.wait_for("the contact list", Duration::from_secs(15), |e| {
        !e.is_empty()
    });
    assert_eq!(metric(&n1, "rendezvous_sessions_online"), 1);
    // Node 1 is full: bob, who names only node 1, is sent to node 2 and logs in there.
    let out = cluster.run(&only_n1, "bob", &["contacts", "list"]);
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(logs.contains("sent us to another node (XFR)"), "{logs}");
    assert!(stdout(&out).contains("alice"), "{}", stdout(&out));
    assert!(metric(&n1, "rendezvous_transfers_total") >= 1);
    assert_eq!(metric(&n2, "rendezvous_logins_total{outcome=\"ok\"}"), 1);
    assert_eq!(metric(&n1, "rendezvous_node_state{state=\"ready\"}"), 1);
    alice.signal(libc::SIGINT);
    alice.wait_exit(Duration::from_secs(10));
}

#[test]
fn a_draining_node_moves_its_status_sessions_with_nothing_lost() {
    let test = "a_draining_node_moves_its_status_sessions_with_nothing_lost";
    let Some((_pg, store)) = shared_store(test) else {
        return;
    };
    let cluster = Cluster::new("drain", Some(store));
    let (a1, a2) = (free_addr(), free_addr());
    let mut n1 = cluster.node("n1", a1, &["--peer-node", &a2.to_string()]);
    cluster.pair(&a1.to_string(), "alice", "bob");
    // Node 2 starts after the contacts are made, so it has read them (docs/CLUSTER.md).
    let n2 = cluster.node("n2", a2, &["--peer-node", &a1.to_string()]);
    // alice on node 1 only; bob on node 2. Presence does not cross nodes (that is the NATS
    // part): each sees the other offline for now.
    let mut alice = Proc::spawn(
        "alice",
        cluster.client(&a1.to_string(), "alice", &["status", "online", "--json"]),
    );
    let mut bob = Proc::spawn(
        "bob",
        cluster.client(&a2.to_string(), "bob", &["status", "busy", "--json"]),
    );
    let seen = |name: &'static str, presence: &'static str| {
        move |events: &[Value]| {
            events
                .last()
                .is_some_and(|e| e["name"] == name && e["presence"] == presence)
        }
    };
    alice.wait_for(
        "bob offline",
        Duration::from_secs(15),
        seen("bob", "offline"),
    );
    bob.wait_for(
        "alice offline",
        Duration::from_secs(15),
        seen("alice", "offline"),
    );
    n1.proc.signal(libc::SIGUSR1);
    // alice follows the XFR push to node 2, where bob now sees her online, and she him.
    alice.wait_stderr(
        "server: reconnecting (moving to another node",
        Duration::from_secs(10),
    );
    bob.wait_for(
        "alice online",
        Duration::from_secs(15),
        seen("alice", "online"),
    );
    alice.wait_for("bob busy", Duration::from_secs(15), seen("bob", "busy"));
    // Node 1 is empty and stops by itself, well before its drain period.
    let status = n1.proc.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{}", n1.proc.logs());
    assert!(
        n1.proc.logs().contains("every client has moved"),
        "{}",
        n1.proc.logs()
    );
    assert_eq!(metric(&n2, "rendezvous_sessions_online"), 2);
    // A presence change after the move reaches alice: bob leaves.
    bob.signal(libc::SIGINT);
    bob.wait_exit(Duration::from_secs(10));
    alice.wait_for(
        "bob offline again",
        Duration::from_secs(15),
        seen("bob", "offline"),
    );
    alice.signal(libc::SIGINT);
    assert!(alice.wait_exit(Duration::from_secs(10)).success());
}

#[test]
fn a_draining_node_moves_a_chat_that_goes_on() {
    let test = "a_draining_node_moves_a_chat_that_goes_on";
    let Some((_pg, store)) = shared_store(test) else {
        return;
    };
    let cluster = Cluster::new("chat", Some(store));
    let (a1, a2) = (free_addr(), free_addr());
    let mut n1 = cluster.node("n1", a1, &["--peer-node", &a2.to_string()]);
    cluster.pair(&a1.to_string(), "alice", "bob");
    // Node 2 starts after the contacts are made, so it has read them (docs/CLUSTER.md).
    let n2 = cluster.node("n2", a2, &["--peer-node", &a1.to_string()]);
    let list = format!("{a1},{a2}");
    let chat = |user: &str, peer: &str| {
        let args = ["chat", "--json", "--peer", peer, "--bind", "127.0.0.1"];
        // Both on node 1: the introduction needs both on one node until NATS routes it.
        Proc::spawn(user, cluster.client(&a1.to_string(), user, &args))
    };
    let mut alice = chat("alice", "bob");
    let mut bob = chat("bob", "alice");
    let has_path = |e: &[Value]| e.iter().any(|e| e["event"] == "path");
    alice.wait_for("a path", Duration::from_secs(20), has_path);
    bob.wait_for("a path", Duration::from_secs(20), has_path);
    let got = |text: &'static str| {
        move |e: &[Value]| {
            e.iter()
                .any(|e| e["event"] == "message" && e["text"] == text)
        }
    };
    alice.send_line("before the move");
    bob.wait_for(
        "the first message",
        Duration::from_secs(15),
        got("before the move"),
    );
    n1.proc.signal(libc::SIGUSR1);
    let back = |e: &[Value]| {
        let states: Vec<&Value> = e
            .iter()
            .filter(|e| e["event"] == "server")
            .map(|e| &e["state"])
            .collect();
        states == ["reconnecting", "connected"]
    };
    alice.wait_for("the move to node 2", Duration::from_secs(20), back);
    bob.wait_for("the move to node 2", Duration::from_secs(20), back);
    assert!(n1.proc.wait_exit(Duration::from_secs(10)).success());
    assert!(
        n1.proc.logs().contains("every client has moved"),
        "{}",
        n1.proc.logs()
    );
    // Both chats are sessions of node 2 now, online (a chat sets online).
    assert_eq!(metric(&n2, "rendezvous_sessions_online"), 2);
    let out = cluster.run(&list, "alice", &["contacts", "list", "--json"]);
    let list: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(list[0]["name"], "bob");
    assert_eq!(list[0]["presence"], "online", "{list}");
    // Messages after the move, both ways.
    bob.send_line("after the move");
    alice.wait_for(
        "bob's message",
        Duration::from_secs(15),
        got("after the move"),
    );
    alice.send_line("still here");
    bob.wait_for(
        "alice's message",
        Duration::from_secs(15),
        got("still here"),
    );
}

#[test]
fn redirect_loops_end_with_a_clear_error() {
    let cluster = Cluster::new("loop", None);
    let (a1, a2) = (free_addr(), free_addr());
    // Both nodes full from the start, each sending clients to the other.
    let n1 = cluster.node(
        "n1",
        a1,
        &["--max-sessions", "0", "--peer-node", &a2.to_string()],
    );
    let _n2 = cluster.node(
        "n2",
        a2,
        &["--max-sessions", "0", "--peer-node", &a1.to_string()],
    );
    let started = Instant::now();
    let out = cluster
        .client(&a1.to_string(), "alice", &["contacts", "list"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("redirect loop {a1} -> {a2} -> {a1}")),
        "{err}"
    );
    assert!(err.contains("every node full or draining"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(metric(&n1, "rendezvous_transfers_total") >= 1);
}

#[test]
fn a_redirect_to_a_node_with_another_key_is_refused() {
    let cluster = Cluster::new("key", None);
    let (a1, a2) = (free_addr(), free_addr());
    let _n1 = cluster.node(
        "n1",
        a1,
        &["--max-sessions", "0", "--peer-node", &a2.to_string()],
    );
    // Not one of the cluster: a key of its own.
    let _odd = cluster.start_node("odd", a2, &[], false);
    let out = cluster
        .client(&a1.to_string(), "alice", &["contacts", "list"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("{a2} (reached by XFR from {a1})")),
        "{err}"
    );
    assert!(err.contains(&format!("{a2} presented the key")), "{err}");
    assert!(err.contains("not the expected"), "{err}");
    // Nothing was pinned for the redirected address.
    let pins = std::fs::read_to_string(cluster.home.join("known_servers")).unwrap();
    assert!(!pins.contains(&a2.to_string()), "{pins}");
}
