//! `stun-server` and `p2p-client chat` as real processes inside a lab: the server (STUN on both
//! server addresses, rendezvous and switchboard) in the server namespace, one chat per client
//! namespace, driven through stdin and read back from its `--json` lines.
//!
//! The binaries are found next to the running test's own directory (`target/<profile>/`) and
//! brought up to date with `cargo build` first, as `classify-bench` does (a no-op when they
//! are; if cargo cannot run, the existing binaries are used as they are). The environment
//! variables `LAB_STUN_SERVER_BIN` and `LAB_P2P_CLIENT_BIN` name other binaries instead (no
//! build then).
//!
//! Everything started here is killed by its own handle (pid) when its guard drops; the lab's
//! drop kills whatever is still left in its namespaces.
//!
//! Every `p2p-client` of a lab runs with one fresh client home (`P2P_HOME`, see
//! [`client_home`]): the server's key is pinned there by the first command, and each user's
//! identity key and pins live in it under the user's name. The server keeps its database and
//! its self-signed TLS certificate in a directory of its own.

mod binaries;
pub mod phases;
mod scrape;

pub use binaries::{Binaries, binaries};

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{self, BufRead as _, BufReader, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use super::{Host, Lab, LabError, Router, SERVER_IPS, server_addrs, stun_server_command};

/// STUN ports of the server in the lab.
pub const STUN_PORT: u16 = 3478;
/// The alternate STUN port.
pub const STUN_ALT_PORT: u16 = 3479;
/// The rendezvous server's TCP port.
pub const RENDEZVOUS_PORT: u16 = 1863;
/// The switchboard's TCP port.
pub const SWITCHBOARD_PORT: u16 = 1865;
/// The server's metrics endpoint (`--metrics`), on its first address.
pub const METRICS_PORT: u16 = 9100;
/// The cheapest password KDF, for fast registration in tests.
pub const TEST_KDF: &str = "argon2id:m=8:t=1:p=1";

fn io_error(what: impl Into<String>, source: io::Error) -> LabError {
    LabError::Io {
        what: what.into(),
        source,
    }
}

/// Reads `pipe` to its end on a thread, appending to the returned buffer.
fn collect(pipe: impl io::Read + Send + 'static) -> Arc<Mutex<String>> {
    collect_joinable(pipe).0
}

/// [`collect`], with the reader thread: joining it waits until the pipe has closed and
/// everything written to it is in the buffer.
fn collect_joinable(
    mut pipe: impl io::Read + Send + 'static,
) -> (Arc<Mutex<String>>, std::thread::JoinHandle<()>) {
    let sink = Arc::new(Mutex::new(String::new()));
    let out = sink.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            let text = String::from_utf8_lossy(&buf[..n]);
            out.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push_str(&text);
        }
    });
    (sink, reader)
}

/// Joins a pipe reader. It ends when the pipe closes, which the process's exit does.
fn join_reader(reader: Option<std::thread::JoinHandle<()>>) {
    if let Some(reader) = reader {
        let _ = reader.join();
    }
}

