//! What the trust tests share: the real services on loopback, a client command runner with
//! its own home, a man-in-the-middle proxy ([`proxy`]) and a malicious rendezvous server
//! ([`evil`]).

#![allow(dead_code)]

pub mod evil;
pub mod proxy;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use p2p_servers::ServerHandle;
use p2p_servers::services::Services;
use p2p_servers::tls::ServerTls;

use crate::loopback;
/// A cheap KDF, accepted by the servers the tests start.
pub use crate::loopback::KDF;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A fresh directory under the system's temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Makes it.
    pub fn new(what: &str) -> TempDir {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("p2p-{what}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// STUN, rendezvous and switchboard on loopback (free ports), with their own database.
pub struct Servers {
    /// The running rendezvous server and switchboard.
    pub services: Option<Services>,
    _stun: ServerHandle,
    /// The rendezvous server's address.
    pub rendezvous: SocketAddr,
    /// The switchboard's address.
    pub switchboard: SocketAddr,
    /// The servers' TLS identity.
    pub tls: ServerTls,
    _state: TempDir,
}

impl Servers {
    /// Starts them.
    pub fn start() -> Servers {
        let stun = loopback::stun(false);
        let state = TempDir::new("trust-server");
        let tls = ServerTls::ephemeral().expect("TLS");
        let config = loopback::config(loopback::stun_addr(&stun));
        let db = state.path().join("rendezvous.db");
        let options = loopback::rendezvous(loopback::any_port(), db, config, tls.clone());
        let services = loopback::services(options, loopback::any_port());
        let rendezvous = services.rendezvous().local_addr();
        let switchboard = services.switchboard_addr().expect("switchboard");
        Servers {
            services: Some(services),
            _stun: stun,
            rendezvous,
            switchboard,
            tls,
            _state: state,
        }
    }

    /// Logged-in users right now.
    pub fn online(&self) -> usize {
        self.services
            .as_ref()
            .map_or(0, |s| s.rendezvous().online_count())
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        if let Some(services) = self.services.take() {
            services.shutdown();
        }
    }
}

/// Runs `serve` on a thread of its own with a current-thread tokio runtime, handing it
/// `listener` as a tokio listener: the fake servers here live beside a blocking test body.
pub fn serve_in_background<F, Fut>(listener: std::net::TcpListener, serve: F)
where
    F: FnOnce(tokio::net::TcpListener) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            serve(listener).await;
        });
    });
}

/// `p2p-client ARGS --server SERVER --user USER` with `home` as `P2P_HOME`, the user's
/// password in the environment (`USER-password`), stdin closed and only warnings logged (see
/// [`crate::client::command_as`]).
pub fn client(server: SocketAddr, home: &Path, user: &str, args: &[&str]) -> Command {
    let mut cmd = crate::client::command_as(&server.to_string(), home, user, args);
    cmd.env("RUST_LOG", "warn");
    cmd
}

/// Runs a client command to its end.
pub fn run(server: SocketAddr, home: &Path, user: &str, args: &[&str]) -> Output {
    client(server, home, user, args)
        .output()
        .expect("run p2p-client")
}

/// Runs a client command that must succeed.
pub fn ok(server: SocketAddr, home: &Path, user: &str, args: &[&str]) -> Output {
    let out = run(server, home, user, args);
    assert!(
        out.status.success(),
        "{args:?} as {user}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Registers both users and makes them mutual contacts.
pub fn pair(server: SocketAddr, home: &Path, a: &str, b: &str) {
    for user in [a, b] {
        ok(server, home, user, &["register", "--kdf", KDF]);
    }
    ok(server, home, a, &["contacts", "add", b]);
    ok(server, home, b, &["contacts", "add", a]);
}

/// Text of a byte string, lossy.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}
