//! `sb-bench`: relay throughput and latency of the switchboard, over loopback.
//!
//! Starts a switchboard in this process (its own thread, as in the server), grants tickets for
//! `--pairs` sessions, and joins both peers of each over TLS 1.3 (the clients trust exactly the
//! in-process switchboard's key, which they are handed directly; the time to connect and join
//! every pair, TLS handshakes included, is reported as the setup time). In every pair one peer keeps
//! `--window` DATA frames of `--size` bytes in flight and the other echoes each one back, so
//! every round trip is two relayed frames. Reports relayed frames per second (the switchboard's
//! own counter, after the warmup), round-trip latency percentiles, and the CPU time the
//! switchboard thread used (so the result can be set against another relay pinned to one
//! core). The clients run on their own runtime (`--client-threads`).
//!
//! For a one-core comparison (bench/relay-throughput.sh), `--sb-cpu` pins the switchboard
//! thread to one CPU and `--client-cpu` pins every other thread of the process (the clients'
//! runtime, the main thread) to another, so the relay and its load never share a core.
//! `--json` prints one machine-readable line instead of the text report.
//!
//! The switchboard runs in this process rather than as a `stun-server` child because it only
//! accepts sessions whose tickets the rendezvous granted it in an introduction; in-process the
//! bench grants them directly. The relay is the same code the server runs, on its own thread
//! with its own current-thread runtime, exactly as `stun-server` starts it.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{BufMut, Bytes, BytesMut};
use clap::Parser;
use futures_util::{FutureExt, SinkExt, StreamExt};
use p2p_servers::switchboard::{SbCodec, SwitchboardHandle, SwitchboardOptions};
use shared::rendezvous::{SessionId, Ticket, UserName};
use shared::switchboard::{Frame, MAX_DATA, SwitchboardConfig, VERSION};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::codec::Framed;

/// Hard ceiling on `--warmup` + `--duration`.
const MAX_RUN_SECS: f64 = 600.0;
/// Latency samples kept at most (later round trips are counted but not sampled).
const MAX_SAMPLES: usize = 20_000_000;
/// How long the end of a run waits for frames still in flight.
const DRAIN: Duration = Duration::from_secs(5);

/// Switchboard relay benchmark over loopback (in-process switchboard, its own thread).
///
/// Every peer connects over TLS 1.3 and trusts exactly the key of the switchboard this process
/// started (an in-memory certificate); the setup time reported includes the TLS handshakes.
#[derive(Parser, Debug)]
#[command(name = "sb-bench", version)]
struct Args {
    /// Session pairs (two TLS connections each).
    #[arg(long, default_value_t = 1)]
    pairs: u32,
    /// DATA frames in flight per pair.
    #[arg(long, default_value_t = 64)]
    window: u32,
    /// DATA payload bytes (at least 16: sequence number and send time).
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Measured seconds, after the warmup.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Stop after this many round trips in total (0: no limit).
    #[arg(long, default_value_t = 0)]
    max_round_trips: u64,
    /// Worker threads of the client runtime.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Per-direction rate limit in bytes/s for each session (0: unlimited, the default here).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Pin the switchboard thread to this CPU (Linux).
    #[arg(long, value_name = "CPU")]
    sb_cpu: Option<usize>,
    /// Pin the clients (every thread but the switchboard's) to this CPU (Linux).
    #[arg(long, value_name = "CPU")]
    client_cpu: Option<usize>,
    /// Print one JSON object on one line instead of the text report.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sb-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    if !(16..=MAX_DATA).contains(&args.size) {
        bail!("--size must be 16..={MAX_DATA}");
    }
    if args.pairs == 0 || args.window == 0 || args.client_threads == 0 {
        bail!("--pairs, --window and --client-threads must be at least 1");
    }
    if !(args.warmup >= 0.0 && args.duration > 0.0 && args.warmup + args.duration <= MAX_RUN_SECS) {
        bail!("--warmup + --duration must be positive and at most {MAX_RUN_SECS} s");
    }
    let config = SwitchboardConfig {
        rate: args.rate,
        burst: if args.rate == 0 {
            0
        } else {
            args.rate.max(MAX_DATA as u64)
        },
        byte_cap: u64::MAX,
        ..SwitchboardConfig::default()
    };
    if let Some(cpu) = args.client_cpu {
        // Threads inherit the creating thread's affinity: the switchboard thread (re-pinned
        // below) and the clients' runtime threads all start on this CPU.
        pin_thread(0, cpu).context("--client-cpu")?;
    }
    let sb = SwitchboardHandle::start(SwitchboardOptions {
        listen: "127.0.0.1:0".parse()?,
        config,
        max_queued_bytes: 16 << 20,
        ..SwitchboardOptions::default()
    })
    .context("starting the switchboard")?;
    if let Some(cpu) = args.sb_cpu {
        let tid = sb_thread_id().context("the switchboard thread did not show up in /proc")?;
        pin_thread(tid, cpu).context("--sb-cpu")?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads)
        .enable_all()
        .build()?;
    let report = runtime.block_on(bench(&sb, &args))?;
    let stats = sb.shutdown();
    if args.json {
        report.print_json(&args, stats.core.relayed_frames);
    } else {
        report.print(&args, stats.core.relayed_frames);
    }
    Ok(())
}