fn text_of(buffer: &Mutex<String>) -> String {
    buffer.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Our server in the lab's server namespace: STUN on both addresses, the rendezvous server
/// and the switchboard, with a fresh database. Killed (by its handle) and its directory
/// (database, certificate) and the lab's client home removed on drop.
#[derive(Debug)]
pub struct ChatServer {
    child: Child,
    dir: PathBuf,
    home: PathBuf,
    logs: Arc<Mutex<String>>,
}

/// The client home every `p2p-client` of `lab` runs with: one per lab.
pub fn client_home(lab: &Lab) -> PathBuf {
    std::env::temp_dir().join(format!("p2p-lab-home-{}", lab.core_ns()))
}

static NEXT_DB: AtomicU32 = AtomicU32::new(0);

impl ChatServer {
    /// Starts the server in `lab`'s server namespace and waits until STUN, the rendezvous
    /// server and the switchboard all answer.
    pub fn start(lab: &Lab) -> Result<ChatServer, LabError> {
        let n = NEXT_DB.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("p2p-lab-chat-{}-{n}", std::process::id()));
        let home = client_home(lab);
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(&dir).map_err(|e| io_error(format!("create {dir:?}"), e))?;
        let (child, logs) = Self::spawn(lab, &dir)?;
        let server = ChatServer {
            child,
            dir,
            home,
            logs,
        };
        server.wait_ready(lab)?;
        Ok(server)
    }

    /// Kills the server (SIGKILL, by its handle) and does not start it again.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again after [`Self::kill`]; returns when it answers.
    pub fn restart(&mut self, lab: &Lab) -> Result<(), LabError> {
        let (child, logs) = Self::spawn(lab, &self.dir)?;
        self.child = child;
        self.logs = logs;
        self.wait_ready(lab)
    }

    fn spawn(lab: &Lab, dir: &Path) -> Result<(Child, Arc<Mutex<String>>), LabError> {
        let bins = binaries()?;
        let db = dir.join("rendezvous.db");
        let mut args = stun_server_command(&bins.server, STUN_PORT, STUN_ALT_PORT);
        args.extend([
            "--rendezvous".into(),
            Self::rendezvous().to_string().into(),
            "--switchboard".into(),
            Self::switchboard().to_string().into(),
            "--db".into(),
            db.into(),
            "--min-kdf".into(),
            TEST_KDF.into(),
            // The lab's switchboard is a relay of our own: no per-session rate or byte cap, so
            // the link tests can push a whole file through it (chat needs neither limit).
            "--relay-rate".into(),
            "0".into(),
            "--relay-session-cap".into(),
            "0".into(),
            "--metrics".into(),
            Self::metrics().to_string().into(),
        ]);
        let mut child = lab
            .command(&lab.server().ns, &args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| io_error("spawn stun-server", e))?;
        let logs = collect(
            child
                .stderr
                .take()
                .ok_or_else(|| io_error("stun-server stderr", io::Error::other("no pipe")))?,
        );
        Ok((child, logs))
    }

    /// Waits until STUN, the rendezvous server and the switchboard all answer.
    fn wait_ready(&self, lab: &Lab) -> Result<(), LabError> {
        let within = Duration::from_secs(15);
        lab.wait_for_stun(&server_addrs(STUN_PORT, STUN_ALT_PORT), within)
            .map_err(|e| io_error(format!("stun-server: {}", self.logs()), e))?;
        for addr in [Self::rendezvous(), Self::switchboard()] {
            wait_for_tcp(lab, addr, within)
                .map_err(|e| io_error(format!("stun-server: {}", self.logs()), e))?;
        }
        Ok(())
    }

    /// The rendezvous server's address.
    pub fn rendezvous() -> SocketAddr {
        SocketAddr::new(IpAddr::V4(SERVER_IPS[0]), RENDEZVOUS_PORT)
    }

    /// The switchboard's address (what a relayed path event names).
    pub fn switchboard() -> SocketAddr {
        SocketAddr::new(IpAddr::V4(SERVER_IPS[0]), SWITCHBOARD_PORT)
    }

    /// The server's log so far (stderr).
    pub fn logs(&self) -> String {
        text_of(&self.logs)
    }

    /// Registers `a` and `b` (from the server host, with [`TEST_KDF`]) and makes them mutual
    /// contacts.
    pub fn register_pair(&self, lab: &Lab, a: &str, b: &str) -> Result<(), LabError> {
        let host = lab.server();
        for user in [a, b] {
            client_command(lab, host, user, &["register", "--kdf", TEST_KDF])?;
        }
        client_command(lab, host, a, &["contacts", "add", b])?;
        client_command(lab, host, b, &["contacts", "add", a])?;
        Ok(())
    }
}

impl Drop for ChatServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

/// Connects to `addr` from the server host until it accepts, at most `within`.
fn wait_for_tcp(lab: &Lab, addr: SocketAddr, within: Duration) -> io::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let attempt = super::in_namespace(&lab.server().ns, || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).map(drop)
        });
        match attempt {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("{addr} does not accept within {within:?}: {e}"),
                ));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// The password of a test user.
pub fn password_of(user: &str) -> String {
    format!("{user}-lab-password")
}

