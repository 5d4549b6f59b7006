//! Running the `stun-server` binary from a test: the flags of a rendezvous server on free
//! ports, start it, wait for a log line, stop it with Ctrl-C. Shared by the binary's test
//! files so each does not carry its own copy.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_stun-server");

/// A KDF cheap enough that tests register for free (`--min-kdf`, `user add --kdf`).
pub const CHEAP_KDF: &str = "argon2id:m=8:t=1:p=1";

/// The flags of a rendezvous server on a free loopback port with its database at `db` and
/// [`CHEAP_KDF`] accepted, without STUN; a switchboard on a free port too when `switchboard`.
/// Tests append what they are about.
pub fn rendezvous_args(db: &str, switchboard: bool) -> Vec<&str> {
    let mut args = vec!["--no-stun", "--rendezvous", "127.0.0.1:0"];
    if switchboard {
        args.extend(["--switchboard", "127.0.0.1:0"]);
    } else {
        args.push("--no-switchboard");
    }
    args.extend(["--min-kdf", CHEAP_KDF, "--db", db]);
    args
}

/// Starts the binary with `args` (a rendezvous server among them) and reads stderr until
/// `rendezvous listening on ADDR`; returns the child, the log so far and the address.
pub fn start_rendezvous(args: &[&str]) -> (Running, String, SocketAddr) {
    let marker = "rendezvous listening on ";
    let (running, log, line) = start_until(command(args), marker);
    let addr = line
        .split(marker)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .parse()
        .unwrap();
    (running, log, addr)
}

/// The child (killed on drop so a failing test leaves no server behind) and its stderr so far.
pub struct Running(pub Child, Arc<Mutex<String>>);

impl Running {
    /// Waits until stderr has a line containing `marker` (10 s at most) and returns it: what
    /// the server logs is how a test sees work it does on its own timers.
    pub fn wait_log(&self, marker: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = self.1.lock().unwrap().lines().find(|l| l.contains(marker)) {
                return line.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "server did not log {marker:?}; stderr:\n{}",
                self.1.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A command for the binary with `args`, logging at info level without colours.
pub fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env("RUST_LOG", "info").env("NO_COLOR", "1");
    cmd
}

/// Starts `cmd` and reads its stderr until a line containing `marker` (10 s at most); returns
/// the child, the log so far and the matching line. Stderr keeps being read afterwards (see
/// [`Running::wait_log`]) so the child never blocks on it.
pub fn start_until(mut cmd: Command, marker: &str) -> (Running, String, String) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let running = Running(child, Arc::default());
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = String::new();
    while Instant::now() < deadline {
        match lines.next() {
            Some(Ok(line)) => {
                seen.push_str(&line);
                seen.push('\n');
                if line.contains(marker) {
                    running.1.lock().unwrap().push_str(&seen);
                    let log = running.1.clone();
                    std::thread::spawn(move || {
                        for line in lines.map_while(Result::ok) {
                            let mut log = log.lock().unwrap();
                            log.push_str(&line);
                            log.push('\n');
                        }
                    });
                    return (running, seen, line);
                }
            }
            _ => break,
        }
    }
    panic!("server did not report {marker:?}; stderr so far:\n{seen}");
}

/// The fingerprint in the `TLS certificate fingerprint SHA256:...` line of `log`.
pub fn logged_fingerprint(log: &str) -> shared::identity::Fingerprint {
    let marker = "TLS certificate fingerprint ";
    log.split(marker)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {marker:?} line in:\n{log}"))
        .parse()
        .unwrap()
}

/// Sends SIGINT (what Ctrl-C sends) and waits up to 10 s for the exit.
pub fn interrupt_and_wait(mut running: Running) -> ExitStatus {
    // SAFETY: sending a signal to our own child by its pid.
    unsafe { libc::kill(running.0.id() as libc::pid_t, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(status) = running.0.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("server did not stop on SIGINT");
}
