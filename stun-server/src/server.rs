//! Starting, observing and stopping a server.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use shared::stun_server::{ConfigError, IpSlot, PortSlot, ServerConfig, ServerSocket, StunServer};
use tokio::sync::watch;

use crate::sockets::{BindError, bind_udp, pick_free_ports, probe_all};
use crate::udp_worker::UdpWorker;
use crate::{OptionsError, ServerOptions, Stats, tcp};

/// Why a server did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The options contradict each other.
    #[error(transparent)]
    Options(#[from] OptionsError),
    /// The protocol core refused the resulting configuration.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// A socket could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// Threads, polls or runtimes could not be created.
    #[error("cannot start: {0}")]
    Io(#[from] std::io::Error),
}

/// A running server. Dropping it shuts the server down, as does [`ServerHandle::shutdown`].
pub struct ServerHandle {
    udp_addrs: [Option<SocketAddr>; 4],
    tcp_addr: Option<SocketAddr>,
    shutdown: Arc<AtomicBool>,
    wakers: Vec<Arc<mio::Waker>>,
    workers: Vec<JoinHandle<Stats>>,
    published: Vec<Arc<Mutex<Stats>>>,
    tcp: Option<(watch::Sender<bool>, JoinHandle<Stats>)>,
    tcp_published: Option<Arc<Mutex<Stats>>>,
    config: ServerConfig,
}

/// Where a running server's workers publish their counters, readable from any thread without
/// the [`ServerHandle`] (the metrics endpoint keeps one). Reading sums what each worker last
/// published, at most one publish interval (250 ms) old.
#[derive(Clone, Debug)]
pub(crate) struct StatsSource {
    udp: Vec<Arc<Mutex<Stats>>>,
    tcp: Option<Arc<Mutex<Stats>>>,
}

impl StatsSource {
    /// The UDP workers' counters, summed.
    pub(crate) fn udp(&self) -> Stats {
        sum(&self.udp)
    }

    /// The TCP listener's counters (zero without TCP).
    pub(crate) fn tcp(&self) -> Stats {
        sum(self.tcp.as_slice())
    }
}

fn sum(published: &[Arc<Mutex<Stats>>]) -> Stats {
    let mut total = Stats::default();
    for published in published {
        if let Ok(s) = published.lock() {
            total.merge(&s);
        }
    }
    total
}

/// A fresh random seed for the rate limiter's hash key, from the operating system (drivers may
/// read ambient randomness; the core may not).
fn random_seed() -> u64 {
    rand::RngCore::next_u64(&mut rand::rngs::OsRng)
}

impl ServerHandle {
    /// Binds every socket and starts the workers; returns once the server is answering.
    pub fn start(options: ServerOptions) -> Result<Self, StartError> {
        options.validate()?;
        let shutdown = Arc::new(AtomicBool::new(false));
        let bound = if options.port == 0 {
            // Free ports are found with probe sockets that must be closed before the real
            // binds, so a parallel process can take one in between: pick again when it does.
            let mut attempts = 0;
            loop {
                let (port, alt_port) =
                    pick_free_ports(options.primary, options.alternate, options.tcp)?;
                match Bound::new(&options, port, alt_port, &shutdown) {
                    Err(StartError::Bind(BindError::InUse { .. })) if attempts < 20 => {
                        attempts += 1;
                    }
                    other => break other?,
                }
            }
        } else {
            Bound::new(&options, options.port, options.alt_port, &shutdown)?
        };
        let Bound {
            config,
            udp_addrs,
            tcp_listener,
            prepared,
        } = bound;

        let mut handle = ServerHandle {
            udp_addrs,
            tcp_addr: tcp_listener.as_ref().map(|(_, a)| *a),
            shutdown,
            wakers: Vec::new(),
            workers: Vec::new(),
            published: Vec::new(),
            tcp: None,
            tcp_published: None,
            config: config.clone(),
        };
        for (i, (worker, waker, published)) in prepared.into_iter().enumerate() {
            let thread = std::thread::Builder::new()
                .name(format!("stun-udp-{i}"))
                .spawn(move || worker.run())?;
            handle.wakers.push(waker);
            handle.workers.push(thread);
            handle.published.push(published);
        }
        if let Some((listener, _)) = tcp_listener {
            let core = StunServer::new(config, random_seed(), Instant::now())?;
            let (tx, rx) = watch::channel(false);
            let published = Arc::new(Mutex::new(Stats::default()));
            let tcp_published = published.clone();
            let thread = std::thread::Builder::new()
                .name("stun-tcp".into())
                .spawn(move || tcp::run(listener, core, rx, tcp_published))?;
            handle.tcp = Some((tx, thread));
            handle.tcp_published = Some(published);
        }
        Ok(handle)
    }

    /// The bound address of one of the four UDP sockets (`None` if it does not exist).
    pub fn udp_addr(&self, socket: ServerSocket) -> Option<SocketAddr> {
        self.udp_addrs[socket.index()]
    }

    /// The bound UDP addresses, in [`ServerSocket::ALL`] order, skipping absent ones.
    pub fn udp_addrs(&self) -> Vec<SocketAddr> {
        self.udp_addrs.iter().flatten().copied().collect()
    }

    /// The TCP listening address, if TCP is served.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// How many UDP workers run.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// The configuration the protocol core runs with (advertised addresses, chosen ports).
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Counters so far, UDP and TCP (each publishes every 250 ms, so this may lag slightly).
    pub fn stats(&self) -> Stats {
        let source = self.stats_source();
        let mut total = source.udp();
        total.merge(&source.tcp());
        total
    }

    /// A handle on the published counters that outlives borrows of `self`.
    pub(crate) fn stats_source(&self) -> StatsSource {
        StatsSource {
            udp: self.published.clone(),
            tcp: self.tcp_published.clone(),
        }
    }

    /// Stops every worker and the TCP listener, waits for them, and returns the final counters.
    pub fn shutdown(mut self) -> Stats {
        self.stop()
    }

    fn stop(&mut self) -> Stats {
        self.shutdown.store(true, Ordering::Relaxed);
        for waker in &self.wakers {
            let _ = waker.wake();
        }
        let mut total = Stats::default();
        for worker in self.workers.drain(..) {
            if let Ok(stats) = worker.join() {
                total.merge(&stats);
            }
        }
        if let Some((tx, thread)) = self.tcp.take() {
            let _ = tx.send(true);
            if let Ok(stats) = thread.join() {
                total.merge(&stats);
            }
        }
        total
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if !self.workers.is_empty() || self.tcp.is_some() {
            self.stop();
        }
    }
}

/// Everything bound for one choice of ports, before any thread starts.
struct Bound {
    config: ServerConfig,
    udp_addrs: [Option<SocketAddr>; 4],
    tcp_listener: Option<(TcpListener, SocketAddr)>,
    prepared: Vec<(UdpWorker, Arc<mio::Waker>, Arc<Mutex<Stats>>)>,
}

impl Bound {
    fn new(
        options: &ServerOptions,
        port: u16,
        alt_port: u16,
        shutdown: &Arc<AtomicBool>,
    ) -> Result<Self, StartError> {
        let config = ServerConfig {
            primary_ip: options.advertise_primary.unwrap_or(options.primary),
            alternate_ip: options
                .alternate
                .map(|a| options.advertise_alternate.unwrap_or(a)),
            primary_port: port,
            alternate_port: alt_port,
            software: options.software.clone(),
            rate_limit: options.rate_limit,
        };
        config.validate()?;

        let bind_addr = |socket: ServerSocket| -> Option<SocketAddr> {
            let ip = match socket.ip {
                IpSlot::Primary => options.primary,
                IpSlot::Alternate => options.alternate?,
            };
            let port = match socket.port {
                PortSlot::Primary => port,
                PortSlot::Alternate => alt_port,
            };
            Some(SocketAddr::new(ip, port))
        };
        let udp_addrs: [Option<SocketAddr>; 4] = ServerSocket::ALL.map(bind_addr);
        let all: Vec<SocketAddr> = udp_addrs.iter().flatten().copied().collect();
        probe_all(&all)?;
        let tcp_listener = if options.tcp {
            let addr = SocketAddr::new(options.primary, port);
            let listener = bind_tcp(addr)?;
            Some((listener, addr))
        } else {
            None
        };

        let now = Instant::now();
        let mut prepared = Vec::new();
        for _ in 0..options.worker_count() {
            let mut sockets = [None, None, None, None];
            for (slot, addr) in sockets.iter_mut().zip(udp_addrs) {
                if let Some(addr) = addr {
                    *slot = Some(bind_udp(addr, options.socket_buffer)?);
                }
            }
            let core = StunServer::new(config.clone(), random_seed(), now)?;
            let published = Arc::new(Mutex::new(Stats::default()));
            let (worker, waker) =
                UdpWorker::new(sockets, core, shutdown.clone(), published.clone())?;
            prepared.push((worker, waker, published));
        }

        Ok(Self {
            config,
            udp_addrs,
            tcp_listener,
            prepared,
        })
    }
}

fn bind_tcp(addr: SocketAddr) -> Result<TcpListener, BindError> {
    use socket2::{Domain, Socket, Type};
    let wrap = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::AddrInUse => BindError::InUse { addr },
        std::io::ErrorKind::AddrNotAvailable => BindError::NotAvailable { addr },
        _ => BindError::Other { addr, source: e },
    };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).map_err(wrap)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true).map_err(wrap)?;
    }
    socket.set_reuse_address(true).map_err(wrap)?;
    socket.bind(&addr.into()).map_err(wrap)?;
    socket.listen(1024).map_err(wrap)?;
    socket.set_nonblocking(true).map_err(wrap)?;
    Ok(socket.into())
}