/// `p2p-client ARGS --server R --user USER` in `host`'s namespace; fails unless it exits 0
/// within 30 s.
fn client_command(lab: &Lab, host: &Host, user: &str, args: &[&str]) -> Result<Output, LabError> {
    let bins = binaries()?;
    let server = ChatServer::rendezvous().to_string();
    let mut full: Vec<OsString> = vec![bins.client.clone().into()];
    full.extend(args.iter().map(OsString::from));
    full.extend(["--server", &server, "--user", user].map(OsString::from));
    let described = format!("p2p-client {} as {user}", args.join(" "));
    let mut cmd = lab.command(&host.ns, &full);
    cmd.env("P2P_PASSWORD", password_of(user))
        .env("P2P_HOME", client_home(lab))
        // The lab server takes cheap verifiers; the client must accept their KDF.
        .env("P2P_MIN_KDF", "argon2id:m=8:t=1:p=1")
        .env_remove("P2P_USER")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| io_error(&described, e))?;
    let (stdout, stderr) = (
        child.stdout.take().map(collect_joinable),
        child.stderr.take().map(collect_joinable),
    );
    let (stdout, stdout_reader) = stdout.unzip();
    let (stderr, stderr_reader) = stderr.unzip();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| io_error(&described, e))? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // The pipes close with the process: the readers then have everything.
    join_reader(stdout_reader);
    join_reader(stderr_reader);
    let text = |b: &Option<Arc<Mutex<String>>>| b.as_deref().map(text_of).unwrap_or_default();
    let (out, err) = (text(&stdout), text(&stderr));
    match status {
        Some(status) if status.success() => Ok(Output {
            status,
            stdout: out.into_bytes(),
            stderr: err.into_bytes(),
        }),
        other => Err(LabError::Command {
            command: described,
            status: other.map_or_else(|| "killed after 30 s".into(), |s| s.to_string()),
            stderr: err,
        }),
    }
}

/// One `--json` line of a chat, with the moment our reader got it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatEvent {
    /// When the line was read from the chat's stdout.
    pub at: Instant,
    /// Its keys and (string) values.
    pub fields: BTreeMap<String, String>,
    /// The line itself.
    pub line: String,
}

impl ChatEvent {
    /// The `event` key.
    pub fn kind(&self) -> &str {
        self.get("event")
    }

    /// A key's value, or "" if absent.
    pub fn get(&self, key: &str) -> &str {
        self.fields.get(key).map_or("", String::as_str)
    }
}

/// Parses one flat JSON object whose values are strings (what `chat --json` prints); other
/// values are kept as their JSON text. `None` if the line is not a JSON object.
pub fn parse_json_object(line: &str) -> Option<BTreeMap<String, String>> {
    let serde_json::Value::Object(map) = serde_json::from_str(line).ok()? else {
        return None;
    };
    Some(
        map.into_iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => (k, s),
                other => (k, other.to_string()),
            })
            .collect(),
    )
}

/// One `p2p-client chat --json` process inside a lab namespace.
#[derive(Debug)]
pub struct ChatPeer {
    /// The user it runs as.
    pub user: String,
    /// When it was started.
    pub started: Instant,
    child: Child,
    stdin: Option<ChildStdin>,
    events: mpsc::Receiver<ChatEvent>,
    seen: Vec<ChatEvent>,
    stderr: Arc<Mutex<String>>,
    /// The stdout and stderr readers, joined by [`finish`](Self::finish).
    readers: Vec<std::thread::JoinHandle<()>>,
}

/// How a chat ended.
#[derive(Clone, Debug)]
pub struct ChatOutcome {
    /// The user it ran as.
    pub user: String,
    /// When it was started.
    pub started: Instant,
    /// Its exit status (`None`: killed after the timeout).
    pub status: Option<ExitStatus>,
    /// Every `--json` line, in order.
    pub events: Vec<ChatEvent>,
    /// Lines on stdout that were not JSON objects.
    pub stray: Vec<String>,
    /// Its stderr (logs).
    pub stderr: String,
}

impl ChatPeer {
    /// Starts `p2p-client chat --json --peer PEER --server R --user USER EXTRA...` in `host`'s
    /// namespace (stdin piped). `RUST_LOG` is `p2p_client=debug` unless set; `NO_COLOR` keeps
    /// the logs plain text.
    pub fn start(
        lab: &Lab,
        host: &Host,
        user: &str,
        peer: &str,
        extra: &[&str],
    ) -> Result<ChatPeer, LabError> {
        Self::start_command(lab, host, user, &["chat", "--json", "--peer", peer], extra)
    }

