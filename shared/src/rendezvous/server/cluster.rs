//! Presence and list changes across the nodes of a cluster (docs/CLUSTER.md).
//!
//! The core knows nothing of how nodes talk to each other (the driver carries the messages over
//! NATS). It keeps a *replica* of what every other node said about its users: for each user, the
//! most available presence over that user's sessions on each other node. A user's presence as
//! its contacts see it is the most available over its local sessions and those replicas, so a
//! login reads it locally, with no round trip to another node.
//!
//! What goes out, as [`Output::Cluster`] (only with [`RendezvousConfig::cluster`] set):
//! - [`ClusterMessage::Presence`] when the presence over this node's sessions of a user
//!   changes (logins, `CHG`, logouts);
//! - [`ClusterMessage::List`] when a contact or block list changes here (after its
//!   [`Output::Store`], so it is never announced before it is in the shared database).
//!
//! What comes in: [`handle_remote_presence`](RendezvousServer::handle_remote_presence),
//! [`handle_node_snapshot`](RendezvousServer::handle_node_snapshot) (a node's full list of
//! users online on it: it repairs any message lost, for instance while the message bus
//! restarted), [`handle_node_gone`](RendezvousServer::handle_node_gone) (the
//! driver decided that node is dead: its users go offline here at once), and
//! [`handle_remote_list`](RendezvousServer::handle_remote_list).
//!
//! To find out whether its replica of a node is whole without being sent that node's list
//! every time, the driver compares [`local_digest`](RendezvousServer::local_digest) there with
//! [`remote_digest`](RendezvousServer::remote_digest) here ([`PresenceDigest`]).
//!
//! [`RendezvousConfig::cluster`]: super::RendezvousConfig::cluster

use std::collections::{HashMap, HashSet};

use super::directory::{ListOp, PairSet, UserId};
use super::{Output, RendezvousServer};
use crate::rendezvous::types::{Presence, StoreOp, UserName};

/// Another node of the cluster, as the driver names it (a random number each node draws at
/// start, so a restarted node is a new node).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u64);

/// What this node tells every other node.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClusterMessage {
    /// The most available presence over `user`'s sessions on this node changed
    /// ([`Presence::Offline`]: it has none left here, or none that sent `CHG`).
    Presence {
        /// Whose.
        user: UserName,
        /// The raw state (`HDN` included: each node applies the visibility rules itself).
        presence: Presence,
    },
    /// A contact or block list change made on this node, already stored (only
    /// [`StoreOp::AddContact`], [`StoreOp::RemoveContact`], [`StoreOp::Block`] and
    /// [`StoreOp::Allow`]).
    List(StoreOp),
    /// A session of `user` here registered the login session id `session` (`DEV`): another
    /// node closes its sessions of `user` that hold it (`OUT 0 OTH`), as this node did.
    SessionClaimed {
        /// Whose.
        user: UserName,
        /// The login session id.
        session: super::SessionId,
    },
    /// For one other node only: invitations, answers and lines for its sessions
    /// (`remote_intro.rs`).
    ToNode {
        /// The node.
        node: NodeId,
        /// What it must do.
        message: super::remote_intro::Routed,
    },
}

/// A summary of a set of `(user, presence)` pairs that does not depend on their order: how
/// many, and the wrapping sum of a fixed hash (64-bit FNV-1a, the same in every build) of each
/// name and state. One node sends the digest of its online users with each heartbeat; another
/// compares it with the digest of its replica of that node, and asks for the full list only
/// when they differ, instead of reading every node's full list every second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PresenceDigest {
    /// How many pairs.
    pub count: u64,
    /// The wrapping sum of their hashes.
    pub sum: u64,
}

impl PresenceDigest {
    /// Adds one pair.
    pub fn add(&mut self, user: &UserName, presence: Presence) {
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0100_0000_01b3;
        let mut hash = OFFSET;
        let code = presence.code().as_bytes();
        // The separator keeps ("ab", "c..") and ("a", "bc..") apart.
        for &byte in user.as_str().as_bytes().iter().chain(b" ").chain(code) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(PRIME);
        }
        self.count += 1;
        self.sum = self.sum.wrapping_add(hash);
    }
}

/// The replicas of other nodes' presence: which users each node has said are online on it.
#[derive(Debug, Default)]
pub(super) struct Remote {
    by_node: HashMap<NodeId, HashSet<UserId>>,
}

