//! `stun-loadgen`: a pipelined STUN Binding load generator that validates every response.
//!
//! One thread keeps `--window` requests in flight over `--sockets` client sockets, sending and
//! receiving in `sendmmsg`/`recvmmsg` batches (see [`p2p_servers::udp_batch`]). Every request
//! carries a transaction id that encodes its slot and sequence number, so a response maps back
//! to its request in O(1) and stale or foreign responses are recognised. Every response is
//! checked (parses, success class, matching id, the socket's own address reflected); invalid
//! ones are counted and printed and never count as successes. Latency goes into a fixed
//! log-linear histogram, so the hot loop allocates nothing.
//!
//! `--expect echo` turns it into a UDP echo client (the reply must equal the request byte for
//! byte), which measures the ceiling a plain batched echo server sets on the same machine.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use p2p_servers::udp_batch::{BatchReceiver, BatchSender, GSO_MAX_SEGMENTS, gso_control};
use shared::stun::{
    Attribute, Class, HEADER_LEN, Message, MessageWriter, Method, TransactionId, attr,
};
use socket2::{Domain, Protocol, Socket, Type};

mod histogram;
mod replies;

use histogram::Histogram;
use replies::{Invalid, Validator, write_request};

/// Marker in the first four id bytes of a classic request (anything but the magic cookie).
const CLASSIC_MARKER: u32 = 0x4C47_454E; // "LGEN"

/// Largest datagram accepted as a response; anything bigger is reported as invalid.
const RESPONSE_SLOT_LEN: usize = 2048;

/// Longest request this tool writes (a header-only Binding request is 20 bytes).
const REQUEST_SLOT_LEN: usize = 64;

/// How many invalid responses are kept (with their bytes) to print at the end.
const INVALID_SAMPLES: usize = 10;

/// Hard ceiling on `--warmup` + `--duration`, so a typo cannot make a run unbounded.
const MAX_RUN_SECS: f64 = 3600.0;

/// Header form of the Binding requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Form {
    /// RFC 5389/8489: magic cookie and 96-bit id; the response must carry XOR-MAPPED-ADDRESS.
    Modern,
    /// RFC 3489: no magic cookie, 128-bit id; the response must carry MAPPED-ADDRESS.
    Classic,
}

/// What a valid reply looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Expect {
    /// A STUN Binding success response reflecting the client socket's address.
    Stun,
    /// The request bytes, unchanged (for a UDP echo server baseline).
    Echo,
}

/// What the loop does when a pass over all sockets received nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Idle {
    /// Poll the sockets again at once (lowest latency; the generator's core stays 100 % busy,
    /// so use `block` to see how much headroom the generator has).
    Spin,
    /// Sleep in epoll until a socket is readable or the next timeout scan is due.
    Block,
}

/// Pipelined STUN Binding load generator with full response validation.
///
/// Keeps WINDOW requests in flight against SERVER for WARMUP + DURATION seconds and reports
/// valid responses per second (measured after the warmup), lost and invalid responses, and
/// latency percentiles. Exits with status 2 if the server never answered and 3 if it answered
/// but no answer was valid.
#[derive(Parser, Debug)]
#[command(name = "stun-loadgen", version)]
struct Args {
    /// Server to load, as IP:PORT. Must be a loopback address unless --allow-remote is given.
    #[arg(long)]
    server: SocketAddr,

    /// Requests in flight in total, spread evenly over the sockets (slot i uses socket
    /// i mod SOCKETS). Windows far above ~128 can overflow a server's default-sized receive
    /// buffer and then measure drops rather than throughput.
    #[arg(long, default_value_t = 64)]
    window: usize,

    /// Number of client sockets (distinct source ports); must not exceed --window.
    #[arg(long, default_value_t = 4)]
    sockets: usize,

    /// Local IP to bind the client sockets to (port chosen by the kernel). Must be a specific
    /// address, because it is the address every response has to reflect.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,

    /// Measured seconds, after the warmup.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,

    /// Seconds of load before measuring starts (responses in it are validated, not counted).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,

    /// Request form: modern (RFC 8489, magic cookie) or classic (RFC 3489, 128-bit id).
    #[arg(long, value_enum, default_value_t = Form::Modern)]
    form: Form,

    /// What a reply must be: a STUN Binding success response, or an exact echo of the request.
    #[arg(long, value_enum, default_value_t = Expect::Stun)]
    expect: Expect,

