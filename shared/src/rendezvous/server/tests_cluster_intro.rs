//! Invitations and introductions between two cores (two nodes), the test carrying the
//! messages between them as the driver does over NATS.

#![allow(clippy::unwrap_used)]

use super::tests::{Harness, to};
use super::tests_cluster::{A, B, carry, messages, two_nodes};
use super::tests_intro::{key, sid_of};
use super::*;

/// alice online on node A, bob on node B, each seeing the other.
fn apart() -> (Harness, Harness, ConnId, ConnId) {
    let (mut a, mut b) = two_nodes();
    let alice = a.online("alice", "NLN");
    carry(&mut a, A, &mut b);
    let bob = b.online("bob", "NLN");
    carry(&mut b, B, &mut a);
    a.log.clear();
    b.log.clear();
    (a, b, alice, bob)
}

fn tickets(log: &[Output]) -> usize {
    log.iter()
        .filter(|o| matches!(o, Output::Ticket(_)))
        .count()
}

fn itr_sid(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l.starts_with("ITR 0 "))
        .map(|l| l.split(' ').nth(2).unwrap().to_owned())
        .collect()
}

#[test]
fn an_invitation_rings_on_the_other_node_and_the_inviters_node_introduces() {
    let (mut a, mut b, alice, bob) = apart();
    let answer = a.ask(alice, &format!("INV 5 bob {}", key(1)));
    let sid = sid_of(&answer[0]);
    assert_eq!(answer, [format!("INV 5 bob {sid}")]);
    carry(&mut a, A, &mut b);
    assert_eq!(to(&b.log, bob), [format!("RNG 0 {sid} alice")]);
    b.log.clear();
    assert_eq!(
        b.ask(bob, &format!("ANS 6 {sid} {} nat=full-cone", key(2))),
        [format!("ANS 6 {sid}")]
    );
    carry(&mut b, B, &mut a);
    // Node A issued both tickets (for its own switchboard) and introduced alice here...
    assert_eq!(tickets(&a.log), 2);
    let alice_itr: Vec<String> = to(&a.log, alice)
        .into_iter()
        .filter(|l| l.starts_with("ITR"))
        .collect();
    assert!(
        alice_itr[0].starts_with(&format!("ITR 0 {sid} bob role=initiator")),
        "{alice_itr:?}"
    );
    assert!(alice_itr[0].contains("nat=full-cone"), "{alice_itr:?}");
    // ...and bob through node B, with alice's offer.
    carry(&mut a, A, &mut b);
    let bob_itr: Vec<String> = to(&b.log, bob)
        .into_iter()
        .filter(|l| l.starts_with("ITR"))
        .collect();
    assert!(
        bob_itr[0].starts_with(&format!("ITR 0 {sid} alice role=responder")),
        "{bob_itr:?}"
    );
    assert!(bob_itr[0].contains(&key(1)), "{bob_itr:?}");
    assert_eq!(tickets(&b.log), 0);
    // PRM crosses both ways.
    a.log.clear();
    b.log.clear();
    assert_eq!(
        b.ask(bob, &format!("PRM 7 {sid}")),
        [format!("PRM 7 {sid}")]
    );
    carry(&mut b, B, &mut a);
    assert_eq!(to(&a.log, alice), [format!("PRM 0 {sid}")]);
    a.log.clear();
    b.log.clear();
    assert_eq!(
        a.ask(alice, &format!("PRM 8 {sid}")),
        [format!("PRM 8 {sid}")]
    );
    carry(&mut a, A, &mut b);
    assert_eq!(to(&b.log, bob), [format!("PRM 0 {sid}")]);
    // Both report the outcome: bob's report goes to node A, which counts the introduction
    // once it has both; a second report from bob is refused on his node.
    let report = "outcome=direct method=plain cand=srflx ms=40";
    assert_eq!(
        b.ask(bob, &format!("RPT 9 {sid} {report}")),
        [format!("RPT 9 {sid}")]
    );
    assert_eq!(
        b.ask(bob, &format!("RPT 10 {sid} {report}")),
        ["220 10 already reported"]
    );
    carry(&mut b, B, &mut a);
    assert_eq!(a.server.telemetry().generation(), 0);
    assert_eq!(
        a.ask(alice, &format!("RPT 11 {sid} {report}")),
        [format!("RPT 11 {sid}")]
    );
    assert_eq!(a.server.telemetry().generation(), 1);
    assert_eq!(b.server.telemetry().generation(), 0);
}