/// Pins thread `tid` (0: the calling thread) to `cpu` and checks that it took.
fn pin_thread(tid: libc::pid_t, cpu: usize) -> anyhow::Result<()> {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu >= 8 * std::mem::size_of::<libc::cpu_set_t>() {
        bail!("CPU {cpu} is out of range");
    }
    // SAFETY: `cpu` is within the set (checked above).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_setaffinity(tid, std::mem::size_of_val(&set), &set) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context(format!("pinning to CPU {cpu}"));
    }
    // SAFETY: as above.
    let mut got: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `got` is a valid, writable cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_getaffinity(tid, std::mem::size_of_val(&got), &mut got) };
    // SAFETY: `cpu` is within the set; `got` was filled in by the kernel.
    let only = unsafe { libc::CPU_ISSET(cpu, &got) && libc::CPU_COUNT(&got) == 1 };
    if rc != 0 || !only {
        bail!("pinning to CPU {cpu} did not take");
    }
    Ok(())
}

/// The switchboard thread's id: the task of this process named "switchboard". The new thread
/// names itself, so this waits (up to 2 s) for the name to appear.
fn sb_thread_id() -> Option<libc::pid_t> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        if let Some(tid) = sb_task().and_then(|task| task.file_name().to_str()?.parse().ok()) {
            return Some(tid);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The /proc/self/task entry of the switchboard thread.
fn sb_task() -> Option<std::fs::DirEntry> {
    std::fs::read_dir("/proc/self/task")
        .ok()?
        .flatten()
        .find(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|comm| comm.trim() == "switchboard")
        })
}

/// utime + stime of a /proc `stat` file, as a duration.
fn stat_cpu(path: &std::path::Path) -> Option<Duration> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the ")" that ends the command name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|h| *h > 0)?;
    Some(Duration::from_nanos(ticks * 1_000_000_000 / hz))
}

/// What the pairs measured.
struct Report {
    /// Connecting (TCP and TLS) and joining every pair.
    setup: Duration,
    relayed: u64,
    measured: Duration,
    round_trips: u64,
    samples: Vec<u32>,
    sb_cpu: Option<Duration>,
    /// CPU time of every other thread of the process (the clients).
    client_cpu: Option<Duration>,
}