    /// A request unanswered for this many milliseconds is counted lost and its slot re-sent
    /// with a new transaction id (a reply arriving later is counted as late, not valid).
    #[arg(long, default_value_t = 200)]
    timeout_ms: u64,

    /// Most datagrams one recvmmsg call returns; 0 = the socket's share of the window (more
    /// cannot be outstanding, and every slot is a header the kernel call has to set up).
    #[arg(long, default_value_t = 0)]
    batch: usize,

    /// SO_RCVBUF and SO_SNDBUF requested for each client socket, in bytes (as root the
    /// kernel's rmem_max/wmem_max limits are bypassed with SO_RCVBUFFORCE/SO_SNDBUFFORCE).
    #[arg(long, default_value_t = 4 << 20)]
    sockbuf: usize,

    /// What to do when no socket had anything to read: spin, or block in epoll.
    #[arg(long, value_enum, default_value_t = Idle::Spin)]
    idle: Idle,

    /// Send requests as UDP GSO super-datagrams (one sendmsg with UDP_SEGMENT per socket and
    /// flush, split into separate datagrams by the kernel) instead of sendmmsg. On loopback
    /// this roughly halves the generator's cost per request, so it stays ahead of the fastest
    /// server; the server still receives ordinary individual datagrams.
    #[arg(long)]
    gso: bool,

    /// connect() each client socket to the server: the kernel then caches the route (cheaper
    /// GSO sends) and drops datagrams from any other source before this tool sees them, so a
    /// reply from a wrong address shows up as lost instead of invalid.
    #[arg(long)]
    connect: bool,

    /// Print one JSON line with the results instead of the human-readable report.
    #[arg(long)]
    json: bool,

    /// Allow a non-loopback server address (this tool sends as fast as the server answers).
    #[arg(long)]
    allow_remote: bool,
}

/// One request position in the window.
#[derive(Clone, Copy, Default)]
struct Slot {
    /// Sequence number of the request now in flight for this slot.
    seq: u32,
    /// When it was handed to the kernel, in nanoseconds since the run started.
    sent_ns: u64,
    /// Whether that request still awaits its response.
    outstanding: bool,
}

/// Counters, split by phase where it matters.
#[derive(Default)]
struct Counters {
    /// Valid, on-time responses received during the measured phase.
    valid: u64,
    /// Valid responses during the warmup.
    valid_warmup: u64,
    /// Requests that timed out during the measured phase.
    lost: u64,
    /// Requests that timed out during the warmup.
    lost_warmup: u64,
    /// Otherwise valid replies to a request already timed out (or a duplicate).
    late: u64,
    /// Rejected replies (whole run).
    invalid: u64,
    /// Datagrams of any kind received (whole run).
    received: u64,
    /// Requests sent (whole run).
    sent: u64,
    /// Requests the kernel refused to send (whole run; they then time out).
    send_dropped: u64,
    /// Nanoseconds of the measured phase spent in passes over the sockets that found nothing
    /// (spinning or blocked): the generator's headroom.
    idle_ns: u64,
    /// Sum over the measured phase's non-empty receives of the replies they returned ...
    backlog_replies: u64,
    /// ... and of the requests that socket had in flight just before: their ratio is the share
    /// of in-flight requests whose replies were already waiting for the generator.
    backlog_inflight: u64,
}

/// The client side of one socket.
struct Client {
    socket: mio::net::UdpSocket,
    local: SocketAddr,
    rx: BatchReceiver,
    tx: BatchSender,
    /// With `--gso`: the queued requests back to back (all are `HEADER_LEN` bytes), sent as
    /// UDP_SEGMENT super-datagrams instead of through `tx`.
    gso: Option<Vec<u8>>,
    /// Slots queued since the last flush (their send time is set at the flush).
    queued: Vec<u32>,
    /// Requests of this socket awaiting a reply.
    in_flight: u64,
}

