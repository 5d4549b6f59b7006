//! Invitations and introductions between users on different nodes (docs/CLUSTER.md).
//!
//! The **inviter's node** owns the invitation and makes the introduction: it rings the
//! invitee's node ([`Routed::Ring`], with the inviter's offer), which rings its sessions and
//! sends back the answer ([`Routed::Answer`], with the invitee's offer) or a cancel
//! ([`Routed::Cancel`]). The inviter's node then issues both switchboard tickets for its own
//! switchboard, so the two tickets are redeemable where both `ITR` lines send the peers, and
//! sends the invitee's `ITR` line to its node to deliver ([`Routed::Deliver`]). The invitee's
//! session is known on the inviter's node by a *virtual* connection id, so the introduced
//! session and `PRM` work as for two local sessions; a `PRM` from the invitee's side goes back
//! as [`Routed::Primed`].
//!
//! Two invitations that cross (each user invited the other from its own node before either
//! ring arrived) are paired like on one node: the node whose session id is the smaller one
//! introduces, the other drops its invitation without a word (its user gets the `ITR`).

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use super::cluster::{ClusterMessage, NodeId};
use super::directory::UserId;
use super::intro::{Invite, Offer};
use super::{ConnId, RendezvousServer, SessionId};
use crate::rendezvous::telemetry::Report;
use crate::rendezvous::types::UserName;
use crate::rendezvous::wire::{Line, TrId};

/// A message for one other node.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Routed {
    /// `from` (session `from_conn` on the sending node) invites `to`, who is on the receiving
    /// node.
    Ring {
        /// The invitation.
        sid: SessionId,
        /// The inviter.
        from: UserName,
        /// The inviting session, on the sending node.
        from_conn: u64,
        /// The invitee.
        to: UserName,
        /// The inviter's offer, as its `INV` parameters (after the name).
        offer: Vec<String>,
    },
    /// `responder`'s session `conn` on the sending node answered invitation `sid`.
    Answer {
        /// The invitation.
        sid: SessionId,
        /// Who answered.
        responder: UserName,
        /// Its session on the sending node.
        conn: u64,
        /// Its offer, as its `ANS` parameters (after the sid).
        offer: Vec<String>,
    },
    /// Invitation `sid` is over (`declined`, `offline`, `timeout`, `answered`).
    Cancel {
        /// The invitation.
        sid: SessionId,
        /// The `CAN` reason.
        reason: String,
    },
    /// Send `line` (a push) to session `conn` of the receiving node.
    Deliver {
        /// The session, on the receiving node.
        conn: u64,
        /// The line.
        line: Line,
    },
    /// The invitee's side of introduced session `sid` has primed its NAT.
    Primed {
        /// The introduced session.
        sid: SessionId,
    },
    /// The invitee's session `conn` on the sending node reports the outcome of introduced
    /// session `sid` (`RPT`): the receiving node, which introduced it, counts it.
    Report {
        /// The introduced session.
        sid: SessionId,
        /// The reporting session, on the sending node.
        conn: u64,
        /// The report, as its `RPT` parameters (after the sid).
        report: Vec<String>,
    },
}

/// A ring here for an invitation another node owns.
#[derive(Debug, Clone)]
struct RemoteRing {
    origin: NodeId,
    from: UserId,
    to: UserId,
    rung: Vec<ConnId>,
}

/// The state of introductions that span nodes.
#[derive(Debug, Default)]
pub(super) struct RemoteIntros {
    /// Virtual connection ids for sessions on other nodes, and back.
    virtual_conns: HashMap<ConnId, (NodeId, u64)>,
    by_remote: HashMap<(NodeId, u64), ConnId>,
    /// Counts down from `u64::MAX`: the driver's ids count up from 1 and never meet these.
    next_virtual: u64,
    /// Rings here for invitations owned by other nodes.
    rings: HashMap<SessionId, RemoteRing>,
    /// Introductions owned by another node that a session here answered: for its `PRM`,
    /// its `RPT` and a late cancel.
    answered: HashMap<SessionId, (NodeId, ConnId)>,
    /// Those of `answered` whose `RPT` went to their node (a second one is refused here).
    reported: HashSet<SessionId>,
}