impl Report {
    fn print(mut self, args: &Args, relayed_total: u64) {
        let secs = self.measured.as_secs_f64();
        println!(
            "pairs {} window {} size {} B: {:.0} frames/s relayed ({:.1} MB/s of payload), \
             {:.0} round trips/s",
            args.pairs,
            args.window,
            args.size,
            self.relayed as f64 / secs,
            self.relayed as f64 * args.size as f64 / secs / 1e6,
            self.round_trips as f64 / secs,
        );
        if let Some(cpu) = self.sb_cpu {
            println!(
                "switchboard thread CPU: {:.0} % of one core ({:.2} us per relayed frame)",
                cpu.as_secs_f64() / secs * 100.0,
                cpu.as_secs_f64() * 1e6 / (self.relayed.max(1) as f64),
            );
        }
        self.samples.sort_unstable();
        let pct = |q: f64| {
            let i = ((self.samples.len() as f64 - 1.0) * q).round() as usize;
            self.samples
                .get(i)
                .map_or(0.0, |ns| f64::from(*ns) / 1000.0)
        };
        println!(
            "round trip (2 relayed frames) us: p50 {:.0}  p90 {:.0}  p99 {:.0}  p99.9 {:.0}  \
             max {:.0}  ({} samples)",
            pct(0.5),
            pct(0.9),
            pct(0.99),
            pct(0.999),
            pct(1.0),
            self.samples.len()
        );
        println!(
            "setup: {} pairs connected over TLS and joined in {:.1} ms",
            args.pairs,
            self.setup.as_secs_f64() * 1e3
        );
        println!("relayed in total (warmup included): {relayed_total} frames");
    }
}

impl Report {
    /// The same numbers as [`Report::print`], as one JSON line (shares of one core as
    /// fractions; `null` where /proc could not be read).
    fn print_json(mut self, args: &Args, relayed_total: u64) {
        let secs = self.measured.as_secs_f64();
        let share = |d: Option<Duration>| {
            d.map_or_else(
                || "null".to_owned(),
                |d| format!("{:.3}", d.as_secs_f64() / secs),
            )
        };
        let us_per_frame = self.sb_cpu.map_or_else(
            || "null".to_owned(),
            |d| format!("{:.3}", d.as_secs_f64() * 1e6 / self.relayed.max(1) as f64),
        );
        self.samples.sort_unstable();
        let pct = |q: f64| {
            let i = ((self.samples.len() as f64 - 1.0) * q).round() as usize;
            self.samples
                .get(i)
                .map_or(0.0, |ns| f64::from(*ns) / 1000.0)
        };
        println!(
            "{{\"pairs\":{},\"window\":{},\"size\":{},\"secs\":{:.3},\"relayed\":{},\
             \"frames_per_s\":{:.0},\"round_trips_per_s\":{:.0},\"sb_cpu\":{},\
             \"sb_us_per_frame\":{},\"client_cpu\":{},\"rtt_p50_us\":{:.0},\
             \"rtt_p99_us\":{:.0},\"relayed_total\":{},\"setup_ms\":{:.1}}}",
            args.pairs,
            args.window,
            args.size,
            secs,
            self.relayed,
            self.relayed as f64 / secs,
            self.round_trips as f64 / secs,
            share(self.sb_cpu),
            us_per_frame,
            share(self.client_cpu),
            pct(0.5),
            pct(0.99),
            relayed_total,
            self.setup.as_secs_f64() * 1e3,
        );
    }
}

/// The switchboard thread's CPU time so far, from /proc (Linux only).
fn sb_thread_cpu() -> Option<Duration> {
    stat_cpu(&sb_task()?.path().join("stat"))
}

/// This whole process's CPU time so far (all threads, the switchboard's included).
fn process_cpu() -> Option<Duration> {
    stat_cpu(std::path::Path::new("/proc/self/stat"))
}

