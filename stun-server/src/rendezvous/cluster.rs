//! The cluster link: carries the core's [`ClusterMessage`]s between rendezvous nodes over NATS
//! (`--cluster nats://HOST:PORT`, docs/CLUSTER.md), and keeps the membership from heartbeats.
//!
//! Core NATS only (publish/subscribe, no JetStream): every node publishes on four subjects and
//! subscribes to all of them with one subscription, so that what one node publishes reaches
//! every other node in the order it was published (NATS keeps the order of one publisher's
//! messages to one subscription).
//!
//! | subject | payload (JSON) | when |
//! |---|---|---|
//! | `p2p.rdv.all.presence` | `{"node", "user", "presence"}` | a user's presence over this node's sessions changed |
//! | `p2p.rdv.all.list` | `{"node", "seq", "op", "owner", "other"}` (`op`: `ADC`, `REM`, `BLK`, `ALW`; `seq`: 1, 2, ... per node) | a contact or block list changed here (after it was stored) |
//! | `p2p.rdv.all.heartbeat` | `{"node", "rendezvous", "accepting", "lists", "digest": [count, sum]}` (`lists`: how many list messages the node has published), and when asked `"beat", "part", "parts", "users": [[name, presence], ...]` (the users in parts of 10,000, `snapshot_parts.rs`) | every [`HEARTBEAT`] |
//! | `p2p.rdv.all.want` | `{"node", "of"}` (`of`: one node, or absent for every node) | the node needs a list of online users (see below) |
//! | `p2p.rdv.all.session` | `{"node", "user", "session"}` | a session here registered a login session id (`DEV`): other nodes replace their sessions holding it (`OUT 0 OTH`) |
//! | `p2p.rdv.all.bye` | `{"node"}` | the node stops |
//! | `p2p.rdv.to.NODE` (16 hex digits) | `{"node", "kind", ...}`: `ring`, `answer`, `cancel`, `deliver`, `primed`, `report` ([`Routed`]) | an invitation, its answer or cancel, an `ITR`/`PRM`/`CAN` line for a session there, the invitee's `RPT` for the node that introduced it |
//!
//! Every node subscribes to `p2p.rdv.all.>` and to its own `p2p.rdv.to.NODE`.
//!
//! Every heartbeat carries the [`PresenceDigest`] of the node's online users; a node compares
//! it with the digest of its replica of the sender and, when they differ (it missed presence
//! messages: a slow consumer, a short NATS outage), publishes a `want` of that node, whose next
//! heartbeat then carries its full list, which repairs the replica. A node that needs every
//! list at once (it starts, it sees a node join, or its NATS connection comes back) wants them
//! all. The full list is not in every heartbeat because each node would read every other
//! node's list each second: with 100,000 users online over 7 nodes that was 86,000 entries
//! decoded per second in each node, a whole core of the machine it was measured on, and it
//! delayed presence pushes by seconds (docs/BENCHMARKS.md, "Rendezvous cluster"); comparing a
//! digest costs a walk over the replica, with no message to decode. A node whose heartbeat has
//! not been heard for [`NODE_TIMEOUT`] is dead: its users go offline for their contacts here,
//! and it leaves the peer list that `XFR` picks from.
//!
//! Lists are repaired from the database instead (they are too big to repeat every second):
//! when a heartbeat counts more list messages than arrived from its node, and whenever this
//! node's NATS connection is made or made again (what was published meanwhile was not
//! delivered here), the driver reads the lists and the core applies the differences
//! ([`RendezvousServer::handle_lists_resync`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use shared::rendezvous::server::{ClusterMessage, NodeId, PresenceDigest, Routed};
use shared::rendezvous::wire::{Line, TrId};
use shared::rendezvous::{Presence, RendezvousServer, SessionId, StoreOp, UserName};
use tokio::sync::mpsc;

use super::cluster_connect::ClusterConnect;
use super::membership::{Lists, Membership};
use super::snapshot_parts::{self, Assembler};

/// How often a node says it is alive, with its list of online users.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(1);
/// Silence after which a node counts as dead: well under the 15 s in which a dead node's users
/// must show offline, and long enough that a busy node missing one or two beats is not dropped.
pub(crate) const NODE_TIMEOUT: Duration = Duration::from_secs(5);

