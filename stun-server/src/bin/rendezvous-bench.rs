//! `rendezvous-bench`: many logged-in clients against the real `stun-server` binary, measuring
//! the server's memory and how long a presence change takes to reach every online contact.
//!
//! 1. Builds a database of `--clients` users where user `i` has users `i±1 ..= i±contacts/2`
//!    (mod N) as mutual contacts, so every user has `--contacts` contacts who can see it.
//!    All users share one cheap verifier (Argon2id m=8 KiB, t=1): the server never runs the KDF
//!    at login, so this changes nothing on its side, and it keeps 50,000 client-side logins cheap.
//! 2. Starts `stun-server --no-stun` on that database as a child process.
//! 3. Logs every client in over its own TLS 1.3 connection (spread over several loopback source
//!    addresses, since one source address has only ~28,000 ephemeral ports) and sets it online.
//!    Each client trusts exactly the key the server announces in its log (`TLS certificate
//!    fingerprint SHA256:...`) and binds its SCRAM login to the TLS session, as the real client
//!    does; the login rate reported includes the TCP connect and the TLS handshake.
//! 4. Reads the server's RSS, then makes `--changes` presence changes at `--rate` per second,
//!    each on a different client, and times each until *all* of that client's contacts have
//!    received the push. Every client answers the server's keepalive pings throughout.
//!
//! Bounded in count and time: every phase has a deadline, and the server child is stopped by
//! its pid at the end.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::BytesMut;
use clap::Parser;
use shared::identity::Fingerprint;
use shared::rendezvous::scram::{MECHANISM, ScramClient, derive_credentials};
use shared::rendezvous::wire::{self, Line, TrId};
use shared::rendezvous::{Kdf, StoreOp, UserName, UserRecord};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Benchmark the rendezvous server with many logged-in clients.
///
/// Starts `stun-server --no-stun --no-switchboard` on a fresh database as a child process and
/// logs the clients in over TLS 1.3. The clients trust exactly the certificate key the server
/// announces in its log (`TLS certificate fingerprint SHA256:...`); the login rate includes
/// the TCP connect and the TLS handshake.
#[derive(Parser, Debug)]
struct Args {
    /// Concurrent logged-in clients.
    #[arg(long, default_value_t = 50_000)]
    clients: usize,
    /// Contacts per user (even; every one of them mutual).
    #[arg(long, default_value_t = 20)]
    contacts: usize,
    /// Presence changes to time.
    #[arg(long, default_value_t = 2_000)]
    changes: usize,
    /// Presence changes per second.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// Logins in flight at once.
    #[arg(long, default_value_t = 256)]
    login_window: usize,
    /// Loopback source addresses to spread the connections over (127.0.0.2, .3, ...).
    #[arg(long, default_value_t = 4)]
    source_ips: u8,
    /// Rendezvous port for the server under test (not 1863, so a running default server is not hit).
    #[arg(long, default_value_t = 21_863)]
    port: u16,
    /// The `stun-server` binary [default: next to this one].
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Pin the server to this CPU (taskset), the bench to the other ones.
    #[arg(long)]
    server_cpu: Option<usize>,
    /// Give up on any phase after this many seconds.
    #[arg(long, default_value_t = 300)]
    phase_timeout: u64,
}

/// The one password every bench user has.
const PASSWORD: &[u8] = b"bench-password";
/// Cheapest KDF Argon2 accepts: the bench measures the server, not Argon2.
const BENCH_KDF: Kdf = Kdf {
    memory_kib: 8,
    iterations: 1,
    lanes: 1,
};