/// Sends `data`, a run of `HEADER_LEN`-byte requests, to `to` as GSO super-datagrams of at
/// most [`GSO_MAX_SEGMENTS`]. Returns (sent, dropped) request counts, or an error if the
/// kernel refuses segmentation itself (then the caller falls back to sendmmsg).
fn send_gso(
    socket: &mio::net::UdpSocket,
    to: Option<&socket2::SockAddr>,
    control: &[u8],
    data: &[u8],
) -> std::io::Result<(usize, usize)> {
    let sock = socket2::SockRef::from(socket);
    let (mut sent, mut dropped) = (0, 0);
    for chunk in data.chunks(GSO_MAX_SEGMENTS * HEADER_LEN) {
        let segments = chunk.len() / HEADER_LEN;
        let bufs = [std::io::IoSlice::new(chunk)];
        let mut msg = socket2::MsgHdr::new()
            .with_buffers(&bufs)
            .with_control(control);
        if let Some(to) = to {
            msg = msg.with_addr(to);
        }
        match sock.sendmsg(&msg, libc::MSG_DONTWAIT) {
            Ok(_) => sent += segments,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.raw_os_error() == Some(libc::ENOBUFS)
                    || e.kind() == std::io::ErrorKind::Interrupted
                    || e.kind() == std::io::ErrorKind::ConnectionRefused =>
            {
                dropped += segments;
            }
            Err(e) if sent == 0 => return Err(e),
            Err(_) => dropped += segments,
        }
    }
    Ok((sent, dropped))
}

/// Opens one non-blocking client socket with large buffers.
fn open_socket(
    bind: IpAddr,
    sockbuf: usize,
    connect_to: Option<SocketAddr>,
) -> anyhow::Result<(mio::net::UdpSocket, SocketAddr)> {
    let domain = if bind.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).context("socket()")?;
    // Best effort: an unprivileged run gets what the sysctl limits allow.
    let _ = p2p_servers::set_buffers(&socket, sockbuf);
    socket.set_nonblocking(true).context("set_nonblocking")?;
    socket
        .bind(&SocketAddr::new(bind, 0).into())
        .with_context(|| format!("bind {bind}:0"))?;
    if let Some(server) = connect_to {
        socket
            .connect(&server.into())
            .with_context(|| format!("connect {server}"))?;
    }
    let std_socket: UdpSocket = socket.into();
    let local = std_socket.local_addr().context("local_addr")?;
    Ok((mio::net::UdpSocket::from_std(std_socket), local))
}

/// A per-process value mixed into every transaction id, so replies meant for an earlier run
/// (or another generator) are recognised as not ours.
fn run_nonce() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let x = t ^ (u64::from(std::process::id()) << 32) ^ 0x9E37_79B9_7F4A_7C15;
    // splitmix64 finaliser
    let x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (x ^ (x >> 31)) as u32
}

/// CPU seconds (user + system) this process has used.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes one rusage into the zeroed struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF is always valid.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Results of one run.
struct Report {
    counters: Counters,
    hist: Histogram,
    measured: Duration,
    cpu_busy: f64,
    invalid_samples: Vec<String>,
}

/// The generator: sockets, slots, counters.
struct Generator {
    clients: Vec<Client>,
    slots: Vec<Slot>,
    validator: Validator,
    counters: Counters,
    hist: Histogram,
    invalid_samples: Vec<String>,
    base: Instant,
    measuring: bool,
    /// The UDP_SEGMENT control message while GSO sending is on.
    gso_control: Option<[u8; 24]>,
    /// The server address in the form `sendmsg` takes; `None` when the sockets are connected.
    send_to: Option<socket2::SockAddr>,
}

impl Generator {
    fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    /// Queues the next request of `slot` on its socket.
    fn queue(&mut self, slot: u32) {
        let sockets = self.clients.len();
        let s = &mut self.slots[slot as usize];
        s.seq = s.seq.wrapping_add(1);
        let was_outstanding = std::mem::replace(&mut s.outstanding, true);
        let seq = s.seq;
        let v = &self.validator;
        let client = &mut self.clients[slot as usize % sockets];
        if !was_outstanding {
            client.in_flight += 1;
        }
        if let Some(gso) = client.gso.as_mut() {
            let at = client.queued.len() * HEADER_LEN;
            if let Some(buf) = gso.get_mut(at..at + HEADER_LEN) {
                write_request(buf, v.form, v.nonce, slot, seq);
                client.queued.push(slot);
            } else {
                self.counters.send_dropped += 1;
            }
        } else if let Some(buf) = client.tx.next_slot() {
            let n = write_request(buf, v.form, v.nonce, slot, seq);
            client.tx.commit(n, v.server);
            client.queued.push(slot);
        } else {
            // Cannot happen (each socket's sender holds all of its slots); the request then
            // simply times out and is re-sent.
            self.counters.send_dropped += 1;
        }
    }

