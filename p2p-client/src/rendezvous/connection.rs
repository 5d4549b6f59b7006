//! The connection task: the only owner of the socket. It numbers requests and matches answers
//! to them by TrID, answers the server's `PNG 0` with `QNG 0` by itself, and queues every
//! other push as an [`Event`], so pushes that arrive while a request waits are never lost.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::{SinkExt, StreamExt};
use shared::identity::Fingerprint;
use shared::rendezvous::{Line, TrId, UserName};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_util::codec::Framed;

use super::dispatch::Redirect;
use super::error::{CloseReason, RendezvousError};
use super::event::{Event, LoginInfo, OutReason, parse_push};
use codecs::line::{CodecError, LineCodec, Side};
use shared::rendezvous::wire::FrameError;

/// How long closing the connection (TLS `close_notify`) may take.
pub(crate) const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// Where the answer to a request goes.
pub(crate) type Reply = oneshot::Sender<Result<Line, RendezvousError>>;

/// What the client asks its connection task to do.
pub(crate) enum ToTask {
    /// Send `command` with a fresh TrID and the parameters; the answer goes to `reply`. With
    /// `then_config`, the `CFG` push that follows a successful answer goes there (login).
    Request {
        command: &'static str,
        params: Vec<String>,
        reply: Reply,
        then_config: Option<oneshot::Sender<Line>>,
    },
    /// Send `OUT TrID` and wait for the server to close; `done` is dropped when the task ends.
    Logout { done: oneshot::Sender<()> },
    /// Close the connection now.
    Close,
}

/// What the client and its task share: why the connection ended, once it has.
#[derive(Default)]
pub(crate) struct Shared {
    close: Mutex<Option<CloseReason>>,
}

impl Shared {
    pub(crate) fn close_reason(&self) -> Option<CloseReason> {
        self.close
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_close_reason(&self, reason: CloseReason) {
        *self.close.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason);
    }
}

/// The channels of a running connection task.
pub(crate) struct Spawned {
    pub(crate) commands: mpsc::Sender<ToTask>,
    pub(crate) events: mpsc::UnboundedReceiver<Event>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) task: JoinHandle<()>,
}

/// Starts the task for a connected socket to the node at `addr` (named `server`, with the key
/// `key`: what an `XFR` push from it carries on to the next node).
pub(crate) fn spawn(
    stream: TlsStream<TcpStream>,
    addr: SocketAddr,
    server: String,
    key: Fingerprint,
) -> Spawned {
    let (commands, commands_rx) = mpsc::channel(64);
    // Unbounded so that a caller who does not drain events never stalls answers; pushes are
    // bounded by what the server sends (presence of at most 1000 contacts, introductions).
    let (events_tx, events) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared::default());
    let task = Task {
        framed: Framed::new(stream, LineCodec::new(Side::Client)),
        commands: commands_rx,
        events: events_tx,
        pending: HashMap::new(),
        config_waiter: None,
        user: None,
        next_trid: 1,
        out: None,
        logging_out: None,
        shared: shared.clone(),
        node: (addr, server, key),
        moving: None,
    };
    let task = tokio::spawn(task.run());
    Spawned {
        commands,
        events,
        shared,
        task,
    }
}

struct Pending {
    reply: Reply,
    then_config: Option<oneshot::Sender<Line>>,
}

struct Task {
    framed: Framed<TlsStream<TcpStream>, LineCodec>,
    commands: mpsc::Receiver<ToTask>,
    events: mpsc::UnboundedSender<Event>,
    pending: HashMap<TrId, Pending>,
    config_waiter: Option<oneshot::Sender<Line>>,
    /// Who we are logged in as, once we are.
    user: Option<UserName>,
    next_trid: u32,
    /// The reason of an `OUT 0` push, reported when the server then closes.
    out: Option<OutReason>,
    /// Set by a logout; dropped (which tells the client) when the task ends.
    logging_out: Option<oneshot::Sender<()>>,
    shared: Arc<Shared>,
    /// The node's address, its name as the user gave it, and its key.
    node: (SocketAddr, String, Fingerprint),
    /// Set by an `XFR` push: log out here and reconnect there.
    moving: Option<Redirect>,
}

