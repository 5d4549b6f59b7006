//! The raw probes of [`ProbeObservation`] over real sockets, without any STUN code.
//!
//! [`Responder`] runs in the server namespace on four sockets (two addresses times two
//! ports). A datagram `probe <id>` is answered `<id> <observed source ip:port>` from the
//! socket it arrived on; `probe-from-other-port <id>` is answered from the same address's
//! other port and `probe-from-other-ip <id>` from the other address's same port (the raw
//! equivalent of a STUN CHANGE-REQUEST). [`observe`] runs the same procedure as
//! [`crate::sim::probes::observe`]: one socket to A1:P1, A2:P1 and A1:P2 (mapping), then a
//! fresh socket per filtering check.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Host, Lab, SERVER_IPS, udp_socket_in};
use crate::nat_types::ProbeObservation;

/// The responder's two ports.
pub const PORTS: [u16; 2] = [4478, 4479];

/// How long one probe waits for its reply before resending.
const WAIT: Duration = Duration::from_millis(250);
/// How often one probe is sent at most.
const SENDS: u32 = 3;

/// A probe responder in the lab's server namespace; stops on drop.
#[derive(Debug)]
pub struct Responder {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// Index of the socket bound to `SERVER_IPS[ip]:PORTS[port]`.
fn slot(ip: usize, port: usize) -> usize {
    ip * 2 + port
}

/// The address of the responder's socket on `SERVER_IPS[ip]`, `PORTS[port]`.
pub fn responder_addr(ip: usize, port: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(SERVER_IPS[ip]), PORTS[port])
}

impl Responder {
    /// Binds the four sockets inside the lab's server namespace and starts answering.
    pub fn start(lab: &Lab) -> io::Result<Self> {
        let mut sockets = Vec::new();
        for ip in 0..2 {
            for port in 0..2 {
                let s = udp_socket_in(&lab.server().ns, responder_addr(ip, port))?;
                s.set_read_timeout(Some(Duration::from_millis(50)))?;
                sockets.push(Arc::new(s));
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..4)
            .map(|i| {
                let sockets = sockets.clone();
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || serve(&sockets, i, &stop))
            })
            .collect();
        Ok(Self { stop, threads })
    }
}

fn serve(sockets: &[Arc<UdpSocket>], me: usize, stop: &AtomicBool) {
    let (ip, port) = (me / 2, me % 2);
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = sockets[me].recv_from(&mut buf) else {
            continue;
        };
        let text = String::from_utf8_lossy(&buf[..n]);
        let mut words = text.split_whitespace();
        let (kind, id) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        let reply_from = match kind {
            "probe" => me,
            "probe-from-other-port" => slot(ip, 1 - port),
            "probe-from-other-ip" => slot(1 - ip, port),
            _ => continue,
        };
        let reply = format!("{id} {from}");
        // A lost reply is what the probe measures; nothing to do about a send error.
        let _ = sockets[reply_from].send_to(reply.as_bytes(), from);
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Sends `<kind> <id>` to `to` (up to 3 times, 250 ms apart) and returns the source address
/// the responder saw, from the first reply with that id coming from `expect_from`.
pub fn probe(
    socket: &UdpSocket,
    to: SocketAddr,
    kind: &str,
    id: u32,
    expect_from: SocketAddr,
) -> io::Result<Option<SocketAddr>> {
    let mut buf = [0u8; 512];
    let msg = format!("{kind} {id}");
    for _ in 0..SENDS {
        socket.send_to(msg.as_bytes(), to)?;
        let deadline = Instant::now() + WAIT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if left.is_zero() {
                break;
            }
            socket.set_read_timeout(Some(left))?;
            let (n, from) = match socket.recv_from(&mut buf) {
                Ok(r) => r,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::ConnectionRefused
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            };
            let text = String::from_utf8_lossy(&buf[..n]);
            let mut words = text.split_whitespace();
            if from == expect_from && words.next() == Some(id.to_string().as_str()) {
                return Ok(words.next().and_then(|a| a.parse().ok()));
            }
        }
    }
    Ok(None)
}

/// Runs the probes from `client` against a running [`Responder`] and reports what they saw.
pub fn observe(lab: &Lab, client: &Host) -> io::Result<ProbeObservation> {
    let (a1p1, a1p2, a2p1) = (
        responder_addr(0, 0),
        responder_addr(0, 1),
        responder_addr(1, 0),
    );
    let any = SocketAddr::new(IpAddr::V4(client.ip()), 0);
    // Socket 1: the same socket to three server endpoints (mapping).
    let s1 = lab.udp_socket(client, any)?;
    let local = s1.local_addr()?;
    let m1 = probe(&s1, a1p1, "probe", 1, a1p1)?;
    let m2 = probe(&s1, a2p1, "probe", 2, a2p1)?;
    let m3 = probe(&s1, a1p2, "probe", 3, a1p2)?;
    // Fresh sockets that only ever talk to a1p1, answered from elsewhere (filtering); the
    // two checks are independent, so they run side by side.
    let (s2, s3) = (lab.udp_socket(client, any)?, lab.udp_socket(client, any)?);
    let (from_port, from_ip) = std::thread::scope(|scope| {
        let other_port = scope.spawn(|| probe(&s2, a1p1, "probe-from-other-port", 4, a1p2));
        let from_ip = probe(&s3, a1p1, "probe-from-other-ip", 5, a2p1);
        let from_port = other_port
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("probe thread panicked")));
        (from_port, from_ip)
    });
    let (from_port, from_ip) = (from_port?, from_ip?);
    Ok(ProbeObservation {
        reachable: m1.is_some(),
        mapped_is_local: m1 == Some(local),
        same_mapping_other_ip: m1.is_some() && m1 == m2,
        same_mapping_other_port: m1.is_some() && m1 == m3,
        inbound_from_other_port: from_port.is_some(),
        inbound_from_other_ip: from_ip.is_some(),
    })
}

/// The primary server address and port the responder listens on (A1:P1).
pub fn primary() -> SocketAddr {
    responder_addr(0, 0)
}
