//! The directory: accounts, contact and block lists, presence and who may see it
//! (docs/PROTOCOL.md sections 6 and 7).

use std::collections::HashMap;

use super::conn::params;
use super::{
    ALREADY_BLOCKED, ALREADY_CONTACT, ConnId, Handled, INVALID_PARAMETER, LIST_FULL, NO_SUCH_USER,
    NOT_A_CONTACT, NOT_BLOCKED, Output, RendezvousServer,
};
use crate::rendezvous::types::{
    Credentials, DirectorySnapshot, MAX_DEVICE_KEYS, Presence, StoreOp, UserName, UserRecord,
};
use crate::rendezvous::wire::{Line, MAX_PAYLOAD, TrId};

/// An interned user: an index into [`Directory::users`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct UserId(u32);

/// One account and its live state.
#[derive(Debug)]
pub(super) struct User {
    pub(super) name: UserName,
    pub(super) creds: Credentials,
    /// Sorted.
    pub(super) contacts: Vec<UserId>,
    /// Sorted: the users this one blocks.
    pub(super) blocks: Vec<UserId>,
    /// The connection it is logged in on.
    pub(super) conn: Option<ConnId>,
    /// `Offline` when not logged in, and after login until the first `CHG`.
    pub(super) presence: Presence,
    /// Device identity keys, least recently registered first; at most [`MAX_DEVICE_KEYS`].
    pub(super) devices: Vec<[u8; 32]>,
}

/// Every account, by id and by name.
#[derive(Debug, Default)]
pub(super) struct Directory {
    users: Vec<User>,
    by_name: HashMap<UserName, UserId>,
}

fn insert_sorted(list: &mut Vec<UserId>, id: UserId) {
    if let Err(at) = list.binary_search(&id) {
        list.insert(at, id);
    }
}

fn remove_sorted(list: &mut Vec<UserId>, id: UserId) {
    if let Ok(at) = list.binary_search(&id) {
        list.remove(at);
    }
}

impl Directory {
    pub(super) fn from_snapshot(snapshot: DirectorySnapshot) -> Directory {
        let mut dir = Directory::default();
        for record in snapshot.users {
            dir.upsert(record);
        }
        for (owner, contact) in &snapshot.contacts {
            if let (Some(o), Some(c)) = (dir.id(owner), dir.id(contact))
                && o != c
            {
                insert_sorted(&mut dir.user_mut(o).contacts, c);
            }
        }
        for (owner, blocked) in &snapshot.blocks {
            if let (Some(o), Some(b)) = (dir.id(owner), dir.id(blocked))
                && o != b
            {
                insert_sorted(&mut dir.user_mut(o).blocks, b);
            }
        }
        for (owner, key) in &snapshot.device_keys {
            if let Some(o) = dir.id(owner) {
                dir.register_device(o, *key);
            }
        }
        dir
    }

    /// Makes `key` the most recently registered device key of `user`, forgetting the least
    /// recently registered one beyond [`MAX_DEVICE_KEYS`]. `false` if it already was the most
    /// recent (nothing changed, nothing to persist).
    pub(super) fn register_device(&mut self, user: UserId, key: [u8; 32]) -> bool {
        let devices = &mut self.user_mut(user).devices;
        if devices.last() == Some(&key) {
            return false;
        }
        devices.retain(|k| *k != key);
        devices.push(key);
        let excess = devices.len().saturating_sub(MAX_DEVICE_KEYS);
        devices.drain(..excess);
        true
    }

    pub(super) fn id(&self, name: &UserName) -> Option<UserId> {
        self.by_name.get(name).copied()
    }

    /// The user named by a client-supplied string, if the name is valid and exists.
    pub(super) fn lookup(&self, name: &str) -> Option<UserId> {
        UserName::parse(name).ok().and_then(|n| self.id(&n))
    }

    pub(super) fn user(&self, id: UserId) -> &User {
        &self.users[id.0 as usize]
    }

    pub(super) fn user_mut(&mut self, id: UserId) -> &mut User {
        &mut self.users[id.0 as usize]
    }

    /// Adds an account, or replaces the credentials of an existing one.
    pub(super) fn upsert(&mut self, record: UserRecord) -> UserId {
        if let Some(id) = self.id(&record.name) {
            self.user_mut(id).creds = record.credentials;
            return id;
        }
        let id = UserId(u32::try_from(self.users.len()).unwrap_or(u32::MAX));
        self.by_name.insert(record.name.clone(), id);
        self.users.push(User {
            name: record.name,
            creds: record.credentials,
            contacts: Vec::new(),
            blocks: Vec::new(),
            conn: None,
            presence: Presence::Offline,
            devices: Vec::new(),
        });
        id
    }

