//! A heartbeat's list of online users in parts: NATS refuses a message over its
//! `max_payload` (1 MB by default), and one entry is up to about 45 bytes of JSON, so a node
//! with more than about 20,000 users online could not send its snapshot in one message. It
//! sends it in parts of [`USERS_PER_PART`], numbered within the beat; a receiving node applies
//! a snapshot only when it has every part of one beat (a part lost makes it wait for the next
//! beat, a second later, as a lost one-part heartbeat did).

use std::collections::HashMap;

use shared::rendezvous::server::NodeId;

/// Users per heartbeat message: about 450 kB of JSON at the longest names.
pub(crate) const USERS_PER_PART: usize = 10_000;

/// More parts than this in one beat (a billion users) is not a heartbeat of ours: dropped,
/// so that a forged count cannot make a node hold memory for it.
const MAX_PARTS: u32 = 100_000;

/// `users` in parts of at most [`USERS_PER_PART`]; one empty part for no users (a heartbeat
/// always goes out: it says the node lives).
pub(crate) fn split<T>(users: Vec<T>) -> Vec<Vec<T>> {
    if users.is_empty() {
        return vec![Vec::new()];
    }
    let mut parts = Vec::with_capacity(users.len().div_ceil(USERS_PER_PART));
    let mut rest = users.into_iter().peekable();
    while rest.peek().is_some() {
        parts.push(rest.by_ref().take(USERS_PER_PART).collect());
    }
    parts
}

/// The parts of one beat received so far from one node.
#[derive(Debug)]
struct Partial<T> {
    beat: u64,
    received: Vec<bool>,
    missing: u32,
    users: Vec<T>,
}

/// Snapshots being put together, one per node.
#[derive(Debug)]
pub(crate) struct Assembler<T> {
    partial: HashMap<NodeId, Partial<T>>,
}

impl<T> Default for Assembler<T> {
    fn default() -> Self {
        Assembler {
            partial: HashMap::new(),
        }
    }
}

impl<T> Assembler<T> {
    /// Part `part` (from 0) of `parts` of `node`'s heartbeat number `beat`: the whole list
    /// once every part of that beat is in, else `None`. A part of a newer beat drops what an
    /// older, incomplete one had gathered; parts of an older beat, repeated parts and
    /// impossible numbers are ignored.
    pub(crate) fn add(
        &mut self,
        node: NodeId,
        beat: u64,
        part: u32,
        parts: u32,
        users: Vec<T>,
    ) -> Option<Vec<T>> {
        if parts == 0 || parts > MAX_PARTS || part >= parts {
            return None;
        }
        if parts == 1 {
            self.partial.remove(&node);
            return Some(users);
        }
        let partial = self.partial.entry(node).or_insert_with(|| Partial {
            beat,
            received: vec![false; parts as usize],
            missing: parts,
            users: Vec::new(),
        });
        if beat < partial.beat {
            return None;
        }
        if beat > partial.beat || partial.received.len() != parts as usize {
            *partial = Partial {
                beat,
                received: vec![false; parts as usize],
                missing: parts,
                users: Vec::new(),
            };
        }
        if std::mem::replace(&mut partial.received[part as usize], true) {
            return None;
        }
        partial.missing -= 1;
        partial.users.extend(users);
        if partial.missing > 0 {
            return None;
        }
        self.partial.remove(&node).map(|p| p.users)
    }

    /// Forgets what `node` had sent of an incomplete snapshot (it left, or died).
    pub(crate) fn forget(&mut self, node: NodeId) {
        self.partial.remove(&node);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const N: NodeId = NodeId(9);

    #[test]
    fn lists_split_into_parts_that_nats_takes() {
        assert_eq!(split(Vec::<u8>::new()), [Vec::<u8>::new()]);
        let parts = split((0..25_001).collect::<Vec<u32>>());
        let sizes: Vec<usize> = parts.iter().map(Vec::len).collect();
        assert_eq!(sizes, [10_000, 10_000, 5_001]);
        // The longest names (32 characters) and states: well under 1 MB a part.
        let part: Vec<(String, String)> = (0..USERS_PER_PART)
            .map(|i| (format!("{i:0>32}"), "NLN".to_owned()))
            .collect();
        assert!(serde_json::to_vec(&part).unwrap().len() < 600_000);
    }

    #[test]
    fn a_snapshot_is_whole_only_with_every_part_of_one_beat() {
        let mut a = Assembler::default();
        // One part: whole at once.
        assert_eq!(a.add(N, 1, 0, 1, vec![1]), Some(vec![1]));
        // Three parts in any order; a repeated part changes nothing.
        assert_eq!(a.add(N, 2, 2, 3, vec![5]), None);
        assert_eq!(a.add(N, 2, 0, 3, vec![1, 2]), None);
        assert_eq!(a.add(N, 2, 0, 3, vec![1, 2]), None);
        let mut whole = a.add(N, 2, 1, 3, vec![3, 4]).unwrap();
        whole.sort_unstable();
        assert_eq!(whole, [1, 2, 3, 4, 5]);
        // A beat that loses a part is dropped when the next one starts; late parts of it are
        // ignored.
        assert_eq!(a.add(N, 3, 0, 2, vec![1]), None);
        assert_eq!(a.add(N, 4, 0, 2, vec![7]), None);
        assert_eq!(a.add(N, 3, 1, 2, vec![2]), None);
        assert_eq!(a.add(N, 4, 1, 2, vec![8]), Some(vec![7, 8]));
        // Nonsense numbers are ignored; a node that left starts from nothing.
        assert_eq!(a.add(N, 5, 2, 2, vec![1]), None);
        assert_eq!(a.add(N, 5, 0, 0, vec![1]), None);
        assert_eq!(a.add(N, 5, 0, MAX_PARTS + 1, vec![1]), None);
        assert_eq!(a.add(N, 6, 0, 2, vec![1]), None);
        a.forget(N);
        assert_eq!(a.add(N, 6, 1, 2, vec![2]), None);
    }
}
