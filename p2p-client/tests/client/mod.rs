//! The `p2p-client` binary as the tests run it: the command line against a test server
//! (the cheap KDF accepted, a home of the test's own, a clean environment) and a running
//! process whose stdout and stderr are collected while it runs. Test files that run the client
//! say `mod client;` (and `mod loopback;`, whose KDF it accepts), so a change to how the client
//! is launched is made once instead of in every file's copy.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Stdio};

use crate::loopback::KDF;

// `Proc` and its helpers use std, serde_json and libc only, so the workspace's other test
// crates include the same file by path. (Unused in test files that only build commands.)
mod process;
#[allow(unused_imports)]
pub use process::*;

/// The client binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_p2p-client");

/// `p2p-client ARGS --server SERVER` with `home` as `P2P_HOME`, no user or password from the
/// environment and stdin closed. The test servers take cheap verifiers, so the client is told
/// to accept their KDF.
pub fn command(server: &str, home: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .args(["--server", server])
        .env("P2P_MIN_KDF", KDF)
        .env("P2P_HOME", home)
        .env_remove("P2P_USER")
        .env_remove("P2P_PASSWORD")
        .env_remove("P2P_NEW_PASSWORD")
        .stdin(Stdio::null());
    cmd
}

/// The password every test user has: `USER-password`.
pub fn password(user: &str) -> String {
    format!("{user}-password")
}

/// [`command`] as `user` (`--user USER`, its [`password`] in `P2P_PASSWORD`).
pub fn command_as(server: &str, home: &Path, user: &str, args: &[&str]) -> Command {
    let mut cmd = command(server, home, args);
    cmd.args(["--user", user])
        .env("P2P_PASSWORD", password(user));
    cmd
}

/// The arguments of a chat on loopback with `peer` whose stdout is one JSON object a line:
/// `chat --json --peer PEER --bind 127.0.0.1 EXTRA...`.
pub fn chat_args<'a>(peer: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["chat", "--json", "--peer", peer, "--bind", "127.0.0.1"];
    args.extend_from_slice(extra);
    args
}