/// A TLS peer that closed the TCP connection without `close_notify`: nothing was cut short
/// that the line framing would not notice, so it counts as an ordinary end of stream.
fn is_unclean_eof(line: &Result<Result<Line, FrameError>, CodecError>) -> bool {
    matches!(line, Err(CodecError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof)
}

impl Task {
    async fn run(mut self) {
        let reason = loop {
            tokio::select! {
                command = self.commands.recv() => match command {
                    None | Some(ToTask::Close) => break CloseReason::ClosedByClient,
                    Some(ToTask::Logout { done }) => {
                        self.logging_out = Some(done);
                        let trid = self.trid();
                        if let Err(e) = self.framed.send(Line::new("OUT", trid, [])).await {
                            break CloseReason::Failed(e.to_string());
                        }
                    }
                    Some(ToTask::Request { command, params, reply, then_config }) => {
                        if let Err(e) = self.send_request(command, params, reply, then_config).await {
                            break CloseReason::Failed(e.to_string());
                        }
                    }
                },
                line = self.framed.next() => match line.filter(|l| !is_unclean_eof(l)) {
                    None if self.logging_out.is_some() => break CloseReason::ClosedByClient,
                    None => break match self.out.take() {
                        Some(out) => CloseReason::LoggedOut(out),
                        None => CloseReason::ClosedByServer,
                    },
                    Some(Err(e)) => break CloseReason::Failed(e.to_string()),
                    // The framing resyncs on the next line.
                    Some(Ok(Err(e))) if !e.is_fatal() => {
                        tracing::warn!(error = %e, "skipping a line that does not parse");
                    }
                    Some(Ok(Err(e))) => break CloseReason::Failed(format!("unframeable input: {e}")),
                    Some(Ok(Ok(line))) => {
                        if let Err(e) = self.handle_line(line).await {
                            break CloseReason::Failed(e.to_string());
                        }
                        if let Some(redirect) = self.moving.take() {
                            // Log out here (the node forgets the session at once), then close.
                            let trid = self.trid();
                            let _ = self.framed.send(Line::new("OUT", trid, [])).await;
                            break CloseReason::Transferred(Box::new(redirect));
                        }
                    }
                },
            }
        };
        tracing::debug!(%reason, "rendezvous connection closed");
        let ours = matches!(
            reason,
            CloseReason::ClosedByClient | CloseReason::Transferred(_)
        );
        // The reason is in place before the waiters learn (by their senders being dropped)
        // that no answer will come.
        self.shared.set_close_reason(reason);
        self.pending.clear();
        if ours {
            // TLS close_notify, then the TCP FIN; a server that does not read cannot hold
            // us up.
            let _ =
                tokio::time::timeout(CLOSE_TIMEOUT, SinkExt::<Line>::close(&mut self.framed)).await;
        }
    }

    fn trid(&mut self) -> TrId {
        let trid = TrId(self.next_trid);
        self.next_trid = self.next_trid.checked_add(1).unwrap_or(1);
        trid
    }

    /// Sends a request. An error return means the connection failed; a line that cannot be
    /// encoded fails only its request.
    async fn send_request(
        &mut self,
        command: &'static str,
        params: Vec<String>,
        reply: Reply,
        then_config: Option<oneshot::Sender<Line>>,
    ) -> Result<(), CodecError> {
        // Requests whose caller gave up (timeout) need no answer any more.
        self.pending.retain(|_, p| !p.reply.is_closed());
        let trid = self.trid();
        match self.framed.send(Line::new(command, trid, params)).await {
            Ok(()) => {
                self.pending.insert(trid, Pending { reply, then_config });
                Ok(())
            }
            Err(CodecError::Encode(e)) => {
                let error = RendezvousError::InvalidArgument(format!("{command}: {e}"));
                let _ = reply.send(Err(error));
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn handle_line(&mut self, line: Line) -> Result<(), CodecError> {
        if line.trid != TrId::PUSH {
            match self.pending.remove(&line.trid) {
                Some(pending) => {
                    if line.command.error_code().is_none() && pending.then_config.is_some() {
                        // `USR TrID OK name ...`: logged in as `name`.
                        self.user = line.param(1).and_then(|n| UserName::parse(n).ok());
                        self.config_waiter = pending.then_config;
                    }
                    let _ = pending.reply.send(Ok(line));
                }
                None => {
                    tracing::debug!(command = %line.command, trid = %line.trid, "answer nobody waits for");
                }
            }
            return Ok(());
        }
        match line.command.as_str() {
            "PNG" => self.framed.send(Line::new("QNG", TrId::PUSH, [])).await?,
            // A draining node sends its sessions elsewhere (docs/PROTOCOL.md section 11).
            "XFR" => {
                let (addr, server, key) = &self.node;
                match Redirect::parse(&line, *addr, server, *key) {
                    Ok(redirect) => {
                        tracing::info!(%redirect, "the rendezvous node is draining: moving");
                        self.moving = Some(redirect);
                    }
                    Err(e) => tracing::warn!(error = %e, "ignoring a malformed XFR push"),
                }
            }
            "CFG" => match self.config_waiter.take() {
                Some(waiter) => {
                    let _ = waiter.send(line);
                }
                None => {
                    // A CFG after the login's own: pass it on.
                    let Some(user) = self.user.clone() else {
                        tracing::warn!("ignoring a CFG push before login");
                        return Ok(());
                    };
                    match LoginInfo::from_cfg(user, &line) {
                        Ok(info) => self.emit(Event::Config(info)),
                        Err(e) => tracing::warn!(error = %e, "ignoring a malformed CFG push"),
                    }
                }
            },
            _ if line.command.error_code().is_some() => {
                tracing::warn!(code = %line.command, text = %line.params.join(" "), "server error push");
            }
            _ => match parse_push(&line) {
                Ok(Some(event)) => {
                    if let Event::LoggedOut(reason) = &event {
                        self.out = Some(reason.clone());
                    }
                    self.emit(event);
                }
                Ok(None) => tracing::debug!(command = %line.command, "ignoring an unknown push"),
                Err(e) => tracing::warn!(error = %e, "ignoring a malformed push"),
            },
        }
        Ok(())
    }

    fn emit(&self, event: Event) {
        // Nobody listening (the client was dropped) is fine: the loop ends on its own.
        let _ = self.events.send(event);
    }
}