    /// Starts `p2p-client COMMAND... --server R --user USER EXTRA...` in `host`'s namespace,
    /// read back as [`ChatPeer::start`] does: any command that prints `--json` lines (`send`,
    /// `receive`).
    pub fn start_command(
        lab: &Lab,
        host: &Host,
        user: &str,
        command: &[&str],
        extra: &[&str],
    ) -> Result<ChatPeer, LabError> {
        let bins = binaries()?;
        let server = ChatServer::rendezvous().to_string();
        let mut args: Vec<OsString> = vec![bins.client.clone().into()];
        args.extend(command.iter().map(OsString::from));
        args.extend(["--server", &server, "--user", user].map(OsString::from));
        args.extend(extra.iter().map(OsString::from));
        let log = std::env::var("RUST_LOG").unwrap_or_else(|_| "p2p_client=debug".into());
        let started = Instant::now();
        let mut child = lab
            .command(&host.ns, &args)
            .env("P2P_PASSWORD", password_of(user))
            .env("P2P_HOME", client_home(lab))
            // The lab server takes cheap verifiers; the client must accept their KDF.
            .env("P2P_MIN_KDF", "argon2id:m=8:t=1:p=1")
            .env_remove("P2P_USER")
            .env("RUST_LOG", log)
            .env("NO_COLOR", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                io_error(
                    format!("spawn p2p-client {} as {user}", command.join(" ")),
                    e,
                )
            })?;
        let no_pipe = || io_error("p2p-client pipes", io::Error::other("missing"));
        let stdout = child.stdout.take().ok_or_else(no_pipe)?;
        let (stderr, stderr_reader) = collect_joinable(child.stderr.take().ok_or_else(no_pipe)?);
        let (tx, events) = mpsc::channel();
        let stdout_reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let at = Instant::now();
                let fields = parse_json_object(&line).unwrap_or_default();
                if tx.send(ChatEvent { at, fields, line }).is_err() {
                    return;
                }
            }
        });
        Ok(ChatPeer {
            user: user.to_owned(),
            started,
            stdin: child.stdin.take(),
            child,
            events,
            seen: Vec::new(),
            stderr,
            readers: vec![stdout_reader, stderr_reader],
        })
    }

    /// The chat's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its stderr so far.
    pub fn logs(&self) -> String {
        text_of(&self.stderr)
    }

    /// Waits until the chat's stderr contains `needle`, at most `timeout`; when it was seen.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            if text_of(&self.stderr).contains(needle) {
                return Some(Instant::now());
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The events read so far.
    pub fn seen(&mut self) -> &[ChatEvent] {
        while let Ok(e) = self.events.try_recv() {
            self.seen.push(e);
        }
        &self.seen
    }

    /// Writes `lines` to the chat's stdin.
    pub fn send_lines(&mut self, lines: &[String]) -> io::Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| io::Error::other("stdin already closed"))?;
        for line in lines {
            writeln!(stdin, "{line}")?;
        }
        stdin.flush()
    }

    /// Ends the input, as Ctrl-D would.
    pub fn close_stdin(&mut self) {
        drop(self.stdin.take());
    }

    /// Reads events until `done` holds for what was seen so far (`true`), the process exits or
    /// `timeout` passes (`false`).
    pub fn wait_for(&mut self, timeout: Duration, done: impl Fn(&[ChatEvent]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if done(self.seen()) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match self
                .events
                .recv_timeout(left.min(Duration::from_millis(50)))
            {
                Ok(e) => self.seen.push(e),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                // The process closed its stdout (it exited).
                Err(mpsc::RecvTimeoutError::Disconnected) => return done(&self.seen),
            }
        }
    }

    /// Waits for the exit (killing the process after `timeout`) and returns everything it
    /// printed.
    pub fn finish(mut self, timeout: Duration) -> ChatOutcome {
        self.close_stdin();
        let deadline = Instant::now() + timeout;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break None;
                }
            }
        };
        // The readers end with the process's stdout and stderr; then every line is here.
        for reader in self.readers.drain(..) {
            join_reader(Some(reader));
        }
        while let Ok(e) = self.events.try_recv() {
            self.seen.push(e);
        }
        let events = std::mem::take(&mut self.seen);
        let (events, stray): (Vec<ChatEvent>, Vec<ChatEvent>) =
            events.into_iter().partition(|e| !e.fields.is_empty());
        ChatOutcome {
            user: self.user.clone(),
            started: self.started,
            status,
            events,
            stray: stray.into_iter().map(|e| e.line).collect(),
            stderr: self.logs(),
        }
    }
}