fn name_of(i: usize) -> String {
    format!("u{i:06}")
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rendezvous-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    if args.contacts % 2 != 0 || args.contacts >= args.clients {
        bail!("--contacts must be even and smaller than --clients");
    }
    if args.source_ips == 0 || args.source_ips > 200 {
        bail!("--source-ips must be 1..=200");
    }
    p2p_servers::raise_open_file_limit();
    let dir = std::env::temp_dir().join(format!("rendezvous-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let db = dir.join("bench.db");
    let started = Instant::now();
    build_database(&db, args.clients, args.contacts)?;
    println!(
        "database: {} users x {} contacts in {:.1} s",
        args.clients,
        args.contacts,
        started.elapsed().as_secs_f64()
    );
    let mut server = ServerProcess::spawn(&args, &db)?;
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(drive(&args, server.pid(), server.fingerprint));
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn build_database(path: &std::path::Path, n: usize, contacts: usize) -> anyhow::Result<()> {
    let credentials = derive_credentials(PASSWORD, b"bench-salt-16byt", BENCH_KDF)?;
    let mut ops = Vec::with_capacity(n * (contacts + 1));
    for i in 0..n {
        ops.push(StoreOp::CreateUser(UserRecord {
            name: UserName::parse(&name_of(i))?,
            credentials: credentials.clone(),
        }));
    }
    let half = contacts / 2;
    for i in 0..n {
        let owner = UserName::parse(&name_of(i))?;
        for d in 1..=half {
            for j in [(i + d) % n, (i + n - d) % n] {
                ops.push(StoreOp::AddContact {
                    owner: owner.clone(),
                    contact: UserName::parse(&name_of(j))?,
                });
            }
        }
    }
    let mut store = p2p_servers::rendezvous::Store::open(path)?;
    store.apply_batch(&ops)?;
    Ok(())
}

/// The server under test, stopped by its pid on drop.
struct ServerProcess {
    child: Child,
    /// The key the server announced.
    fingerprint: Fingerprint,
}

impl ServerProcess {
    fn spawn(args: &Args, db: &std::path::Path) -> anyhow::Result<ServerProcess> {
        let bin = match &args.server_bin {
            Some(b) => b.clone(),
            None => std::env::current_exe()?.with_file_name("stun-server"),
        };
        let mut cmd = match args.server_cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpu.to_string()).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        cmd.args(["--no-stun", "--no-switchboard", "--rendezvous"])
            .arg(format!("127.0.0.1:{}", args.port))
            .arg("--db")
            .arg(db)
            .args(["--min-kdf", "argon2id:m=8:t=1:p=1"])
            // The library logs as p2p_servers, the binary (its listening lines) as stun_server.
            .env("RUST_LOG", "warn,p2p_servers=info,stun_server=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let stderr = child.stderr.take().context("no stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut ready = Some(tx);
            let mut fingerprint = None;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let marker = "TLS certificate fingerprint ";
                if let Some(rest) = line.split(marker).nth(1) {
                    fingerprint = rest
                        .split_whitespace()
                        .next()
                        .and_then(|f| f.parse::<Fingerprint>().ok());
                }
                if line.contains("rendezvous listening") {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(fingerprint);
                    }
                }
                if line.contains("ERROR") || line.contains("WARN") {
                    eprintln!("server: {line}");
                }
            }
        });
        let mut server = ServerProcess {
            child,
            fingerprint: Fingerprint([0; 32]),
        };
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Some(fingerprint)) => server.fingerprint = fingerprint,
            Ok(None) => {
                server.stop();
                bail!("the server did not log its TLS certificate fingerprint");
            }
            Err(_) => {
                server.stop();
                bail!("the server did not say it was listening within 30 s");
            }
        }
        Ok(server)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on the pid of a child we started and have not reaped.
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a client task reports to the coordinator.
enum Report {
    LoggedIn,
    Failed(String),
    /// `who` changed to `state`, seen by this client at `at`.
    Push {
        who: u32,
        state: [u8; 3],
        at: Instant,
    },
}