impl RendezvousServer {
    /// Queues `message` for the other nodes, if this node is in a cluster.
    pub(super) fn announce(&mut self, message: ClusterMessage) {
        if self.config.cluster {
            self.push(Output::Cluster(message));
        }
    }

    /// Node `node` says `user`'s presence over its sessions there is now `presence`. Unknown
    /// users are ignored (a node learns new accounts from the database; the next snapshot
    /// repairs anything missed meanwhile). Contacts on this node see the change at once.
    pub fn handle_remote_presence(&mut self, node: NodeId, user: &UserName, presence: Presence) {
        self.step += 1;
        if let Some(id) = self.dir.id(user) {
            self.set_remote(node, id, presence);
        }
    }

    /// Node `node`'s full list of users online on it (its heartbeat): users it no longer
    /// lists go offline there, the others take the state given.
    pub fn handle_node_snapshot(&mut self, node: NodeId, users: &[(UserName, Presence)]) {
        self.step += 1;
        let listed: HashMap<UserId, Presence> = users
            .iter()
            .filter_map(|(name, p)| Some((self.dir.id(name)?, *p)))
            .collect();
        let gone: Vec<UserId> = self
            .remote
            .by_node
            .get(&node)
            .map(|set| {
                set.iter()
                    .filter(|u| !listed.contains_key(u))
                    .copied()
                    .collect()
            })
            .unwrap_or_default();
        for user in gone {
            self.set_remote(node, user, Presence::Offline);
        }
        for (user, presence) in listed {
            self.set_remote(node, user, presence);
        }
    }

    /// Node `node` is gone (its heartbeat stopped, or it said goodbye): every user it had
    /// goes offline there; contacts here that saw one of them get `FLN` unless the user has
    /// sessions elsewhere.
    pub fn handle_node_gone(&mut self, node: NodeId) {
        self.step += 1;
        let users = self.remote.by_node.remove(&node).unwrap_or_default();
        let mut users: Vec<UserId> = users.into_iter().collect();
        users.sort_unstable();
        for user in users {
            self.dir.user_mut(user).remote.retain(|(n, _)| *n != node);
            self.refresh_presence(user);
        }
        self.forget_remote_node(node);
    }

    /// A contact or block list change another node made (and stored): applied here, with the
    /// same `ILN`/`FLN` pushes to sessions on this node as if it had been made here. Nothing is
    /// stored. Other operations and unknown users are ignored.
    pub fn handle_remote_list(&mut self, op: &StoreOp) {
        self.step += 1;
        let (owner, other, list_op) = match op {
            StoreOp::AddContact { owner, contact } => (owner, contact, ListOp::Add),
            StoreOp::RemoveContact { owner, contact } => (owner, contact, ListOp::Remove),
            StoreOp::Block { owner, blocked } => (owner, blocked, ListOp::Block),
            StoreOp::Allow { owner, blocked } => (owner, blocked, ListOp::Allow),
            _ => return,
        };
        let (Some(me), Some(other)) = (self.dir.id(owner), self.dir.id(other)) else {
            return;
        };
        if me == other {
            return;
        }
        let before = self.dir.pair_view(me, other);
        self.dir.apply_list(me, other, list_op);
        self.push_pair_changes(me, other, before);
    }

    /// The contact and block lists as the shared database holds them now, read by the driver
    /// when a list change of another node may have missed this one (its connection to the
    /// message bus was down, or a node's heartbeat counts more list changes than arrived).
    /// Every pair that differs from this node's copy is applied as
    /// [`handle_remote_list`](Self::handle_remote_list) applies one change, with the same
    /// pushes; pairs naming unknown users are skipped. Returns how many pairs differed.
    ///
    /// The driver must have stored every list change this node made before it read the
    /// lists (it stores them in order, before reading): a change of this node's that is not
    /// in them yet would otherwise be undone here.
    pub fn handle_lists_resync(
        &mut self,
        contacts: &[(UserName, UserName)],
        blocks: &[(UserName, UserName)],
    ) -> usize {
        self.step += 1;
        let ids = |pairs: &[(UserName, UserName)]| -> PairSet {
            pairs
                .iter()
                .filter_map(|(a, b)| Some((self.dir.id(a)?, self.dir.id(b)?)))
                .filter(|(a, b)| a != b)
                .collect()
        };
        let (want_contacts, want_blocks) = (ids(contacts), ids(blocks));
        let (have_contacts, have_blocks) = self.dir.list_pairs();
        let mut changes: Vec<(UserId, UserId, ListOp)> = Vec::new();
        let mut diff = |want: &PairSet, have: &PairSet, add: ListOp, remove: ListOp| {
            changes.extend(want.difference(have).map(|&(a, b)| (a, b, add)));
            changes.extend(have.difference(want).map(|&(a, b)| (a, b, remove)));
        };
        diff(&want_contacts, &have_contacts, ListOp::Add, ListOp::Remove);
        diff(&want_blocks, &have_blocks, ListOp::Block, ListOp::Allow);
        // One order whatever the hash sets did: the pushes come out the same every time.
        changes.sort_unstable_by_key(|&(a, b, op)| (a, b, op as u8));
        for &(owner, other, op) in &changes {
            let before = self.dir.pair_view(owner, other);
            self.dir.apply_list(owner, other, op);
            self.push_pair_changes(owner, other, before);
        }
        changes.len()
    }

