//! The core task: owns the sans-IO [`RendezvousServer`] and the [`Store`], accepts
//! connections, feeds the core what the connection tasks report, and carries out its outputs
//! in order (docs/PROTOCOL.md; drain order in `shared::rendezvous::server`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use shared::rendezvous::scram::ChannelBinding;
use shared::rendezvous::telemetry::Telemetry;
use shared::rendezvous::wire::Line;
use shared::rendezvous::{ConnId, Output, RendezvousCounters, RendezvousServer, StoreOp, UserName};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::Encoder;

use super::cluster::{ClusterLink, HEARTBEAT, Incoming};
use super::connection::{self, Event, Outbox, SendError, Stream};
use super::store::Store;
use super::tickets::TicketBook;
use crate::switchboard::TicketGranter;
use codecs::line::{LineCodec, Side};

/// How often users added by the operator are picked up from the database.
const USER_POLL: Duration = Duration::from_secs(2);
/// Lines from all connections waiting for the core task.
const EVENT_QUEUE: usize = 4096;
/// The kernel send buffer per connection (Linux doubles it for bookkeeping): room for a
/// login's worth of `ILN` pushes for a full contact list, and a maximal `LST` answer.
const SEND_BUFFER: usize = 64 * 1024;
/// The least time between two warnings about failing accepts.
const ACCEPT_WARNING: Duration = Duration::from_secs(10);
/// Events handled per wake-up of the core task before timers and accepts get a look.
const EVENT_BATCH: usize = 256;
/// How long shutdown waits for writers to flush `OUT 0 SSD`.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(3);

/// Counters the handle can read while the core task runs.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub(crate) connections: AtomicUsize,
    pub(crate) online: AtomicUsize,
    /// Logged-in sessions (a user on two devices has two).
    pub(crate) sessions: AtomicUsize,
    /// TLS handshakes that failed or timed out.
    pub(crate) failed_handshakes: AtomicU64,
    /// Users the operator added while the server ran, counted once the core knows them.
    pub(crate) operator_users: AtomicU64,
    /// The core's logins by outcome and introductions, as of its last step.
    pub(crate) core: Mutex<RendezvousCounters>,
    /// The core's connectivity telemetry, as of the last step that changed it.
    pub(crate) telemetry: Mutex<Telemetry>,
    /// Whether the node is draining (it sends every client to another node).
    pub(crate) draining: AtomicBool,
    /// Other nodes of the cluster heard from within the heartbeat timeout.
    pub(crate) cluster_nodes: AtomicUsize,
    /// Times the lists were read again from the database (`--cluster`).
    pub(crate) list_resyncs: AtomicU64,
}

impl Counts {
    /// The core's counters as last published.
    pub(crate) fn core(&self) -> RendezvousCounters {
        self.core.lock().map(|c| *c).unwrap_or_default()
    }

    /// The core's connectivity telemetry as last published.
    pub(crate) fn telemetry(&self) -> Telemetry {
        self.telemetry.lock().map(|t| t.clone()).unwrap_or_default()
    }
}

/// Where the tickets the core issues go.
pub(crate) struct TicketSinks {
    /// Kept for inspection ([`RendezvousHandle::tickets`](super::RendezvousHandle::tickets)).
    pub(crate) book: TicketBook,
    /// The switchboard that redeems them, if one runs.
    pub(crate) switchboard: Option<TicketGranter>,
}

/// What the handle asks of the running core task (docs/CLUSTER.md).
#[derive(Debug)]
pub(crate) enum Control {
    /// Start draining: new clients and logged-in sessions are sent to the peer nodes.
    Drain,
    /// The other nodes of the cluster (replaces the list).
    PeerNodes(Vec<std::net::SocketAddr>),
}

/// One open connection as the core task sees it.
struct Conn {
    /// Where lines go; dropping it makes the writer flush and close.
    outbox: Outbox,
    /// Ends the writer at once (overflow), which closes the connection.
    writer: AbortHandle,
}

