//! Helpers of the session tests: the servers on loopback (restartable on the same ports with
//! the same key and database), `chat --json` and `status` processes (a [`Proc`] each). Test
//! files that say `mod sessions;` also say `mod client;` and `mod loopback;`.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use p2p_servers::ServerHandle;
use p2p_servers::services::Services;
use p2p_servers::tls::ServerTls;
use serde_json::Value;

use crate::client::{self, DEBUG_LOGS, Proc};

use crate::loopback::{self, KDF};

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

    /// What a metrics endpoint of these servers reads (`stun-server --metrics`).
    pub fn metrics_sources(&self) -> p2p_servers::metrics::MetricsSources {
        p2p_servers::metrics::MetricsSources::new(Some(&self.stun), self.services.as_ref())
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

    /// `p2p-client ARGS` as `user` against the rendezvous server, with debug logs.
    pub fn command(&self, user: &str, args: &[&str]) -> Command {
        let server = self.rendezvous.to_string();
        let mut cmd = client::command_as(&server, &self.home, user, args);
        cmd.env("RUST_LOG", DEBUG_LOGS);
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
        loopback::remove_database(&self.db);
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

/// `chat --json --peer PEER --bind 127.0.0.1` as `user`.
pub fn chat(servers: &Servers, user: &str, peer: &str, extra: &[&str]) -> Proc {
    Proc::spawn(user, servers.command(user, &client::chat_args(peer, extra)))
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