const PRESENCE: &str = "p2p.rdv.all.presence";
const LIST: &str = "p2p.rdv.all.list";
const HEARTBEAT_SUBJECT: &str = "p2p.rdv.all.heartbeat";
const BYE: &str = "p2p.rdv.all.bye";
const SESSION: &str = "p2p.rdv.all.session";
const WANT: &str = "p2p.rdv.all.want";
const ALL: &str = "p2p.rdv.all.>";

/// The subject of messages for one node.
fn node_subject(node: NodeId) -> String {
    format!("p2p.rdv.to.{:016x}", node.0)
}

/// The lines one node may ask another to deliver to a session.
const DELIVERABLE: [&str; 3] = ["ITR", "PRM", "CAN"];

/// How long shutdown waits for the goodbye to reach the NATS server.
const BYE_FLUSH: Duration = Duration::from_secs(2);

#[derive(Serialize, Deserialize)]
struct PresenceMsg {
    node: u64,
    user: String,
    presence: String,
}

#[derive(Serialize, Deserialize)]
struct ListMsg {
    node: u64,
    /// 1 for the node's first list message, 2 for the next...: a receiver that sees a
    /// heartbeat count more than it received knows it missed some.
    #[serde(default)]
    seq: u64,
    op: String,
    owner: String,
    other: String,
}

#[derive(Serialize, Deserialize)]
struct HeartbeatMsg {
    node: u64,
    rendezvous: SocketAddr,
    /// Neither draining nor full: other nodes may send it clients with `XFR`.
    #[serde(default = "accepting_default")]
    accepting: bool,
    /// How many list messages the node has published so far.
    #[serde(default)]
    lists: u64,
    /// `[count, sum]` of the [`PresenceDigest`] of the node's online users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    digest: Option<[u64; 2]>,
    /// The heartbeat's number, and which of its parts this is (`snapshot_parts.rs`).
    #[serde(default)]
    beat: u64,
    #[serde(default)]
    part: u32,
    #[serde(default = "one")]
    parts: u32,
    /// The node's online users (a part of them), when another node asked for them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    users: Option<Vec<(String, String)>>,
}

fn one() -> u32 {
    1
}

fn accepting_default() -> bool {
    true
}

#[derive(Serialize, Deserialize)]
struct SessionMsg {
    node: u64,
    user: String,
    session: String,
}

#[derive(Serialize, Deserialize)]
struct ByeMsg {
    node: u64,
}

/// `node` needs the list of online users of node `of` (of every node without it) in the
/// next heartbeat.
#[derive(Serialize, Deserialize)]
struct WantMsg {
    node: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    of: Option<u64>,
}

/// A [`Routed`] message on the wire: `node` is the sender.
#[derive(Serialize, Deserialize)]
struct RoutedMsg {
    node: u64,
    #[serde(flatten)]
    body: RoutedBody,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum RoutedBody {
    Ring {
        sid: String,
        from: String,
        from_conn: u64,
        to: String,
        offer: Vec<String>,
    },
    Answer {
        sid: String,
        responder: String,
        conn: u64,
        offer: Vec<String>,
    },
    Cancel {
        sid: String,
        reason: String,
    },
    Deliver {
        conn: u64,
        command: String,
        params: Vec<String>,
    },
    Primed {
        sid: String,
    },
    Report {
        sid: String,
        conn: u64,
        report: Vec<String>,
    },
}

impl RoutedBody {
    fn encode(message: Routed) -> Option<RoutedBody> {
        Some(match message {
            Routed::Ring {
                sid,
                from,
                from_conn,
                to,
                offer,
            } => RoutedBody::Ring {
                sid: sid.to_string(),
                from: from.to_string(),
                from_conn,
                to: to.to_string(),
                offer,
            },
            Routed::Answer {
                sid,
                responder,
                conn,
                offer,
            } => RoutedBody::Answer {
                sid: sid.to_string(),
                responder: responder.to_string(),
                conn,
                offer,
            },
            Routed::Cancel { sid, reason } => RoutedBody::Cancel {
                sid: sid.to_string(),
                reason,
            },
            Routed::Deliver { conn, line } => RoutedBody::Deliver {
                conn,
                command: line.command.as_str().to_owned(),
                params: line.params,
            },
            Routed::Primed { sid } => RoutedBody::Primed {
                sid: sid.to_string(),
            },
            Routed::Report { sid, conn, report } => RoutedBody::Report {
                sid: sid.to_string(),
                conn,
                report,
            },
            _ => return None,
        })
    }

