//! The directory: accounts, contact and block lists, presence and who may see it
//! (docs/PROTOCOL.md sections 6 and 7).

use std::collections::{HashMap, HashSet};

use super::cluster::{ClusterMessage, NodeId};
use super::conn::params;
use super::writes::Undo;
use super::{
    ALREADY_BLOCKED, ALREADY_CONTACT, CANNOT_ADD_SELF, CANNOT_BLOCK_SELF, ConnId, Handled,
    INVALID_PARAMETER, LIST_FULL, NO_SUCH_USER, NOT_A_CONTACT, NOT_BLOCKED, Output, Refusal,
    RendezvousServer,
};
use crate::rendezvous::types::{
    Credentials, DirectorySnapshot, MAX_DEVICE_KEYS, Presence, StoreOp, UserName, UserRecord,
};
use crate::rendezvous::wire::{Line, MAX_PAYLOAD, TrId};

/// An interned user: an index into [`Directory::users`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct UserId(u32);

/// `(owner, other)` pairs of contact or block lists.
pub(super) type PairSet = HashSet<(UserId, UserId)>;

/// One account and its live state.
#[derive(Debug)]
pub(super) struct User {
    pub(super) name: UserName,
    pub(super) creds: Credentials,
    /// Sorted.
    pub(super) contacts: Vec<UserId>,
    /// Sorted: the users this one blocks.
    pub(super) blocks: Vec<UserId>,
    /// Its sessions: the connections it is logged in on, oldest first.
    pub(super) sessions: Vec<ConnId>,
    /// The most available presence over its sessions (`Offline` with none, and while no
    /// session has sent `CHG`).
    pub(super) presence: Presence,
    /// Device identity keys, least recently registered first; at most [`MAX_DEVICE_KEYS`].
    pub(super) devices: Vec<[u8; 32]>,
    /// The most available presence over its sessions on this node only (what this node
    /// announces to the others, `cluster.rs`).
    pub(super) local: Presence,
    /// Its presence on each other node that has said it is online there (`cluster.rs`).
    pub(super) remote: Vec<(NodeId, Presence)>,
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
            sessions: Vec::new(),
            presence: Presence::Offline,
            devices: Vec::new(),
            local: Presence::Offline,
            remote: Vec::new(),
        });
        id
    }

    /// Every `(owner, contact)` and every `(owner, blocked)` pair of the lists held here.
    pub(super) fn list_pairs(&self) -> (PairSet, PairSet) {
        let (mut contacts, mut blocks) = (HashSet::new(), HashSet::new());
        for (index, user) in self.users.iter().enumerate() {
            let owner = UserId(u32::try_from(index).unwrap_or(u32::MAX));
            contacts.extend(user.contacts.iter().map(|&c| (owner, c)));
            blocks.extend(user.blocks.iter().map(|&b| (owner, b)));
        }
        (contacts, blocks)
    }

    /// Everyone logged out at once (shutdown): no pushes.
    pub(super) fn all_offline(&mut self) {
        for user in &mut self.users {
            user.sessions = Vec::new();
            user.presence = Presence::Offline;
            user.local = Presence::Offline;
            user.remote = Vec::new();
        }
    }

    /// The users with at least one session on this node.
    pub(super) fn users_with_sessions(&self) -> impl Iterator<Item = &User> {
        self.users.iter().filter(|u| !u.sessions.is_empty())
    }

    /// Forgets the name of an account whose creation could not be stored: it can no longer
    /// be found (its interned id stays, unused).
    pub(super) fn forget_name(&mut self, id: UserId) {
        let name = self.user(id).name.clone();
        if self.by_name.get(&name) == Some(&id) {
            self.by_name.remove(&name);
        }
    }

    /// Applies a list change of `owner`'s lists (idempotent).
    pub(super) fn apply_list(&mut self, owner: UserId, other: UserId, op: ListOp) {
        let user = self.user_mut(owner);
        match op {
            ListOp::Add => insert_sorted(&mut user.contacts, other),
            ListOp::Remove => remove_sorted(&mut user.contacts, other),
            ListOp::Block => insert_sorted(&mut user.blocks, other),
            ListOp::Allow => remove_sorted(&mut user.blocks, other),
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
    pub(super) fn pair_view(&self, a: UserId, b: UserId) -> (Presence, Presence) {
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
    /// Recomputes `user`'s shown presence, the most available over its sessions here and on
    /// other nodes, and pushes `NLN`/`FLN` to every session (on this node) of every contact
    /// that sees a change. A change of the presence over the sessions here is announced to
    /// the other nodes.
    pub(super) fn refresh_presence(&mut self, user: UserId) {
        let conns = &self.conns;
        let u = self.dir.user(user);
        let local = Presence::most_available(
            u.sessions
                .iter()
                .filter_map(|c| conns.get(c))
                .map(|c| c.presence),
        );
        let remote = Presence::most_available(u.remote.iter().map(|(_, p)| *p));
        let new = Presence::most_available([local, remote]);
        if u.local != local {
            let name = u.name.clone();
            self.dir.user_mut(user).local = local;
            self.announce(ClusterMessage::Presence {
                user: name,
                presence: local,
            });
        }
        let Self { dir, out, step, .. } = self;
        let old = dir.user(user).presence;
        dir.user_mut(user).presence = new;
        if old.as_seen() == new.as_seen() {
            return;
        }
        let me = dir.user(user);
        for &contact in &me.contacts {
            let c = dir.user(contact);
            if c.sessions.is_empty()
                || c.contacts.binary_search(&user).is_err()
                || me.blocks.binary_search(&contact).is_ok()
            {
                continue;
            }
            let line = presence_line("NLN", new.as_seen(), &me.name);
            for &conn in &c.sessions {
                let line = line.clone();
                out.push_back((*step, Output::Send { conn, line }));
            }
        }
    }

    /// `ILN` for every contact `user` may see that is not offline (after login).
    pub(super) fn push_initial_presence(&mut self, user: UserId, conn: ConnId) {
        let Self { dir, out, step, .. } = self;
        for &contact in &dir.user(user).contacts {
            let seen = dir.seen(contact, user);
            if seen != Presence::Offline {
                let line = presence_line("ILN", seen, &dir.user(contact).name);
                out.push_back((*step, Output::Send { conn, line }));
            }
        }
    }

    /// Sends `line` to every session of `user`.
    pub(super) fn send_to_user(&mut self, user: UserId, line: &Line) {
        let sessions = std::mem::take(&mut self.dir.user_mut(user).sessions);
        for &conn in &sessions {
            self.send(conn, line.clone());
        }
        self.dir.user_mut(user).sessions = sessions;
    }

    /// After a list change between `a` and `b`: `ILN` to whoever now sees the other, `FLN` to
    /// whoever no longer does.
    pub(super) fn push_pair_changes(&mut self, a: UserId, b: UserId, before: (Presence, Presence)) {
        let after = self.dir.pair_view(a, b);
        for (target, viewer, was, is) in [(a, b, before.0, after.0), (b, a, before.1, after.1)] {
            if was == is {
                continue;
            }
            let line = presence_line("ILN", is, &self.dir.user(target).name);
            self.send_to_user(viewer, &line);
        }
    }

    /// `CHG TrID STATE`: this session's state; contacts see the user's most available.
    pub(super) fn on_chg(&mut self, me: UserId, conn: ConnId, line: &Line) -> Handled {
        let [code] = params(line)?;
        let state = Presence::from_code(code)
            .filter(|&p| p != Presence::Offline)
            .ok_or(INVALID_PARAMETER)?;
        if let Some(c) = self.conns.get_mut(&conn) {
            c.presence = state;
        }
        self.send(conn, Line::new("CHG", line.trid, [code.to_owned()]));
        self.refresh_presence(me);
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

    /// The existing user a list command names (not `me`: that is `self_refusal`).
    fn list_target(
        &self,
        me: UserId,
        line: &Line,
        self_refusal: Refusal,
    ) -> Result<UserId, Refusal> {
        let [name] = params(line)?;
        let other = self.dir.lookup(name).ok_or(NO_SUCH_USER)?;
        if other == me {
            return Err(self_refusal);
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
        self.dir.apply_list(me, other, op);
        let store = match op {
            ListOp::Add => StoreOp::AddContact {
                owner,
                contact: name.clone(),
            },
            ListOp::Remove => StoreOp::RemoveContact {
                owner,
                contact: name.clone(),
            },
            ListOp::Block => StoreOp::Block {
                owner,
                blocked: name.clone(),
            },
            ListOp::Allow => StoreOp::Allow {
                owner,
                blocked: name.clone(),
            },
        };
        let undo = Undo::List {
            owner: me,
            other,
            op,
        };
        self.store(store.clone(), undo);
        self.announce(ClusterMessage::List(store));
        self.send(
            conn,
            Line::new(line.command.as_str(), line.trid, [name.to_string()]),
        );
        self.push_pair_changes(me, other, before);
    }

    /// `ADC TrID name`.
    pub(super) fn on_adc(&mut self, me: UserId, conn: ConnId, line: &Line) -> Handled {
        let other = self.list_target(me, line, CANNOT_ADD_SELF)?;
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
        let other = self.list_target(me, line, CANNOT_BLOCK_SELF)?;
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

/// A change to a contact or block list.
#[derive(Clone, Copy, Debug)]
pub(super) enum ListOp {
    Add,
    Remove,
    Block,
    Allow,
}

impl ListOp {
    /// The change that takes this one back.
    pub(super) fn reverse(self) -> ListOp {
        match self {
            ListOp::Add => ListOp::Remove,
            ListOp::Remove => ListOp::Add,
            ListOp::Block => ListOp::Allow,
            ListOp::Allow => ListOp::Block,
        }
    }
}
