//! Two rendezvous nodes (real `stun-server` processes on loopback, one PostgreSQL started by
//! the test, one shared TLS key) and real `p2p-client` processes: a list of servers with a
//! dead one, a full node that sends a login to the other (`XFR`), a draining node whose
//! `status` and `chat` sessions move to the other node with nothing lost, and redirect loops
//! that end with a clear error (docs/CLUSTER.md, docs/PROTOCOL.md section 11).

// Test code: a panic with the failing value is the report we want.
#![allow(clippy::unwrap_used)]

mod cluster_support;

use std::time::{Duration, Instant};

use cluster_support::*;
use serde_json::Value;

#[test]
fn a_list_with_a_dead_server_reaches_the_live_one() {
    let cluster = Cluster::new("dead", None);
    let node = cluster.node("n1", free_addr(), &[]);
    let dead = free_addr();
    let list = format!("{dead},{}", node.addr);
    cluster.run(&list, "alice", &["register", "--kdf", TEST_KDF]);
    // The order is random: enough runs that the dead one comes first at least once (the
    // chance it never does in 12 runs is 1 in 4096).
    let mut said_so = 0;
    for _ in 0..12 {
        let out = cluster.run(&list, "alice", &["contacts", "list"]);
        let logs = String::from_utf8_lossy(&out.stderr);
        if logs.contains("trying the next one") {
            assert!(logs.contains(&dead.to_string()), "{logs}");
            said_so += 1;
        }
    }
    assert!(said_so > 0, "the dead server was never tried first");
    // All dead: one error that names each address and what it did.
    let other_dead = free_addr();
    let err = cluster.refused(
        &format!("{dead},{other_dead}"),
        "alice",
        &["contacts", "list"],
    );
    assert!(
        err.contains("no rendezvous server could be used (2 address(es) tried)"),
        "{err}"
    );
    assert!(
        err.contains(&dead.to_string()) && err.contains(&other_dead.to_string()),
        "{err}"
    );
}

#[test]
fn a_full_node_sends_a_login_to_the_other_node() {
    let test = "a_full_node_sends_a_login_to_the_other_node";
    let Some((_pg, store)) = shared_store(test) else {
        return;
    };
    let cluster = Cluster::new("full", Some(store));
    let (a1, a2) = (free_addr(), free_addr());
    let n1 = cluster.node(
        "n1",
        a1,
        &["--max-sessions", "1", "--peer-node", &a2.to_string()],
    );
    let only_n1 = n1.addr.to_string();
    // Accounts and contacts made through node 1 are in the shared database; node 2 reads
    // them when it starts (contact changes do not cross running nodes yet: docs/CLUSTER.md).
    cluster.pair(&only_n1, "alice", "bob");
    let n2 = cluster.node("n2", a2, &["--peer-node", &a1.to_string()]);
    let mut alice = Proc::spawn(
        "alice",
        cluster.client(&only_n1, "alice", &["status", "online", "--json"]),
    );
    alice.wait_for("the contact list", Duration::from_secs(15), |e| {
        !e.is_empty()
    });
    assert_eq!(metric(&n1, "rendezvous_sessions_online"), 1);
    // Node 1 is full: bob, who names only node 1, is sent to node 2 and logs in there.
    let out = cluster.run(&only_n1, "bob", &["contacts", "list"]);
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(logs.contains("sent us to another node (XFR)"), "{logs}");
    assert!(stdout(&out).contains("alice"), "{}", stdout(&out));
    assert!(metric(&n1, "rendezvous_transfers_total") >= 1);
    assert_eq!(metric(&n2, "rendezvous_logins_total{outcome=\"ok\"}"), 1);
    assert_eq!(metric(&n1, "rendezvous_node_state{state=\"ready\"}"), 1);
    alice.signal(libc::SIGINT);
    alice.wait_exit(Duration::from_secs(10));
}

#[test]
fn a_draining_node_moves_its_status_sessions_with_nothing_lost() {
    let test = "a_draining_node_moves_its_status_sessions_with_nothing_lost";
    let Some((_pg, store)) = shared_store(test) else {
        return;
    };
    let cluster = Cluster::new("drain", Some(store));
    let (mut n1, n2) = cluster.peered_pair("alice", "bob");
    let (a1, a2) = (n1.addr, n2.addr);
    // alice on node 1 only; bob on node 2. Presence does not cross nodes (that is the NATS
    // part): each sees the other offline for now.
    let mut alice = Proc::spawn(
        "alice",
        cluster.client(&a1.to_string(), "alice", &["status", "online", "--json"]),
    );
    let mut bob = Proc::spawn(
        "bob",
        cluster.client(&a2.to_string(), "bob", &["status", "busy", "--json"]),
    );
    let seen = |name: &'static str, presence: &'static str| {
        move |events: &[Value]| {
            events
                .last()
                .is_some_and(|e| e["name"] == name && e["presence"] == presence)
        }
    };
    alice.wait_for(
        "bob offline",
        Duration::from_secs(15),
        seen("bob", "offline"),
    );
    bob.wait_for(
        "alice offline",
        Duration::from_secs(15),
        seen("alice", "offline"),
    );
    n1.proc.signal(libc::SIGUSR1);
    // alice follows the XFR push to node 2, where bob now sees her online, and she him.
    alice.wait_stderr(
        "server: reconnecting (moving to another node",
        1,
        Duration::from_secs(10),
    );
    bob.wait_for(
        "alice online",
        Duration::from_secs(15),
        seen("alice", "online"),
    );
    alice.wait_for("bob busy", Duration::from_secs(15), seen("bob", "busy"));
    // Node 1 is empty and stops by itself, well before its drain period.
    let status = n1.proc.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{}", n1.proc.logs());
    assert!(
        n1.proc.logs().contains("every client has moved"),
        "{}",
        n1.proc.logs()
    );
    assert_eq!(metric(&n2, "rendezvous_sessions_online"), 2);
    // A presence change after the move reaches alice: bob leaves.
    bob.signal(libc::SIGINT);
    bob.wait_exit(Duration::from_secs(10));
    alice.wait_for(
        "bob offline again",
        Duration::from_secs(15),
        seen("bob", "offline"),
    );
    alice.signal(libc::SIGINT);
    assert!(alice.wait_exit(Duration::from_secs(10)).success());
}