#[test]
fn crossing_invitations_make_one_introduction() {
    let (mut a, mut b, alice, bob) = apart();
    // The two test cores share a seed: a login on B alone makes their session ids differ.
    b.login("carol");
    b.log.clear();
    let sid_a = sid_of(&a.ask(alice, &format!("INV 5 bob {}", key(1)))[0]);
    let sid_b = sid_of(&b.ask(bob, &format!("INV 5 alice {}", key(2)))[0]);
    // Both rings are in flight before either arrives.
    let (ring_a, ring_b) = (messages(&a.log), messages(&b.log));
    assert!(matches!(
        ring_a[..],
        [ClusterMessage::ToNode { node: B, .. }]
    ));
    assert!(matches!(
        ring_b[..],
        [ClusterMessage::ToNode { node: A, .. }]
    ));
    for _ in 0..2 {
        carry(&mut a, A, &mut b);
        carry(&mut b, B, &mut a);
    }
    let winner = sid_a.clone().min(sid_b.clone());
    assert_eq!(itr_sid(&to(&a.log, alice)), std::slice::from_ref(&winner));
    assert_eq!(itr_sid(&to(&b.log, bob)), std::slice::from_ref(&winner));
    assert_eq!(tickets(&a.log) + tickets(&b.log), 2);
    // Nobody was rung, nothing is left pending.
    assert!(!to(&a.log, alice).iter().any(|l| l.starts_with("RNG")));
    assert_eq!(a.server.pending_introductions(), 0);
    assert_eq!(b.server.pending_introductions(), 0);
    // Both sides may prime and report on the one introduction, whichever node made it: the
    // other node's session counts as having answered it.
    let report = "outcome=direct method=plain cand=host ms=250";
    for (h, conn, trid) in [(&mut a, alice, 7), (&mut b, bob, 8)] {
        assert_eq!(
            h.ask(conn, &format!("PRM {trid} {winner}")),
            [format!("PRM {trid} {winner}")]
        );
        assert_eq!(
            h.ask(conn, &format!("RPT {} {winner} {report}", trid + 10)),
            [format!("RPT {} {winner}", trid + 10)]
        );
    }
    for _ in 0..2 {
        carry(&mut a, A, &mut b);
        carry(&mut b, B, &mut a);
    }
    let counted = a.server.telemetry().generation() + b.server.telemetry().generation();
    assert_eq!(
        counted, 1,
        "the introduction is counted once, where it was made"
    );
}

#[test]
fn an_invitation_answered_by_inviting_back_is_one_introduction() {
    let (mut a, mut b, alice, bob) = apart();
    let sid = sid_of(&a.ask(alice, &format!("INV 5 bob {}", key(1)))[0]);
    carry(&mut a, A, &mut b);
    // bob's client invites alice instead of answering: the server pairs it with her ring.
    assert_eq!(
        b.ask(bob, &format!("INV 6 alice {}", key(2))),
        [format!("INV 6 alice {sid}")]
    );
    carry(&mut b, B, &mut a);
    carry(&mut a, A, &mut b);
    assert_eq!(itr_sid(&to(&a.log, alice)), std::slice::from_ref(&sid));
    assert_eq!(itr_sid(&to(&b.log, bob)), [sid]);
}

#[test]
fn a_decline_a_dead_node_and_a_departed_inviter_cancel_across_nodes() {
    let (mut a, mut b, alice, bob) = apart();
    // Declined on node B: alice hears it.
    let sid = sid_of(&a.ask(alice, &format!("INV 5 bob {}", key(1)))[0]);
    carry(&mut a, A, &mut b);
    assert_eq!(
        b.ask(bob, &format!("DEC 6 {sid}")),
        [format!("DEC 6 {sid}")]
    );
    carry(&mut b, B, &mut a);
    assert_eq!(
        to(&a.log, alice).last().unwrap(),
        &format!("CAN 0 {sid} declined")
    );
    // Node B dies while ringing: alice's invitation is cancelled at once.
    a.log.clear();
    let sid = sid_of(&a.ask(alice, &format!("INV 7 bob {}", key(1)))[0]);
    a.server.handle_node_gone(B);
    a.drain();
    assert!(to(&a.log, alice).contains(&format!("CAN 0 {sid} offline")));
    assert!(to(&a.log, alice).contains(&"FLN 0 bob".to_owned()));
    assert_eq!(a.server.pending_introductions(), 0);
    // alice leaves while her invitation rings on node B: bob's ring is cancelled.
    let (mut a, mut b, alice, bob) = apart();
    let sid = sid_of(&a.ask(alice, &format!("INV 5 bob {}", key(1)))[0]);
    carry(&mut a, A, &mut b);
    b.log.clear();
    a.server.handle_disconnected(a.now, alice);
    a.drain();
    carry(&mut a, A, &mut b);
    assert!(
        to(&b.log, bob).contains(&format!("CAN 0 {sid} offline")),
        "{:?}",
        b.log
    );
}

const C: NodeId = NodeId(3);

/// Delivers `from`'s cluster messages (sent as node `node`) as the driver would with more
/// than two nodes: what is for every node to each of `to`, what is for one node to that one.
fn deliver(from: &mut Harness, node: NodeId, to: &mut [(&mut Harness, NodeId)]) {
    for message in messages(&from.log) {
        for (h, id) in to.iter_mut() {
            match &message {
                ClusterMessage::Presence { user, presence } => {
                    h.server.handle_remote_presence(node, user, *presence);
                }
                ClusterMessage::List(op) => h.server.handle_remote_list(op),
                ClusterMessage::SessionClaimed { user, session } => {
                    h.server.handle_remote_session(user, *session);
                }
                ClusterMessage::ToNode {
                    node: target,
                    message,
                } if target == id => h.server.handle_routed(h.now, node, message.clone()),
                ClusterMessage::ToNode { .. } => {}
            }
        }
    }
    from.log.retain(|o| !matches!(o, Output::Cluster(_)));
    for (h, _) in to.iter_mut() {
        h.drain();
    }
}

