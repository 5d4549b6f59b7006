//! Introductions: `INV`, `RNG`, `ANS`, `DEC`, `CAN`, `ITR` and switchboard tickets
//! (docs/PROTOCOL.md section 8). What happens after `ITR` (`PRM`) is in `sessions`.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::cluster::NodeId;
use super::conn::params;
use super::directory::UserId;
use super::writes::Undo;
use super::{
    ConnId, Handled, INVALID_PARAMETER, Output, Refusal, RendezvousServer, SessionId, Ticket,
    USER_OFFLINE,
};
use crate::rendezvous::offer::{AllocKind, CandidateKind, OfferNat};
use crate::rendezvous::types::Presence;
use crate::rendezvous::wire::{Line, TrId};

/// The most `cand=` parameters in an offer.
pub const MAX_CANDIDATES: usize = 8;
/// What a peer says about itself in `INV` or `ANS`, checked. Its `key` is the device identity
/// key of the connection (see `devices`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Offer {
    key: [u8; 32],
    nat: Option<OfferNat>,
    alloc: Option<AllocKind>,
    cands: Vec<(CandidateKind, SocketAddr)>,
}

impl Offer {
    /// Parses `key= [nat=] [alloc=] [cand=]...`: the key is required, each of the others at
    /// most once (candidates at most [`MAX_CANDIDATES`] times), nothing else allowed.
    pub(super) fn parse(params: &[String]) -> Result<Offer, Refusal> {
        let (mut key, mut nat, mut alloc, mut cands) = (None, None, None, Vec::new());
        for param in params {
            let (name, value) = param.split_once('=').ok_or(INVALID_PARAMETER)?;
            let fresh = match name {
                "key" => {
                    // A small-order key would let anyone pass as the offer's device.
                    let k = crate::identity::parse_identity_key(value);
                    key.replace(k.ok_or(INVALID_PARAMETER)?).is_none()
                }
                "nat" => nat
                    .replace(value.parse().map_err(|_| INVALID_PARAMETER)?)
                    .is_none(),
                "alloc" => alloc
                    .replace(value.parse().map_err(|_| INVALID_PARAMETER)?)
                    .is_none(),
                "cand" => {
                    let (kind, addr) = value.split_once('/').ok_or(INVALID_PARAMETER)?;
                    let kind: CandidateKind = kind.parse().map_err(|_| INVALID_PARAMETER)?;
                    let addr: SocketAddr = addr.parse().map_err(|_| INVALID_PARAMETER)?;
                    cands.push((kind, addr));
                    cands.len() <= MAX_CANDIDATES
                }
                _ => false,
            };
            if !fresh {
                return Err(INVALID_PARAMETER);
            }
        }
        Ok(Offer {
            key: key.ok_or(INVALID_PARAMETER)?,
            nat,
            alloc,
            cands,
        })
    }

    /// Appends the offer's parameters, in canonical form.
    pub(super) fn write(&self, out: &mut Vec<String>) {
        out.push(format!("key={}", B64.encode(self.key)));
        if let Some(nat) = self.nat {
            out.push(format!("nat={nat}"));
        }
        if let Some(alloc) = self.alloc {
            out.push(format!("alloc={alloc}"));
        }
        for (kind, addr) in &self.cands {
            out.push(format!("cand={kind}/{addr}"));
        }
    }
}

/// An invitation waiting for `ANS` or `DEC`.
#[derive(Debug, Clone)]
pub(super) struct Invite {
    pub(super) from: UserId,
    /// The inviting session.
    pub(super) from_conn: ConnId,
    pub(super) to: UserId,
    /// The sessions of `to` it rings here (those still logged in).
    pub(super) rung: Vec<ConnId>,
    pub(super) offer: Offer,
    deadline: Instant,
    /// The other nodes it rings on, those where `to` shows online (`remote_intro.rs`); a
    /// node leaves the list when it has nobody left to ring.
    pub(super) remote: Vec<NodeId>,
}