async fn bench(sb: &SwitchboardHandle, args: &Args) -> anyhow::Result<Report> {
    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(args.warmup == 0.0));
    let budget = Arc::new(Semaphore::new(if args.max_round_trips == 0 {
        Semaphore::MAX_PERMITS
    } else {
        usize::try_from(args.max_round_trips)
            .unwrap_or(Semaphore::MAX_PERMITS)
            .min(Semaphore::MAX_PERMITS)
    }));
    let mut pairs = Vec::new();
    let connector = TlsConnector::from(p2p_servers::tls::pinned_client_config(sb.fingerprint()));
    let setup_started = Instant::now();
    let mut joined = Vec::new();
    for n in 0..args.pairs {
        joined.push(join_pair(sb, &connector, n).await?);
    }
    let setup = setup_started.elapsed();
    for (a, b) in joined {
        let pair = Pair {
            window: args.window,
            size: args.size,
            epoch,
            stop: stop.clone(),
            measuring: measuring.clone(),
            budget: budget.clone(),
        };
        pairs.push(tokio::spawn(echo(b)));
        pairs.push(tokio::spawn(pair.drive(a)));
    }
    let warmup = Duration::from_secs_f64(args.warmup);
    tokio::time::sleep(warmup).await;
    let (relayed_before, cpu_before, all_before) = (
        sb.stats().core.relayed_frames,
        sb_thread_cpu(),
        process_cpu(),
    );
    measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    let relayed = sb.stats().core.relayed_frames - relayed_before;
    let sb_cpu = sb_thread_cpu()
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    let client_cpu = process_cpu()
        .zip(all_before)
        .map(|(after, before)| after.saturating_sub(before))
        .zip(sb_cpu)
        .map(|(all, sb)| all.saturating_sub(sb));
    let measured = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut samples = Vec::new();
    let mut round_trips = 0;
    for handle in pairs {
        let result = tokio::time::timeout(DRAIN + Duration::from_secs(1), handle)
            .await
            .context("a pair did not finish")???;
        if let Some((n, s)) = result {
            round_trips += n;
            if samples.len() + s.len() <= MAX_SAMPLES {
                samples.extend(s);
            }
        }
    }
    Ok(Report {
        setup,
        relayed,
        measured,
        round_trips,
        samples,
        sb_cpu,
        client_cpu,
    })
}

type Client = Framed<TlsStream<TcpStream>, SbCodec>;

async fn join_pair(
    sb: &SwitchboardHandle,
    connector: &TlsConnector,
    n: u32,
) -> anyhow::Result<(Client, Client)> {
    let session = SessionId(u128::from(n).to_be_bytes());
    let (ta, tb) = ([0xa0 ^ n as u8; 16], [0xb0 ^ n as u8; 16]);
    let mut ta = ta;
    let mut tb = tb;
    ta[..4].copy_from_slice(&n.to_be_bytes());
    tb[..4].copy_from_slice(&n.to_be_bytes());
    let a = UserName::parse(&format!("a{n}"))?;
    let b = UserName::parse(&format!("b{n}"))?;
    let expires = Instant::now() + Duration::from_secs(60);
    for (value, user, peer) in [(ta, a.clone(), b.clone()), (tb, b, a)] {
        sb.grant(Ticket {
            value,
            session,
            user,
            peer,
            expires,
        });
    }
    let mut clients = Vec::new();
    for ticket in [ta, tb] {
        let stream = TcpStream::connect(sb.local_addr()).await?;
        stream.set_nodelay(true)?;
        let stream = connector
            .connect(p2p_servers::tls::any_server_name(), stream)
            .await?;
        let mut client = Framed::new(stream, SbCodec::default());
        client
            .send(Frame::Join {
                version: VERSION,
                session,
                ticket,
            })
            .await?;
        match client.next().await {
            Some(Ok(Frame::Joined { .. })) => clients.push(client),
            other => bail!("pair {n}: JOIN answered with {other:?}"),
        }
    }
    let (Some(b), Some(mut a)) = (clients.pop(), clients.pop()) else {
        bail!("pair {n}: not joined");
    };
    match a.next().await {
        Some(Ok(Frame::PeerJoined)) => Ok((a, b)),
        other => bail!("pair {n}: expected PEER_JOINED, got {other:?}"),
    }
}