/// alice on node A; bob on node B (his phone) and on node C (his laptop); A sees both.
fn two_devices() -> (Harness, Harness, Harness, [ConnId; 3]) {
    let (mut a, mut b) = two_nodes();
    let (mut c, _) = two_nodes();
    let alice = a.online("alice", "NLN");
    let phone = b.online("bob", "NLN");
    let laptop = c.online("bob", "AWY");
    deliver(&mut b, B, &mut [(&mut a, A)]);
    deliver(&mut c, C, &mut [(&mut a, A)]);
    for h in [&mut a, &mut b, &mut c] {
        h.log.clear();
    }
    (a, b, c, [alice, phone, laptop])
}

#[test]
fn an_invitee_on_two_nodes_is_rung_on_both_and_the_other_ring_ends_on_an_answer() {
    let (mut a, mut b, mut c, [alice, phone, laptop]) = two_devices();
    let sid = sid_of(&a.ask(alice, &format!("INV 5 bob {}", key(1)))[0]);
    let rings: Vec<NodeId> = messages(&a.log)
        .iter()
        .filter_map(|m| match m {
            ClusterMessage::ToNode { node, .. } => Some(*node),
            _ => None,
        })
        .collect();
    assert_eq!(rings, [B, C]);
    deliver(&mut a, A, &mut [(&mut b, B), (&mut c, C)]);
    assert_eq!(to(&b.log, phone), [format!("RNG 0 {sid} alice")]);
    assert_eq!(to(&c.log, laptop), [format!("RNG 0 {sid} alice")]);
    // The laptop answers: node A introduces alice and the laptop, and the phone stops ringing.
    c.ask(laptop, &format!("ANS 6 {sid} {}", key(2)));
    deliver(&mut c, C, &mut [(&mut a, A)]);
    assert_eq!(itr_sid(&to(&a.log, alice)), std::slice::from_ref(&sid));
    deliver(&mut a, A, &mut [(&mut b, B), (&mut c, C)]);
    assert_eq!(itr_sid(&to(&c.log, laptop)), std::slice::from_ref(&sid));
    assert_eq!(
        to(&b.log, phone).last().unwrap(),
        &format!("CAN 0 {sid} answered")
    );
    assert!(itr_sid(&to(&b.log, phone)).is_empty());
    assert_eq!(a.server.pending_introductions(), 0);
}

#[test]
fn a_decline_on_one_device_ends_the_ring_on_the_other() {
    let (mut a, mut b, mut c, [alice, phone, laptop]) = two_devices();
    let sid = sid_of(&a.ask(alice, &format!("INV 5 bob {}", key(1)))[0]);
    deliver(&mut a, A, &mut [(&mut b, B), (&mut c, C)]);
    b.ask(phone, &format!("DEC 6 {sid}"));
    deliver(&mut b, B, &mut [(&mut a, A)]);
    assert_eq!(
        to(&a.log, alice).last().unwrap(),
        &format!("CAN 0 {sid} declined")
    );
    deliver(&mut a, A, &mut [(&mut b, B), (&mut c, C)]);
    assert_eq!(
        to(&c.log, laptop).last().unwrap(),
        &format!("CAN 0 {sid} answered")
    );
    assert_eq!(a.server.pending_introductions(), 0);
}

#[test]
fn an_invitation_goes_on_ringing_where_the_invitee_is_left() {
    let (mut a, mut b, mut c, [alice, phone, laptop]) = two_devices();
    let sid = sid_of(&a.ask(alice, &format!("INV 5 bob {}", key(1)))[0]);
    deliver(&mut a, A, &mut [(&mut b, B), (&mut c, C)]);
    // The phone goes away (its node says nobody is left to ring there): no cancel for alice.
    b.server.handle_disconnected(b.now, phone);
    b.drain();
    deliver(&mut b, B, &mut [(&mut a, A)]);
    assert!(
        !to(&a.log, alice).iter().any(|l| l.starts_with("CAN")),
        "{:?}",
        a.log
    );
    // Then node B dies altogether: still nothing for alice, the laptop still rings.
    a.server.handle_node_gone(B);
    a.drain();
    assert!(!to(&a.log, alice).iter().any(|l| l.starts_with("CAN")));
    assert_eq!(a.server.pending_introductions(), 1);
    // The laptop answers: introduced.
    c.ask(laptop, &format!("ANS 6 {sid} {}", key(2)));
    deliver(&mut c, C, &mut [(&mut a, A)]);
    assert_eq!(itr_sid(&to(&a.log, alice)), std::slice::from_ref(&sid));
    // When the last node ringing it goes, alice hears the invitation is over.
    let sid = sid_of(&a.ask(alice, &format!("INV 7 bob {}", key(1)))[0]);
    a.server.handle_node_gone(C);
    a.drain();
    assert!(to(&a.log, alice).contains(&format!("CAN 0 {sid} offline")));
    assert_eq!(a.server.pending_introductions(), 0);
}