/// Pending invitations and their indexes.
#[derive(Debug, Default)]
pub(super) struct Introductions {
    invites: HashMap<SessionId, Invite>,
    /// `(inviter, invitee)` to their invitations, oldest first (one per inviting session).
    by_pair: HashMap<(UserId, UserId), Vec<SessionId>>,
    /// The invitations each session is in, as the inviter or rung (only sessions with one).
    by_conn: HashMap<ConnId, Vec<SessionId>>,
    /// Deadlines in creation order (the timeout is constant); entries may be stale.
    deadlines: VecDeque<(Instant, SessionId)>,
}

impl Introductions {
    fn insert(&mut self, sid: SessionId, invite: Invite) {
        self.by_pair
            .entry((invite.from, invite.to))
            .or_default()
            .push(sid);
        for &conn in std::iter::once(&invite.from_conn).chain(&invite.rung) {
            self.by_conn.entry(conn).or_default().push(sid);
        }
        self.deadlines.push_back((invite.deadline, sid));
        self.invites.insert(sid, invite);
    }

    /// Forgets `sid` and its index entries.
    pub(super) fn remove(&mut self, sid: SessionId) -> Option<Invite> {
        let invite = self.invites.remove(&sid)?;
        let pair = (invite.from, invite.to);
        if let Some(list) = self.by_pair.get_mut(&pair) {
            list.retain(|s| *s != sid);
            if list.is_empty() {
                self.by_pair.remove(&pair);
            }
        }
        for &conn in std::iter::once(&invite.from_conn).chain(&invite.rung) {
            self.unlink(conn, sid);
        }
        Some(invite)
    }

    /// Drops `sid` from `conn`'s index entry.
    fn unlink(&mut self, conn: ConnId, sid: SessionId) {
        if let Some(list) = self.by_conn.get_mut(&conn) {
            list.retain(|s| *s != sid);
            if list.is_empty() {
                self.by_conn.remove(&conn);
            }
        }
    }

    /// The oldest invitation from `from` to `to`, from any session.
    fn first_between(&self, from: UserId, to: UserId) -> Option<SessionId> {
        self.by_pair.get(&(from, to))?.first().copied()
    }

    /// The invitation `conn` (a session of `from`) opened to `to`.
    fn opened_by(&self, conn: ConnId, from: UserId, to: UserId) -> Option<SessionId> {
        let list = self.by_pair.get(&(from, to))?;
        list.iter()
            .copied()
            .find(|sid| self.invites.get(sid).is_some_and(|i| i.from_conn == conn))
    }

    /// A pending invitation.
    pub(super) fn get(&self, sid: SessionId) -> Option<&Invite> {
        self.invites.get(&sid)
    }

    /// The invitations rung on node `node`.
    pub(super) fn rung_on(&self, node: NodeId) -> Vec<SessionId> {
        let mut sids: Vec<SessionId> = self
            .invites
            .iter()
            .filter(|(_, i)| i.remote.contains(&node))
            .map(|(s, _)| *s)
            .collect();
        sids.sort_unstable_by_key(|s| s.0);
        sids
    }

    /// The invitation from `from` to `to` rung on node `node`, if any.
    pub(super) fn rung_between(&self, from: UserId, to: UserId, node: NodeId) -> Option<SessionId> {
        self.by_pair.get(&(from, to))?.iter().copied().find(|sid| {
            self.invites
                .get(sid)
                .is_some_and(|i| i.remote.contains(&node))
        })
    }

    /// Invitation `sid` no longer rings on node `node`.
    pub(super) fn stop_ringing_on(&mut self, sid: SessionId, node: NodeId) {
        if let Some(invite) = self.invites.get_mut(&sid) {
            invite.remote.retain(|&n| n != node);
        }
    }

    /// Puts an earlier offer back.
    pub(super) fn set_offer(&mut self, sid: SessionId, offer: Offer) {
        if let Some(invite) = self.invites.get_mut(&sid) {
            invite.offer = offer;
        }
    }

    /// The earliest deadline (possibly of an invitation already gone: an early wake-up).
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.front().map(|(at, _)| *at)
    }

    /// Pending invitations.
    pub(super) fn len(&self) -> usize {
        self.invites.len()
    }
}

/// Parses a session id: 32 lower- or upper-case hex digits.
pub(super) fn parse_sid(text: &str) -> Option<SessionId> {
    if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(SessionId(out))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One side of an introduction: the user, its session, and its offer.
type Side<'a> = (UserId, ConnId, &'a Offer);