    /// The users online on this node with the most available state over their sessions
    /// here, for the heartbeat snapshot (users whose sessions have not sent `CHG` are left
    /// out: they are offline to everyone).
    pub fn local_presences(&self) -> Vec<(UserName, Presence)> {
        self.dir
            .users_with_sessions()
            .filter(|u| u.local != Presence::Offline)
            .map(|u| (u.name.clone(), u.local))
            .collect()
    }

    /// The digest of [`local_presences`](Self::local_presences), without making the list.
    pub fn local_digest(&self) -> PresenceDigest {
        let mut digest = PresenceDigest::default();
        for user in self.dir.users_with_sessions() {
            if user.local != Presence::Offline {
                digest.add(&user.name, user.local);
            }
        }
        digest
    }

    /// The digest of this node's replica of `node`: equal to that node's
    /// [`local_digest`](Self::local_digest) when no message from it was lost (and it names
    /// no account this node has not read yet).
    pub fn remote_digest(&self, node: NodeId) -> PresenceDigest {
        let mut digest = PresenceDigest::default();
        for &id in self.remote.by_node.get(&node).into_iter().flatten() {
            let user = self.dir.user(id);
            if let Some(&(_, presence)) = user.remote.iter().find(|(n, _)| *n == node) {
                digest.add(&user.name, presence);
            }
        }
        digest
    }

    /// A session of `user` on another node registered login session id `session`: this
    /// node's sessions of `user` holding the same id are replaced there (`OUT 0 OTH`, closed),
    /// as on one node (docs/PROTOCOL.md, `DEV`).
    pub fn handle_remote_session(&mut self, user: &UserName, session: super::SessionId) {
        self.step += 1;
        let Some(id) = self.dir.id(user) else {
            return;
        };
        let stale: Vec<super::ConnId> = self
            .dir
            .user(id)
            .sessions
            .iter()
            .copied()
            .filter(|c| {
                self.conns
                    .get(c)
                    .is_some_and(|c| c.login_session == Some(session.0))
            })
            .collect();
        for conn in stale {
            self.close(conn, Some("OTH"));
        }
    }

    /// Whether an account of that name is known here (a node learns accounts made on other
    /// nodes from the database; the driver reads it again before a list change naming an
    /// account it does not know).
    pub fn knows_user(&self, name: &UserName) -> bool {
        self.dir.id(name).is_some()
    }

    /// Users this node believes online on other nodes (each user counted once per node).
    pub fn remote_presences(&self) -> usize {
        self.remote.by_node.values().map(HashSet::len).sum()
    }

    /// Records `presence` for `user` on `node` and refreshes what contacts here see.
    fn set_remote(&mut self, node: NodeId, user: UserId, presence: Presence) {
        let remote = &mut self.dir.user_mut(user).remote;
        let at = remote.iter().position(|(n, _)| *n == node);
        let changed = match (at, presence) {
            (None, Presence::Offline) => false,
            (Some(i), Presence::Offline) => {
                remote.swap_remove(i);
                if let Some(set) = self.remote.by_node.get_mut(&node) {
                    set.remove(&user);
                }
                true
            }
            (Some(i), p) if remote[i].1 == p => false,
            (Some(i), p) => {
                remote[i].1 = p;
                true
            }
            (None, p) => {
                remote.push((node, p));
                self.remote.by_node.entry(node).or_default().insert(user);
                true
            }
        };
        if changed {
            self.refresh_presence(user);
        }
    }
}
