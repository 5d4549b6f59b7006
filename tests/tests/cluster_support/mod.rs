//! The harness of the cluster tests (`cluster.rs`, `cluster_nats.rs`): real `stun-server` and
//! `p2p-client` processes on loopback, a PostgreSQL and a NATS server started by the test.

// Each test file uses a part of it.
#![allow(dead_code)]

#[path = "../../../stun-server/tests/pg_support/mod.rs"]
pub mod pg_support;
#[path = "../../../p2p-client/tests/client/process.rs"]
mod process;
pub use process::Proc;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
pub use tests::lab::chat::{Binaries, TEST_KDF, binaries};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A temporary directory of the test's own, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("cluster-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl TempDir {
    /// `name` inside it.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A free loopback address for a node or a NATS server to bind right after (see
/// [`pg_support::free_port`] for why not simply port 0).
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], pg_support::free_port()))
}

/// One cluster: its nodes share the TLS key in `dir` (and a PostgreSQL database, if given).
pub struct Cluster {
    pub bins: &'static Binaries,
    pub dir: TempDir,
    pub store: Option<String>,
    pub home: PathBuf,
}

/// A running node.
pub struct Node {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub metrics: SocketAddr,
}

impl Cluster {
    pub fn new(tag: &str, store: Option<String>) -> Cluster {
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
    pub fn node(&self, name: &str, addr: SocketAddr, extra: &[&str]) -> Node {
        self.start_node(name, addr, extra, true)
    }

    /// `node`, with a key of its own (`shared_key` false: a self-signed one next to its
    /// database) instead of the cluster's.
    pub fn start_node(
        &self,
        name: &str,
        addr: SocketAddr,
        extra: &[&str],
        shared_key: bool,
    ) -> Node {
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
        proc.wait_stderr("rendezvous node ready", 1, Duration::from_secs(15));
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
    pub fn client(&self, servers: &str, user: &str, args: &[&str]) -> Command {
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

    /// `p2p-client ARGS --server SERVERS` as `user`, which must fail with exit status 1: its
    /// stderr.
    pub fn refused(&self, servers: &str, user: &str, args: &[&str]) -> String {
        let out = self
            .client(servers, user, args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{args:?} as {user}: {err}");
        err
    }

    pub fn run(&self, servers: &str, user: &str, args: &[&str]) -> Output {
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

    /// Two nodes that name each other as `--peer-node`, with `a` and `b` registered and mutual
    /// contacts through node 1 before node 2 starts (so node 2 read them at start: without
    /// `--cluster` list changes do not cross running nodes, docs/CLUSTER.md).
    pub fn peered_pair(&self, a: &str, b: &str) -> (Node, Node) {
        let (a1, a2) = (free_addr(), free_addr());
        let n1 = self.node("n1", a1, &["--peer-node", &a2.to_string()]);
        self.pair(&a1.to_string(), a, b);
        let n2 = self.node("n2", a2, &["--peer-node", &a1.to_string()]);
        (n1, n2)
    }

    /// `chat --json --peer PEER --bind 127.0.0.1` as `user` through `servers`, running.
    pub fn chat(&self, servers: &str, user: &str, peer: &str) -> Proc {
        let args = ["chat", "--json", "--peer", peer, "--bind", "127.0.0.1"];
        Proc::spawn(user, self.client(servers, user, &args))
    }

    /// Registers both and makes them mutual contacts, through `servers`.
    pub fn pair(&self, servers: &str, a: &str, b: &str) {
        for user in [a, b] {
            self.run(servers, user, &["register", "--kdf", TEST_KDF]);
        }
        self.run(servers, a, &["contacts", "add", b]);
        self.run(servers, b, &["contacts", "add", a]);
    }
}

/// The value of the series `name` (with its labels, as written) in `/metrics`.
pub fn metric(node: &Node, name: &str) -> u64 {
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
pub fn shared_store(test: &str) -> Option<(Arc<pg_support::Cluster>, String)> {
    let pg = pg_support::cluster(test)?;
    let url = pg.url(&pg.create_database(test));
    Some((pg, url))
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A NATS server of the test's own: a free loopback port, stopped by its pid (on drop too).
/// Core NATS only: the cluster uses no JetStream.
pub struct Nats {
    pub proc: Proc,
    pub port: u16,
    bin: PathBuf,
    /// Its options beyond the address (TLS, a user), kept for a restart.
    args: Vec<String>,
}

/// Where Debian's `nats-server` is (`/usr/sbin`, which may not be on PATH).
fn nats_server_bin() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file())
}

impl Nats {
    /// Starts one, or `None` (said loudly) when `nats-server` is not installed outside CI; in CI
    /// (`CI=true`) a missing `nats-server` fails the test (`.ci/run` installs it).
    pub fn start(test: &str) -> Option<Nats> {
        Self::start_with(test, &[])
    }

    /// [`start`](Self::start), with `args` for `nats-server` beyond its address.
    pub fn start_with(test: &str, args: &[String]) -> Option<Nats> {
        let Some(bin) = nats_server_bin() else {
            assert!(
                std::env::var("CI").is_ok_and(|v| v != "true") || std::env::var("CI").is_err(),
                "{test}: nats-server is not installed (Debian package nats-server)"
            );
            eprintln!("SKIPPED {test}: nats-server is not installed (apt-get install nats-server)");
            return None;
        };
        let port = free_addr().port();
        Some(Nats {
            proc: Self::spawn(&bin, port, args),
            port,
            bin,
            args: args.to_vec(),
        })
    }

    fn spawn(bin: &PathBuf, port: u16, args: &[String]) -> Proc {
        let mut cmd = Command::new(bin);
        cmd.args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(args);
        let proc = Proc::spawn("nats-server", cmd);
        proc.wait_stderr("Server is ready", 1, Duration::from_secs(10));
        proc
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The same server, TLS required.
    pub fn tls_url(&self) -> String {
        format!("tls://127.0.0.1:{}", self.port)
    }

    /// Kills it (SIGKILL, by pid) and starts a new one on the same port.
    pub fn restart(&mut self, down_for: Duration) {
        self.kill();
        std::thread::sleep(down_for);
        self.start_again();
    }

    /// Kills it (SIGKILL, by pid).
    pub fn kill(&mut self) {
        self.proc.signal(libc::SIGKILL);
        self.proc.wait_exit(Duration::from_secs(10));
    }

    /// Starts a new one on the same port, after [`kill`](Self::kill).
    pub fn start_again(&mut self) {
        self.proc = Self::spawn(&self.bin, self.port, &self.args);
    }

    /// Publishes `payload` on `subject` as a client of its own (the NATS text protocol:
    /// `CONNECT`, `PUB`, then `PING` until `PONG`, so it has been processed when this returns).
    pub fn publish(&self, subject: &str, payload: &str) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        write!(
            stream,
            "CONNECT {{\"verbose\":false}}\r\nPUB {subject} {}\r\n{payload}\r\nPING\r\n",
            payload.len()
        )
        .unwrap();
        let mut seen = String::new();
        let mut buf = [0u8; 1024];
        while !seen.contains("PONG") {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "NATS closed the connection: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            assert!(!seen.contains("-ERR"), "NATS refused: {seen}");
        }
    }
}

/// Waits until `node`'s series `name` reads `value`.
pub fn wait_metric(node: &Node, name: &str, value: u64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let now = metric(node, name);
        if now == value {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} is {now}, not {value}, after {timeout:?}:\n{}",
            node.proc.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `events.last()` is `name` in `presence`.
pub fn seen(name: &'static str, presence: &'static str) -> impl Fn(&[Value]) -> bool {
    move |events: &[Value]| {
        events
            .last()
            .is_some_and(|e| e["name"] == name && e["presence"] == presence)
    }
}

/// Some `message` event carries `text`.
pub fn got(text: &'static str) -> impl Fn(&[Value]) -> bool {
    move |events: &[Value]| {
        events
            .iter()
            .any(|e| e["event"] == "message" && e["text"] == text)
    }
}

/// Some event has the kind `event`.
pub fn has_event(event: &'static str) -> impl Fn(&[Value]) -> bool {
    move |events: &[Value]| events.iter().any(|e| e["event"] == event)
}

/// The parts of a NATS cluster test: a PostgreSQL database and a NATS server of the test's
/// own, and the cluster whose nodes use both.
pub struct NatsCluster {
    pub cluster: Cluster,
    pub nats: Nats,
    /// The database's URL, for a test that writes to it behind the nodes' backs.
    pub store: String,
    _pg: Arc<pg_support::Cluster>,
}

impl NatsCluster {
    /// Starts PostgreSQL and NATS, or `None` (said loudly; a failure in CI) without them.
    pub fn start(test: &str, tag: &str) -> Option<NatsCluster> {
        let (pg, store) = shared_store(test)?;
        let nats = Nats::start(test)?;
        Some(NatsCluster {
            cluster: Cluster::new(tag, Some(store.clone())),
            nats,
            store,
            _pg: pg,
        })
    }

    /// A node on `addr` joined to the NATS server.
    pub fn node(&self, name: &str, addr: SocketAddr) -> Node {
        self.cluster
            .node(name, addr, &["--cluster", &self.nats.url()])
    }

    /// Runs `sql` on the cluster's database directly, as no node would.
    pub fn sql(&self, sql: &str) {
        let mut client = postgres::Client::connect(&self.store, postgres::NoTls).unwrap();
        client.batch_execute(sql).unwrap();
    }

    /// Two nodes on free ports, started, each counting the other as a member.
    pub fn two_nodes(&self) -> (Node, Node) {
        let n1 = self.node("n1", free_addr());
        let n2 = self.node("n2", free_addr());
        for node in [&n1, &n2] {
            wait_metric(node, "rendezvous_cluster_nodes", 1, Duration::from_secs(10));
        }
        (n1, n2)
    }
}