    /// Everyone logged out at once (shutdown): no pushes.
    pub(super) fn all_offline(&mut self) {
        for user in &mut self.users {
            user.conn = None;
            user.presence = Presence::Offline;
        }
    }

    pub(super) fn has_contact(&self, owner: UserId, other: UserId) -> bool {
        self.user(owner).contacts.binary_search(&other).is_ok()
    }

    pub(super) fn blocks(&self, owner: UserId, other: UserId) -> bool {
        self.user(owner).blocks.binary_search(&other).is_ok()
    }

    /// Each has the other as a contact and neither blocks the other: the pair may be
    /// introduced (docs/PROTOCOL.md section 8).
    pub(super) fn mutual_unblocked(&self, a: UserId, b: UserId) -> bool {
        a != b
            && self.has_contact(a, b)
            && self.has_contact(b, a)
            && !self.blocks(a, b)
            && !self.blocks(b, a)
    }

    /// What `viewer` may see of `target`: its state if they are mutual contacts and `target`
    /// does not block `viewer`, else `FLN`. `HDN` shows as `FLN`.
    pub(super) fn seen(&self, target: UserId, viewer: UserId) -> Presence {
        if self.has_contact(viewer, target)
            && self.has_contact(target, viewer)
            && !self.blocks(target, viewer)
        {
            self.user(target).presence.as_seen()
        } else {
            Presence::Offline
        }
    }

    /// `(what b sees of a, what a sees of b)`.
    fn pair_view(&self, a: UserId, b: UserId) -> (Presence, Presence) {
        (self.seen(a, b), self.seen(b, a))
    }
}

/// `NLN 0 STATE name`, `ILN 0 STATE name` or `FLN 0 name`.
fn presence_line(command: &str, seen: Presence, name: &UserName) -> Line {
    if seen == Presence::Offline {
        Line::new("FLN", TrId::PUSH, [name.to_string()])
    } else {
        Line::new(
            command,
            TrId::PUSH,
            [seen.code().to_owned(), name.to_string()],
        )
    }
}

impl RendezvousServer {
    /// Changes `user`'s presence and pushes `NLN`/`FLN` to every contact that sees a change.
    pub(super) fn set_presence(&mut self, user: UserId, new: Presence) {
        let Self { dir, out, .. } = self;
        let old = dir.user(user).presence;
        dir.user_mut(user).presence = new;
        if old.as_seen() == new.as_seen() {
            return;
        }
        let me = dir.user(user);
        for &contact in &me.contacts {
            let c = dir.user(contact);
            let Some(conn) = c.conn else { continue };
            if c.contacts.binary_search(&user).is_err() || me.blocks.binary_search(&contact).is_ok()
            {
                continue;
            }
            let line = presence_line("NLN", new.as_seen(), &me.name);
            out.push_back(Output::Send { conn, line });
        }
    }

    /// `ILN` for every contact `user` may see that is not offline (after login).
    pub(super) fn push_initial_presence(&mut self, user: UserId, conn: ConnId) {
        let Self { dir, out, .. } = self;
        for &contact in &dir.user(user).contacts {
            let seen = dir.seen(contact, user);
            if seen != Presence::Offline {
                let line = presence_line("ILN", seen, &dir.user(contact).name);
                out.push_back(Output::Send { conn, line });
            }
        }
    }

    /// After a list change between `a` and `b`: `ILN` to whoever now sees the other, `FLN` to
    /// whoever no longer does.
    fn push_pair_changes(&mut self, a: UserId, b: UserId, before: (Presence, Presence)) {
        let after = self.dir.pair_view(a, b);
        for (target, viewer, was, is) in [(a, b, before.0, after.0), (b, a, before.1, after.1)] {
            if was == is {
                continue;
            }
            if let Some(conn) = self.dir.user(viewer).conn {
                let line = presence_line("ILN", is, &self.dir.user(target).name);
                self.send(conn, line);
            }
        }
    }

    /// `CHG TrID STATE`.
    pub(super) fn on_chg(&mut self, me: UserId, conn: ConnId, line: &Line) -> Handled {
        let [code] = params(line)?;
        let state = Presence::from_code(code)
            .filter(|&p| p != Presence::Offline)
            .ok_or(INVALID_PARAMETER)?;
        self.send(conn, Line::new("CHG", line.trid, [code.to_owned()]));
        self.set_presence(me, state);
        Ok(())
    }