impl Drop for ChatPeer {
    fn drop(&mut self) {
        // Only when `finish` was not reached (a failing test): our own child, by its handle.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The path events (`path`, `remote`, when) of `events`.
pub fn path_events(events: &[ChatEvent]) -> Vec<(&str, &str, Instant)> {
    events
        .iter()
        .filter(|e| e.kind() == "path")
        .map(|e| (e.get("path"), e.get("remote"), e.at))
        .collect()
}

/// The received messages (`from`, `text`) of `events`, in order.
pub fn messages(events: &[ChatEvent]) -> Vec<(&str, &str)> {
    events
        .iter()
        .filter(|e| e.kind() == "message")
        .map(|e| (e.get("from"), e.get("text")))
        .collect()
}

impl ChatOutcome {
    /// The path events.
    pub fn paths(&self) -> Vec<(&str, &str, Instant)> {
        path_events(&self.events)
    }

    /// The last path (`direct`, `relayed`) and its remote, if any.
    pub fn last_path(&self) -> Option<(&str, &str)> {
        self.paths().last().map(|&(p, r, _)| (p, r))
    }

    /// The messages received.
    pub fn messages(&self) -> Vec<(&str, &str)> {
        messages(&self.events)
    }

    /// When the `connected` event (the introduction) was read.
    pub fn connected_at(&self) -> Option<Instant> {
        self.events
            .iter()
            .find(|e| e.kind() == "connected")
            .map(|e| e.at)
    }

    /// From the introduction (`connected`) to the first path event.
    pub fn first_path_after_intro(&self) -> Option<Duration> {
        let intro = self.connected_at()?;
        let first = self.paths().first()?.2;
        Some(first.saturating_duration_since(intro))
    }

    /// Whether it exited with status 0.
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// Every event line (with its time since the start), then the last `tail` lines of
    /// stderr: for failure messages.
    pub fn report(&self, tail: usize) -> String {
        let lines: Vec<&str> = self.stderr.lines().collect();
        let skip = lines.len().saturating_sub(tail);
        format!(
            "--- {} (exit {:?}) events:\n{}\n--- stray stdout: {:?}\n--- stderr (last {tail} lines):\n{}",
            self.user,
            self.status,
            self.events
                .iter()
                .map(|e| format!(
                    "+{:>5} ms {}",
                    e.at.saturating_duration_since(self.started).as_millis(),
                    e.line
                ))
                .collect::<Vec<_>>()
                .join("\n"),
            self.stray,
            lines[skip..].join("\n")
        )
    }
}

impl Lab {
    /// Loads `rules` (an nftables script, `nft -f -`) in `ns`.
    pub fn nft(&self, ns: &str, rules: &str) -> Result<(), LabError> {
        let t = super::tools()?;
        let mut cmd = self.command(ns, &[t.nft.as_os_str(), "-f".as_ref(), "-".as_ref()]);
        super::run(&mut cmd, Some(rules)).map(drop)
    }

    /// Moves `router`'s translated traffic to a new outside address, as a home router does
    /// that gets a new lease from its ISP: the next address of its WAN subnet (a router on
    /// the core has a /29 with room for it) is added as a /32, a NAT
    /// chain that runs before the router's own rewrites every new outbound UDP flow to it
    /// (ports preserved where free, so the mapping behaviour does not change), and the NAT
    /// state is flushed so existing flows get the new address too. Returns the new address.
    pub fn renumber(&self, router: &Router) -> Result<Ipv4Addr, LabError> {
        let new_ip = Ipv4Addr::from(u32::from(router.wan_ip) + 1);
        let t = super::tools()?;
        let wan = super::nft::WAN;
        let cidr = format!("{new_ip}/32");
        let mut cmd = self.command(
            &router.ns,
            &[
                t.ip.as_os_str(),
                "addr".as_ref(),
                "add".as_ref(),
                cidr.as_ref(),
                "dev".as_ref(),
                wan.as_ref(),
            ],
        );
        super::run(&mut cmd, None)?;
        let rules = format!(
            "table ip renumbered {{\n  chain post {{\n    type nat hook postrouting priority srcnat - 10; \
             policy accept;\n    oifname \"{wan}\" meta l4proto udp snat ip to {new_ip}\n  }}\n}}\n"
        );
        self.nft(&router.ns, &rules)?;
        self.flush_nat(router)?;
        Ok(new_ip)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn flat_json_objects_parse_with_escapes() {
        let line =
            r#"{"event":"message","from":"bob","text":"q \" b \\ t\t \u00e9 \ud83d\ude42 ü"}"#;
        let f = parse_json_object(line).unwrap();
        assert_eq!(f["event"], "message");
        assert_eq!(f["text"], "q \" b \\ t\t é 🙂 ü");
        let f = parse_json_object(r#" { "a" : 1 , "b":"x" } "#).unwrap();
        assert_eq!((f["a"].as_str(), f["b"].as_str()), ("1", "x"));
        assert_eq!(parse_json_object("{}").unwrap().len(), 0);
        for bad in [
            "",
            "not json",
            "{\"a\":\"b\"",
            "{\"a\" \"b\"}",
            "{\"a\":\"b\"} x",
        ] {
            assert!(parse_json_object(bad).is_none(), "{bad:?}");
        }
    }
}
