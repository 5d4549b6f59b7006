//! `p2p-client send` and `receive` as real processes inside a lab: the random files they move
//! (made and checked with kernel and coreutils speed, so that a test of a large file spends its
//! time on the transfer, not on a debug build's hashing), the two commands started as
//! [`ChatPeer`]s (their `--json` lines read back the same way), and what their events say.
//!
//! Files live in a directory under the system's temporary directory, which every namespace
//! sees (a network namespace changes the network only); [`TransferDir`] removes it on drop.

use std::fs::File;
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::chat::{ChatEvent, ChatOutcome, ChatPeer};
use super::{Host, Lab, LabError};

/// A directory of a transfer test: `src/` for the sender, `out/` for the receiver. Removed
/// (with every file in it) on drop.
#[derive(Debug)]
pub struct TransferDir {
    root: PathBuf,
}

impl TransferDir {
    /// A fresh directory named after `label` and this process.
    pub fn new(label: &str) -> io::Result<TransferDir> {
        let root = std::env::temp_dir().join(format!("p2pl-xfer-{}-{label}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("src"))?;
        std::fs::create_dir_all(root.join("out"))?;
        Ok(TransferDir { root })
    }

    /// Where the sender's files are.
    pub fn src(&self) -> PathBuf {
        self.root.join("src")
    }

    /// The receiver's `--out`.
    pub fn out(&self) -> PathBuf {
        self.root.join("out")
    }
}

impl Drop for TransferDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Writes `len` random bytes to `path`: a bounded read of `/dev/urandom` (the kernel's
/// ChaCha20 stream, hundreds of MB/s even from a debug build).
pub fn random_file(path: &Path, len: u64) -> io::Result<()> {
    let mut source = File::open("/dev/urandom")?.take(len);
    let mut file = File::create(path)?;
    let copied = io::copy(&mut source, &mut file)?;
    if copied != len {
        return Err(io::Error::other(format!(
            "/dev/urandom gave {copied} of {len} bytes"
        )));
    }
    file.sync_all()
}

/// The SHA-256 of the file at `path`, lowercase hex, from coreutils' `sha256sum` (a debug
/// build of the `sha2` crate needs most of a minute for a gigabyte).
pub fn sha256_of(path: &Path) -> io::Result<String> {
    let out = Command::new("sha256sum").arg(path).output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "sha256sum {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .filter(|h| h.len() == 64)
        .map(str::to_owned)
        .ok_or_else(|| io::Error::other("sha256sum printed no hash"))
}

/// A byte count from the environment variable `name`, or `default`.
pub fn env_bytes(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a byte count")),
        Err(_) => default,
    }
}

/// Starts `p2p-client send --json --peer PEER EXTRA... FILES...` as `user` in `host`'s
/// namespace.
pub fn start_send(
    lab: &Lab,
    host: &Host,
    user: &str,
    peer: &str,
    files: &[PathBuf],
    extra: &[&str],
) -> Result<ChatPeer, LabError> {
    let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let mut args: Vec<&str> = extra.to_vec();
    args.extend(files.iter().map(String::as_str));
    ChatPeer::start_command(lab, host, user, &["send", "--json", "--peer", peer], &args)
}

/// Starts `p2p-client receive --json --peer PEER --out OUT EXTRA...` as `user` in `host`'s
/// namespace.
pub fn start_receive(
    lab: &Lab,
    host: &Host,
    user: &str,
    peer: &str,
    out: &Path,
    extra: &[&str],
) -> Result<ChatPeer, LabError> {
    let out = out.display().to_string();
    ChatPeer::start_command(
        lab,
        host,
        user,
        &["receive", "--json", "--peer", peer, "--out", &out],
        extra,
    )
}

/// The bytes of the last `progress` event in `events` (0 if none).
pub fn progress_bytes(events: &[ChatEvent]) -> u64 {
    events
        .iter()
        .rev()
        .find(|e| e.kind() == "progress")
        .and_then(|e| e.get("bytes").parse().ok())
        .unwrap_or(0)
}

/// The `done` events (`file`, `bytes`, `sha256`) of an outcome.
pub fn done_events(outcome: &ChatOutcome) -> Vec<(String, u64, String)> {
    outcome
        .events
        .iter()
        .filter(|e| e.kind() == "done")
        .map(|e| {
            (
                e.get("file").to_owned(),
                e.get("bytes").parse().unwrap_or(u64::MAX),
                e.get("sha256").to_owned(),
            )
        })
        .collect()
}

/// How many events of `kind` an outcome has.
pub fn count(outcome: &ChatOutcome, kind: &str) -> usize {
    outcome.events.iter().filter(|e| e.kind() == kind).count()
}