    /// `LST TrID`: one `name STATE flags` line per contact or blocked user, sorted by name.
    /// A list too long for one payload is cut at the last whole line that fits.
    pub(super) fn on_lst(&mut self, me: UserId, conn: ConnId, line: &Line) -> Handled {
        let [] = params(line)?;
        let user = self.dir.user(me);
        let mut entries: Vec<(&UserName, UserId, &str)> = Vec::new();
        for &c in &user.contacts {
            let flags = if self.dir.blocks(me, c) { "CB" } else { "C" };
            entries.push((&self.dir.user(c).name, c, flags));
        }
        for &b in &user.blocks {
            if !self.dir.has_contact(me, b) {
                entries.push((&self.dir.user(b).name, b, "B"));
            }
        }
        entries.sort_unstable_by(|x, y| x.0.cmp(y.0));
        let mut payload = Vec::new();
        for (name, id, flags) in entries {
            let row = format!("{name} {} {flags}\r\n", self.dir.seen(id, me).code());
            if payload.len() + row.len() > MAX_PAYLOAD {
                break;
            }
            payload.extend_from_slice(row.as_bytes());
        }
        let mut answer = Line::new("LST", line.trid, []);
        answer.payload = payload;
        self.send(conn, answer);
        Ok(())
    }

    /// The existing user a list command names (not `me`: that is `201`).
    fn list_target(&self, me: UserId, line: &Line) -> Result<UserId, super::Refusal> {
        let [name] = params(line)?;
        let other = self.dir.lookup(name).ok_or(NO_SUCH_USER)?;
        if other == me {
            return Err(INVALID_PARAMETER);
        }
        Ok(other)
    }

    /// Applies a list change, persists it, answers, and pushes the visibility changes.
    fn list_change(&mut self, me: UserId, other: UserId, conn: ConnId, line: &Line, op: ListOp) {
        let before = self.dir.pair_view(me, other);
        let (owner, name) = (
            self.dir.user(me).name.clone(),
            self.dir.user(other).name.clone(),
        );
        let user = self.dir.user_mut(me);
        let store = match op {
            ListOp::Add => {
                insert_sorted(&mut user.contacts, other);
                StoreOp::AddContact {
                    owner,
                    contact: name.clone(),
                }
            }
            ListOp::Remove => {
                remove_sorted(&mut user.contacts, other);
                StoreOp::RemoveContact {
                    owner,
                    contact: name.clone(),
                }
            }
            ListOp::Block => {
                insert_sorted(&mut user.blocks, other);
                StoreOp::Block {
                    owner,
                    blocked: name.clone(),
                }
            }
            ListOp::Allow => {
                remove_sorted(&mut user.blocks, other);
                StoreOp::Allow {
                    owner,
                    blocked: name.clone(),
                }
            }
        };
        self.out.push_back(Output::Store(store));
        self.send(
            conn,
            Line::new(line.command.as_str(), line.trid, [name.to_string()]),
        );
        self.push_pair_changes(me, other, before);
    }

    /// `ADC TrID name`.
    pub(super) fn on_adc(&mut self, me: UserId, conn: ConnId, line: &Line) -> Handled {
        let other = self.list_target(me, line)?;
        if self.dir.has_contact(me, other) {
            return Err(ALREADY_CONTACT);
        }
        if self.dir.user(me).contacts.len() >= self.config.max_contacts {
            return Err(LIST_FULL);
        }
        self.list_change(me, other, conn, line, ListOp::Add);
        Ok(())
    }

    /// `REM TrID name`.
    pub(super) fn on_rem(&mut self, me: UserId, conn: ConnId, line: &Line) -> Handled {
        let [name] = params(line)?;
        let other = self
            .dir
            .lookup(name)
            .filter(|&o| self.dir.has_contact(me, o))
            .ok_or(NOT_A_CONTACT)?;
        self.list_change(me, other, conn, line, ListOp::Remove);
        Ok(())
    }

    /// `BLK TrID name`. The block list is bounded like the contact list (`210`).
    pub(super) fn on_blk(&mut self, me: UserId, conn: ConnId, line: &Line) -> Handled {
        let other = self.list_target(me, line)?;
        if self.dir.blocks(me, other) {
            return Err(ALREADY_BLOCKED);
        }
        if self.dir.user(me).blocks.len() >= self.config.max_contacts {
            return Err(LIST_FULL);
        }
        self.list_change(me, other, conn, line, ListOp::Block);
        Ok(())
    }

    /// `ALW TrID name`.
    pub(super) fn on_alw(&mut self, me: UserId, conn: ConnId, line: &Line) -> Handled {
        let [name] = params(line)?;
        let other = self
            .dir
            .lookup(name)
            .filter(|&o| self.dir.blocks(me, o))
            .ok_or(NOT_BLOCKED)?;
        self.list_change(me, other, conn, line, ListOp::Allow);
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum ListOp {
    Add,
    Remove,
    Block,
    Allow,
}
