//! The client side of the switchboard relay: a TLS connection that joins the introduction's
//! session with our one-time ticket, then carries chat packets as `DATA` frames. The
//! switchboard must present exactly the certificate key the rendezvous server named in the
//! introduction (`sbfp=`); no CA and no pinning are involved.
//!
//! The framing is [`shared::switchboard::wire`] (a 2-byte length, a type byte, the body);
//! [`SbCodec`] (the one the switchboard uses too) wraps it for `tokio_util`. A client sends `JOIN` first and `DATA` after;
//! it receives `JOINED`, `PEER_JOINED`, `DATA`, `PEER_LEFT` and `ERROR`. `DATA` sent before the
//! other peer has joined is buffered by the switchboard (up to 64 KiB), so [`Relay::send`]
//! may be used from the moment the relay is started: packets wait in a local queue until the
//! connection is up and `JOIN` has gone out.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use codecs::switchboard::{CodecError, SbCodec};
use futures_util::{SinkExt, StreamExt};
use shared::identity::Fingerprint;
use shared::rendezvous::SessionId;
use shared::switchboard::{ErrorCode, Frame, VERSION};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::codec::Framed;

use super::endpoint::{PacketClass, classify};
use super::quic::QuicInbound;
use crate::tls::{self, ServerLabel, ServerTrust};

/// Packets queued for the relay before [`Relay::send`] drops them (the chat retransmits;
/// QUIC takes a full queue as loss and slows down). 2,048 QUIC packets are about 3 MB: room
/// for a relayed transfer's window at a few hundred MB/s without unbounded buffering.
const SEND_QUEUE: usize = 2048;
/// How long the TCP connection and the TLS handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the relay connection reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RelayEvent {
    /// We are in the session; `peer_present` says whether the peer already is.
    Joined {
        /// Whether the other peer had joined before us.
        peer_present: bool,
    },
    /// The peer joined after us: `DATA` flows both ways.
    PeerJoined,
    /// A chat packet from the peer.
    Data(Bytes),
    /// The peer left the session (`PEER_LEFT`); the switchboard closes. Final.
    PeerLeft,
    /// The connection is over (an `ERROR`, or a network failure). Final.
    Closed(String),
}

/// A running relay connection; dropping it closes the connection.
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    out: mpsc::Sender<Bytes>,
    events: mpsc::UnboundedReceiver<RelayEvent>,
    task: JoinHandle<()>,
    closed: bool,
    /// Where QUIC packets from the peer go once the link runs QUIC (set once).
    quic: Arc<OnceLock<QuicInbound>>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relay {
    /// Connects to the switchboard at `addr` in the background (over TLS, accepting exactly
    /// the key `fingerprint`) and joins `session` with `ticket`.
    pub fn start(
        addr: SocketAddr,
        fingerprint: Fingerprint,
        session: SessionId,
        ticket: [u8; 16],
    ) -> Relay {
        let (out, out_rx) = mpsc::channel(SEND_QUEUE);
        let (events_tx, events) = mpsc::unbounded_channel();
        let quic = Arc::new(OnceLock::new());
        let quic_in_task = quic.clone();
        let task = tokio::spawn(async move {
            let joined = Join {
                addr,
                fingerprint,
                session,
                ticket,
            };
            let last = match run(joined, out_rx, &events_tx, quic_in_task).await {
                Ok(()) => RelayEvent::Closed("closed".to_owned()),
                Err(None) => RelayEvent::PeerLeft,
                Err(Some(reason)) => RelayEvent::Closed(reason),
            };
            let _ = events_tx.send(last);
        });
        Relay {
            addr,
            out,
            events,
            task,
            closed: false,
            quic,
        }
    }

    /// The switchboard's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// From now on, QUIC packets from the peer go to `inbound` instead of
    /// [`RelayEvent::Data`]. Only the first call counts.
    pub fn set_quic_inbound(&self, inbound: QuicInbound) {
        let _ = self.quic.set(inbound);
    }

    /// The queue [`Relay::send`] feeds, for QUIC's packets (which it sends itself).
    pub fn sender(&self) -> mpsc::Sender<Bytes> {
        self.out.clone()
    }

    /// Queues a chat packet; drops it if the queue is full or the connection is gone (the
    /// chat session retransmits what matters).
    pub fn send(&self, packet: Vec<u8>) {
        if self.out.try_send(Bytes::from(packet)).is_err() {
            tracing::debug!("relay queue full or closed: packet dropped");
        }
    }

    /// The next event; pends forever after [`RelayEvent::Closed`]. Cancel-safe.
    pub async fn next_event(&mut self) -> RelayEvent {
        if !self.closed
            && let Some(event) = self.events.recv().await
        {
            if matches!(event, RelayEvent::Closed(_) | RelayEvent::PeerLeft) {
                self.closed = true;
            }
            return event;
        }
        self.closed = true;
        std::future::pending().await
    }
}