async fn drive(args: &Args, server_pid: u32, fingerprint: Fingerprint) -> anyhow::Result<()> {
    let server: SocketAddr = (Ipv4Addr::LOCALHOST, args.port).into();
    let tls = TlsConnector::from(p2p_servers::tls::pinned_client_config(fingerprint));
    let (report_tx, mut reports) = mpsc::unbounded_channel();
    let gate = Arc::new(tokio::sync::Semaphore::new(args.login_window));
    let in_login = Arc::new(AtomicUsize::new(0));
    let mut commands = Vec::with_capacity(args.clients);
    let login_started = Instant::now();
    for i in 0..args.clients {
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        commands.push(cmd_tx);
        let source = IpAddr::V4(Ipv4Addr::new(
            127,
            0,
            0,
            2 + (i % args.source_ips as usize) as u8,
        ));
        let client = BenchClient {
            index: i,
            server,
            tls: tls.clone(),
            source,
            reports: report_tx.clone(),
        };
        let gate = gate.clone();
        let in_login = in_login.clone();
        tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            in_login.fetch_add(1, Ordering::Relaxed);
            client.run(cmd_rx, permit.ok()).await;
        });
    }
    drop(report_tx);

    // Phase 1: everyone logged in and online.
    let deadline = Instant::now() + Duration::from_secs(args.phase_timeout);
    let mut logged_in = 0usize;
    let mut failures = Vec::new();
    while logged_in + failures.len() < args.clients {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, reports.recv()).await {
            Ok(Some(Report::LoggedIn)) => logged_in += 1,
            Ok(Some(Report::Failed(e))) => failures.push(e),
            Ok(Some(Report::Push { .. })) => {}
            Ok(None) | Err(_) => break,
        }
    }
    let login_secs = login_started.elapsed().as_secs_f64();
    if !failures.is_empty() || logged_in < args.clients {
        bail!(
            "{logged_in} of {} clients logged in within {} s; {} failures, first: {:?}",
            args.clients,
            args.phase_timeout,
            failures.len(),
            failures.first()
        );
    }
    println!(
        "logged in: {logged_in} clients in {login_secs:.1} s ({:.0} TLS handshakes + logins/s)",
        logged_in as f64 / login_secs
    );
    // Let the log-in presence storm drain before measuring.
    drain_for(&mut reports, Duration::from_secs(3)).await;
    let (rss, hwm) = server_memory(server_pid)?;
    println!(
        "server memory with {logged_in} clients online: RSS {:.0} MiB (peak {:.0} MiB)",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    let cpu_before = server_cpu_secs(server_pid)?;

    // Phase 2: presence changes, each on a different client, at a fixed rate.
    let changes = args.changes.min(args.clients);
    let stride = (args.clients / changes).max(1);
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1)));
    let mut pending: HashMap<(u32, [u8; 3]), (Instant, usize)> = HashMap::new();
    let mut to_all = Vec::with_capacity(changes);
    let mut per_delivery = Vec::with_capacity(changes * args.contacts);
    let mut next_send = Instant::now();
    let mut sent = 0usize;
    let phase_deadline = Instant::now() + Duration::from_secs(args.phase_timeout);
    while (sent < changes || !pending.is_empty()) && Instant::now() < phase_deadline {
        if sent < changes && Instant::now() >= next_send {
            let who = (sent * stride) % args.clients;
            let state = if sent % 2 == 0 { *b"BSY" } else { *b"AWY" };
            pending.insert((who as u32, state), (Instant::now(), 0));
            let _ = commands[who].send(state);
            sent += 1;
            next_send += interval;
            continue;
        }
        let wait = if sent < changes {
            next_send.saturating_duration_since(Instant::now())
        } else {
            Duration::from_millis(100)
        };
        if let Ok(Some(Report::Push { who, state, at })) =
            tokio::time::timeout(wait, reports.recv()).await
        {
            if let Some((t0, seen)) = pending.get_mut(&(who, state)) {
                *seen += 1;
                per_delivery.push(at.duration_since(*t0));
                if *seen == args.contacts {
                    to_all.push(at.duration_since(*t0));
                    pending.remove(&(who, state));
                }
            }
        }
    }
    let cpu_after = server_cpu_secs(server_pid)?;
    if !pending.is_empty() {
        bail!(
            "{} of {changes} presence changes did not reach all {} contacts within {} s",
            pending.len(),
            args.contacts,
            args.phase_timeout
        );
    }
    println!(
        "presence changes: {changes} at {}/s, each to {} online contacts; server CPU {:.2} s",
        args.rate,
        args.contacts,
        cpu_after - cpu_before
    );
    print_percentiles("  time until ALL contacts had it", &mut to_all);
    print_percentiles("  time per delivery            ", &mut per_delivery);
    let (rss, hwm) = server_memory(server_pid)?;
    println!(
        "server memory at the end: RSS {:.0} MiB (peak {:.0} MiB)",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    Ok(())
}