impl RemoteIntros {
    /// The node and remote id behind a virtual connection.
    pub(super) fn remote_of(&self, conn: ConnId) -> Option<(NodeId, u64)> {
        if self.virtual_conns.is_empty() {
            return None;
        }
        self.virtual_conns.get(&conn).copied()
    }

    /// Forgets the reports of sessions no longer in `answered`.
    fn forget_unanswered_reports(&mut self) {
        let answered = &self.answered;
        self.reported.retain(|sid| answered.contains_key(sid));
    }

    fn virtual_conn(&mut self, node: NodeId, remote: u64) -> ConnId {
        if let Some(&conn) = self.by_remote.get(&(node, remote)) {
            return conn;
        }
        if self.next_virtual == 0 {
            self.next_virtual = u64::MAX;
        }
        let conn = ConnId(self.next_virtual);
        self.next_virtual -= 1;
        self.virtual_conns.insert(conn, (node, remote));
        self.by_remote.insert((node, remote), conn);
        conn
    }
}

impl RendezvousServer {
    fn route(&mut self, node: NodeId, message: Routed) {
        self.announce(ClusterMessage::ToNode { node, message });
    }

    /// Whether `conn` is a session on another node (a virtual id).
    pub(super) fn is_remote_conn(&self, conn: ConnId) -> bool {
        self.remote_intros.remote_of(conn).is_some()
    }