#[test]
fn a_draining_node_moves_a_chat_that_goes_on() {
    let test = "a_draining_node_moves_a_chat_that_goes_on";
    let Some((_pg, store)) = shared_store(test) else {
        return;
    };
    let cluster = Cluster::new("chat", Some(store));
    let (mut n1, n2) = cluster.peered_pair("alice", "bob");
    let (a1, a2) = (n1.addr, n2.addr);
    let list = format!("{a1},{a2}");
    // Both on node 1: without NATS an introduction needs both on one node.
    let mut alice = cluster.chat(&a1.to_string(), "alice", "bob");
    let mut bob = cluster.chat(&a1.to_string(), "bob", "alice");
    alice.wait_for("a path", Duration::from_secs(20), has_event("path"));
    bob.wait_for("a path", Duration::from_secs(20), has_event("path"));
    alice.send_lines(&["before the move".to_owned()]);
    bob.wait_for(
        "the first message",
        Duration::from_secs(15),
        got("before the move"),
    );
    n1.proc.signal(libc::SIGUSR1);
    let back = |e: &[Value]| {
        let states: Vec<&Value> = e
            .iter()
            .filter(|e| e["event"] == "server")
            .map(|e| &e["state"])
            .collect();
        states == ["reconnecting", "connected"]
    };
    alice.wait_for("the move to node 2", Duration::from_secs(20), back);
    bob.wait_for("the move to node 2", Duration::from_secs(20), back);
    assert!(n1.proc.wait_exit(Duration::from_secs(10)).success());
    assert!(
        n1.proc.logs().contains("every client has moved"),
        "{}",
        n1.proc.logs()
    );
    // Both chats are sessions of node 2 now, online (a chat sets online).
    assert_eq!(metric(&n2, "rendezvous_sessions_online"), 2);
    let out = cluster.run(&list, "alice", &["contacts", "list", "--json"]);
    let list: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(list[0]["name"], "bob");
    assert_eq!(list[0]["presence"], "online", "{list}");
    // Messages after the move, both ways.
    bob.send_lines(&["after the move".to_owned()]);
    alice.wait_for(
        "bob's message",
        Duration::from_secs(15),
        got("after the move"),
    );
    alice.send_lines(&["still here".to_owned()]);
    bob.wait_for(
        "alice's message",
        Duration::from_secs(15),
        got("still here"),
    );
}

#[test]
fn redirect_loops_end_with_a_clear_error() {
    let cluster = Cluster::new("loop", None);
    let (a1, a2) = (free_addr(), free_addr());
    // Both nodes full from the start, each sending clients to the other.
    let n1 = cluster.node(
        "n1",
        a1,
        &["--max-sessions", "0", "--peer-node", &a2.to_string()],
    );
    let _n2 = cluster.node(
        "n2",
        a2,
        &["--max-sessions", "0", "--peer-node", &a1.to_string()],
    );
    let started = Instant::now();
    let err = cluster.refused(&a1.to_string(), "alice", &["contacts", "list"]);
    assert!(
        err.contains(&format!("redirect loop {a1} -> {a2} -> {a1}")),
        "{err}"
    );
    assert!(err.contains("every node full or draining"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(metric(&n1, "rendezvous_transfers_total") >= 1);
}

#[test]
fn a_redirect_to_a_node_with_another_key_is_refused() {
    let cluster = Cluster::new("key", None);
    let (a1, a2) = (free_addr(), free_addr());
    let _n1 = cluster.node(
        "n1",
        a1,
        &["--max-sessions", "0", "--peer-node", &a2.to_string()],
    );
    // Not one of the cluster: a key of its own.
    let _odd = cluster.start_node("odd", a2, &[], false);
    let err = cluster.refused(&a1.to_string(), "alice", &["contacts", "list"]);
    assert!(
        err.contains(&format!("{a2} (reached by XFR from {a1})")),
        "{err}"
    );
    assert!(err.contains(&format!("{a2} presented the key")), "{err}");
    assert!(err.contains("not the expected"), "{err}");
    // Nothing was pinned for the redirected address.
    let pins = std::fs::read_to_string(cluster.home.join("known_servers")).unwrap();
    assert!(!pins.contains(&a2.to_string()), "{pins}");
}