    fn decode(self) -> Option<Routed> {
        let sid = |s: &str| s.parse::<SessionId>().ok();
        let user = |s: &str| UserName::parse(s).ok();
        Some(match self {
            RoutedBody::Ring {
                sid: s,
                from,
                from_conn,
                to,
                offer,
            } => Routed::Ring {
                sid: sid(&s)?,
                from: user(&from)?,
                from_conn,
                to: user(&to)?,
                offer,
            },
            RoutedBody::Answer {
                sid: s,
                responder,
                conn,
                offer,
            } => Routed::Answer {
                sid: sid(&s)?,
                responder: user(&responder)?,
                conn,
                offer,
            },
            RoutedBody::Cancel { sid: s, reason } => Routed::Cancel {
                sid: sid(&s)?,
                reason,
            },
            RoutedBody::Deliver {
                conn,
                command,
                params,
            } => {
                if !DELIVERABLE.contains(&command.as_str()) {
                    return None;
                }
                Routed::Deliver {
                    conn,
                    line: Line::new(&command, TrId::PUSH, params),
                }
            }
            RoutedBody::Primed { sid: s } => Routed::Primed { sid: sid(&s)? },
            RoutedBody::Report {
                sid: s,
                conn,
                report,
            } => Routed::Report {
                sid: sid(&s)?,
                conn,
                report,
            },
        })
    }
}

/// What arrives from another node, decoded.
#[derive(Debug)]
pub(crate) enum Incoming {
    Presence(NodeId, UserName, Presence),
    /// A list change, with its place in the sender's sequence of list messages.
    List(NodeId, u64, StoreOp),
    Heartbeat {
        node: NodeId,
        rendezvous: SocketAddr,
        accepting: bool,
        lists: u64,
        /// The digest of its online users (`None` from a node that sends none).
        digest: Option<PresenceDigest>,
        beat: u64,
        part: u32,
        parts: u32,
        /// `None` in a heartbeat without the list.
        users: Option<Vec<(UserName, Presence)>>,
    },
    /// This node's connection to NATS was made, or made again after it was lost.
    Connected,
    Bye(NodeId),
    /// A node asks for the list of online users of one node (`Some`) or of every node.
    Want(NodeId, Option<NodeId>),
    Routed(NodeId, Routed),
    Session(NodeId, UserName, SessionId),
}

/// The driver's side of the cluster: publishes what the core says, hands it what other nodes
/// say, and keeps the membership.
pub(crate) struct ClusterLink {
    node: NodeId,
    /// Where clients reach this node (what other nodes send clients to with `XFR`).
    advertise: SocketAddr,
    outgoing: mpsc::UnboundedSender<(String, Vec<u8>)>,
    pub(crate) incoming: mpsc::UnboundedReceiver<Incoming>,
    members: Membership,
    publisher: tokio::task::JoinHandle<()>,
    /// How many list messages this node has published.
    lists_sent: u64,
    /// The highest list message number received from each node.
    lists_seen: HashMap<NodeId, u64>,
    /// Some list change may not have reached this node: the lists must be read again.
    resync_due: bool,
    /// Heartbeats sent.
    beats: u64,
    /// Other nodes' snapshots arriving in parts.
    snapshots: Assembler<(UserName, Presence)>,
    /// When this node's list goes out, and when to ask for another's.
    presence_lists: Lists,
}

impl ClusterLink {
    /// Connects to the NATS server of `connect` (in the background: a node starts while NATS
    /// is down, and reconnects after NATS restarts), subscribes, and starts the publisher.
    pub(crate) async fn start(
        connect: &ClusterConnect,
        node: NodeId,
        advertise: SocketAddr,
        static_peers: Vec<SocketAddr>,
    ) -> Result<ClusterLink, async_nats::Error> {
        let (in_tx, incoming) = mpsc::unbounded_channel();
        let on_event = in_tx.clone();
        let client = connect
            .options(format!("rendezvous-{:016x}", node.0))
            .event_callback(move |event| {
                let on_event = on_event.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            tracing::info!("cluster: connected to NATS");
                            let _ = on_event.send(Incoming::Connected);
                        }
                        async_nats::Event::Disconnected => {
                            tracing::warn!("cluster: lost the NATS connection; reconnecting");
                        }
                        other => tracing::warn!(event = %other, "cluster: NATS event"),
                    }
                }
            })
            .connect(connect.url.as_str())
            .await?;
        let everyone = client.subscribe(ALL).await?;
        let mine = client.subscribe(node_subject(node)).await?;
        tokio::spawn(async move {
            use futures_util::StreamExt as _;
            let mut both = futures_util::stream::select(everyone, mine);
            while let Some(message) = both.next().await {
                match decode(&message.subject, &message.payload) {
                    Some(decoded) if origin(&decoded) != Some(node) => {
                        if in_tx.send(decoded).is_err() {
                            return;
                        }
                    }
                    Some(_) => {}
                    None => tracing::debug!(subject = %message.subject,
                        "cluster: message not understood, dropped"),
                }
            }
        });
        let (outgoing, mut out_rx) = mpsc::unbounded_channel::<(String, Vec<u8>)>();
        let publisher = tokio::spawn(async move {
            while let Some((subject, payload)) = out_rx.recv().await {
                if let Err(e) = client.publish(subject.clone(), Bytes::from(payload)).await {
                    tracing::warn!(error = %e, subject, "cluster: cannot publish");
                }
            }
            let _ = tokio::time::timeout(BYE_FLUSH, client.flush()).await;
        });
        Ok(ClusterLink {
            node,
            advertise,
            outgoing,
            incoming,
            members: Membership::new(advertise, static_peers, NODE_TIMEOUT),
            publisher,
            lists_sent: 0,
            lists_seen: HashMap::new(),
            // The lists were read at start, before the subscription: what another node
            // changed in between is found by the resync that `Connected` asks for.
            resync_due: false,
            beats: 0,
            snapshots: Assembler::default(),
            presence_lists: Lists::new(NODE_TIMEOUT),
        })
    }

    fn publish<T: Serialize>(&self, subject: &str, message: &T) {
        match serde_json::to_vec(message) {
            Ok(payload) => {
                let _ = self.outgoing.send((subject.to_owned(), payload));
            }
            Err(e) => tracing::error!(error = %e, "cluster: cannot encode a message"),
        }
    }

    /// Publishes a message of the core.
    pub(crate) fn send(&mut self, message: ClusterMessage) {
        let node = self.node.0;
        match message {
            ClusterMessage::Presence { user, presence } => self.publish(
                PRESENCE,
                &PresenceMsg {
                    node,
                    user: user.to_string(),
                    presence: presence.code().to_owned(),
                },
            ),
            ClusterMessage::List(op) => {
                let (code, owner, other) = match op {
                    StoreOp::AddContact { owner, contact } => ("ADC", owner, contact),
                    StoreOp::RemoveContact { owner, contact } => ("REM", owner, contact),
                    StoreOp::Block { owner, blocked } => ("BLK", owner, blocked),
                    StoreOp::Allow { owner, blocked } => ("ALW", owner, blocked),
                    _ => return,
                };
                self.lists_sent += 1;
                self.publish(
                    LIST,
                    &ListMsg {
                        node,
                        seq: self.lists_sent,
                        op: code.to_owned(),
                        owner: owner.to_string(),
                        other: other.to_string(),
                    },
                );
            }
            ClusterMessage::SessionClaimed { user, session } => self.publish(
                SESSION,
                &SessionMsg {
                    node: self.node.0,
                    user: user.to_string(),
                    session: session.to_string(),
                },
            ),
            ClusterMessage::ToNode { node, message } => {
                if let Some(body) = RoutedBody::encode(message) {
                    let subject = node_subject(node);
                    self.publish(
                        &subject,
                        &RoutedMsg {
                            node: self.node.0,
                            body,
                        },
                    );
                }
            }
            other => tracing::error!(?other, "cluster message this driver does not know"),
        }
    }

    /// The heartbeat: this node's address and its online users.
    pub(crate) fn heartbeat(&mut self, core: &RendezvousServer) {
        let digest = core.local_digest();
        self.beats += 1;
        let parts: Vec<Option<Vec<(String, String)>>> = if self.presence_lists.due() {
            let users = core
                .local_presences()
                .into_iter()
                .map(|(name, p)| (name.to_string(), p.code().to_owned()))
                .collect();
            snapshot_parts::split(users).into_iter().map(Some).collect()
        } else {
            vec![None]
        };
        let count = u32::try_from(parts.len()).unwrap_or(u32::MAX);
        for (part, users) in (0..count).zip(parts) {
            self.publish(
                HEARTBEAT_SUBJECT,
                &HeartbeatMsg {
                    node: self.node.0,
                    rendezvous: self.advertise,
                    accepting: core.accepts_clients(),
                    lists: self.lists_sent,
                    digest: Some([digest.count, digest.sum]),
                    beat: self.beats,
                    part,
                    parts: count,
                    users,
                },
            );
        }
    }

    /// Asks node `of` (every node with `None`) for its list of online users, in its next
    /// heartbeat.
    fn want_lists(&self, of: Option<NodeId>) {
        self.publish(
            WANT,
            &WantMsg {
                node: self.node.0,
                of: of.map(|n| n.0),
            },
        );
    }

    /// Hands `message` to the core; a heartbeat also updates the membership. `true` when
    /// the set of members changed (the peer list must be refreshed).
    pub(crate) fn receive(
        &mut self,
        core: &mut RendezvousServer,
        message: Incoming,
        now: Instant,
    ) -> bool {
        match message {
            Incoming::Presence(node, user, presence) => {
                // A node we do not know yet counts from its first heartbeat, which carries
                // this too: a late presence from a node declared dead must not revive it.
                if self.members.contains(node) {
                    core.handle_remote_presence(node, &user, presence);
                }
                false
            }
            Incoming::List(node, seq, op) => {
                let seen = self.lists_seen.entry(node).or_default();
                *seen = (*seen).max(seq);
                core.handle_remote_list(&op);
                false
            }
            Incoming::Connected => {
                // Messages may have been lost while the connection was down: presence lists
                // from every node (ours to them too), and the contact lists from the database.
                self.want_lists(None);
                self.presence_lists.wanted = true;
                self.resync_due = true;
                false
            }
            Incoming::Want(_, of) => {
                if of.is_none_or(|of| of == self.node) {
                    self.presence_lists.wanted = true;
                }
                false
            }
            Incoming::Heartbeat {
                node,
                rendezvous,
                accepting,
                lists,
                digest,
                beat,
                part,
                parts,
                users,
            } => {
                let heard = self.members.heard(node, rendezvous, accepting, now);
                if heard.joined {
                    tracing::info!(node = format_args!("{:016x}", node.0), %rendezvous,
                        "cluster: node joined");
                    // Its users, and ours for it.
                    self.want_lists(None);
                    self.presence_lists.wanted = true;
                }
                // The heartbeat comes after the node's list messages (one publisher, one
                // subscription: NATS keeps their order), so a count above what arrived means
                // some were lost. The first heartbeat of a node sets where it starts.
                let seen = self.lists_seen.entry(node).or_insert(lists);
                if lists > *seen {
                    tracing::warn!(
                        node = format_args!("{:016x}", node.0),
                        missed = lists - *seen,
                        "cluster: list changes of a node were lost; reading the lists again"
                    );
                    *seen = lists;
                    self.resync_due = true;
                }
                if let Some(users) = users {
                    if let Some(users) = self.snapshots.add(node, beat, part, parts, users) {
                        core.handle_node_snapshot(node, &users);
                    }
                } else if let Some(theirs) = digest
                    && !heard.joined
                    && self
                        .presence_lists
                        .ask(node, theirs, core.remote_digest(node), now)
                {
                    tracing::info!(
                        node = format_args!("{:016x}", node.0),
                        "cluster: presence from that node was missed; asking for its list"
                    );
                    self.want_lists(Some(node));
                }
                heard.peers_changed
            }
            Incoming::Routed(node, message) => {
                core.handle_routed(now, node, message);
                false
            }
            Incoming::Session(_, user, session) => {
                core.handle_remote_session(&user, session);
                false
            }
            Incoming::Bye(node) => {
                self.lists_seen.remove(&node);
                self.snapshots.forget(node);
                if self.members.left(node) {
                    tracing::info!(node = format_args!("{:016x}", node.0), "cluster: node left");
                    core.handle_node_gone(node);
                    return true;
                }
                false
            }
        }
    }

    /// Whether the lists must be read from the database again (and forgets it: the driver
    /// asks again, with [`resync_failed`](Self::resync_failed), if the read fails).
    pub(crate) fn take_resync(&mut self) -> bool {
        std::mem::take(&mut self.resync_due)
    }

    /// The read the last [`take_resync`](Self::take_resync) asked for failed: try again
    /// (at the next heartbeat).
    pub(crate) fn resync_failed(&mut self) {
        self.resync_due = true;
    }

    /// Drops members silent for [`NODE_TIMEOUT`]; `true` if one was dropped.
    pub(crate) fn expire(&mut self, core: &mut RendezvousServer, now: Instant) -> bool {
        let dead = self.members.expire(now);
        for (node, rendezvous) in &dead {
            tracing::warn!(node = format_args!("{:016x}", node.0), %rendezvous,
                timeout_s = NODE_TIMEOUT.as_secs(),
                "cluster: node gone (no heartbeat); its users are offline here");
            core.handle_node_gone(*node);
            self.snapshots.forget(*node);
        }
        !dead.is_empty()
    }

    /// Replaces the static peer list (`NodeControl::set_peer_nodes`).
    pub(crate) fn set_static_peers(&mut self, peers: Vec<SocketAddr>) {
        self.members.set_static_peers(peers);
    }

    /// The peer list for `XFR`: the static list and every live member that accepts clients.
    pub(crate) fn peers(&self) -> Vec<SocketAddr> {
        self.members.peers()
    }

    /// Live members other than this node.
    pub(crate) fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Says goodbye (other nodes drop this node's users at once instead of after
    /// [`NODE_TIMEOUT`]) and waits a little for it to leave.
    pub(crate) async fn stop(self) {
        self.publish(BYE, &ByeMsg { node: self.node.0 });
        drop(self.outgoing);
        let _ = tokio::time::timeout(BYE_FLUSH, self.publisher).await;
    }
}

