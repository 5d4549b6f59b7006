//! Runs [`shared::nat_classifier::Classifier`] over real UDP sockets.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use shared::SocketIndex;
use shared::nat_classifier::{Classifier, ClassifierConfig, Report, socket};

/// The port of a STUN server named without one
/// ([RFC 8489 section 18.6](https://www.rfc-editor.org/rfc/rfc8489#section-18.6)).
pub const STUN_PORT: u16 = 3478;

/// Why a classification could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClassifyError {
    /// The local address for reaching the server could not be found or bound.
    #[error("cannot open local sockets: {0}")]
    Socket(#[from] std::io::Error),
    /// The classifier ran past its own deadline (a bug, reported rather than hung on).
    #[error("classification did not finish in time")]
    Stuck,
}

/// Options beyond the server address.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClassifyOptions {
    /// Local IP to send from; default: the one the kernel routes to the server from.
    pub local_ip: Option<IpAddr>,
    /// Classic RFC 3489 requests.
    pub classic: bool,
    /// Search the binding lifetime up to this long.
    pub lifetime_max: Option<Duration>,
}

/// The outcome of classifying towards the STUN server's IPv6 address (the IPv6 part of
/// `p2p-client nat-type`).
#[derive(Debug)]
#[non_exhaustive]
pub enum Ipv6Check {
    /// No IPv6 address of the server is known, so nothing was sent.
    NoServer,
    /// This host cannot send to the server's IPv6 address at all: it has no IPv6 route
    /// (usually: no global IPv6 address).
    NoRoute {
        /// The server's IPv6 address and port.
        server: SocketAddr,
        /// What the kernel said.
        error: std::io::Error,
    },
    /// The classifier ran over IPv6; [`NatType::UdpBlocked`](shared::nat_classifier::NatType)
    /// means no answer came back.
    Classified {
        /// The server's IPv6 address and port.
        server: SocketAddr,
        /// The classification (boxed: it is large next to the other variants).
        report: Box<Report>,
    },
}

/// Classifies towards `server` (an IPv6 address; `None`: [`Ipv6Check::NoServer`]). Only the
/// local address of `options` is used, and only if it is IPv6: over IPv6 there is normally no
/// NAT whose binding could expire, so no lifetime is searched.
pub fn classify_ipv6(
    server: Option<SocketAddr>,
    options: ClassifyOptions,
) -> Result<Ipv6Check, ClassifyError> {
    let Some(server) = server else {
        return Ok(Ipv6Check::NoServer);
    };
    let local_ip = match options.local_ip.filter(IpAddr::is_ipv6) {
        Some(ip) => ip,
        None => match route_source(server) {
            Ok(ip) => ip,
            Err(error) => return Ok(Ipv6Check::NoRoute { server, error }),
        },
    };
    let options = ClassifyOptions {
        local_ip: Some(local_ip),
        classic: options.classic,
        lifetime_max: None,
    };
    let report = classify(server, options)?;
    Ok(Ipv6Check::Classified {
        server,
        report: Box::new(report),
    })
}

/// The local address the kernel would use towards `server` (a UDP connect sends nothing).
fn route_source(server: SocketAddr) -> std::io::Result<IpAddr> {
    let any: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .expect("literal");
    let probe = UdpSocket::bind(any)?;
    probe.connect(server)?;
    Ok(probe.local_addr()?.ip())
}

/// Classifies the NAT towards `server` (its primary address and port).
pub fn classify(server: SocketAddr, options: ClassifyOptions) -> Result<Report, ClassifyError> {
    let ip = match options.local_ip {
        Some(ip) => ip,
        None => route_source(server)?,
    };
    let sockets: Vec<UdpSocket> = (0..socket::COUNT)
        .map(|_| UdpSocket::bind(SocketAddr::new(ip, 0)))
        .collect::<Result<_, _>>()?;
    let mut locals = [SocketAddr::new(ip, 0); socket::COUNT];
    for (local, s) in locals.iter_mut().zip(&sockets) {
        *local = s.local_addr()?;
    }
    let mut config = ClassifierConfig::new(server);
    config.classic = options.classic;
    config.lifetime_max = options.lifetime_max;
    let seed: u64 = rand::random();
    let started = Instant::now();
    let mut classifier = Classifier::new(config, locals, seed, started);

    // One reader thread per socket feeds a channel; the loop below is the only place that
    // touches the classifier.
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<(SocketIndex, SocketAddr, Vec<u8>)>();
    let mut readers = Vec::new();
    for (index, s) in (0u16..).map(SocketIndex).zip(sockets.iter()) {
        let s = s.try_clone()?;
        // Short, because the readers notice the stop flag only between reads and the caller
        // waits for them: a classification returns at most this much after its verdict.
        s.set_read_timeout(Some(Duration::from_millis(5)))?;
        let (tx, stop) = (tx.clone(), stop.clone());
        readers.push(std::thread::spawn(move || {
            let mut buf = vec![0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, from)) = s.recv_from(&mut buf) {
                    if tx.send((index, from, buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }));
    }
    drop(tx);

    // A hard stop well past anything the classifier can schedule.
    let limit = started + Duration::from_secs(30) + options.lifetime_max.unwrap_or_default() * 4;
    let mut buf = vec![0u8; 2048];
    let result = loop {
        let now = Instant::now();
        while let Some(t) = classifier.poll_transmit(now, &mut buf) {
            // A send error (say, an unreachable network) is a lost datagram to the tests.
            let _ = sockets[t.socket.index()].send_to(&buf[..t.size], t.destination);
        }
        if let Some(report) = classifier.report() {
            break Ok(report.clone());
        }
        if now > limit {
            break Err(ClassifyError::Stuck);
        }
        let wait = classifier
            .poll_timeout()
            .map_or(Duration::from_millis(50), |t| {
                t.saturating_duration_since(now)
            });
        match rx.recv_timeout(wait) {
            Ok((index, from, data)) => {
                classifier.handle_datagram(Instant::now(), index, from, &data)
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break Err(ClassifyError::Stuck),
        }
        // Timers fire even while datagrams keep arriving.
        let now = Instant::now();
        if classifier.poll_timeout().is_some_and(|t| t <= now) {
            classifier.handle_timeout(now);
        }
    };
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        let _ = reader.join();
    }
    result
}