async fn drain_for(reports: &mut mpsc::UnboundedReceiver<Report>, quiet: Duration) {
    while let Ok(Some(_)) = tokio::time::timeout(quiet, reports.recv()).await {}
}

fn print_percentiles(label: &str, samples: &mut [Duration]) {
    samples.sort();
    let pick = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples.get(i).map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    };
    println!(
        "{label}: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms (n = {})",
        pick(0.5),
        pick(0.9),
        pick(0.99),
        pick(1.0),
        samples.len()
    );
}

/// `(VmRSS, VmHWM)` in KiB.
fn server_memory(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

/// User plus system CPU seconds of the server so far.
fn server_cpu_secs(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_comm = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the command name.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((ticks(11) + ticks(12)) / hz)
}

/// One bench client: log in, go online, then answer pings, report pushes and obey commands.
struct BenchClient {
    index: usize,
    server: SocketAddr,
    tls: TlsConnector,
    source: IpAddr,
    reports: mpsc::UnboundedSender<Report>,
}

impl BenchClient {
    async fn run(
        self,
        mut commands: mpsc::UnboundedReceiver<[u8; 3]>,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ) {
        let mut conn = match self.login().await {
            Ok(conn) => conn,
            Err(e) => {
                let _ = self
                    .reports
                    .send(Report::Failed(format!("client {}: {e:#}", self.index)));
                return;
            }
        };
        drop(permit);
        let _ = self.reports.send(Report::LoggedIn);
        let mut trid = 100u32;
        loop {
            tokio::select! {
                line = conn.next_line() => {
                    let Ok(line) = line else { return };
                    match line.command.as_str() {
                        "NLN" => {
                            let (Some(state), Some(who)) = (line.param(0), line.param(1)) else { continue };
                            let Some(index) = who.strip_prefix('u').and_then(|n| n.parse::<u32>().ok()) else { continue };
                            let mut code = [0u8; 3];
                            code.copy_from_slice(&state.as_bytes()[..3.min(state.len())]);
                            let _ = self.reports.send(Report::Push { who: index, state: code, at: Instant::now() });
                        }
                        "PNG" if conn.send(&Line::new("QNG", TrId::PUSH, [])).await.is_err() => return,
                        _ => {}
                    }
                }
                cmd = commands.recv() => {
                    let Some(state) = cmd else { return };
                    trid += 1;
                    let state = String::from_utf8_lossy(&state).into_owned();
                    if conn.send(&Line::new("CHG", TrId(trid), [state])).await.is_err() { return }
                }
            }
        }
    }

    async fn login(&self) -> anyhow::Result<Connection> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        set_bind_no_port(&socket);
        socket.bind((self.source, 0).into())?;
        let stream = tokio::time::timeout(Duration::from_secs(30), async {
            let tcp = socket.connect(self.server).await?;
            tcp.set_nodelay(true)?;
            let tls = self
                .tls
                .connect(p2p_servers::tls::any_server_name(), tcp)
                .await?;
            anyhow::Ok(tls)
        })
        .await
        .context("connect and TLS handshake timed out")??;
        let binding = p2p_servers::tls::channel_binding(stream.get_ref().1)?;
        let mut conn = Connection::new(stream);
        let name = UserName::parse(&name_of(self.index))?;
        conn.request(Line::new("VER", TrId(1), ["P2P1".to_owned()]))
            .await?;
        let nonce: [u8; 18] = rand::random();
        let mut scram = ScramClient::new(&name, &nonce, &binding).with_min_kdf(BENCH_KDF);
        let b64 = |s: &str| base64_encode(s.as_bytes());
        let first = conn
            .request(Line::new(
                "USR",
                TrId(2),
                [
                    MECHANISM.to_owned(),
                    "I".to_owned(),
                    b64(&scram.client_first()),
                ],
            ))
            .await?;
        let server_first = base64_decode(first.param(2).context("no server-first")?)?;
        let client_final = scram.handle_server_first(&server_first, PASSWORD)?;
        let ok = conn
            .request(Line::new(
                "USR",
                TrId(3),
                [MECHANISM.to_owned(), "S".to_owned(), b64(&client_final)],
            ))
            .await?;
        if ok.param(0) != Some("OK") {
            bail!("login refused: {ok:?}");
        }
        scram.handle_server_final(&base64_decode(ok.param(2).context("no server-final")?)?)?;
        conn.request(Line::new("CHG", TrId(4), ["NLN".to_owned()]))
            .await?;
        Ok(conn)
    }
}