impl RendezvousServer {
    /// Whether `me` may be introduced to `target` now: mutual contacts, no block either way,
    /// and `target` shown online (some session of it has set a state other than `HDN`).
    fn can_introduce(&self, me: UserId, target: UserId) -> bool {
        self.dir.mutual_unblocked(me, target)
            && self.dir.user(target).presence.as_seen() != Presence::Offline
    }

    /// The sessions of `user` that can take an invitation: those that have set a presence
    /// with `CHG`, other than `HDN`.
    pub(super) fn ringable(&self, user: UserId) -> Vec<ConnId> {
        let sessions = &self.dir.user(user).sessions;
        sessions
            .iter()
            .copied()
            .filter(|c| {
                self.conns
                    .get(c)
                    .is_some_and(|c| c.presence.as_seen() != Presence::Offline)
            })
            .collect()
    }

    /// `CAN 0 sid reason` to the session `conn` if it is still there.
    fn cancel_to(&mut self, conn: ConnId, sid: SessionId, reason: &str) {
        if self.conns.contains_key(&conn) {
            let line = Line::new("CAN", TrId::PUSH, [sid.to_string(), reason.to_owned()]);
            self.send(conn, line);
        }
    }

    /// `CAN 0 sid reason` to each of `conns` but `except`.
    fn cancel_all(&mut self, conns: &[ConnId], except: ConnId, sid: SessionId, reason: &str) {
        for &conn in conns.iter().filter(|&&c| c != except) {
            self.cancel_to(conn, sid, reason);
        }
    }

    /// `INV TrID name offer...`.
    pub(super) fn on_inv(
        &mut self,
        now: Instant,
        me: UserId,
        conn: ConnId,
        line: &Line,
    ) -> Handled {
        let (name, rest) = line.params.split_first().ok_or(INVALID_PARAMETER)?;
        let offer = Offer::parse(rest)?;
        self.check_offer_key(conn, &offer.key)?;
        let target = self
            .dir
            .lookup(name)
            .filter(|&t| self.can_introduce(me, t))
            .ok_or(USER_OFFLINE)?;
        // From here on the INV is answered: bind the connection to the offer's key if it
        // sent no DEV.
        self.bind_device(me, conn, offer.key);
        let target_name = self.dir.user(target).name.to_string();
        let answer = |sid: SessionId| Line::new("INV", line.trid, [target_name, sid.to_string()]);
        // Both opened a chat at once: introduce now; the earlier inviter is the initiator.
        if let Some(sid) = self.intros.first_between(target, me)
            && let Some(earlier) = self.intros.remove(sid)
        {
            self.also_undo(Undo::Introduced(sid, earlier.clone()));
            self.send(conn, answer(sid));
            self.cancel_all(&earlier.rung, conn, sid, "answered");
            self.cancel_remote_invite(&earlier, sid, "answered");
            let initiator = (target, earlier.from_conn, &earlier.offer);
            self.introduce(now, sid, initiator, (me, conn, &offer));
            return Ok(());
        }
        // The same, with the other's invitation owned by its node: answer it.
        if let Some(sid) = self.remote_ring_between(target, me)
            && self.answer_remote(me, conn, sid, &offer)
        {
            self.send(conn, answer(sid));
            return Ok(());
        }
        // Asked again by the same session: same invitation, fresher offer.
        if let Some(sid) = self.intros.opened_by(conn, me, target)
            && let Some(invite) = self.intros.invites.get_mut(&sid)
        {
            let old = std::mem::replace(&mut invite.offer, offer);
            self.also_undo(Undo::Offer(sid, old));
            self.send(conn, answer(sid));
            return Ok(());
        }
        let sid = SessionId(self.random());
        let rung = self.ringable(target);
        // Its sessions here, and on every other node where it is online (another device).
        let remote = self.remote_nodes_of(target);
        let invite = Invite {
            from: me,
            from_conn: conn,
            to: target,
            rung: rung.clone(),
            offer,
            deadline: now + self.config.invite_timeout,
            remote,
        };
        for &node in &invite.remote {
            self.ring_remote(node, sid, &invite, conn);
        }
        self.intros.insert(sid, invite);
        self.also_undo(Undo::NewInvite(sid));
        self.send(conn, answer(sid));
        let ring = Line::new(
            "RNG",
            TrId::PUSH,
            [sid.to_string(), self.dir.user(me).name.to_string()],
        );
        for target_conn in rung {
            self.send(target_conn, ring.clone());
        }
        Ok(())
    }

