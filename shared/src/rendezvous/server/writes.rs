//! Writes to the driver's store, and what happens when one fails.
//!
//! Every change the server must persist leaves the core as an [`Output::Store`] ahead of the
//! answer and the pushes that announce it. The core remembers how to take the change back
//! until the driver has moved past that store (the next [`RendezvousServer::poll_output`]).
//! When the driver reports the write failed instead, the core withdraws the outputs of the
//! step that made it (every output is tagged with the step, the input, that produced it), puts
//! its memory back the way it was, and answers the requester `500 TrID internal server error`:
//! the server never confirms what it failed to store, and its memory matches the database.
//!
//! Steps are undone on their own: if the driver fed later events before draining, their
//! effects stay (they may have read the change; their own writes succeed or fail on their own).

use std::time::Instant;

use super::directory::{ListOp, UserId};
use super::intro::{Invite, Offer};
use super::{ConnId, Output, RendezvousServer, SessionId, StoreId, TrId};
use crate::rendezvous::types::{Credentials, StoreOp};
use crate::rendezvous::wire::Line;

/// One pending write: who asked, and how to take its change back.
#[derive(Debug)]
pub(super) struct Write {
    conn: ConnId,
    trid: TrId,
    /// Applied in reverse order.
    undo: Vec<Undo>,
}

/// How to take one in-memory change back.
#[derive(Debug)]
pub(super) enum Undo {
    /// `REG` created this account.
    CreateUser(UserId),
    /// `PWD` replaced these credentials.
    Credentials(UserId, Credentials),
    /// `ADC`, `REM`, `BLK` or `ALW` of `other` by `owner`.
    List {
        owner: UserId,
        other: UserId,
        op: ListOp,
    },
    /// `conn` was bound to a device key of `user`, whose device keys were `devices` before.
    Device {
        user: UserId,
        conn: ConnId,
        devices: Vec<[u8; 32]>,
    },
    /// `DEV` set the login session id of `conn`; it was this before.
    LoginSession(ConnId, Option<[u8; 16]>),
    /// `INV` opened this invitation.
    NewInvite(SessionId),
    /// `INV` replaced this invitation's offer; this was the old one.
    Offer(SessionId, Offer),
    /// `ANS` (or crossing `INV`s) turned this invitation into an introduction.
    Introduced(SessionId, Invite),
}

impl RendezvousServer {
    /// Queues `op` for the store as the current step's write, and remembers how to undo the
    /// change it records (more can be added with [`also_undo`](Self::also_undo)).
    pub(super) fn store(&mut self, op: StoreOp, undo: Undo) {
        let (conn, trid) = self.requester.unwrap_or((ConnId(u64::MAX), TrId::PUSH));
        let write = self.writes.entry(self.step).or_insert_with(|| Write {
            conn,
            trid,
            undo: Vec::new(),
        });
        write.undo.push(undo);
        let id = StoreId(self.step);
        self.push(Output::Store { id, op });
    }

    /// Another change of the current step to undo if its write fails (nothing if the step
    /// writes nothing).
    pub(super) fn also_undo(&mut self, undo: Undo) {
        if let Some(write) = self.writes.get_mut(&self.step) {
            write.undo.push(undo);
        }
    }

    /// The driver could not persist the [`Output::Store`] named `id`. The outputs of the step
    /// that made the change and are still queued (its success answer and its pushes) are
    /// withdrawn, the change is undone in memory, and the client that asked gets
    /// `500 TrID internal server error` (first in the queue; its connection stays open).
    /// Unknown or already written ids are ignored. See the [module docs](super) for when to
    /// call it.
    pub fn handle_store_failed(&mut self, now: Instant, id: StoreId) {
        let Some(write) = self.writes.remove(&id.0) else {
            return;
        };
        if self.popped_store == Some(id.0) {
            self.popped_store = None;
        }
        self.out.retain(|(step, _)| *step != id.0);
        self.step += 1;
        for undo in write.undo.into_iter().rev() {
            self.undo(now, undo);
        }
        if self.conns.contains_key(&write.conn) {
            let line = Line::error(500, write.trid, "internal server error");
            let output = Output::Send {
                conn: write.conn,
                line,
            };
            self.out.push_front((self.step, output));
        }
    }

    fn undo(&mut self, now: Instant, undo: Undo) {
        match undo {
            Undo::CreateUser(user) => self.dir.forget_name(user),
            Undo::Credentials(user, creds) => self.dir.user_mut(user).creds = creds,
            Undo::List { owner, other, op } => self.dir.apply_list(owner, other, op.reverse()),
            Undo::Device {
                user,
                conn,
                devices,
            } => {
                self.dir.user_mut(user).devices = devices;
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.device = None;
                }
            }
            Undo::LoginSession(conn, before) => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.login_session = before;
                }
            }
            Undo::NewInvite(sid) => {
                self.intros.remove(sid);
            }
            Undo::Offer(sid, offer) => self.intros.set_offer(sid, offer),
            Undo::Introduced(sid, invite) => {
                self.forget_session(sid);
                self.reopen_invite(now, sid, invite);
            }
        }
    }
}