/// Binds without picking a port until connect, so the 4-tuple decides uniqueness and one source
/// address is not limited to one connection per ephemeral port.
fn set_bind_no_port(socket: &tokio::net::TcpSocket) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: setsockopt on a socket we own, with a pointer to a live c_int.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn base64_decode(text: &str) -> anyhow::Result<String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD.decode(text)?;
    Ok(String::from_utf8(bytes)?)
}

/// A minimal framed connection: the bench's own, so its per-client cost stays small.
struct Connection {
    read: ReadHalf<TlsStream<TcpStream>>,
    write: WriteHalf<TlsStream<TcpStream>>,
    buf: BytesMut,
    out: BytesMut,
}

impl Connection {
    fn new(stream: TlsStream<TcpStream>) -> Connection {
        let (read, write) = tokio::io::split(stream);
        Connection {
            read,
            write,
            buf: BytesMut::with_capacity(512),
            out: BytesMut::with_capacity(128),
        }
    }

    async fn send(&mut self, line: &Line) -> anyhow::Result<()> {
        self.out.clear();
        wire::encode(line, &mut self.out, wire::Direction::ToServer)?;
        self.write.write_all(&self.out).await?;
        self.write.flush().await?;
        Ok(())
    }

    async fn next_line(&mut self) -> anyhow::Result<Line> {
        loop {
            if let Some(line) = wire::decode(&mut self.buf, wire::Direction::ToClient)? {
                return Ok(line);
            }
            if self.buf.capacity() - self.buf.len() < 256 {
                self.buf.reserve(512);
            }
            if self.read.read_buf(&mut self.buf).await? == 0 {
                bail!("server closed the connection");
            }
        }
    }

    /// Sends `line` and waits for the answer with its TrID (pushes in between are skipped:
    /// during log-in nobody measures them).
    async fn request(&mut self, line: Line) -> anyhow::Result<Line> {
        let trid = line.trid;
        self.send(&line).await?;
        let answer = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                let got = self.next_line().await?;
                if got.trid == trid {
                    return Ok::<_, anyhow::Error>(got);
                }
            }
        })
        .await
        .context("no answer within 60 s")??;
        if let Some(code) = answer.command.error_code() {
            bail!(
                "{} answered {code}: {}",
                line.command,
                answer.params.join(" ")
            );
        }
        Ok(answer)
    }
}
