//! Running the `stun-server` binary from a test: start it, wait for a log line, stop it with
//! Ctrl-C. Shared by the binary's test files so each does not carry its own copy.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_stun-server");

/// Kills the child on drop so a failing test leaves no server behind.
pub struct Running(pub Child);

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
/// the child, the log so far and the matching line. Stderr keeps being drained afterwards so
/// the child never blocks on it.
pub fn start_until(mut cmd: Command, marker: &str) -> (Running, String, String) {
    let mut running = Running(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = running.0.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = String::new();
    while Instant::now() < deadline {
        match lines.next() {
            Some(Ok(line)) => {
                seen.push_str(&line);
                seen.push('\n');
                if line.contains(marker) {
                    std::thread::spawn(move || for _ in lines {});
                    return (running, seen, line);
                }
            }
            _ => break,
        }
    }
    panic!("server did not report {marker:?}; stderr so far:\n{seen}");
}

/// The fingerprint in the `TLS certificate fingerprint SHA256:...` line of `log`.
#[allow(dead_code)]
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
