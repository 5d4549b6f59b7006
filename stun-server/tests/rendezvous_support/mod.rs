//! A raw rendezvous protocol client for the tests: blocking sockets with TLS 1.3 that trusts
//! exactly the server's key (`p2p_servers::tls::pinned_client_config`), the real framing, and a
//! SCRAM login with the real client half, bound to the TLS session.

// Test code: a panic with the failing value is the report we want.
#![allow(clippy::unwrap_used, dead_code)]

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rustls::{ClientConnection, StreamOwned};
use shared::identity::Fingerprint;
use shared::rendezvous::scram::{ChannelBinding, MECHANISM, ScramClient, derive_credentials};
use shared::rendezvous::wire::{self, Line, TrId};
use shared::rendezvous::{Kdf, UserName};

/// The cheapest KDF Argon2 accepts: these tests are about the driver, not key stretching.
pub const CHEAP: Kdf = Kdf {
    memory_kib: 8,
    iterations: 1,
    lanes: 1,
};
/// How long a test waits for a line it expects.
pub const WAIT: Duration = Duration::from_secs(5);

/// Why no line came.
#[derive(Debug, PartialEq)]
pub enum End {
    Eof,
    Timeout,
    Reset,
}

/// A TLS client stream on a blocking socket.
pub type Tls = StreamOwned<ClientConnection, TcpStream>;

/// Runs the TLS handshake on `tcp`, trusting only the key with `fingerprint`; returns the
/// stream and the session's channel binding.
pub fn tls_handshake(
    tcp: TcpStream,
    fingerprint: Fingerprint,
) -> Result<(Tls, ChannelBinding), rustls::Error> {
    let config = p2p_servers::tls::pinned_client_config(fingerprint);
    let conn = ClientConnection::new(config, p2p_servers::tls::any_server_name())?;
    let mut tls = StreamOwned::new(conn, tcp);
    tls.sock.set_read_timeout(Some(WAIT)).unwrap();
    while tls.conn.is_handshaking() {
        if let Err(e) = tls.conn.complete_io(&mut tls.sock) {
            // The verifier's or the server's verdict, when there is one.
            return Err(e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .cloned()
                .unwrap_or(rustls::Error::General(e.to_string())));
        }
    }
    let binding = p2p_servers::tls::channel_binding(&tls.conn)?;
    Ok((tls, binding))
}

/// A raw protocol client on a blocking socket.
pub struct Client {
    pub stream: Tls,
    /// The TLS session's channel binding, which [`Client::login`] binds SCRAM to.
    pub binding: ChannelBinding,
    buf: BytesMut,
    next_trid: u32,
    /// Lines read while looking for something else (pushes, mostly).
    backlog: VecDeque<Line>,
}

impl Client {
    /// Connects over TLS to the server with key `fingerprint` and negotiates the version.
    pub fn connect(addr: SocketAddr, fingerprint: Fingerprint) -> Client {
        Client::over(TcpStream::connect(addr).unwrap(), fingerprint)
    }

    /// Runs the TLS handshake and negotiates the version on a connected stream.
    pub fn over(stream: TcpStream, fingerprint: Fingerprint) -> Client {
        stream.set_nodelay(true).unwrap();
        let (stream, binding) = tls_handshake(stream, fingerprint).unwrap();
        let mut c = Client {
            stream,
            binding,
            buf: BytesMut::new(),
            next_trid: 1,
            backlog: VecDeque::new(),
        };
        let ver = c.request("VER", &["P2P1"]);
        assert_eq!(ver.params, ["P2P1"], "{ver:?}");
        c
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
        self.stream.flush().unwrap();
    }

    /// Like [`Client::send_raw`], but a failure (the server closed) is returned, not a panic.
    pub fn try_send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Sends a request with a fresh TrID and returns the TrID.
    pub fn send(&mut self, command: &str, params: &[&str]) -> TrId {
        let trid = TrId(self.next_trid);
        self.next_trid += 1;
        let line = Line::new(command, trid, params.iter().map(|p| p.to_string()));
        let mut out = BytesMut::new();
        wire::encode(&line, &mut out, wire::Direction::ToServer).unwrap();
        self.send_raw(&out);
        trid
    }