    /// The invitation `sid` addressed to `me`, removed from the pending ones.
    fn take_invite_to(&mut self, me: UserId, sid: &str) -> Result<(SessionId, Invite), Refusal> {
        let sid = parse_sid(sid).ok_or(INVALID_PARAMETER)?;
        match self.intros.invites.get(&sid) {
            Some(invite) if invite.to == me => {}
            _ => return Err(USER_OFFLINE),
        }
        let invite = self.intros.remove(sid).ok_or(USER_OFFLINE)?;
        Ok((sid, invite))
    }

    /// `ANS TrID sid offer...`, from any session of the invited user: it is the session
    /// introduced; the other rung sessions get `CAN 0 sid answered`.
    pub(super) fn on_ans(
        &mut self,
        now: Instant,
        me: UserId,
        conn: ConnId,
        line: &Line,
    ) -> Handled {
        let (sid, rest) = line.params.split_first().ok_or(INVALID_PARAMETER)?;
        let offer = Offer::parse(rest)?;
        self.check_offer_key(conn, &offer.key)?;
        // A ring for an invitation another node owns: the answer goes there.
        if let Some(s) = parse_sid(sid)
            && self.intros.get(s).is_none()
            && self.remote_ring_between_sid(s, me)
        {
            if !self.answer_remote(me, conn, s, &offer) {
                return Err(USER_OFFLINE);
            }
            self.bind_device(me, conn, offer.key);
            self.send(conn, Line::new("ANS", line.trid, [s.to_string()]));
            return Ok(());
        }
        let (sid, invite) = self.take_invite_to(me, sid)?;
        let inviter_here = self.conns.contains_key(&invite.from_conn);
        if !inviter_here || !self.dir.mutual_unblocked(invite.from, me) {
            self.cancel_to(invite.from_conn, sid, "offline");
            self.cancel_all(&invite.rung, conn, sid, "offline");
            self.cancel_remote_invite(&invite, sid, "offline");
            return Err(USER_OFFLINE);
        }
        self.bind_device(me, conn, offer.key);
        self.also_undo(Undo::Introduced(sid, invite.clone()));
        self.send(conn, Line::new("ANS", line.trid, [sid.to_string()]));
        self.cancel_all(&invite.rung, conn, sid, "answered");
        self.cancel_remote_invite(&invite, sid, "answered");
        let initiator = (invite.from, invite.from_conn, &invite.offer);
        self.introduce(now, sid, initiator, (me, conn, &offer));
        Ok(())
    }

    /// `DEC TrID sid`, from any session of the invited user: the inviter gets
    /// `CAN 0 sid declined`, the other rung sessions `CAN 0 sid answered`.
    pub(super) fn on_dec(&mut self, me: UserId, conn: ConnId, line: &Line) -> Handled {
        let [sid] = params(line)?;
        if let Some(s) = parse_sid(sid)
            && self.intros.get(s).is_none()
            && self.decline_remote(me, conn, s)
        {
            self.send(conn, Line::new("DEC", line.trid, [s.to_string()]));
            return Ok(());
        }
        let (sid, invite) = self.take_invite_to(me, sid)?;
        self.send(conn, Line::new("DEC", line.trid, [sid.to_string()]));
        self.cancel_to(invite.from_conn, sid, "declined");
        self.cancel_all(&invite.rung, conn, sid, "answered");
        self.cancel_remote_invite(&invite, sid, "answered");
        Ok(())
    }