    /// The other nodes to ring `user` on: every one where it shows online (a user with a
    /// device on each of two nodes is rung on both), in a fixed order.
    pub(super) fn remote_nodes_of(&self, user: UserId) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = self
            .dir
            .user(user)
            .remote
            .iter()
            .filter(|(_, p)| p.as_seen() != crate::rendezvous::types::Presence::Offline)
            .map(|(n, _)| *n)
            .collect();
        nodes.sort_unstable();
        nodes
    }

    /// An invitation of `from` (session `conn`) to `to`, who shows online on `node`: the
    /// ring goes there too.
    pub(super) fn ring_remote(
        &mut self,
        node: NodeId,
        sid: SessionId,
        invite: &Invite,
        conn: ConnId,
    ) {
        let mut offer = Vec::new();
        invite.offer.write(&mut offer);
        let message = Routed::Ring {
            sid,
            from: self.dir.user(invite.from).name.clone(),
            from_conn: conn.0,
            to: self.dir.user(invite.to).name.clone(),
            offer,
        };
        self.route(node, message);
    }

    /// The ring here for an invitation from `from` to `me` that another node owns, if any.
    pub(super) fn remote_ring_between(&self, from: UserId, me: UserId) -> Option<SessionId> {
        self.remote_intros
            .rings
            .iter()
            .find(|(_, r)| r.from == from && r.to == me)
            .map(|(sid, _)| *sid)
    }

    /// Whether `sid` is a ring here for `me` from another node's invitation.
    pub(super) fn remote_ring_between_sid(&self, sid: SessionId, me: UserId) -> bool {
        self.remote_intros
            .rings
            .get(&sid)
            .is_some_and(|r| r.to == me)
    }

    /// `me` (session `conn`) answers the remote ring `sid` with `offer`; `false` if there is
    /// no such ring for `me` or the pair may no longer be introduced (the owner is told).
    pub(super) fn answer_remote(
        &mut self,
        me: UserId,
        conn: ConnId,
        sid: SessionId,
        offer: &Offer,
    ) -> bool {
        let Some(ring) = self.remote_intros.rings.get(&sid).filter(|r| r.to == me) else {
            return false;
        };
        let ring = ring.clone();
        self.remote_intros.rings.remove(&sid);
        if !self.dir.mutual_unblocked(ring.from, me) {
            self.cancel_rung(&ring.rung, conn, sid, "offline");
            self.route(
                ring.origin,
                Routed::Cancel {
                    sid,
                    reason: "offline".into(),
                },
            );
            return false;
        }
        self.cancel_rung(&ring.rung, conn, sid, "answered");
        let mut params = Vec::new();
        offer.write(&mut params);
        self.route(
            ring.origin,
            Routed::Answer {
                sid,
                responder: self.dir.user(me).name.clone(),
                conn: conn.0,
                offer: params,
            },
        );
        self.remote_intros.answered.insert(sid, (ring.origin, conn));
        true
    }

    /// `me` declines the remote ring `sid`; `false` if there is none for `me`.
    pub(super) fn decline_remote(&mut self, me: UserId, conn: ConnId, sid: SessionId) -> bool {
        let Some(ring) = self.remote_intros.rings.get(&sid).filter(|r| r.to == me) else {
            return false;
        };
        let ring = ring.clone();
        self.remote_intros.rings.remove(&sid);
        self.cancel_rung(&ring.rung, conn, sid, "answered");
        self.route(
            ring.origin,
            Routed::Cancel {
                sid,
                reason: "declined".into(),
            },
        );
        true
    }

    /// `CAN 0 sid reason` to each of `rung` but `except`.
    fn cancel_rung(&mut self, rung: &[ConnId], except: ConnId, sid: SessionId, reason: &str) {
        for &c in rung.iter().filter(|&&c| c != except) {
            if self.conns.contains_key(&c) {
                let line = Line::new("CAN", TrId::PUSH, [sid.to_string(), reason.to_owned()]);
                self.send(c, line);
            }
        }
    }

    /// A `PRM` from `conn` for a session another node introduced: the answer, and the news to
    /// that node. `false` if `sid` is not such a session of `conn`.
    pub(super) fn primed_remote(&mut self, conn: ConnId, sid: SessionId, trid: TrId) -> bool {
        match self.remote_intros.answered.get(&sid) {
            Some(&(node, c)) if c == conn => {
                self.send(conn, Line::new("PRM", trid, [sid.to_string()]));
                self.route(node, Routed::Primed { sid });
                true
            }
            _ => false,
        }
    }

    /// An `RPT` from `conn` for a session another node introduced: forwarded there, where
    /// it is counted. `None` if `sid` is not such a session of `conn`; `Some(false)` if
    /// `conn` already reported it.
    pub(super) fn report_remote(
        &mut self,
        conn: ConnId,
        sid: SessionId,
        report: &[String],
    ) -> Option<bool> {
        let &(node, c) = self.remote_intros.answered.get(&sid)?;
        if c != conn {
            return None;
        }
        if !self.remote_intros.reported.insert(sid) {
            return Some(false);
        }
        self.route(
            node,
            Routed::Report {
                sid,
                conn: conn.0,
                report: report.to_vec(),
            },
        );
        Some(true)
    }

    /// The session `conn` here is gone: remote rings stop ringing it (one that rings nowhere
    /// any more is cancelled at its owner), and sessions it answered are forgotten.
    pub(super) fn forget_remote_of(&mut self, conn: ConnId) {
        if self.remote_intros.rings.is_empty() && self.remote_intros.answered.is_empty() {
            return;
        }
        let mut empty = Vec::new();
        for (sid, ring) in &mut self.remote_intros.rings {
            if ring.rung.contains(&conn) {
                ring.rung.retain(|&c| c != conn);
                if ring.rung.is_empty() {
                    empty.push((*sid, ring.origin));
                }
            }
        }
        for (sid, origin) in empty {
            self.remote_intros.rings.remove(&sid);
            self.route(
                origin,
                Routed::Cancel {
                    sid,
                    reason: "offline".into(),
                },
            );
        }
        self.remote_intros.answered.retain(|_, (_, c)| *c != conn);
        self.remote_intros.forget_unanswered_reports();
    }

    /// Node `node` is gone: its rings here are cancelled, invitations rung there are
    /// cancelled for their inviters, and its virtual sessions are forgotten.
    pub(super) fn forget_remote_node(&mut self, node: NodeId) {
        let rings: Vec<(SessionId, RemoteRing)> = self
            .remote_intros
            .rings
            .iter()
            .filter(|(_, r)| r.origin == node)
            .map(|(s, r)| (*s, r.clone()))
            .collect();
        for (sid, ring) in rings {
            self.remote_intros.rings.remove(&sid);
            self.cancel_rung(&ring.rung, ConnId(0), sid, "offline");
        }
        self.remote_intros.answered.retain(|_, (n, _)| *n != node);
        self.remote_intros.forget_unanswered_reports();
        for sid in self.intros.rung_on(node) {
            self.stop_ringing_on(sid, node);
        }
        let ri = &mut self.remote_intros;
        ri.virtual_conns.retain(|_, (n, _)| *n != node);
        ri.by_remote.retain(|(n, _), _| *n != node);
    }

    /// A message from node `node` for this one.
    pub fn handle_routed(&mut self, now: Instant, node: NodeId, message: Routed) {
        self.step += 1;
        match message {
            Routed::Ring {
                sid,
                from,
                from_conn,
                to,
                offer,
            } => self.remote_ring(now, node, sid, (&from, from_conn), &to, &offer),
            Routed::Answer {
                sid,
                responder,
                conn,
                offer,
            } => self.remote_answer(now, node, sid, &responder, conn, &offer),
            Routed::Cancel { sid, reason } => self.remote_cancel(node, sid, &reason),
            Routed::Deliver { conn, line } => {
                let conn = ConnId(conn);
                if self.conns.contains_key(&conn) && !self.is_remote_conn(conn) {
                    self.send(conn, line);
                }
            }
            Routed::Primed { sid } => {
                if let Some((_, local)) = self.sessions_local_peer(sid, now)
                    && self.conns.contains_key(&local)
                {
                    self.send(local, Line::new("PRM", TrId::PUSH, [sid.to_string()]));
                }
            }
            Routed::Report { sid, conn, report } => {
                // Counted as from the invitee's virtual session here; a malformed, unknown
                // or second report is dropped (its node answered the client already).
                if let Some(&v) = self.remote_intros.by_remote.get(&(node, conn))
                    && let Ok(report) = Report::parse(&report)
                {
                    let _ = self.sessions.report(sid, v, now, report);
                }
            }
        }
    }

    fn remote_ring(
        &mut self,
        now: Instant,
        node: NodeId,
        sid: SessionId,
        (from, from_conn): (&UserName, u64),
        to: &UserName,
        offer: &[String],
    ) {
        let cancel = |reason: &str| Routed::Cancel {
            sid,
            reason: reason.to_owned(),
        };
        let (Some(from), Some(to), Ok(offer)) =
            (self.dir.id(from), self.dir.id(to), Offer::parse(offer))
        else {
            self.route(node, cancel("offline"));
            return;
        };
        if !self.dir.mutual_unblocked(from, to) {
            self.route(node, cancel("offline"));
            return;
        }
        // Crossing invitations: the smaller session id wins, on either node.
        if let Some(mine) = self.intros.rung_between(to, from, node) {
            if let Some(invite) = self.intros.remove(mine) {
                // Either way this invitation is over on the invitee's other devices.
                self.end_other_rings(&invite, mine, node);
                if mine.0 < sid.0 {
                    let v = self.remote_intros.virtual_conn(node, from_conn);
                    let initiator = (invite.from, invite.from_conn, &invite.offer);
                    self.introduce(now, mine, initiator, (from, v, &offer));
                } else {
                    // `node` introduces, with its `sid`, when our ring reaches it: our
                    // inviting session is then its peer there, for `PRM` and `RPT` as if it
                    // had answered.
                    self.remote_intros
                        .answered
                        .insert(sid, (node, invite.from_conn));
                }
            }
            return;
        }
        let rung = self.ringable(to);
        if rung.is_empty() {
            self.route(node, cancel("offline"));
            return;
        }
        let ring = Line::new(
            "RNG",
            TrId::PUSH,
            [sid.to_string(), self.dir.user(from).name.to_string()],
        );
        for &c in &rung {
            self.send(c, ring.clone());
        }
        self.remote_intros.rings.insert(
            sid,
            RemoteRing {
                origin: node,
                from,
                to,
                rung,
            },
        );
    }

    fn remote_answer(
        &mut self,
        now: Instant,
        node: NodeId,
        sid: SessionId,
        responder: &UserName,
        conn: u64,
        offer: &[String],
    ) {
        let responder = self.dir.id(responder);
        let ours = self
            .intros
            .get(sid)
            .is_some_and(|i| i.remote.contains(&node) && Some(i.to) == responder);
        let (true, Some(responder), Ok(offer)) = (ours, responder, Offer::parse(offer)) else {
            return;
        };
        let Some(invite) = self.intros.remove(sid) else {
            return;
        };
        if !self.conns.contains_key(&invite.from_conn)
            || !self.dir.mutual_unblocked(invite.from, responder)
        {
            self.cancel_rung(&[invite.from_conn], ConnId(0), sid, "offline");
            self.cancel_rung(&invite.rung, ConnId(0), sid, "offline");
            self.cancel_remote_invite(&invite, sid, "offline");
            return;
        }
        self.end_other_rings(&invite, sid, node);
        let v = self.remote_intros.virtual_conn(node, conn);
        let initiator = (invite.from, invite.from_conn, &invite.offer);
        self.introduce(now, sid, initiator, (responder, v, &offer));
    }

    fn remote_cancel(&mut self, node: NodeId, sid: SessionId, reason: &str) {
        if self
            .intros
            .get(sid)
            .is_some_and(|i| i.remote.contains(&node))
        {
            if reason == "declined" {
                // Declined on one device: declined for the inviter, over for the others.
                if let Some(invite) = self.intros.remove(sid) {
                    self.cancel_rung(&[invite.from_conn], ConnId(0), sid, reason);
                    self.end_other_rings(&invite, sid, node);
                }
            } else {
                // Nobody left to ring there: the invitation goes on where it still rings.
                self.stop_ringing_on(sid, node);
            }
        } else if let Some(ring) = self.remote_intros.rings.remove(&sid) {
            self.cancel_rung(&ring.rung, ConnId(0), sid, reason);
        } else if let Some((_, conn)) = self.remote_intros.answered.remove(&sid) {
            self.remote_intros.reported.remove(&sid);
            self.cancel_rung(&[conn], ConnId(0), sid, "offline");
        }
    }

    /// Tells the nodes an invitation rang on that it is over (answered or declined on
    /// another device, the inviter left, it timed out).
    pub(super) fn cancel_remote_invite(&mut self, invite: &Invite, sid: SessionId, reason: &str) {
        for &node in &invite.remote {
            self.route(
                node,
                Routed::Cancel {
                    sid,
                    reason: reason.to_owned(),
                },
            );
        }
    }

    /// Invitation `sid` (`invite`, taken out) was answered or declined on node `node`: the
    /// sessions it rang here and on the other nodes get `CAN 0 sid answered`.
    fn end_other_rings(&mut self, invite: &Invite, sid: SessionId, node: NodeId) {
        self.cancel_rung(&invite.rung, ConnId(0), sid, "answered");
        for &other in invite.remote.iter().filter(|&&n| n != node) {
            self.route(
                other,
                Routed::Cancel {
                    sid,
                    reason: "answered".into(),
                },
            );
        }
    }

    /// Invitation `sid` no longer rings on `node` (nobody left to ring there, or the node is
    /// gone); if it rings nowhere any more, its inviter gets `CAN 0 sid offline`.
    fn stop_ringing_on(&mut self, sid: SessionId, node: NodeId) {
        let Some(invite) = self.intros.get(sid) else {
            return;
        };
        let rings_elsewhere = !invite.rung.is_empty() || invite.remote.iter().any(|&n| n != node);
        if rings_elsewhere {
            self.intros.stop_ringing_on(sid, node);
        } else if let Some(invite) = self.intros.remove(sid) {
            self.cancel_rung(&[invite.from_conn], ConnId(0), sid, "offline");
        }
    }

    /// Forgets what spans nodes (shutdown).
    pub(super) fn clear_remote_intros(&mut self) {
        self.remote_intros = RemoteIntros::default();
    }
}
