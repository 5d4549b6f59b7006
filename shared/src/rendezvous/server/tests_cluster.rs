//! Presence and list changes across two cores (two nodes), with the messages between them
//! carried by the test as the driver carries them over NATS.

#![allow(clippy::unwrap_used)]

use super::tests::{Harness, config, name, stores, to};
use super::*;
use crate::rendezvous::types::Presence;

pub(super) const A: NodeId = NodeId(1);
pub(super) const B: NodeId = NodeId(2);

/// Two nodes over one directory: alice and bob are mutual contacts, carol is alice's only.
pub(super) fn two_nodes() -> (Harness, Harness) {
    let node = || {
        let config = RendezvousConfig {
            cluster: true,
            ..config()
        };
        Harness::with_config(
            config,
            &["alice", "bob", "carol"],
            &[("alice", "bob"), ("bob", "alice"), ("alice", "carol")],
            &[],
        )
    };
    (node(), node())
}

/// The cluster messages in `log` (what the driver would publish).
pub(super) fn messages(log: &[Output]) -> Vec<ClusterMessage> {
    log.iter()
        .filter_map(|o| match o {
            Output::Cluster(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

/// Delivers `from`'s cluster messages since its log was last cleared to `to`, as node `node`
/// (with two nodes, every message for one node is for `to`), and takes them out of `from`'s
/// log.
pub(super) fn carry(from: &mut Harness, node: NodeId, to: &mut Harness) {
    for message in messages(&from.log) {
        match message {
            ClusterMessage::Presence { user, presence } => {
                to.server.handle_remote_presence(node, &user, presence);
            }
            ClusterMessage::List(op) => to.server.handle_remote_list(&op),
            ClusterMessage::SessionClaimed { user, session } => {
                to.server.handle_remote_session(&user, session);
            }
            ClusterMessage::ToNode { message, .. } => {
                to.server.handle_routed(to.now, node, message);
            }
        }
    }
    from.log.retain(|o| !matches!(o, Output::Cluster(_)));
    to.drain();
}

#[test]
fn presence_crosses_nodes_both_ways_and_at_login() {
    let (mut a, mut b) = two_nodes();
    let alice = a.online("alice", "AWY");
    assert_eq!(
        messages(&a.log),
        [ClusterMessage::Presence {
            user: name("alice"),
            presence: Presence::Away
        }]
    );
    carry(&mut a, A, &mut b);
    // bob logs in on node B afterwards: the replica answers his login at once.
    let bob = b.login("bob");
    assert_eq!(to(&b.log, bob).last().unwrap(), "ILN 0 AWY alice");
    b.log.clear();
    // A change on node A reaches bob's session on node B.
    a.ask(alice, "CHG 3 BSY");
    carry(&mut a, A, &mut b);
    assert_eq!(to(&b.log, bob), ["NLN 0 BSY alice"]);
    // And bob's first CHG reaches alice on node A.
    a.log.clear();
    b.log.clear();
    b.ask(bob, "CHG 4 NLN");
    carry(&mut b, B, &mut a);
    assert_eq!(to(&a.log, alice), ["NLN 0 NLN bob"]);
    // alice logs out on node A: bob sees FLN.
    b.log.clear();
    a.server.handle_disconnected(a.now, alice);
    a.drain();
    carry(&mut a, A, &mut b);
    assert_eq!(to(&b.log, bob), ["FLN 0 alice"]);
    assert_eq!(b.server.remote_presences(), 0);
}

#[test]
fn a_user_on_two_nodes_shows_the_most_available_and_survives_one_node() {
    let (mut a, mut b) = two_nodes();
    let bob = b.online("bob", "NLN");
    b.log.clear();
    a.online("alice", "AWY");
    carry(&mut a, A, &mut b);
    assert_eq!(to(&b.log, bob), ["NLN 0 AWY alice"]);
    // alice logs in on node B too, online: bob sees the most available of both.
    b.log.clear();
    b.online("alice", "NLN");
    assert_eq!(to(&b.log, bob), ["NLN 0 NLN alice"]);
    // Node A dies: alice still has her session on B; nothing changes for bob.
    b.log.clear();
    b.server.handle_node_gone(A);
    b.drain();
    assert!(to(&b.log, bob).is_empty(), "{:?}", b.log);
}

#[test]
fn a_dead_node_takes_its_users_offline_and_snapshots_repair_lost_messages() {
    let (mut a, mut b) = two_nodes();
    let bob = b.online("bob", "NLN");
    a.online("alice", "NLN");
    carry(&mut a, A, &mut b);
    b.log.clear();
    b.server.handle_node_gone(A);
    b.drain();
    assert_eq!(to(&b.log, bob), ["FLN 0 alice"]);
    // A gone node's users are forgotten: a later login sees nobody.
    let bob2 = b.login("bob");
    assert!(!to(&b.log, bob2).iter().any(|l| l.contains("alice")));
    // Messages lost (none carried): node A's heartbeat snapshot brings alice back...
    b.log.clear();
    b.server
        .handle_node_snapshot(A, &a.server.local_presences());
    b.drain();
    assert_eq!(to(&b.log, bob), ["NLN 0 NLN alice"]);
    // ...and a snapshot without her takes her offline again.
    b.log.clear();
    b.server.handle_node_snapshot(A, &[]);
    b.drain();
    assert_eq!(to(&b.log, bob), ["FLN 0 alice"]);
    // The replica is whole again: its digest is node A's own.
    b.server
        .handle_node_snapshot(A, &a.server.local_presences());
    assert_eq!(b.server.remote_digest(A), a.server.local_digest());
    // Users that are logged in but have not sent CHG are not in the snapshot.
    let (mut c, _) = two_nodes();
    c.login("carol");
    assert!(c.server.local_presences().is_empty());
}

#[test]
fn list_changes_cross_nodes_with_their_presence_pushes() {
    let (mut a, mut b) = two_nodes();
    let alice = a.online("alice", "NLN");
    let bob = b.online("bob", "NLN");
    carry(&mut a, A, &mut b);
    carry(&mut b, B, &mut a);
    a.log.clear();
    b.log.clear();
    // bob blocks alice on node B: stored there, then announced.
    b.ask(bob, "BLK 5 alice");
    let op = StoreOp::Block {
        owner: name("bob"),
        blocked: name("alice"),
    };
    assert_eq!(stores(&b.log), std::slice::from_ref(&op));
    assert_eq!(messages(&b.log), [ClusterMessage::List(op)]);
    carry(&mut b, B, &mut a);
    // alice, on node A, no longer sees bob; node A stores nothing.
    assert_eq!(to(&a.log, alice), ["FLN 0 bob"]);
    assert!(stores(&a.log).is_empty());
    // Her LST on node A shows the block's effect; unblocking brings him back.
    b.ask(bob, "ALW 6 alice");
    carry(&mut b, B, &mut a);
    assert_eq!(to(&a.log, alice).last().unwrap(), "ILN 0 NLN bob");
    // carol adds alice on node B: alice's LST on node A shows carol's presence rule.
    let carol = b.online("carol", "NLN");
    b.ask(carol, "ADC 7 alice");
    carry(&mut b, B, &mut a);
    assert_eq!(to(&a.log, alice).last().unwrap(), "ILN 0 NLN carol");
}

#[test]
fn a_single_node_announces_nothing() {
    let mut h = Harness::new(
        &["alice", "bob"],
        &[("alice", "bob"), ("bob", "alice")],
        &[],
    );
    let alice = h.online("alice", "NLN");
    h.ask(alice, "BLK 3 bob");
    assert!(messages(&h.log).is_empty());
}

#[test]
fn a_failed_store_withdraws_its_announcement() {
    let (_, mut b) = two_nodes();
    let bob = b.online("bob", "NLN");
    b.log.clear();
    b.send_raw(bob, "BLK 5 alice");
    let Some(Output::Store { id, .. }) = b.server.poll_output() else {
        panic!("no store first");
    };
    b.server.handle_store_failed(b.now, id);
    let rest = b.drain();
    assert!(messages(&rest).is_empty(), "{rest:?}");
    assert_eq!(to(&rest, bob), ["500 5 internal server error"]);
}

#[test]
fn a_login_session_id_claimed_on_another_node_replaces_the_session_here() {
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD.encode([1u8; 32]);
    let session = "00112233445566778899aabbccddeeff";
    let (mut a, mut b) = two_nodes();
    let old = a.online("alice", "NLN");
    let other = a.online("alice", "AWY");
    assert_eq!(
        a.ask(old, &format!("DEV 5 {key} {session}")),
        [format!("DEV 5 {key} {session}")]
    );
    a.log.clear();
    // The client reconnected through node B with the same login session id.
    let new = b.online("alice", "NLN");
    b.ask(new, &format!("DEV 6 {key} {session}"));
    carry(&mut b, B, &mut a);
    assert_eq!(to(&a.log, old), ["OUT 0 OTH", "CLOSE"]);
    // Her other session on node A, without that id, stays.
    assert!(to(&a.log, other).is_empty());
    assert_eq!(a.server.session_count(), 1);
}

#[test]
fn a_resync_from_the_database_applies_missed_list_changes_with_their_pushes() {
    let (mut a, mut b) = two_nodes();
    let alice = a.online("alice", "NLN");
    let _bob = b.online("bob", "NLN");
    carry(&mut b, B, &mut a);
    a.log.clear();
    let pairs = |list: &[(&str, &str)]| -> Vec<(UserName, UserName)> {
        list.iter().map(|(x, y)| (name(x), name(y))).collect()
    };
    let contacts = pairs(&[("alice", "bob"), ("bob", "alice"), ("alice", "carol")]);
    // bob blocked alice on node B, and its announcement never reached node A: the database
    // has the block, node A's copy does not. The resync finds it and pushes its effect.
    let blocked = pairs(&[("bob", "alice")]);
    assert_eq!(a.server.handle_lists_resync(&contacts, &blocked), 1);
    a.drain();
    assert_eq!(to(&a.log, alice), ["FLN 0 bob"]);
    assert!(stores(&a.log).is_empty(), "a resync stores nothing");
    assert!(messages(&a.log).is_empty(), "nor announces anything");
    // The same lists again: nothing differs, nothing is pushed.
    a.log.clear();
    assert_eq!(a.server.handle_lists_resync(&contacts, &blocked), 0);
    a.drain();
    assert!(to(&a.log, alice).is_empty(), "{:?}", a.log);
    // The unblock and a new contact, both missed: applied together; pairs naming accounts
    // node A does not know are skipped.
    let contacts = pairs(&[
        ("alice", "bob"),
        ("bob", "alice"),
        ("alice", "carol"),
        ("carol", "alice"),
        ("carol", "nobody"),
    ]);
    assert_eq!(a.server.handle_lists_resync(&contacts, &[]), 2);
    a.drain();
    assert_eq!(to(&a.log, alice), ["ILN 0 NLN bob"]);
    // And a contact removed elsewhere is removed here.
    let contacts = pairs(&[("alice", "bob"), ("bob", "alice"), ("alice", "carol")]);
    assert_eq!(a.server.handle_lists_resync(&contacts, &[]), 1);
}

#[test]
fn the_digests_agree_exactly_when_no_presence_message_was_lost() {
    let (mut a, mut b) = two_nodes();
    assert_eq!(a.server.local_digest(), PresenceDigest::default());
    assert_eq!(b.server.remote_digest(A), PresenceDigest::default());
    let alice = a.online("alice", "AWY");
    a.online("carol", "NLN");
    carry(&mut a, A, &mut b);
    let digest = a.server.local_digest();
    assert_eq!(digest.count, 2);
    assert_eq!(b.server.remote_digest(A), digest);
    // A change whose message is lost: same count, another digest.
    a.ask(alice, "CHG 3 BSY");
    a.log.retain(|o| !matches!(o, Output::Cluster(_)));
    assert_eq!(a.server.local_digest().count, 2);
    assert_ne!(b.server.remote_digest(A), a.server.local_digest());
    // The full list repairs it.
    b.server
        .handle_node_snapshot(A, &a.server.local_presences());
    assert_eq!(b.server.remote_digest(A), a.server.local_digest());
    // A change carried keeps them equal; a digest of another node's replica is empty.
    a.ask(alice, "CHG 4 NLN");
    carry(&mut a, A, &mut b);
    assert_eq!(b.server.remote_digest(A), a.server.local_digest());
    assert_eq!(b.server.remote_digest(B), PresenceDigest::default());
}
