//! Device identity keys: `DEV`, `KEY`, and the rule that binds a connection's offers to its
//! device key (docs/PROTOCOL.md sections 5 and 8).
//!
//! Each device of a user has a long-term X25519 key pair; the client registers the public key
//! with `DEV` right after login, and the server keeps the [`MAX_DEVICE_KEYS`] most recently
//! registered keys of each user. A connection is bound to one key: the `key=` of its `INV` and
//! `ANS` offers must be that key, so the `ITR` a peer receives carries the other side's device
//! key, the one its client pins. A connection that sent no `DEV` is bound to the key of its
//! first offer, which is registered like a `DEV`.
//!
//! `DEV` may also carry the client's login session id (32 hex digits, random per client
//! process and kept across its reconnects). A connection that registers a session id that
//! another session of the same user holds replaces that session (`OUT 0 OTH`): that is how a
//! reconnecting client takes over its own stale session without disturbing any other.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::conn::params;
use super::directory::UserId;
use super::intro::parse_sid;
use super::writes::Undo;
use super::{ConnId, Handled, INVALID_PARAMETER, RendezvousServer, USER_OFFLINE};
use crate::rendezvous::types::{MAX_DEVICE_KEYS, StoreOp};
use crate::rendezvous::wire::Line;

/// A base64 32-byte key (the canonical encoding only: the decoder refuses trailing bits), not
/// one of small order, which would authenticate nobody.
fn parse_key(b64: &str) -> Option<[u8; 32]> {
    crate::identity::parse_identity_key(b64)
}

impl RendezvousServer {
    /// `201` if `conn` is bound to a device key other than `key`.
    pub(super) fn check_offer_key(&self, conn: ConnId, key: &[u8; 32]) -> Handled {
        match self.conns.get(&conn).and_then(|c| c.device) {
            Some(bound) if bound != *key => Err(INVALID_PARAMETER),
            _ => Ok(()),
        }
    }

    /// Binds `conn` to `key` if it is not bound yet, registering the key as `me`'s most recent
    /// device key (and persisting that before anything that follows).
    pub(super) fn bind_device(&mut self, me: UserId, conn: ConnId, key: [u8; 32]) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.device.is_some() {
            return;
        }
        c.device = Some(key);
        let devices = self.dir.user(me).devices.clone();
        if self.dir.register_device(me, key) {
            let owner = self.dir.user(me).name.clone();
            let undo = Undo::Device {
                user: me,
                conn,
                devices,
            };
            self.store(StoreOp::AddDeviceKey { owner, key }, undo);
        }
    }

    /// `DEV TrID <b64 key> [<session id>]`: this connection's device identity key, and the
    /// login session id its client chose. The answer repeats both. A connection already bound
    /// to another key (an earlier `DEV`, or its first offer's key), or that registered another
    /// session id, gets `201`; the same again is answered again. Another session of the user
    /// that holds this session id is replaced first (`OUT 0 OTH`, closed).
    pub(super) fn on_dev(&mut self, me: UserId, conn: ConnId, line: &Line) -> Handled {
        let (b64, session) = match line.params.as_slice() {
            [key] => (key, None),
            [key, session] => (key, Some(parse_sid(session).ok_or(INVALID_PARAMETER)?.0)),
            _ => return Err(INVALID_PARAMETER),
        };
        let key = parse_key(b64).ok_or(INVALID_PARAMETER)?;
        self.check_offer_key(conn, &key)?;
        let before = self.conns.get(&conn).and_then(|c| c.login_session);
        if before.is_some() && session.is_some() && before != session {
            return Err(INVALID_PARAMETER);
        }
        if let Some(session) = session.filter(|_| before.is_none()) {
            let stale: Vec<ConnId> = self
                .dir
                .user(me)
                .sessions
                .iter()
                .copied()
                .filter(|&c| {
                    c != conn
                        && self
                            .conns
                            .get(&c)
                            .is_some_and(|c| c.login_session == Some(session))
                })
                .collect();
            for old in stale {
                self.close(old, Some("OTH"));
            }
            // And on the other nodes of a cluster (`handle_remote_session`).
            let user = self.dir.user(me).name.clone();
            self.announce(super::ClusterMessage::SessionClaimed {
                user,
                session: super::SessionId(session),
            });
        }
        self.bind_device(me, conn, key);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.login_session = c.login_session.or(session);
        }
        self.also_undo(Undo::LoginSession(conn, before));
        let mut answer = vec![B64.encode(key)];
        answer.extend(session.map(|s| super::SessionId(s).to_string()));
        self.send(conn, Line::new("DEV", line.trid, answer));
        Ok(())
    }

    /// `KEY TrID name`: `name`'s device keys, most recently registered first, if the two could
    /// be introduced (mutual contacts, no block either way; online or not). Anything else is
    /// `217`, the same answer for every reason. No key yet: `KEY TrID name` alone.
    pub(super) fn on_key(&mut self, me: UserId, conn: ConnId, line: &Line) -> Handled {
        let [name] = params(line)?;
        let target = self
            .dir
            .lookup(name)
            .filter(|&t| self.dir.mutual_unblocked(me, t))
            .ok_or(USER_OFFLINE)?;
        let user = self.dir.user(target);
        let mut answer = Vec::with_capacity(1 + MAX_DEVICE_KEYS);
        answer.push(user.name.to_string());
        answer.extend(user.devices.iter().rev().map(|k| B64.encode(k)));
        self.send(conn, Line::new("KEY", line.trid, answer));
        Ok(())
    }
}
