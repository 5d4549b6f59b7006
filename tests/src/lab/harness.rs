//! What every lab test needs around a lab: one lab at a time, bounded receives, the
//! `stun-server` command line, and waiting until a freshly started STUN server answers.

use std::ffi::{OsStr, OsString};
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{Lab, SERVER_IPS, SERVER_IPS6, udp_socket_in};

static SERIAL: Mutex<()> = Mutex::new(());

/// Holds the lab for one test at a time within a test binary: labs are heavy (namespaces,
/// kernel NAT state) and tests that start servers use fixed ports. A test that panicked while
/// holding it does not poison it for the others.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// The first datagram `socket` receives within `wait`, as text, with its source.
pub fn recv_text(socket: &UdpSocket, wait: Duration) -> Option<(String, SocketAddr)> {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 512];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        if left.is_zero() {
            return None;
        }
        socket.set_read_timeout(Some(left)).ok()?;
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            return Some((String::from_utf8_lossy(&buf[..n]).into_owned(), from));
        }
    }
}

/// The server host's four STUN sockets: both addresses on both ports.
pub fn server_addrs(port: u16, alt_port: u16) -> [SocketAddr; 4] {
    let at = |ip, port| SocketAddr::new(IpAddr::V4(SERVER_IPS[ip]), port);
    [at(0, port), at(0, alt_port), at(1, port), at(1, alt_port)]
}

/// The `stun-server` binary at `bin` with the flags every lab run gives it: STUN on both
/// server addresses at `port` and `alt_port`, one worker, UDP only, no rate limit (the lab's
/// clients all come from a few addresses) and no periodic stats line. The classifier benchmark
/// and the chat lab both start it so, and append their own flags; one list, so a change to the
/// binary's flags is made once.
pub fn stun_server_command(bin: &Path, port: u16, alt_port: u16) -> Vec<OsString> {
    let (primary, alternate) = (SERVER_IPS[0].to_string(), SERVER_IPS[1].to_string());
    let (port, alt_port) = (port.to_string(), alt_port.to_string());
    let args = [
        "--primary",
        &primary,
        "--alternate",
        &alternate,
        "--port",
        &port,
        "--alt-port",
        &alt_port,
        "--workers",
        "1",
        "--no-tcp",
        "--rate-limit",
        "0",
        "--stats-interval",
        "0",
    ];
    std::iter::once(bin.as_os_str().to_owned())
        .chain(args.into_iter().map(OsString::from))
        .collect()
}

/// coturn (`turnserver`) as a STUN-only server on the server host at `port` and `alt_port`,
/// on both server addresses or (`both_ips` false) the first only, logging to stdout, its pid
/// in `pidfile` (it forks helpers: the file is how a test finds what to stop). The reference
/// server of the classifier tests and of the third-party matrix.
pub fn coturn_command(pidfile: &Path, both_ips: bool, port: u16, alt_port: u16) -> Vec<OsString> {
    let (primary, alternate) = (SERVER_IPS[0].to_string(), SERVER_IPS[1].to_string());
    let mut args = vec!["turnserver", "-n", "--listening-ip", &primary];
    if both_ips {
        args.extend(["--listening-ip", &alternate]);
    }
    let (port, alt_port) = (port.to_string(), alt_port.to_string());
    args.extend([
        "--listening-port",
        &port,
        "--alt-listening-port",
        &alt_port,
        "--stun-only",
        "--no-cli",
        "--no-tls",
        "--no-dtls",
        "--log-file",
        "stdout",
        "--simple-log",
        "--pidfile",
    ]);
    let mut args: Vec<OsString> = args.into_iter().map(OsString::from).collect();
    args.push(pidfile.as_os_str().to_owned());
    args
}

impl Lab {
    /// Starts `args` in namespace `ns` with stdin closed and its output discarded: a server
    /// nobody reads, so a full pipe can never stall it.
    pub fn spawn_quiet<S: AsRef<OsStr>>(&self, ns: &str, args: &[S]) -> io::Result<Child> {
        self.command(ns, args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
    }

    /// Sends Binding requests from inside the server host until each of `addrs` answers
    /// (a server just started, coturn especially, can take a while), at most `within` in all.
    /// The addresses may be IPv4 or IPv6 ([`SERVER_IPS6`]).
    pub fn wait_for_stun(&self, addrs: &[SocketAddr], within: Duration) -> io::Result<()> {
        let ns = &self.server().ns;
        let v4 = udp_socket_in(ns, SocketAddr::new(IpAddr::V4(SERVER_IPS[0]), 0))?;
        let v6 = udp_socket_in(ns, SocketAddr::new(IpAddr::V6(SERVER_IPS6[0]), 0))?;
        for socket in [&v4, &v6] {
            socket.set_read_timeout(Some(Duration::from_millis(100)))?;
        }
        let deadline = Instant::now() + within;
        for (i, to) in addrs.iter().enumerate() {
            let socket = if to.is_ipv4() { &v4 } else { &v6 };
            let mut request = [0u8; 20];
            request[1] = 1; // Binding request, no attributes
            request[4..8].copy_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
            request[8] = u8::try_from(i).unwrap_or(u8::MAX);
            request[9..].copy_from_slice(b"lab-ready!!");
            let mut buf = [0u8; 1500];
            'wait: loop {
                if Instant::now() >= deadline {
                    let what = format!("no STUN answer from {to} within {within:?}");
                    return Err(io::Error::new(io::ErrorKind::TimedOut, what));
                }
                socket.send_to(&request, to)?;
                while let Ok((n, _)) = socket.recv_from(&mut buf) {
                    if n >= 20 && buf[0..2] == [1, 1] && buf[8..20] == request[8..20] {
                        break 'wait;
                    }
                }
            }
        }
        Ok(())
    }
}
