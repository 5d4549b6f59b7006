//! Introductions: `INV`, `RNG`, `ANS`, `DEC`, `CAN`, `ITR` and switchboard tickets
//! (docs/PROTOCOL.md section 8). What happens after `ITR` (`PRM`) is in `sessions`.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::conn::params;
use super::directory::UserId;
use super::{
    ConnId, Handled, INVALID_PARAMETER, Output, Refusal, RendezvousServer, SessionId, Ticket,
    USER_OFFLINE,
};
use crate::rendezvous::types::Presence;
use crate::rendezvous::wire::{Line, TrId};

/// The most `cand=` parameters in an offer.
pub const MAX_CANDIDATES: usize = 8;
/// The values of `nat=`.
pub const NAT_TYPES: [&str; 8] = [
    "open",
    "full-cone",
    "restricted",
    "port-restricted",
    "symmetric",
    "symmetric-firewall",
    "udp-blocked",
    "unknown",
];
/// The values of `alloc=`.
pub const ALLOC_KINDS: [&str; 3] = ["preserving", "sequential", "random"];
/// The kinds of `cand=kind/ip:port`.
pub const CANDIDATE_KINDS: [&str; 3] = ["host", "srflx", "relay"];

/// What a peer says about itself in `INV` or `ANS`, checked. Its `key` is the device identity
/// key of the connection (see `devices`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Offer {
    key: [u8; 32],
    nat: Option<&'static str>,
    alloc: Option<&'static str>,
    cands: Vec<(&'static str, SocketAddr)>,
}