/// The core task's state.
pub(crate) struct Driver {
    core: RendezvousServer,
    store: Store,
    acceptor: TlsAcceptor,
    tickets: TicketSinks,
    counts: Arc<Counts>,
    max_queued_lines: usize,
    conns: HashMap<ConnId, Conn>,
    next_conn: u64,
    codec: LineCodec,
    /// Reused for encoding every line.
    scratch: BytesMut,
    events: mpsc::Sender<Event>,
    /// Each writer task holds a clone; all gone means every writer has finished.
    alive: mpsc::Sender<()>,
    /// The highest user row id seen by the operator poll.
    last_rowid: i64,
    /// Users the core created since the last poll (the poll must not announce them).
    created: HashSet<UserName>,
    /// Where to join a cluster (`--cluster`), until [`run`](Self::run) connects.
    cluster_spec: Option<ClusterSpec>,
    /// The cluster link once connected.
    cluster: Option<ClusterLink>,
}

/// How this node joins a cluster (docs/CLUSTER.md).
#[derive(Clone, Debug)]
pub(crate) struct ClusterSpec {
    /// The NATS server and how to reach it.
    pub(crate) connect: super::ClusterConnect,
    /// Where clients reach this node.
    pub(crate) advertise: std::net::SocketAddr,
    /// The static `--peer-node` list.
    pub(crate) static_peers: Vec<std::net::SocketAddr>,
}

/// What [`Driver::run`] needs besides the driver itself.
pub(crate) struct Channels {
    pub(crate) events: mpsc::Receiver<Event>,
    pub(crate) alive: mpsc::Receiver<()>,
    pub(crate) control: mpsc::UnboundedReceiver<Control>,
}