/// The node a message comes from.
fn origin(message: &Incoming) -> Option<NodeId> {
    match message {
        Incoming::Presence(node, ..)
        | Incoming::Heartbeat { node, .. }
        | Incoming::Bye(node)
        | Incoming::Want(node, _)
        | Incoming::Routed(node, _)
        | Incoming::Session(node, ..) => Some(*node),
        Incoming::List(node, ..) => Some(*node),
        Incoming::Connected => None,
    }
}

fn presence(code: &str) -> Option<Presence> {
    Presence::from_code(code)
}

fn decode(subject: &str, payload: &[u8]) -> Option<Incoming> {
    match subject {
        PRESENCE => {
            let m: PresenceMsg = serde_json::from_slice(payload).ok()?;
            Some(Incoming::Presence(
                NodeId(m.node),
                UserName::parse(&m.user).ok()?,
                presence(&m.presence)?,
            ))
        }
        LIST => {
            let m: ListMsg = serde_json::from_slice(payload).ok()?;
            let (owner, other) = (
                UserName::parse(&m.owner).ok()?,
                UserName::parse(&m.other).ok()?,
            );
            let op = match m.op.as_str() {
                "ADC" => StoreOp::AddContact {
                    owner,
                    contact: other,
                },
                "REM" => StoreOp::RemoveContact {
                    owner,
                    contact: other,
                },
                "BLK" => StoreOp::Block {
                    owner,
                    blocked: other,
                },
                "ALW" => StoreOp::Allow {
                    owner,
                    blocked: other,
                },
                _ => return None,
            };
            Some(Incoming::List(NodeId(m.node), m.seq, op))
        }
        HEARTBEAT_SUBJECT => {
            let m: HeartbeatMsg = serde_json::from_slice(payload).ok()?;
            let users = m.users.map(|users| {
                users
                    .iter()
                    .filter_map(|(name, p)| Some((UserName::parse(name).ok()?, presence(p)?)))
                    .collect()
            });
            Some(Incoming::Heartbeat {
                node: NodeId(m.node),
                rendezvous: m.rendezvous,
                accepting: m.accepting,
                lists: m.lists,
                digest: m.digest.map(|[count, sum]| PresenceDigest { count, sum }),
                beat: m.beat,
                part: m.part,
                parts: m.parts,
                users,
            })
        }
        SESSION => {
            let m: SessionMsg = serde_json::from_slice(payload).ok()?;
            Some(Incoming::Session(
                NodeId(m.node),
                UserName::parse(&m.user).ok()?,
                m.session.parse().ok()?,
            ))
        }
        BYE => {
            let m: ByeMsg = serde_json::from_slice(payload).ok()?;
            Some(Incoming::Bye(NodeId(m.node)))
        }
        WANT => {
            let m: WantMsg = serde_json::from_slice(payload).ok()?;
            Some(Incoming::Want(NodeId(m.node), m.of.map(NodeId)))
        }
        _ if subject.starts_with("p2p.rdv.to.") => {
            let m: RoutedMsg = serde_json::from_slice(payload).ok()?;
            Some(Incoming::Routed(NodeId(m.node), m.body.decode()?))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn messages_decode_as_they_were_encoded() {
        let hb = serde_json::to_vec(&HeartbeatMsg {
            node: 7,
            rendezvous: "127.0.0.1:1863".parse().unwrap(),
            accepting: true,
            lists: 4,
            digest: Some([1, 99]),
            beat: 12,
            part: 1,
            parts: 2,
            users: Some(vec![
                ("alice".into(), "AWY".into()),
                ("bad name!".into(), "NLN".into()),
            ]),
        })
        .unwrap();
        let Some(Incoming::Heartbeat {
            node,
            lists,
            digest,
            beat,
            part,
            parts,
            users,
            ..
        }) = decode(HEARTBEAT_SUBJECT, &hb)
        else {
            panic!("not a heartbeat");
        };
        assert_eq!((node, lists, beat, part, parts), (NodeId(7), 4, 12, 1, 2));
        assert_eq!(digest, Some(PresenceDigest { count: 1, sum: 99 }));
        // A heartbeat from before the parts is one whole part.
        let old = br#"{"node":7,"rendezvous":"127.0.0.1:1863","users":[]}"#;
        assert!(matches!(
            decode(HEARTBEAT_SUBJECT, old),
            Some(Incoming::Heartbeat {
                part: 0,
                parts: 1,
                ..
            })
        ));
        // The malformed name is dropped, not the whole heartbeat.
        assert_eq!(
            users,
            Some(vec![(UserName::parse("alice").unwrap(), Presence::Away)])
        );
        // A heartbeat without the list is membership only, not "nobody online there".
        let bare = br#"{"node":7,"rendezvous":"127.0.0.1:1863","accepting":true}"#;
        let Some(Incoming::Heartbeat { users, .. }) = decode(HEARTBEAT_SUBJECT, bare) else {
            panic!("not a heartbeat");
        };
        assert_eq!(users, None);
        assert!(matches!(
            decode(WANT, br#"{"node":5}"#),
            Some(Incoming::Want(NodeId(5), None))
        ));
        assert!(matches!(
            decode(WANT, br#"{"node":5,"of":6}"#),
            Some(Incoming::Want(NodeId(5), Some(NodeId(6))))
        ));
        let list = br#"{"node":1,"seq":2,"op":"BLK","owner":"bob","other":"alice"}"#;
        assert!(matches!(
            decode(LIST, list),
            Some(Incoming::List(NodeId(1), 2, StoreOp::Block { .. }))
        ));
        // From a node that numbers nothing (before `seq`): number 0, never a gap.
        let list = br#"{"node":1,"op":"ADC","owner":"bob","other":"alice"}"#;
        assert!(matches!(
            decode(LIST, list),
            Some(Incoming::List(NodeId(1), 0, StoreOp::AddContact { .. }))
        ));
        assert!(
            decode(
                LIST,
                br#"{"node":1,"op":"XXX","owner":"bob","other":"alice"}"#
            )
            .is_none()
        );
        assert!(decode("p2p.rdv.other", b"{}").is_none());
        // A routed line: only the pushes a node may deliver for another.
        let itr = br#"{"node":3,"kind":"deliver","conn":9,"command":"ITR","params":["x"]}"#;
        let Some(Incoming::Routed(NodeId(3), Routed::Deliver { conn: 9, line })) =
            decode("p2p.rdv.to.0000000000000001", itr)
        else {
            panic!("not a delivery");
        };
        assert_eq!(line.command.as_str(), "ITR");
        let out = br#"{"node":3,"kind":"deliver","conn":9,"command":"OUT","params":["x"]}"#;
        assert!(decode("p2p.rdv.to.0000000000000001", out).is_none());
        let ring = serde_json::to_vec(&RoutedMsg {
            node: 4,
            body: RoutedBody::encode(Routed::Cancel {
                sid: "00112233445566778899aabbccddeeff".parse().unwrap(),
                reason: "declined".into(),
            })
            .unwrap(),
        })
        .unwrap();
        assert!(matches!(
            decode("p2p.rdv.to.0000000000000001", &ring),
            Some(Incoming::Routed(NodeId(4), Routed::Cancel { .. }))
        ));
    }
}
