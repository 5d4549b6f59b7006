//! One bench client: the real client's login (TCP, TLS 1.3 against the pinned key, `VER`, the
//! two SCRAM steps bound to the TLS session, `CHG NLN`), then it answers pings, reports the
//! presence pushes it gets and makes the presence changes it is told to.
//!
//! Shared by both modes: the single-node bench runs these tasks in its own process, the
//! cluster mode in its worker processes.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::BytesMut;
use shared::rendezvous::scram::{MECHANISM, ScramClient};
use shared::rendezvous::wire::{self, Line, TrId};
use shared::rendezvous::{Kdf, UserName};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// The one password every bench user has.
pub const PASSWORD: &[u8] = b"bench-password";
/// Cheapest KDF Argon2 accepts: the bench measures the server, not Argon2.
pub const BENCH_KDF: Kdf = Kdf {
    memory_kib: 8,
    iterations: 1,
    lanes: 1,
};

/// The name of bench user `i`.
pub fn name_of(i: usize) -> String {
    format!("u{i:06}")
}

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for every process on the machine, so a time
/// taken in one worker process can be subtracted from one taken in another.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only the struct we pass, which lives for the call.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// What a client task reports.
pub enum Report {
    LoggedIn,
    Failed(String),
    /// This client is about to write `CHG state` (the start of a timed change).
    Sent {
        who: u32,
        state: [u8; 3],
        at: u64,
    },
    /// Client `receiver` saw `who` change to `state` at `at` (ns, [`mono_ns`]). Only changes
    /// to a state other than `NLN` are reported: `NLN` is the log-in storm, not measured.
    Push {
        who: u32,
        state: [u8; 3],
        at: u64,
        receiver: u32,
    },
}

/// One bench client (see the module docs).
pub struct BenchClient {
    pub index: usize,
    pub server: SocketAddr,
    pub tls: TlsConnector,
    pub source: IpAddr,
    pub reports: mpsc::UnboundedSender<Report>,
}

impl BenchClient {
    /// Logs in, then serves until `commands` closes or the server closes the connection.
    pub async fn run(
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
        let me = u32::try_from(self.index).unwrap_or(u32::MAX);
        let mut trid = 100u32;
        loop {
            tokio::select! {
                line = conn.next_line() => {
                    let Ok(line) = line else { return };
                    match line.command.as_str() {
                        "NLN" => {
                            let (Some(state), Some(who)) = (line.param(0), line.param(1)) else { continue };
                            if state == "NLN" {
                                continue;
                            }
                            let Some(index) = who.strip_prefix('u').and_then(|n| n.parse::<u32>().ok()) else { continue };
                            let Ok(code) = <[u8; 3]>::try_from(state.as_bytes()) else { continue };
                            let _ = self.reports.send(Report::Push { who: index, state: code, at: mono_ns(), receiver: me });
                        }
                        "PNG" if conn.send(&Line::new("QNG", TrId::PUSH, [])).await.is_err() => return,
                        _ => {}
                    }
                }
                cmd = commands.recv() => {
                    let Some(state) = cmd else { return };
                    trid += 1;
                    let _ = self.reports.send(Report::Sent { who: me, state, at: mono_ns() });
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