/// Sends every frame back, flushing when nothing more is ready.
async fn echo(client: Client) -> anyhow::Result<Option<(u64, Vec<u32>)>> {
    let (mut tx, mut rx) = client.split();
    while let Some(frame) = rx.next().await {
        let mut frame = Some(frame?);
        while let Some(f) = frame.take() {
            if !matches!(f, Frame::Data(_)) {
                // PEER_LEFT: the driving side has finished.
                return Ok(None);
            }
            tx.feed(f).await?;
            if let Some(Some(next)) = rx.next().now_or_never() {
                frame = Some(next?);
            }
        }
        tx.flush().await?;
    }
    Ok(None)
}

/// One pair's sending side.
struct Pair {
    window: u32,
    size: usize,
    epoch: Instant,
    stop: Arc<AtomicBool>,
    measuring: Arc<AtomicBool>,
    budget: Arc<Semaphore>,
}

impl Pair {
    /// Keeps `window` frames in flight until told to stop; returns the measured round trips
    /// and their latency samples in nanoseconds.
    async fn drive(self, client: Client) -> anyhow::Result<Option<(u64, Vec<u32>)>> {
        let (mut tx, mut rx) = client.split();
        let credit = Arc::new(Semaphore::new(self.window as usize));
        // What the sender sent, published when it has stopped sending.
        let sent_total = Arc::new(std::sync::OnceLock::new());
        let sender = {
            let credit = credit.clone();
            let sent_total = sent_total.clone();
            let (stop, budget, epoch, size) =
                (self.stop.clone(), self.budget, self.epoch, self.size);
            async move {
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let permit = match credit.try_acquire() {
                        Ok(p) => p,
                        Err(_) => {
                            tx.flush().await?;
                            credit.acquire().await?
                        }
                    };
                    let Ok(spent) = budget.try_acquire() else {
                        break;
                    };
                    spent.forget();
                    permit.forget();
                    let mut payload = BytesMut::with_capacity(size);
                    payload.put_u64(seq);
                    payload.put_u64(epoch.elapsed().as_nanos() as u64);
                    payload.resize(size, 0x5a);
                    tx.feed(Frame::Data(payload.freeze())).await?;
                    seq += 1;
                }
                tx.flush().await?;
                let _ = sent_total.set(seq);
                anyhow::Ok((tx, seq))
            }
        };
        let receiver = async {
            let mut samples = Vec::new();
            let mut received = 0u64;
            let mut measured = 0u64;
            loop {
                if sent_total.get() == Some(&received) {
                    break;
                }
                let next = if self.stop.load(Ordering::Relaxed) {
                    match tokio::time::timeout(DRAIN, rx.next()).await {
                        Ok(next) => next,
                        Err(_) => break,
                    }
                } else {
                    match tokio::time::timeout(Duration::from_millis(100), rx.next()).await {
                        Ok(next) => next,
                        Err(_) => continue,
                    }
                };
                let Some(frame) = next else { break };
                let Frame::Data(payload) = frame? else {
                    bail!("unexpected frame from the switchboard");
                };
                received += 1;
                credit.add_permits(1);
                if self.measuring.load(Ordering::Relaxed) && !self.stop.load(Ordering::Relaxed) {
                    let sent = read_u64(&payload, 8);
                    let rtt = (self.epoch.elapsed().as_nanos() as u64).saturating_sub(sent);
                    measured += 1;
                    if samples.len() < MAX_SAMPLES {
                        samples.push(u32::try_from(rtt).unwrap_or(u32::MAX));
                    }
                }
            }
            anyhow::Ok((received, measured, samples))
        };
        let (sent, got) = tokio::join!(sender, receiver);
        let (_tx, sent) = sent?;
        let (received, measured, samples) = got?;
        if received != sent {
            bail!("sent {sent} frames but {received} came back");
        }
        Ok(Some((measured, samples)))
    }
}

fn read_u64(payload: &Bytes, at: usize) -> u64 {
    payload
        .get(at..at + 8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_be_bytes)
}