    /// Sends what socket `i` has queued and stamps the send time on those slots.
    fn flush(&mut self, i: usize) {
        let now = self.now_ns();
        let client = &mut self.clients[i];
        if client.queued.is_empty() {
            return;
        }
        if let (Some(gso), Some(control)) = (client.gso.as_ref(), self.gso_control.as_ref()) {
            let data = &gso[..client.queued.len() * HEADER_LEN];
            match send_gso(&client.socket, self.send_to.as_ref(), control, data) {
                Ok((sent, dropped)) => {
                    self.counters.sent += sent as u64;
                    self.counters.send_dropped += dropped as u64;
                }
                Err(e) => {
                    // Segmentation refused (old kernel?): send these and all later requests
                    // with sendmmsg instead.
                    eprintln!("stun-loadgen: UDP GSO send failed ({e}); using sendmmsg");
                    self.gso_control = None;
                    let v = &self.validator;
                    for c in &mut self.clients {
                        if let Some(buf) = c.gso.take() {
                            for req in buf[..c.queued.len() * HEADER_LEN].chunks(HEADER_LEN) {
                                c.tx.push(req, v.server);
                            }
                        }
                    }
                }
            }
        }
        let client = &mut self.clients[i];
        if !client.tx.is_empty() {
            let outcome = client.tx.flush(&client.socket);
            self.counters.sent += outcome.sent as u64;
            self.counters.send_dropped += outcome.dropped as u64;
        }
        for &slot in &client.queued {
            self.slots[slot as usize].sent_ns = now;
        }
        client.queued.clear();
    }

    /// Receives one batch on socket `i`, validates it and queues follow-up requests.
    /// Returns how many datagrams arrived.
    fn receive(&mut self, i: usize) -> anyhow::Result<usize> {
        let n = {
            let client = &mut self.clients[i];
            match client.rx.recv(&client.socket) {
                Ok(n) => n,
                // A connected socket reports an ICMP port unreachable (no server yet, or it
                // died): the requests are lost and time out; keep going.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => 0,
                Err(e) => return Err(e).with_context(|| format!("recvmmsg on {}", client.local)),
            }
        };
        if n == 0 {
            return Ok(0);
        }
        let now = self.now_ns();
        let sockets = self.clients.len();
        self.counters.received += n as u64;
        if self.measuring {
            self.counters.backlog_replies += n as u64;
            self.counters.backlog_inflight += self.clients[i].in_flight.max(n as u64);
        }
        for k in 0..n {
            let client = &self.clients[i];
            let verdict = match client.rx.get(k) {
                None => Err(Invalid::Truncated),
                Some((from, data)) => {
                    let v = self.validator.check(from, data, client.local);
                    match v {
                        Ok((slot, _)) if slot as usize % sockets != i => Err(Invalid::WrongSocket),
                        other => other,
                    }
                }
            };
            match verdict {
                Ok((slot, seq)) => {
                    let s = &mut self.slots[slot as usize];
                    if !s.outstanding || s.seq != seq {
                        self.counters.late += 1;
                        continue;
                    }
                    s.outstanding = false;
                    self.clients[i].in_flight = self.clients[i].in_flight.saturating_sub(1);
                    if self.measuring {
                        self.counters.valid += 1;
                        self.hist.record(now.saturating_sub(s.sent_ns));
                    } else {
                        self.counters.valid_warmup += 1;
                    }
                    self.queue(slot);
                }
                Err(why) => self.reject(i, k, why),
            }
        }
        Ok(n)
    }

    /// Counts an invalid reply and keeps a description of the first few.
    fn reject(&mut self, i: usize, k: usize, why: Invalid) {
        self.counters.invalid += 1;
        if self.invalid_samples.len() >= INVALID_SAMPLES {
            return;
        }
        let client = &self.clients[i];
        let mut line = format!("on {}: {why}", client.local);
        if let Some((from, data)) = client.rx.get(k) {
            let _ = write!(line, " from {from}, {} bytes:", data.len());
            for b in data.iter().take(128) {
                let _ = write!(line, " {b:02x}");
            }
        }
        self.invalid_samples.push(line);
    }

    /// Re-sends every slot whose request has waited longer than `timeout`.
    fn expire(&mut self, timeout_ns: u64) {
        let now = self.now_ns();
        for slot in 0..self.slots.len() {
            let s = self.slots[slot];
            if s.outstanding && now.saturating_sub(s.sent_ns) > timeout_ns {
                if self.measuring {
                    self.counters.lost += 1;
                } else {
                    self.counters.lost_warmup += 1;
                }
                self.queue(slot as u32);
            }
        }
        for i in 0..self.clients.len() {
            self.flush(i);
        }
    }
}

