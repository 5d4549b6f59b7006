//! Helpers of the session tests: the servers on loopback (restartable on the same ports with
//! the same key and database), `chat --json` and `status` processes.

#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use p2p_servers::ServerHandle;
use p2p_servers::services::Services;
use p2p_servers::tls::ServerTls;
use serde_json::Value;

use crate::loopback::{self, KDF};

pub const BIN: &str = env!("CARGO_BIN_EXE_p2p-client");

static NEXT: AtomicU32 = AtomicU32::new(0);

/// STUN, rendezvous and switchboard on loopback; the rendezvous and switchboard can be
/// stopped and started again on the same ports, key and database.
pub struct Servers {
    services: Option<Services>,
    pub stun: ServerHandle,
    pub rendezvous: SocketAddr,
    pub switchboard: SocketAddr,
    tls: ServerTls,
    db: PathBuf,
    pub home: PathBuf,
}

impl Servers {
    pub fn start() -> Servers {
        let stun = loopback::stun(true);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let db = std::env::temp_dir().join(format!("p2p-sessions-{pid}-{n}.db"));
        let tls = ServerTls::ephemeral().unwrap();
        let mut servers = Servers {
            services: None,
            stun,
            rendezvous: "127.0.0.1:0".parse().unwrap(),
            switchboard: "127.0.0.1:0".parse().unwrap(),
            tls,
            db,
            home: std::env::temp_dir().join(format!("p2p-sessions-home-{pid}-{n}")),
        };
        servers.up();
        servers
    }

    fn up(&mut self) {
        let config = loopback::config(loopback::stun_addr(&self.stun));
        let options =
            loopback::rendezvous(self.rendezvous, self.db.clone(), config, self.tls.clone());
        let services = loopback::services(options, self.switchboard);
        self.rendezvous = services.rendezvous().local_addr();
        self.switchboard = services.switchboard_addr().unwrap();
        self.services = Some(services);
    }

    /// Stops the rendezvous server and the switchboard abruptly (dropped, not shut down).
    pub fn kill(&mut self) {
        drop(self.services.take());
    }

    /// Starts them again on the same ports, key and database.
    pub fn restart(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.up()));
            if attempt.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "cannot restart on the same ports"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn command(&self, user: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        // The test servers take cheap verifiers; the client must accept their KDF.
        cmd.env("P2P_MIN_KDF", "argon2id:m=8:t=1:p=1");
        cmd.args(args)
            .args(["--server", &self.rendezvous.to_string(), "--user", user])
            .env("P2P_PASSWORD", format!("{user}-password"))
            .env("P2P_HOME", &self.home)
            .env_remove("P2P_USER")
            .env("RUST_LOG", "p2p_client=debug");
        cmd
    }

    pub fn run(&self, user: &str, args: &[&str]) -> Output {
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
    pub fn pair(&self, a: &str, b: &str) {
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

/// A child process whose stdout lines go to a channel and whose stderr is kept.
pub struct Proc {
    pub name: String,
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<(Instant, String)>,
    /// Stdout lines seen so far, with when they arrived.
    pub seen: Vec<(Instant, String)>,
    stderr: Arc<Mutex<String>>,
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
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send((Instant::now(), line)).is_err() {
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

    /// JSON objects seen on stdout.
    pub fn events(&self) -> Vec<Value> {
        self.seen
            .iter()
            .map(|(_, l)| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("{}: stdout line {l:?} is not JSON: {e}", self.name))
            })
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

    /// Waits until stderr contains `text` `count` times.
    pub fn wait_stderr(&self, text: &str, count: usize, timeout: Duration) -> Instant {
        let deadline = Instant::now() + timeout;
        while self.logs().matches(text).count() < count {
            assert!(
                Instant::now() < deadline,
                "{}: {text:?} x{count} not on stderr within {timeout:?}:\n{}",
                self.name,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Instant::now()
    }

    /// Takes whatever stdout lines arrived, without waiting.
    pub fn drain(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
    }

    pub fn send_lines(&mut self, lines: &[String]) {
        let stdin = self.stdin.as_mut().unwrap();
        for line in lines {
            writeln!(stdin, "{line}").unwrap();
        }
        stdin.flush().unwrap();
    }

    pub fn close_stdin(&mut self) {
        drop(self.stdin.take());
    }

    /// Sends a signal to this child (ours, by its pid).
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// Waits for the exit; then takes the rest of stdout.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{}: did not exit within {timeout:?}; stdout: {:#?}\nstderr:\n{}",
                    self.name,
                    self.seen,
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(line);
        }
        status
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Only if the test failed before the exit: kill our own child by its handle.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `chat --json --peer PEER --bind 127.0.0.1` as `user`.
pub fn chat(servers: &Servers, user: &str, peer: &str, extra: &[&str]) -> Proc {
    let mut args = vec!["chat", "--json", "--peer", peer, "--bind", "127.0.0.1"];
    args.extend_from_slice(extra);
    Proc::spawn(user, servers.command(user, &args))
}

/// `status STATE --json` as `user`.
pub fn status(servers: &Servers, user: &str, state: &str) -> Proc {
    Proc::spawn(user, servers.command(user, &["status", state, "--json"]))
}

pub fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == kind).collect()
}

pub fn texts(events: &[Value]) -> Vec<String> {
    of_kind(events, "message")
        .into_iter()
        .map(|e| e["text"].as_str().unwrap().to_owned())
        .collect()
}

pub fn connected(events: &[Value]) -> bool {
    !of_kind(events, "path").is_empty()
}

pub fn direct(events: &[Value]) -> bool {
    of_kind(events, "path")
        .last()
        .is_some_and(|p| p["path"] == "direct")
}
