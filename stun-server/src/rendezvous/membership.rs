//! Which other rendezvous nodes are alive, from their heartbeats, and the peer list `XFR` picks
//! from (docs/CLUSTER.md).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use shared::rendezvous::server::{NodeId, PresenceDigest};

/// A node we have heard from.
struct Member {
    rendezvous: SocketAddr,
    last_heard: Instant,
    /// Neither draining nor full: it may be sent clients.
    accepting: bool,
}

/// What a heartbeat changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Heard {
    /// A node not known before (or known at another address).
    pub(crate) joined: bool,
    /// The peer list changed.
    pub(crate) peers_changed: bool,
}

/// The live nodes and the static `--peer-node` list.
pub(crate) struct Membership {
    /// Where clients reach this node (never its own peer).
    advertise: SocketAddr,
    static_peers: Vec<SocketAddr>,
    members: HashMap<NodeId, Member>,
    timeout: Duration,
}

impl Membership {
    pub(crate) fn new(
        advertise: SocketAddr,
        static_peers: Vec<SocketAddr>,
        timeout: Duration,
    ) -> Membership {
        Membership {
            advertise,
            static_peers,
            members: HashMap::new(),
            timeout,
        }
    }

    /// Whether `node` is a live member.
    pub(crate) fn contains(&self, node: NodeId) -> bool {
        self.members.contains_key(&node)
    }

    /// A heartbeat from `node`.
    pub(crate) fn heard(
        &mut self,
        node: NodeId,
        rendezvous: SocketAddr,
        accepting: bool,
        now: Instant,
    ) -> Heard {
        let member = Member {
            rendezvous,
            last_heard: now,
            accepting,
        };
        match self.members.insert(node, member) {
            None => Heard {
                joined: true,
                peers_changed: true,
            },
            Some(old) => {
                let moved = old.rendezvous != rendezvous;
                Heard {
                    joined: moved,
                    peers_changed: moved || old.accepting != accepting,
                }
            }
        }
    }

    /// `node` said goodbye; `true` if it was a member.
    pub(crate) fn left(&mut self, node: NodeId) -> bool {
        self.members.remove(&node).is_some()
    }

    /// Drops the members not heard from for the timeout, and returns them.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<(NodeId, SocketAddr)> {
        let timeout = self.timeout;
        let mut dead: Vec<(NodeId, SocketAddr)> = self
            .members
            .iter()
            .filter(|(_, m)| now.duration_since(m.last_heard) >= timeout)
            .map(|(id, m)| (*id, m.rendezvous))
            .collect();
        dead.sort_unstable();
        for (node, _) in &dead {
            self.members.remove(node);
        }
        dead
    }

    /// Replaces the static list.
    pub(crate) fn set_static_peers(&mut self, peers: Vec<SocketAddr>) {
        self.static_peers = peers;
    }

    /// The static list, then every live member that accepts clients, without this node.
    pub(crate) fn peers(&self) -> Vec<SocketAddr> {
        let mut peers = self.static_peers.clone();
        let mut live: Vec<SocketAddr> = self
            .members
            .values()
            .filter(|m| m.accepting)
            .map(|m| m.rendezvous)
            .collect();
        live.sort_unstable();
        for addr in live {
            if !peers.contains(&addr) && addr != self.advertise {
                peers.push(addr);
            }
        }
        peers
    }

    /// Live members.
    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }
}

/// When this node's heartbeat carries its list of online users (the first one, and the next
/// one after a node asked), and when to ask another node for its list: when the digest it
/// sent differs from the replica's, at most once per timeout (the node timeout) per node (a node that
/// lists an account this one has not read yet differs until it is read).
#[derive(Debug)]
pub(crate) struct Lists {
    /// The next heartbeat carries the list.
    pub(crate) wanted: bool,
    /// When each node's list was last asked for.
    asked: HashMap<NodeId, Instant>,
    /// How long an answer may take before the node is asked again.
    timeout: Duration,
}

impl Lists {
    pub(crate) fn new(timeout: Duration) -> Lists {
        Lists {
            wanted: true,
            asked: HashMap::new(),
            timeout,
        }
    }

    /// Whether this heartbeat carries the list.
    pub(crate) fn due(&mut self) -> bool {
        std::mem::take(&mut self.wanted)
    }

    /// Whether to ask `node` for its list, given its digest and the replica's.
    pub(crate) fn ask(
        &mut self,
        node: NodeId,
        theirs: PresenceDigest,
        ours: PresenceDigest,
        now: Instant,
    ) -> bool {
        if theirs == ours {
            return false;
        }
        match self.asked.get(&node) {
            Some(&at) if now.saturating_duration_since(at) < self.timeout => false,
            _ => {
                self.asked.insert(node, now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn live_accepting_members_join_the_static_peers_and_dead_ones_leave() {
        let t0 = Instant::now();
        let mut m = Membership::new(addr(1), vec![addr(9)], Duration::from_secs(5));
        let (n2, n3) = (NodeId(2), NodeId(3));
        assert!(m.heard(n2, addr(2), true, t0).joined);
        assert!(m.heard(n3, addr(3), true, t0).joined);
        assert_eq!(m.peers(), [addr(9), addr(2), addr(3)]);
        // Heard again, nothing changed.
        let again = m.heard(n2, addr(2), true, t0 + Duration::from_secs(3));
        assert_eq!(
            again,
            Heard {
                joined: false,
                peers_changed: false
            }
        );
        // Node 3 drains (or fills up): no client is sent there any more.
        assert!(
            m.heard(n3, addr(3), false, t0 + Duration::from_secs(3))
                .peers_changed
        );
        assert_eq!(m.peers(), [addr(9), addr(2)]);
        // Silent for the timeout: gone; node 2 was heard later and stays.
        let dead = m.expire(t0 + Duration::from_secs(7));
        assert_eq!(dead, []);
        let dead = m.expire(t0 + Duration::from_secs(8));
        assert_eq!(dead, [(n2, addr(2)), (n3, addr(3))]);
        assert_eq!(m.len(), 0);
        assert_eq!(m.peers(), [addr(9)]);
        // A goodbye removes at once; this node is never its own peer.
        m.heard(NodeId(4), addr(1), true, t0);
        assert_eq!(m.peers(), [addr(9)]);
        assert!(m.left(NodeId(4)));
        assert!(!m.left(NodeId(4)));
    }

    #[test]
    fn the_list_goes_when_asked_and_is_asked_for_when_the_digests_differ() {
        let mut lists = Lists::new(Duration::from_secs(5));
        // The first heartbeat carries it (the others may have missed this node's start),
        // then none until asked.
        assert!(lists.due());
        assert!(!lists.due());
        lists.wanted = true;
        assert!(lists.due());
        assert!(!lists.due());
        let t0 = Instant::now();
        let same = PresenceDigest { count: 2, sum: 7 };
        let other = PresenceDigest { count: 2, sum: 8 };
        assert!(!lists.ask(NodeId(1), same, same, t0));
        assert!(lists.ask(NodeId(1), same, other, t0));
        // Not again while the answer may be on its way; another node is asked for its own.
        assert!(!lists.ask(NodeId(1), same, other, t0 + Duration::from_secs(1)));
        assert!(lists.ask(NodeId(2), same, other, t0 + Duration::from_secs(1)));
        assert!(lists.ask(NodeId(1), same, other, t0 + Duration::from_secs(5)));
    }
}
