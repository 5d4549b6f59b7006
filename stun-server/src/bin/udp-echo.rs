//! `udp-echo`: a single-threaded UDP echo server with the same batched I/O as the STUN server.
//!
//! It receives up to `--batch` datagrams with one `recvmmsg(2)` and sends each back to its
//! sender with one `sendmmsg(2)`, waiting in epoll (through `mio`) when the socket is empty.
//! It does no work per datagram beyond copying it, so on one core it is the ceiling any
//! single-threaded server using these system calls can reach: the baseline `stun-loadgen
//! --expect echo` measures against.
//!
//! `--gso` is not a fair baseline but a probe of the load generator: replies to the same
//! sender go back as one UDP GSO send, which costs the echo side much less per datagram than
//! the generator pays, so the rate then measured is (close to) what the generator can drive.
//!
//! It runs until killed (SIGINT/SIGTERM end it the default way) or for at most `--max-secs`.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use p2p_servers::udp_batch::{BatchReceiver, BatchSender, GSO_MAX_SEGMENTS, gso_control};

/// Largest datagram echoed; longer ones are dropped (the kernel truncates them).
const SLOT_LEN: usize = 2048;

/// Batches handled before waiting in epoll again, even if the socket never empties, so a
/// flood cannot keep the loop from checking its deadline.
const MAX_BATCHES_PER_WAKE: usize = 1024;

/// Single-threaded batched UDP echo server (recvmmsg/sendmmsg), the one-core I/O ceiling.
#[derive(Parser, Debug)]
#[command(name = "udp-echo", version)]
struct Args {
    /// Address to listen on, as IP:PORT.
    #[arg(long, default_value = "127.0.0.1:3478")]
    bind: SocketAddr,

    /// Most datagrams received (and then sent back) per system call.
    #[arg(long, default_value_t = 32)]
    batch: usize,

    /// Send the replies of a batch that go to the same sender (and have the same length) as one
    /// UDP GSO super-datagram. A load-generator probe, not a fair baseline: see the module docs.
    #[arg(long)]
    gso: bool,

    /// Exit on its own after this many seconds (a safety bound; normally it is killed).
    #[arg(long, default_value_t = 3600)]
    max_secs: u64,
}

/// Replies of one batch grouped by destination for GSO sending.
struct GsoGroups {
    /// (destination, segment length, bytes) per group; reused across batches.
    groups: Vec<(SocketAddr, usize, Vec<u8>)>,
    used: usize,
}

impl GsoGroups {
    fn new(capacity: usize) -> Self {
        Self {
            groups: (0..capacity)
                .map(|_| {
                    (
                        SocketAddr::from(([0, 0, 0, 0], 0)),
                        0,
                        Vec::with_capacity(SLOT_LEN * 64),
                    )
                })
                .collect(),
            used: 0,
        }
    }

    /// Adds a reply; returns false if it fits no group (the caller then sends it plainly).
    fn push(&mut self, to: SocketAddr, data: &[u8]) -> bool {
        for g in &mut self.groups[..self.used] {
            if g.0 == to && g.1 == data.len() && g.2.len() / data.len().max(1) < GSO_MAX_SEGMENTS {
                g.2.extend_from_slice(data);
                return true;
            }
        }
        if self.used == self.groups.len() || data.is_empty() {
            return false;
        }
        let g = &mut self.groups[self.used];
        self.used += 1;
        g.0 = to;
        g.1 = data.len();
        g.2.clear();
        g.2.extend_from_slice(data);
        true
    }

    /// Sends every group with one sendmsg each and empties the set.
    fn flush(&mut self, socket: &mio::net::UdpSocket) {
        let sock = socket2::SockRef::from(socket);
        for g in &self.groups[..self.used] {
            let Ok(size) = u16::try_from(g.1) else {
                continue;
            };
            let Some(control) = gso_control(size) else {
                continue;
            };
            let addr = socket2::SockAddr::from(g.0);
            let bufs = [IoSlice::new(&g.2)];
            let mut msg = socket2::MsgHdr::new().with_addr(&addr).with_buffers(&bufs);
            if g.2.len() > g.1 {
                msg = msg.with_control(&control);
            }
            // A full send buffer drops the replies, as any UDP server must rather than block.
            let _ = sock.sendmsg(&msg, libc::MSG_DONTWAIT);
        }
        self.used = 0;
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    if args.gso && gso_control(1).is_none() {
        bail!("--gso is not supported on this platform");
    }
    let deadline = Instant::now() + Duration::from_secs(args.max_secs);
    let std_socket =
        std::net::UdpSocket::bind(args.bind).with_context(|| format!("bind {}", args.bind))?;
    std_socket
        .set_nonblocking(true)
        .context("set_nonblocking")?;
    let mut socket = mio::net::UdpSocket::from_std(std_socket);
    let mut poll = mio::Poll::new().context("epoll")?;
    poll.registry()
        .register(&mut socket, mio::Token(0), mio::Interest::READABLE)
        .context("register")?;
    let mut events = mio::Events::with_capacity(8);
    let mut rx = BatchReceiver::new(args.batch, SLOT_LEN);
    let mut tx = BatchSender::new(args.batch, SLOT_LEN);
    let mut groups = GsoGroups::new(16);
    eprintln!(
        "udp-echo: listening on {}",
        socket.local_addr().context("local_addr")?
    );

    // After a wake with data possibly left (the batch cap was hit), poll without waiting:
    // edge-triggered epoll will not report data that was already there.
    let mut more = true;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(());
        }
        let wait = if more {
            Duration::ZERO
        } else {
            (deadline - now).min(Duration::from_secs(1))
        };
        match poll.poll(&mut events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("epoll_wait"),
        }
        more = true;
        for _ in 0..MAX_BATCHES_PER_WAKE {
            let n = rx.recv(&socket).context("recvmmsg")?;
            if n == 0 {
                more = false;
                break;
            }
            for i in 0..n {
                if let Some((from, data)) = rx.get(i) {
                    if !(args.gso && groups.push(from, data)) {
                        tx.push(data, from);
                    }
                }
            }
            groups.flush(&socket);
            tx.flush(&socket);
            // A short batch means the queue is empty now: skip the receive that would only
            // say so (edge-triggered epoll reports every later arrival).
            if n < rx.capacity() {
                more = false;
                break;
            }
        }
    }
}