    /// The next line from the socket (not the backlog).
    pub fn read_line(&mut self, timeout: Duration) -> Result<Line, End> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = wire::decode(&mut self.buf, wire::Direction::ToClient).unwrap() {
                return Ok(line);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(End::Timeout);
            }
            self.stream.sock.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(End::Eof),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                // A close without close_notify.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(End::Eof),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(End::Timeout);
                }
                Err(_) => return Err(End::Reset),
            }
        }
    }

    /// Sends a request and returns its answer; other lines go to the backlog.
    pub fn request(&mut self, command: &str, params: &[&str]) -> Line {
        let trid = self.send(command, params);
        loop {
            let line = self
                .read_line(WAIT)
                .unwrap_or_else(|e| panic!("no answer to {command} {params:?}: {e:?}"));
            if line.trid == trid {
                return line;
            }
            self.backlog.push_back(line);
        }
    }

    /// The first line (backlog first) that `want` accepts; others stay in the backlog.
    pub fn wait_for(&mut self, what: &str, want: impl Fn(&Line) -> bool) -> Line {
        if let Some(i) = self.backlog.iter().position(&want) {
            return self.backlog.remove(i).unwrap();
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_line(left) {
                Ok(line) if want(&line) => return line,
                Ok(line) => self.backlog.push_back(line),
                Err(e) => panic!("no {what} ({e:?}); backlog: {:?}", self.backlog),
            }
        }
    }

    /// Waits for a push `COMMAND 0 params...`, e.g. `push("NLN", &["BSY", "alice"])`.
    pub fn push(&mut self, command: &str, params: &[&str]) -> Line {
        self.wait_for(&format!("{command} {params:?}"), |l| {
            l.command.as_str() == command && l.trid == TrId::PUSH && l.params == params
        })
    }

    /// Takes the lines read so far while looking for something else.
    pub fn take_backlog(&mut self) -> Vec<Line> {
        self.backlog.drain(..).collect()
    }

    /// Reads until the server closes; returns everything read (backlog first).
    pub fn until_closed(&mut self, timeout: Duration) -> Vec<String> {
        let mut seen: Vec<String> = self.backlog.drain(..).map(|l| text(&l)).collect();
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_line(left) {
                Ok(line) => seen.push(text(&line)),
                Err(End::Timeout) => panic!("still open after {timeout:?}; read {seen:?}"),
                Err(End::Eof | End::Reset) => return seen,
            }
        }
    }

    pub fn register(&mut self, name: &str, password: &str) {
        let answer = self.try_register(name, password);
        assert_eq!(text(&answer), format!("REG {} {name}", answer.trid));
    }

    pub fn try_register(&mut self, name: &str, password: &str) -> Line {
        let salt: [u8; 16] = rand::random();
        let c = derive_credentials(password.as_bytes(), &salt, CHEAP).unwrap();
        let kdf = CHEAP.to_string();
        let (salt, stored, server) = (b64(&c.salt), b64(&c.stored_key), b64(&c.server_key));
        self.request("REG", &[name, &kdf, &salt, &stored, &server])
    }

    /// SCRAM login bound to this TLS session; `Err` carries the error line. On success,
    /// checks the server's signature.
    pub fn login(&mut self, name: &str, password: &str) -> Result<(), Line> {
        let binding = self.binding;
        self.login_bound(name, password, &binding)
    }

    /// SCRAM login with the channel binding `binding` (a test of a wrong one: 911).
    pub fn login_bound(
        &mut self,
        name: &str,
        password: &str,
        binding: &ChannelBinding,
    ) -> Result<(), Line> {
        let user = UserName::parse(name).unwrap();
        let nonce: [u8; 18] = rand::random();
        let mut scram = ScramClient::new(&user, &nonce, binding).with_min_kdf(CHEAP);
        let first = self.request(
            "USR",
            &[MECHANISM, "I", &b64(scram.client_first().as_bytes())],
        );
        if first.command.error_code().is_some() {
            return Err(first);
        }
        assert_eq!(first.param(1), Some("S"), "{first:?}");
        let server_first = unb64(first.param(2).unwrap());
        let client_final = scram
            .handle_server_first(&server_first, password.as_bytes())
            .unwrap();
        let last = self.request("USR", &[MECHANISM, "S", &b64(client_final.as_bytes())]);
        if last.command.error_code().is_some() {
            return Err(last);
        }
        assert_eq!(last.params[..2], ["OK", name], "{last:?}");
        scram
            .handle_server_final(&unb64(last.param(2).unwrap()))
            .unwrap();
        Ok(())
    }

    /// A request that must be answered with its own command, e.g. `ADC 5 bob`.
    pub fn ok(&mut self, command: &str, params: &[&str]) -> Line {
        let answer = self.request(command, params);
        assert_eq!(
            answer.command.as_str(),
            command,
            "{command} {params:?}: {answer:?}"
        );
        answer
    }
}

/// A line as text, for messages and comparisons.
pub fn text(line: &Line) -> String {
    let mut s = format!("{} {}", line.command, line.trid);
    for p in &line.params {
        s.push(' ');
        s.push_str(p);
    }
    s
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (RFC 4648), as the protocol uses.
pub fn b64(data: &[u8]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk.len();
        let v = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= n {
                out.push(B64[(v >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 into text (SCRAM messages are ASCII).
pub fn unb64(text: &str) -> String {
    let mut bits = 0u32;
    let mut nbits = 0;
    let mut out = Vec::new();
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = B64.iter().position(|&b| b == c).unwrap() as u32;
        bits = (bits << 6) | v;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push((bits >> nbits) as u8);
        }
    }
    String::from_utf8(out).unwrap()
}

/// A temporary directory named after the test and this process, removed on drop: the home of
/// a server's database and certificate in the binary's tests.
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    /// `$TMPDIR/p2p-servers-<tag>-<pid>`, emptied first.
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("p2p-servers-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// The directory.
    pub fn root(&self) -> &std::path::Path {
        &self.0
    }

    /// `name` inside it.
    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }

    /// The path of an SQLite database inside it, as a flag value.
    pub fn db(&self) -> String {
        self.path("rendezvous.db").to_str().unwrap().to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