fn one_of(list: &[&'static str], value: &str) -> Option<&'static str> {
    list.iter().copied().find(|v| *v == value)
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
                    let k = B64
                        .decode(value)
                        .ok()
                        .and_then(|k| <[u8; 32]>::try_from(k).ok());
                    key.replace(k.ok_or(INVALID_PARAMETER)?).is_none()
                }
                "nat" => nat
                    .replace(one_of(&NAT_TYPES, value).ok_or(INVALID_PARAMETER)?)
                    .is_none(),
                "alloc" => alloc
                    .replace(one_of(&ALLOC_KINDS, value).ok_or(INVALID_PARAMETER)?)
                    .is_none(),
                "cand" => {
                    let (kind, addr) = value.split_once('/').ok_or(INVALID_PARAMETER)?;
                    let kind = one_of(&CANDIDATE_KINDS, kind).ok_or(INVALID_PARAMETER)?;
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
    fn write(&self, out: &mut Vec<String>) {
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
#[derive(Debug)]
struct Invite {
    from: UserId,
    to: UserId,
    offer: Offer,
    deadline: Instant,
}

/// Pending invitations and their indexes.
#[derive(Debug, Default)]
pub(super) struct Introductions {
    invites: HashMap<SessionId, Invite>,
    /// `(inviter, invitee)` to the session.
    by_pair: HashMap<(UserId, UserId), SessionId>,
    /// Every session a user is in (only users with at least one).
    by_user: HashMap<UserId, Vec<SessionId>>,
    /// Deadlines in creation order (the timeout is constant); entries may be stale.
    deadlines: VecDeque<(Instant, SessionId)>,
}

impl Introductions {
    fn insert(&mut self, sid: SessionId, invite: Invite) {
        self.by_pair.insert((invite.from, invite.to), sid);
        self.by_user.entry(invite.from).or_default().push(sid);
        self.by_user.entry(invite.to).or_default().push(sid);
        self.deadlines.push_back((invite.deadline, sid));
        self.invites.insert(sid, invite);
    }

    fn remove(&mut self, sid: SessionId) -> Option<Invite> {
        let invite = self.invites.remove(&sid)?;
        self.by_pair.remove(&(invite.from, invite.to));
        for user in [invite.from, invite.to] {
            if let Some(list) = self.by_user.get_mut(&user) {
                list.retain(|s| *s != sid);
                if list.is_empty() {
                    self.by_user.remove(&user);
                }
            }
        }
        Some(invite)
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

impl RendezvousServer {
    /// Whether `me` may be introduced to `target` now: mutual contacts, no block either way,
    /// target logged in and neither `HDN` nor `FLN`.
    fn can_introduce(&self, me: UserId, target: UserId) -> bool {
        let t = self.dir.user(target);
        self.dir.mutual_unblocked(me, target)
            && t.conn.is_some()
            && t.presence.as_seen() != Presence::Offline
    }

    fn conn_of(&self, user: UserId) -> Option<ConnId> {
        self.dir.user(user).conn
    }

    /// `CAN 0 sid reason` to `user` if it is online.
    fn cancel_to(&mut self, user: UserId, sid: SessionId, reason: &str) {
        if let Some(conn) = self.conn_of(user) {
            let line = Line::new("CAN", TrId::PUSH, [sid.to_string(), reason.to_owned()]);
            self.send(conn, line);
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
        // Both opened a chat at once: introduce now; the earlier inviter is the initiator.
        if let Some(&sid) = self.intros.by_pair.get(&(target, me))
            && let Some(earlier) = self.intros.remove(sid)
        {
            self.send(
                conn,
                Line::new("INV", line.trid, [target_name, sid.to_string()]),
            );
            self.introduce(now, sid, (target, &earlier.offer), (me, &offer));
            return Ok(());
        }
        // Asked again: same session, fresher offer.
        if let Some(&sid) = self.intros.by_pair.get(&(me, target))
            && let Some(invite) = self.intros.invites.get_mut(&sid)
        {
            invite.offer = offer;
            self.send(
                conn,
                Line::new("INV", line.trid, [target_name, sid.to_string()]),
            );
            return Ok(());
        }
        let sid = SessionId(self.random());
        let deadline = now + self.config.invite_timeout;
        let invite = Invite {
            from: me,
            to: target,
            offer,
            deadline,
        };
        self.intros.insert(sid, invite);
        self.send(
            conn,
            Line::new("INV", line.trid, [target_name, sid.to_string()]),
        );
        if let Some(target_conn) = self.conn_of(target) {
            let my_name = self.dir.user(me).name.to_string();
            self.send(
                target_conn,
                Line::new("RNG", TrId::PUSH, [sid.to_string(), my_name]),
            );
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

    /// `ANS TrID sid offer...`.
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
        let (sid, invite) = self.take_invite_to(me, sid)?;
        let inviter_online = self.conn_of(invite.from).is_some();
        if !inviter_online || !self.dir.mutual_unblocked(invite.from, me) {
            self.cancel_to(invite.from, sid, "offline");
            return Err(USER_OFFLINE);
        }
        self.bind_device(me, conn, offer.key);
        self.send(conn, Line::new("ANS", line.trid, [sid.to_string()]));
        self.introduce(now, sid, (invite.from, &invite.offer), (me, &offer));
        Ok(())
    }

    /// `DEC TrID sid`.
    pub(super) fn on_dec(&mut self, me: UserId, conn: ConnId, line: &Line) -> Handled {
        let [sid] = params(line)?;
        let (sid, invite) = self.take_invite_to(me, sid)?;
        self.send(conn, Line::new("DEC", line.trid, [sid.to_string()]));
        self.cancel_to(invite.from, sid, "declined");
        Ok(())
    }

    /// Issues the two tickets and sends both `ITR` lines, each carrying the other's offer.
    fn introduce(
        &mut self,
        now: Instant,
        sid: SessionId,
        initiator: (UserId, &Offer),
        responder: (UserId, &Offer),
    ) {
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
        for ((me, _), (peer, peer_offer), role) in sides {
            let value: [u8; 16] = self.random();
            let (me_name, peer_name) = (&self.dir.user(me).name, &self.dir.user(peer).name);
            self.out.push_back(Output::Ticket(Ticket {
                value,
                session: sid,
                user: me_name.clone(),
                peer: peer_name.clone(),
                expires,
            }));
            let mut params = vec![sid.to_string(), peer_name.to_string(), role.to_owned()];
            params.push(start.clone());
            params.push(format!("ticket={}", hex(&value)));
            params.extend(sb.iter().cloned());
            peer_offer.write(&mut params);
            lines.push((me, Line::new("ITR", TrId::PUSH, params)));
        }
        for (user, line) in lines {
            if let Some(conn) = self.conn_of(user) {
                self.send(conn, line);
            }
        }
        self.remember_session(now, sid, [initiator.0, responder.0]);
    }

    /// `user` went offline: every invitation it is in is cancelled, the other side gets
    /// `CAN 0 sid offline`.
    pub(super) fn cancel_intros_of(&mut self, user: UserId) {
        let Some(sids) = self.intros.by_user.get(&user).cloned() else {
            return;
        };
        for sid in sids {
            if let Some(invite) = self.intros.remove(sid) {
                let other = if invite.from == user {
                    invite.to
                } else {
                    invite.from
                };
                self.cancel_to(other, sid, "offline");
            }
        }
    }

    /// Cancels invitations past their deadline: `CAN 0 sid timeout` to both sides.
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
                self.cancel_to(invite.from, sid, "timeout");
                self.cancel_to(invite.to, sid, "timeout");
            }
        }
    }
}
