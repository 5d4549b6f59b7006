//! Device identity keys: `DEV`, `KEY`, and the rule that binds a connection's offers to its
//! device key (docs/PROTOCOL.md sections 5 and 8).
//!
//! Each device of a user has a long-term X25519 key pair; the client registers the public key
//! with `DEV` right after login, and the server keeps the [`MAX_DEVICE_KEYS`] most recently
//! registered keys of each user. A connection is bound to one key: the `key=` of its `INV` and
//! `ANS` offers must be that key, so the `ITR` a peer receives carries the other side's device
//! key, the one its client pins. A connection that sent no `DEV` is bound to the key of its
//! first offer, which is registered like a `DEV`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::conn::params;
use super::directory::UserId;
use super::{ConnId, Handled, INVALID_PARAMETER, Output, RendezvousServer, USER_OFFLINE};
use crate::rendezvous::types::{MAX_DEVICE_KEYS, StoreOp};
use crate::rendezvous::wire::Line;

/// A base64 32-byte key (the canonical encoding only: the decoder refuses trailing bits).
fn parse_key(b64: &str) -> Option<[u8; 32]> {
    B64.decode(b64).ok()?.try_into().ok()
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
        if self.dir.register_device(me, key) {
            let owner = self.dir.user(me).name.clone();
            self.out
                .push_back(Output::Store(StoreOp::AddDeviceKey { owner, key }));
        }
    }

    /// `DEV TrID <b64 key>`: this connection's device identity key. The answer repeats it. A
    /// connection already bound to another key (an earlier `DEV`, or its first offer's key)
    /// gets `201`; the same key again is answered again.
    pub(super) fn on_dev(&mut self, me: UserId, conn: ConnId, line: &Line) -> Handled {
        let [b64] = params(line)?;
        let key = parse_key(b64).ok_or(INVALID_PARAMETER)?;
        self.check_offer_key(conn, &key)?;
        self.bind_device(me, conn, key);
        self.send(conn, Line::new("DEV", line.trid, [B64.encode(key)]));
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
