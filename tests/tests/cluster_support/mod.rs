//! The harness of the cluster tests (`cluster.rs`, `cluster_nats.rs`): real `stun-server` and
//! `p2p-client` processes on loopback, a PostgreSQL and a NATS server started by the test.

// Each test file uses a part of it.
#![allow(dead_code)]

#[path = "../../../stun-server/tests/pg_support/mod.rs"]
pub mod pg_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
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

/// A child process whose stdout lines go to a channel and whose stderr is kept; killed on
/// drop if it still runs (ours, by its handle).
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    pub lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
    pub stderr: Arc<Mutex<String>>,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
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

    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn events(&self) -> Vec<Value> {
        self.seen
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Reads stdout until `done` holds for the JSON objects seen so far.
    pub fn wait_for(&mut self, what: &str, timeout: Duration, done: impl Fn(&[Value]) -> bool) {
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
    pub fn wait_stderr(&self, text: &str, timeout: Duration) {
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

    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
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
            proc: Self::spawn(&bin, port),
            port,
            bin,
        })
    }

    fn spawn(bin: &PathBuf, port: u16) -> Proc {
        let mut cmd = Command::new(bin);
        cmd.args(["-a", "127.0.0.1", "-p", &port.to_string()]);
        let proc = Proc::spawn("nats-server", cmd);
        proc.wait_stderr("Server is ready", Duration::from_secs(10));
        proc
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills it (SIGKILL, by pid) and starts a new one on the same port.
    pub fn restart(&mut self, down_for: Duration) {
        self.proc.signal(libc::SIGKILL);
        self.proc.wait_exit(Duration::from_secs(10));
        std::thread::sleep(down_for);
        self.proc = Self::spawn(&self.bin, self.port);
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
