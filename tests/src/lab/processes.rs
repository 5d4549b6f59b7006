//! Running programs inside a lab's namespaces: commands, bounded runs and long-lived
//! children, and sockets bound inside a host's namespace.

use std::ffi::OsStr;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::commands::describe;
use super::{Host, Lab, LabError, tools, udp_socket_in};

impl Lab {
    /// A command running `args` inside namespace `ns` (`ip netns exec ns args...`).
    pub fn command<S: AsRef<OsStr>>(&self, ns: &str, args: &[S]) -> Command {
        let ip = tools()
            .map(|t| t.ip.clone())
            .unwrap_or_else(|_| "ip".into());
        let mut cmd = Command::new(ip);
        cmd.args(["netns", "exec", ns]).args(args);
        cmd
    }

    /// Runs `args` inside `host`'s namespace to completion (whatever its exit status).
    pub fn exec<S: AsRef<OsStr>>(&self, host: &Host, args: &[S]) -> Result<Output, LabError> {
        let mut cmd = self.command(&host.ns, args);
        let what = describe(&cmd);
        cmd.stdin(Stdio::null())
            .output()
            .map_err(|source| LabError::Io { what, source })
    }

    /// Runs `args` inside `host`'s namespace, killing it (by pid) after `timeout`.
    /// Returns its output, or `None` if it had to be killed. Its stdout and stderr are read
    /// while it runs, so a chatty command cannot block on a full pipe.
    pub fn exec_timeout<S: AsRef<OsStr>>(
        &self,
        host: &Host,
        args: &[S],
        timeout: Duration,
    ) -> Result<Option<Output>, LabError> {
        use std::io::Read as _;
        let what = describe(&self.command(&host.ns, args));
        let mut child = self.spawn(host, args)?;
        let drain = |pipe: Option<Box<dyn io::Read + Send>>| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(mut pipe) = pipe {
                    let _ = pipe.read_to_end(&mut buf);
                }
                let _ = tx.send(buf);
            });
            rx
        };
        let stdout = drain(
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn io::Read + Send>),
        );
        let stderr = drain(
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn io::Read + Send>),
        );
        let deadline = Instant::now() + timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                Err(source) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(LabError::Io { what, source });
                }
            }
        };
        // The pipes close when the command exits, unless something it started in the
        // background still holds them: then give up on that output after a second (the lab's
        // drop kills whatever is left in its namespaces).
        let collect = |rx: std::sync::mpsc::Receiver<Vec<u8>>| {
            rx.recv_timeout(Duration::from_secs(1)).unwrap_or_default()
        };
        let (stdout, stderr) = (collect(stdout), collect(stderr));
        Ok(status.map(|status| Output {
            status,
            stdout,
            stderr,
        }))
    }

    /// Starts `args` inside `host`'s namespace (stdin null, stdout and stderr piped). `ip
    /// netns exec` execs the command, so the child's pid is the command's. Whatever still runs
    /// in the namespace when the lab drops is killed.
    pub fn spawn<S: AsRef<OsStr>>(&self, host: &Host, args: &[S]) -> Result<Child, LabError> {
        let mut cmd = self.command(&host.ns, args);
        let what = describe(&cmd);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| LabError::Io { what, source })
    }

    /// A UDP socket bound to `addr` inside `host`'s namespace (see [`udp_socket_in`]).
    pub fn udp_socket(&self, host: &Host, addr: SocketAddr) -> io::Result<UdpSocket> {
        udp_socket_in(&host.ns, addr)
    }
}