impl Driver {
    /// A driver around a core built from `store`'s contents.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        core: RendezvousServer,
        store: Store,
        acceptor: TlsAcceptor,
        tickets: TicketSinks,
        counts: Arc<Counts>,
        max_queued_lines: usize,
        last_rowid: i64,
        cluster_spec: Option<ClusterSpec>,
    ) -> (Driver, Channels, mpsc::UnboundedSender<Control>) {
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let (alive_tx, alive_rx) = mpsc::channel(1);
        let driver = Driver {
            core,
            store,
            acceptor,
            tickets,
            counts,
            max_queued_lines,
            conns: HashMap::new(),
            next_conn: 1,
            codec: LineCodec::new(Side::Server),
            scratch: BytesMut::with_capacity(4096),
            events: events_tx,
            alive: alive_tx,
            last_rowid,
            created: HashSet::new(),
            cluster_spec,
            cluster: None,
        };
        let channels = Channels {
            events: events_rx,
            alive: alive_rx,
            control: control_rx,
        };
        (driver, channels, control_tx)
    }

    /// Serves until `shutdown` completes, then shuts down cleanly.
    pub(crate) async fn run(
        mut self,
        listener: std::net::TcpListener,
        channels: Channels,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let Channels {
            mut events,
            mut alive,
            mut control,
        } = channels;
        tokio::pin!(shutdown);
        let listener = match TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot use the rendezvous listener");
                return;
            }
        };
        let mut last_accept_warning = None;
        let mut user_poll = tokio::time::interval(USER_POLL);
        user_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        if let Some(spec) = self.cluster_spec.take() {
            self.join_cluster(spec).await;
        }
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let timer = self.core.poll_timeout();
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, remote)) => self.accept(stream, remote),
                    Err(e) => {
                        // Usually EMFILE/ENFILE: back off instead of spinning, and say so
                        // once in a while rather than ten times a second.
                        if last_accept_warning.is_none_or(|t: Instant| t.elapsed() > ACCEPT_WARNING) {
                            tracing::warn!(error = %e, "rendezvous accept failed (raise the open file limit?)");
                            last_accept_warning = Some(Instant::now());
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(event) = events.recv() => {
                    self.handle_event(event);
                    // Take what else is waiting without another trip through `select!`.
                    for _ in 0..EVENT_BATCH {
                        self.drain();
                        match events.try_recv() {
                            Ok(event) => self.handle_event(event),
                            Err(_) => break,
                        }
                    }
                }
                _ = sleep_until(timer) => self.core.handle_timeout(Instant::now()),
                _ = user_poll.tick() => self.poll_users(),
                Some(command) = control.recv() => self.control(command),
                Some(message) = cluster_recv(&mut self.cluster) => self.cluster_message(message),
                _ = heartbeat.tick(), if self.cluster.is_some() => self.heartbeat(),
            }
            self.drain();
            self.publish_counts();
        }
        drop(listener);
        self.core.handle_shutdown(Instant::now());
        self.drain();
        if let Some(link) = self.cluster.take() {
            link.stop().await;
        }
        // Dropping the outboxes makes every writer flush what it has (`OUT 0 SSD`) and close.
        self.conns.clear();
        self.publish_counts();
        let Driver {
            alive: alive_tx, ..
        } = self;
        drop(alive_tx);
        if tokio::time::timeout(SHUTDOWN_FLUSH, alive.recv())
            .await
            .is_err()
        {
            tracing::warn!("some rendezvous clients did not take their last lines in time");
        }
    }

    /// Carries out what the handle asked for.
    fn control(&mut self, command: Control) {
        match command {
            Control::Drain => {
                let sessions = self.core.session_count();
                self.core.handle_drain(Instant::now());
                self.counts.draining.store(true, Ordering::Relaxed);
                tracing::info!(
                    sessions,
                    peers = ?self.core.peer_nodes(),
                    "rendezvous node draining: not ready; new clients and logged-in sessions \
                     are sent to the peer nodes (XFR)"
                );
                if self.core.peer_nodes().is_empty() {
                    tracing::warn!(
                        "draining with no peer node: new clients are refused (601) and \
                         sessions stay until the drain period ends"
                    );
                }
            }
            Control::PeerNodes(peers) => {
                tracing::info!(?peers, "rendezvous peer nodes");
                match &mut self.cluster {
                    Some(link) => {
                        link.set_static_peers(peers);
                        self.core.handle_peer_nodes(link.peers());
                    }
                    None => self.core.handle_peer_nodes(peers),
                }
            }
        }
    }

    /// Connects to the cluster's NATS server (in the background if it is not up yet).
    async fn join_cluster(&mut self, spec: ClusterSpec) {
        let mut raw = [0u8; 8];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut raw);
        let node = shared::rendezvous::server::NodeId(u64::from_be_bytes(raw));
        match ClusterLink::start(&spec.connect, node, spec.advertise, spec.static_peers).await {
            Ok(link) => {
                tracing::info!(nats = %spec.connect, node = format_args!("{:016x}", node.0),
                    advertise = %spec.advertise, "cluster: joined");
                self.cluster = Some(link);
            }
            Err(e) => tracing::error!(nats = %spec.connect, error = %e,
                "cluster: cannot use the NATS server; this node serves alone"),
        }
    }

    /// A message from another node.
    fn cluster_message(&mut self, message: Incoming) {
        // A list change can name an account made on another node moments ago, before the
        // poll found it: read the new accounts first (list changes are rare).
        if let Incoming::List(_, _, op) = &message
            && op_names(op).iter().any(|n| !self.core.knows_user(n))
        {
            self.poll_users();
        }
        let Some(link) = &mut self.cluster else {
            return;
        };
        if link.receive(&mut self.core, message, Instant::now()) {
            self.core.handle_peer_nodes(link.peers());
        }
        self.resync_lists_if_due();
    }

    /// Reads the contact and block lists again when some list change of another node may
    /// have missed this one (`ClusterLink::take_resync`), and hands them to the core, which
    /// applies what differs. Every list change made here is already stored (writes happen in
    /// order on this task), so the lists read include them. A failed read is tried again at
    /// the next heartbeat.
    fn resync_lists_if_due(&mut self) {
        let Some(link) = &mut self.cluster else {
            return;
        };
        if !link.take_resync() {
            return;
        }
        // Accounts first: the lists may name one made on another node moments ago.
        self.poll_users();
        let started = Instant::now();
        match self.store.lists() {
            Ok((contacts, blocks)) => {
                let changed = self.core.handle_lists_resync(&contacts, &blocks);
                let pairs = contacts.len() + blocks.len();
                // The rows read (millions at 100,000 users) are freed here, but glibc would
                // keep them: the resync that every connection to NATS makes, the first one
                // just after start-up, would leave each node at its start-up peak.
                drop((contacts, blocks));
                crate::return_freed_memory();
                self.counts.list_resyncs.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    changed,
                    pairs,
                    took_ms = started.elapsed().as_millis() as u64,
                    "cluster: lists read again from the database"
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "cluster: cannot read the lists again; retrying");
                if let Some(link) = &mut self.cluster {
                    link.resync_failed();
                }
            }
        }
    }

    /// Says this node is alive (with its users), and drops nodes that stopped saying so.
    fn heartbeat(&mut self) {
        let Some(link) = &mut self.cluster else {
            return;
        };
        link.heartbeat(&self.core);
        if link.expire(&mut self.core, Instant::now()) {
            self.core.handle_peer_nodes(link.peers());
        }
        self.resync_lists_if_due();
        let Some(link) = &self.cluster else {
            return;
        };
        self.counts
            .cluster_nodes
            .store(link.member_count(), Ordering::Relaxed);
    }

    /// Starts the TLS handshake in a task of its own; the core hears of the connection only
    /// when it has finished ([`Event::Connected`]).
    fn accept(&mut self, stream: TcpStream, remote: std::net::SocketAddr) {
        let _ = stream.set_nodelay(true);
        // A fixed send buffer (no autotuning to megabytes) bounds what a client that stops
        // reading costs the kernel, and finds it sooner; answers and pushes are small.
        let _ = socket2::SockRef::from(&stream).set_send_buffer_size(SEND_BUFFER);
        tokio::spawn(connection::handshake(
            self.acceptor.clone(),
            stream,
            remote,
            self.events.clone(),
            self.counts.clone(),
        ));
    }

    /// Registers a connection whose handshake has finished, with its channel binding.
    fn connected(&mut self, stream: Stream, remote: std::net::SocketAddr, binding: ChannelBinding) {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        let (outbox, writer_parts, read) = connection::split(stream, self.max_queued_lines);
        let (done_tx, done_rx) = oneshot::channel();
        let writer = tokio::spawn(connection::writer(
            writer_parts,
            done_tx,
            self.alive.clone(),
        ));
        tokio::spawn(connection::reader(conn, read, self.events.clone(), done_rx));
        self.conns.insert(
            conn,
            Conn {
                outbox,
                writer: writer.abort_handle(),
            },
        );
        tracing::debug!(conn = conn.0, %remote, "rendezvous connection");
        self.core
            .handle_connected(Instant::now(), conn, remote, binding);
    }

    fn handle_event(&mut self, event: Event) {
        let now = Instant::now();
        match event {
            Event::Connected {
                stream,
                remote,
                binding,
            } => self.connected(*stream, remote, binding),
            // Input from a connection the core has closed is dropped.
            Event::Line(conn, line) if self.conns.contains_key(&conn) => {
                self.core.handle_line(now, conn, line);
            }
            Event::FrameError(conn, error) if self.conns.contains_key(&conn) => {
                tracing::debug!(conn = conn.0, %error, "bad input");
                self.core.handle_frame_error(now, conn, error);
            }
            Event::Closed(conn) => {
                if self.conns.remove(&conn).is_some() {
                    tracing::debug!(conn = conn.0, "rendezvous connection closed by the peer");
                    self.core.handle_disconnected(now, conn);
                }
            }
            Event::Line(..) | Event::FrameError(..) => {}
        }
    }

    /// Carries out the core's outputs in order: a store operation is on disk before any later
    /// line is queued, and one that fails is reported to the core before the next output is
    /// taken (the core then withdraws the answer and pushes that depended on it, and answers
    /// `500` instead).
    fn drain(&mut self) {
        // Counts first: the core has already taken the input, so a client that reads an answer
        // sent below also sees the counts it implies (the call after `drain` adds what the
        // disconnects found while sending changed).
        self.publish_counts();
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Store { id, op } => {
                    if !self.persist(&op) {
                        self.core.handle_store_failed(Instant::now(), id);
                    }
                }
                Output::Send { conn, line } => self.send(conn, &line),
                Output::Close(conn) => {
                    // Dropping the outbox: the writer sends what is pending, then closes.
                    if self.conns.remove(&conn).is_some() {
                        tracing::debug!(conn = conn.0, "rendezvous connection closed by us");
                    }
                }
                Output::Ticket(ticket) => {
                    // Granted before the ITR lines that carry it are queued: a peer can never
                    // reach the switchboard before its ticket does.
                    if let Some(switchboard) = &self.tickets.switchboard {
                        switchboard.grant(ticket.clone());
                    }
                    self.tickets.book.insert(ticket);
                }
                Output::Cluster(message) => {
                    if let Some(link) = &mut self.cluster {
                        link.send(message);
                    }
                }
                other => tracing::error!(?other, "rendezvous output this driver does not know"),
            }
        }
    }

    /// Writes `op`; `false` (logged) if the database refused it.
    fn persist(&mut self, op: &StoreOp) -> bool {
        match self.store.apply(op) {
            Ok(()) => {
                if let StoreOp::CreateUser(record) = op {
                    self.created.insert(record.name.clone());
                }
                true
            }
            Err(e) => {
                tracing::error!(error = %e, ?op,
                    "cannot persist a rendezvous change: the client gets 500, nothing changes");
                false
            }
        }
    }

    fn send(&mut self, conn: ConnId, line: &Line) {
        let Some(entry) = self.conns.get(&conn) else {
            return;
        };
        self.scratch.clear();
        if let Err(e) = self.codec.encode(line, &mut self.scratch) {
            tracing::error!(conn = conn.0, command = %line.command, error = %e,
                "the rendezvous core produced a line that cannot be sent");
            return;
        }
        match entry.outbox.send(&self.scratch) {
            Ok(()) => {}
            Err(SendError::Overflow) => {
                // A client that does not read must not stall anyone: drop it at once.
                entry.writer.abort();
                self.conns.remove(&conn);
                tracing::info!(
                    conn = conn.0,
                    queued = self.max_queued_lines,
                    "rendezvous client not reading: outgoing queue full, disconnecting"
                );
                self.core.handle_overflow(Instant::now(), conn);
            }
            Err(SendError::Gone) => {
                // The connection failed or the writer gave up: it is gone.
                self.conns.remove(&conn);
                self.core.handle_disconnected(Instant::now(), conn);
            }
        }
    }

    /// Announces users the operator added with `stun-server user add` while we run.
    fn poll_users(&mut self) {
        match self.store.users_since(self.last_rowid) {
            Ok(rows) => {
                for (rowid, record) in rows {
                    self.last_rowid = self.last_rowid.max(rowid);
                    if !self.created.contains(&record.name) {
                        tracing::info!(user = %record.name, "user added by the operator");
                        self.core.handle_user_added(record);
                        self.counts.operator_users.fetch_add(1, Ordering::Relaxed);
                    }
                }
                self.created.clear();
            }
            Err(e) => tracing::error!(error = %e, "cannot read new users from the database"),
        }
        self.tickets.book.purge_expired(Instant::now());
    }

    fn publish_counts(&self) {
        self.counts
            .connections
            .store(self.core.connection_count(), Ordering::Relaxed);
        self.counts
            .online
            .store(self.core.online_count(), Ordering::Relaxed);
        self.counts
            .sessions
            .store(self.core.session_count(), Ordering::Relaxed);
        if let Ok(mut counters) = self.counts.core.lock() {
            *counters = *self.core.counters();
        }
        // The aggregates change only when an introduction is counted: copy them then.
        let telemetry = self.core.telemetry();
        if let Ok(mut published) = self.counts.telemetry.lock()
            && published.generation() != telemetry.generation()
        {
            *published = telemetry.clone();
        }
    }
}

/// The accounts a list change names.
fn op_names(op: &StoreOp) -> Vec<&UserName> {
    match op {
        StoreOp::AddContact { owner, contact } | StoreOp::RemoveContact { owner, contact } => {
            vec![owner, contact]
        }
        StoreOp::Block { owner, blocked } | StoreOp::Allow { owner, blocked } => {
            vec![owner, blocked]
        }
        _ => Vec::new(),
    }
}

/// The next message from another node, or never without a cluster.
async fn cluster_recv(cluster: &mut Option<ClusterLink>) -> Option<Incoming> {
    match cluster {
        Some(link) => link.incoming.recv().await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}