fn run(args: &Args) -> anyhow::Result<Report> {
    if args.window == 0 || args.sockets == 0 || args.sockets > args.window {
        bail!(
            "need 1 <= --sockets <= --window (got {} sockets, window {})",
            args.sockets,
            args.window
        );
    }
    if args.window > u32::MAX as usize / 2 {
        bail!("--window too large");
    }
    if !(args.duration > 0.0 && args.warmup >= 0.0 && args.duration + args.warmup <= MAX_RUN_SECS) {
        bail!("need --duration > 0, --warmup >= 0 and their sum at most {MAX_RUN_SECS} s");
    }
    if args.bind.is_unspecified() {
        bail!("--bind must be a specific address: responses are checked against it");
    }
    if !args.server.ip().is_loopback() && !args.allow_remote {
        bail!(
            "{} is not a loopback address (pass --allow-remote to load it anyway)",
            args.server
        );
    }
    if args.server.is_ipv4() != args.bind.is_ipv4() {
        bail!(
            "--bind {} and --server {} are of different families",
            args.bind,
            args.server
        );
    }

    let per_socket = args.window.div_ceil(args.sockets);
    let batch = if args.batch == 0 {
        per_socket.min(1024)
    } else {
        args.batch
    };
    let mut poll = mio::Poll::new().context("epoll")?;
    let mut clients = Vec::with_capacity(args.sockets);
    for i in 0..args.sockets {
        let (mut socket, local) =
            open_socket(args.bind, args.sockbuf, args.connect.then_some(args.server))?;
        poll.registry()
            .register(&mut socket, mio::Token(i), mio::Interest::READABLE)
            .context("register socket")?;
        clients.push(Client {
            socket,
            local,
            rx: BatchReceiver::new(batch, RESPONSE_SLOT_LEN),
            tx: BatchSender::new(per_socket, REQUEST_SLOT_LEN),
            gso: args.gso.then(|| vec![0; per_socket * HEADER_LEN]),
            queued: Vec::with_capacity(per_socket),
            in_flight: 0,
        });
    }
    let mut events = mio::Events::with_capacity(args.sockets.max(8));

    let mut g = Generator {
        clients,
        slots: vec![Slot::default(); args.window],
        validator: Validator {
            form: args.form,
            expect: args.expect,
            nonce: run_nonce(),
            server: args.server,
            window: args.window as u32,
        },
        counters: Counters::default(),
        hist: Histogram::new(),
        invalid_samples: Vec::new(),
        base: Instant::now(),
        measuring: args.warmup == 0.0,
        gso_control: None,
        send_to: (!args.connect).then(|| args.server.into()),
    };
    if args.gso {
        g.gso_control = gso_control(HEADER_LEN as u16);
        if g.gso_control.is_none() {
            eprintln!("stun-loadgen: --gso not supported on this platform; using sendmmsg");
            for c in &mut g.clients {
                c.gso = None;
            }
        }
    }

    let timeout_ns = args.timeout_ms.saturating_mul(1_000_000).max(1_000_000);
    // Timeouts are checked at least 4 times per timeout period, and at most every 10 ms.
    let scan_every = Duration::from_nanos((timeout_ns / 4).clamp(1_000_000, 10_000_000));
    let start = g.base;
    let measure_at = start + Duration::from_secs_f64(args.warmup);
    let end = measure_at + Duration::from_secs_f64(args.duration);
    let mut measure_started = if g.measuring { Some(start) } else { None };
    let mut cpu_at_measure = cpu_seconds();

    for slot in 0..args.window as u32 {
        g.queue(slot);
    }
    for i in 0..g.clients.len() {
        g.flush(i);
    }

    let mut next_scan = start + scan_every;
    // Start of the previous pass, if it found nothing (its time then counts as idle).
    let mut idle_since: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if let Some(t) = idle_since.take() {
            if g.measuring {
                g.counters.idle_ns += now.duration_since(t).as_nanos() as u64;
            }
        }
        if now >= end {
            break;
        }
        if measure_started.is_none() && now >= measure_at {
            measure_started = Some(now);
            g.measuring = true;
            cpu_at_measure = cpu_seconds();
        }
        let mut got = 0;
        for i in 0..g.clients.len() {
            got += g.receive(i)?;
            g.flush(i);
        }
        if got == 0 {
            idle_since = Some(now);
        }
        if now >= next_scan {
            g.expire(timeout_ns);
            next_scan = now + scan_every;
        }
        if got == 0 && args.idle == Idle::Block {
            // Every socket was just drained to EAGAIN, so edge-triggered epoll will report
            // new data; the wait is bounded by the next scan and the end of the run.
            let wait = next_scan.min(end).saturating_duration_since(Instant::now());
            match poll.poll(&mut events, Some(wait)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("epoll_wait"),
            }
        }
    }
    let finished = Instant::now();
    let measured = measure_started.map_or(Duration::ZERO, |t| finished.duration_since(t));
    let cpu = cpu_seconds() - cpu_at_measure;
    let cpu_busy = if measured.is_zero() {
        0.0
    } else {
        cpu / measured.as_secs_f64()
    };
    Ok(Report {
        counters: g.counters,
        hist: g.hist,
        measured,
        cpu_busy,
        invalid_samples: g.invalid_samples,
    })
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn main() -> ExitCode {
    let args = Args::parse();
    let report = match run(&args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("stun-loadgen: error: {e:#}");
            return ExitCode::from(1);
        }
    };
    let c = &report.counters;
    let h = &report.hist;
    let secs = report.measured.as_secs_f64();
    let rps = if secs > 0.0 {
        c.valid as f64 / secs
    } else {
        0.0
    };
    let backlog = if c.backlog_inflight > 0 {
        c.backlog_replies as f64 / c.backlog_inflight as f64
    } else {
        0.0
    };
    let idle_frac = if secs > 0.0 {
        (c.idle_ns as f64 / 1e9 / secs).min(1.0)
    } else {
        0.0
    };
    let (p50, p90, p99, p999) = (
        h.quantile(0.5),
        h.quantile(0.9),
        h.quantile(0.99),
        h.quantile(0.999),
    );
    let form = format!("{:?}", args.form).to_lowercase();
    let expect = format!("{:?}", args.expect).to_lowercase();
    for sample in &report.invalid_samples {
        eprintln!("stun-loadgen: invalid reply {sample}");
    }
    if args.json {
        println!(
            "{{\"server\":\"{}\",\"form\":\"{form}\",\"expect\":\"{expect}\",\"window\":{},\
             \"sockets\":{},\"duration_s\":{secs:.3},\"responses\":{},\"responses_per_s\":{rps:.0},\
             \"lost\":{},\"late\":{},\"invalid\":{},\"sent\":{},\"send_dropped\":{},\
             \"warmup_responses\":{},\"warmup_lost\":{},\"p50_us\":{:.1},\"p90_us\":{:.1},\
             \"p99_us\":{:.1},\"p999_us\":{:.1},\"max_us\":{:.1},\"gen_cpu\":{:.3},\
             \"gen_idle\":{idle_frac:.3},\"gen_backlog\":{backlog:.3}}}",
            args.server,
            args.window,
            args.sockets,
            c.valid,
            c.lost,
            c.late,
            c.invalid,
            c.sent,
            c.send_dropped,
            c.valid_warmup,
            c.lost_warmup,
            us(p50),
            us(p90),
            us(p99),
            us(p999),
            us(h.max),
            report.cpu_busy,
        );
    } else {
        println!(
            "stun-loadgen: {} form {form} expect {expect}, window {} over {} sockets, \
             {secs:.2} s measured",
            args.server, args.window, args.sockets
        );
        println!(
            "  valid responses/s {rps:.0}  (valid {}, lost {}, late {}, invalid {}, \
             sent {}, send-dropped {})",
            c.valid, c.lost, c.late, c.invalid, c.sent, c.send_dropped
        );
        println!(
            "  latency us: p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
            us(p50),
            us(p90),
            us(p99),
            us(p999),
            us(h.max)
        );
        println!(
            "  warmup: {} valid, {} lost; generator CPU {:.0} %, idle {:.0} % (waiting for replies), \
             backlog {:.0} % (in-flight requests already answered when it looked)",
            c.valid_warmup,
            c.lost_warmup,
            report.cpu_busy * 100.0,
            idle_frac * 100.0,
            backlog * 100.0
        );
    }
    if c.received == 0 {
        eprintln!("stun-loadgen: the server never answered");
        return ExitCode::from(2);
    }
    if c.valid == 0 {
        eprintln!("stun-loadgen: no valid response during the measured phase");
        return ExitCode::from(3);
    }
    ExitCode::SUCCESS
}