    /// Issues the two tickets and sends both `ITR` lines, each to its session and carrying
    /// the other's offer.
    pub(super) fn introduce(
        &mut self,
        now: Instant,
        sid: SessionId,
        initiator: Side<'_>,
        responder: Side<'_>,
    ) {
        self.counters.introductions += 1;
        let expires = now + self.config.ticket_lifetime;
        let start = format!("start={}", self.config.punch_delay.as_millis());
        let mut sb = Vec::new();
        if let Some(addr) = self.config.switchboard_addr {
            sb.push(format!("sb={addr}"));
            if let Some(fp) = self.config.switchboard_fingerprint {
                sb.push(format!("sbfp={fp}"));
            }
        }
        let sides = [
            (initiator, responder, "role=initiator"),
            (responder, initiator, "role=responder"),
        ];
        let mut lines = Vec::with_capacity(2);
        for ((me, me_conn, _), (peer, _, peer_offer), role) in sides {
            let value: [u8; 16] = self.random();
            let (me_name, peer_name) = (&self.dir.user(me).name, &self.dir.user(peer).name);
            let ticket = Ticket {
                value,
                session: sid,
                user: me_name.clone(),
                peer: peer_name.clone(),
                expires,
            };
            let mut params = vec![sid.to_string(), peer_name.to_string(), role.to_owned()];
            params.push(start.clone());
            params.push(format!("ticket={}", hex(&value)));
            params.extend(sb.iter().cloned());
            peer_offer.write(&mut params);
            self.push(Output::Ticket(ticket));
            lines.push((me_conn, Line::new("ITR", TrId::PUSH, params)));
        }
        for (conn, line) in lines {
            self.send(conn, line);
        }
        let peers = [(initiator.0, initiator.1), (responder.0, responder.1)];
        let nat = |offer: &Offer| offer.nat.unwrap_or(OfferNat::Unknown);
        let nats = [nat(initiator.2), nat(responder.2)];
        self.remember_session(now, sid, peers, nats);
    }

    /// An invitation whose answer could not be stored is pending again (with a fresh
    /// deadline), ringing the sessions still there; if its inviter or every rung session is
    /// gone, whoever is left gets `CAN 0 sid offline`.
    pub(super) fn reopen_invite(&mut self, now: Instant, sid: SessionId, mut invite: Invite) {
        invite.rung.retain(|c| self.conns.contains_key(c));
        // Other nodes were told the invitation was answered: only sessions here ring again.
        invite.remote.clear();
        if !self.conns.contains_key(&invite.from_conn) || invite.rung.is_empty() {
            self.cancel_to(invite.from_conn, sid, "offline");
            self.cancel_all(&invite.rung, invite.from_conn, sid, "offline");
            return;
        }
        invite.deadline = now + self.config.invite_timeout;
        self.intros.insert(sid, invite);
    }

    /// The session `conn` is gone: the invitations it opened are cancelled (`CAN 0 sid
    /// offline` to the rung sessions); it stops ringing for the others, and one that rings
    /// nowhere any more is cancelled (`CAN 0 sid offline` to its inviter).
    pub(super) fn cancel_intros_of(&mut self, conn: ConnId) {
        self.forget_remote_of(conn);
        let Some(sids) = self.intros.by_conn.remove(&conn) else {
            return;
        };
        for sid in sids {
            let Some(invite) = self.intros.invites.get_mut(&sid) else {
                continue;
            };
            invite.rung.retain(|&c| c != conn);
            if invite.from_conn != conn && !(invite.rung.is_empty() && invite.remote.is_empty()) {
                continue;
            }
            if let Some(invite) = self.intros.remove(sid) {
                if invite.from_conn == conn {
                    self.cancel_all(&invite.rung, conn, sid, "offline");
                    self.cancel_remote_invite(&invite, sid, "offline");
                } else {
                    self.cancel_to(invite.from_conn, sid, "offline");
                }
            }
        }
    }

    /// Cancels invitations past their deadline: `CAN 0 sid timeout` to the inviting session
    /// and to every rung one.
    pub(super) fn expire_intros(&mut self, now: Instant) {
        while let Some(&(at, sid)) = self.intros.deadlines.front() {
            if at > now {
                break;
            }
            self.intros.deadlines.pop_front();
            let due = self
                .intros
                .invites
                .get(&sid)
                .is_some_and(|i| i.deadline <= now);
            if due && let Some(invite) = self.intros.remove(sid) {
                self.cancel_to(invite.from_conn, sid, "timeout");
                self.cancel_all(&invite.rung, invite.from_conn, sid, "timeout");
                self.cancel_remote_invite(&invite, sid, "timeout");
            }
        }
    }
}
