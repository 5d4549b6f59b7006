//! A child process under test: its stdout lines (one JSON object each, for `--json` output)
//! arrive on a channel with their arrival time, its stderr is collected while it runs, and it
//! is killed (by its handle) if a test fails before it exits. Uses std, serde_json and libc
//! only: `p2p-client`'s tests have it through `mod client`, other crates' tests include this
//! file by `#[path]`.

#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `RUST_LOG` of a long-running client: its debug lines are what a failure report needs.
pub const DEBUG_LOGS: &str = "p2p_client=debug";

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
    /// Starts `cmd` with stdin, stdout and stderr piped, and [`DEBUG_LOGS`] unless `cmd`
    /// names a `RUST_LOG` of its own.
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        if !cmd.get_envs().any(|(key, _)| key == "RUST_LOG") {
            cmd.env("RUST_LOG", DEBUG_LOGS);
        }
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

    /// Waits (at most `timeout`) for a stdout object that satisfies `want` and comes after
    /// every line seen so far, and returns it.
    pub fn expect(&mut self, timeout: Duration, want: impl Fn(&Value) -> bool) -> Value {
        let from = self.seen.len();
        self.wait_for("a matching line", timeout, |events| {
            events[from..].iter().any(&want)
        });
        self.events()
            .into_iter()
            .skip(from)
            .find(|e| want(e))
            .unwrap()
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

    /// Ends the input, as Ctrl-D would, and waits (at most `timeout`) for the exit.
    pub fn finish(&mut self, timeout: Duration) -> ExitStatus {
        self.close_stdin();
        self.wait_exit(timeout)
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

/// Ends the input of each of `procs`, all before any exit is awaited (each chat's end reaches
/// the other), and asserts that each exits successfully within `timeout`.
pub fn finish_all(procs: &mut [&mut Proc], timeout: Duration) {
    for proc in procs.iter_mut() {
        proc.close_stdin();
    }
    for proc in procs.iter_mut() {
        let status = proc.wait_exit(timeout);
        assert!(
            status.success(),
            "{}: exit {status}\nstderr:\n{}",
            proc.name,
            proc.logs()
        );
    }
}