/// Where and how to join.
struct Join {
    addr: SocketAddr,
    fingerprint: Fingerprint,
    session: SessionId,
    ticket: [u8; 16],
}

/// The connection's life; `Err(None)` when the peer left, `Err(Some(reason))` when the
/// connection failed.
async fn run(
    join: Join,
    mut out: mpsc::Receiver<Bytes>,
    events: &mpsc::UnboundedSender<RelayEvent>,
    quic: Arc<OnceLock<QuicInbound>>,
) -> Result<(), Option<String>> {
    let Join {
        addr,
        fingerprint,
        session,
        ticket,
    } = join;
    let connect = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect to the switchboard {addr}: {e}"))?;
        // Chat packets are small and interactive.
        let _ = stream.set_nodelay(true);
        let label = ServerLabel {
            host: addr.ip().to_string(),
            port: addr.port(),
        };
        tls::handshake(stream, &label, &ServerTrust::Exact(fingerprint))
            .await
            .map_err(|e| format!("switchboard: {e}"))
    };
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| format!("cannot connect to the switchboard {addr}: timed out"))??;
    let fail = |e: CodecError| Some(e.to_string());
    let mut framed = Framed::new(connected.stream, SbCodec::default());
    let join = Frame::Join {
        version: VERSION,
        session,
        ticket,
    };
    framed.send(join).await.map_err(fail)?;
    loop {
        tokio::select! {
            frame = framed.next() => {
                let frame = match frame {
                    Some(Ok(frame)) => frame,
                    Some(Err(CodecError::Io(e)))
                        if e.kind() == std::io::ErrorKind::UnexpectedEof =>
                    {
                        return Err(Some("the switchboard closed the connection".into()));
                    }
                    Some(Err(e)) => return Err(fail(e)),
                    None => return Err(Some("the switchboard closed the connection".into())),
                };
                let event = match frame {
                    Frame::Joined { peer_present } => RelayEvent::Joined { peer_present },
                    Frame::PeerJoined => RelayEvent::PeerJoined,
                    // QUIC goes straight to its endpoint, past the driver's loop (the bulk of
                    // a relayed transfer).
                    Frame::Data(data)
                        if classify(&data) == PacketClass::Quic && quic.get().is_some() =>
                    {
                        if let Some(quic) = quic.get() {
                            quic.deliver(data);
                        }
                        continue;
                    }
                    Frame::Data(data) => RelayEvent::Data(data),
                    Frame::PeerLeft => return Err(None),
                    Frame::Error { code, text } => return Err(Some(describe_error(code, &text))),
                    Frame::Join { .. } => return Err(Some("the switchboard sent a JOIN".into())),
                };
                if events.send(event).is_err() {
                    return Ok(());
                }
            }
            packet = out.recv() => {
                let Some(packet) = packet else { return Ok(()) };
                // Send what else is queued in the same write.
                framed.feed(Frame::Data(packet)).await.map_err(fail)?;
                while let Ok(packet) = out.try_recv() {
                    framed.feed(Frame::Data(packet)).await.map_err(fail)?;
                }
                framed.flush().await.map_err(fail)?;
            }
        }
    }
}

/// A switchboard `ERROR` for people.
pub fn describe_error(code: ErrorCode, text: &str) -> String {
    let meaning = match code {
        ErrorCode::TICKET_REFUSED => "ticket refused",
        ErrorCode::JOIN_TIMEOUT => "join timeout",
        ErrorCode::IDLE => "session idle",
        ErrorCode::PEER_TIMEOUT => "the peer did not join in time",
        ErrorCode::BYTE_CAP => "session byte cap reached",
        ErrorCode::SHUTDOWN => "shutting down",
        _ => "error",
    };
    // The switchboard's own text often repeats the meaning ("shutting down"): say it once.
    let text = text.trim();
    if text.is_empty() || text.eq_ignore_ascii_case(meaning) {
        format!("switchboard: {meaning} ({code})")
    } else {
        format!("switchboard: {meaning} ({code}): {text}")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn errors_read_well() {
        assert_eq!(
            describe_error(ErrorCode::SHUTDOWN, "shutting down"),
            format!("switchboard: shutting down ({})", ErrorCode::SHUTDOWN)
        );
        let text = describe_error(ErrorCode::TICKET_REFUSED, "no");
        assert!(
            text.contains("ticket refused") && text.contains("401"),
            "{text}"
        );
    }
}
