//! Rendezvous nodes joined through NATS (`--cluster`, docs/CLUSTER.md): real `stun-server`
//! processes on loopback sharing one PostgreSQL and one NATS server that the test starts, and
//! real `p2p-client` processes. Presence and blocks cross nodes; a node killed with SIGKILL
//! takes its users offline for their contacts on other nodes within 15 s, and its clients come
//! back online on another node; a NATS restart loses nothing.

// Test code: a panic with the failing value is the report we want.
#![allow(clippy::unwrap_used)]

mod cluster_support;

use std::time::{Duration, Instant};

use cluster_support::*;
use serde_json::Value;

/// The presence events of `events` as `(name, presence)`.
fn changes(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap_or_default().to_owned(),
                e["presence"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn pair(name: &str, presence: &str) -> (String, String) {
    (name.to_owned(), presence.to_owned())
}

#[test]
fn presence_and_blocks_cross_nodes_and_a_dead_node_leaves_no_ghost() {
    let test = "presence_and_blocks_cross_nodes_and_a_dead_node_leaves_no_ghost";
    let Some(parts) = NatsCluster::start(test, "nats") else {
        return;
    };
    let cluster = &parts.cluster;
    let (mut n1, n2) = parts.two_nodes();
    let (a1, a2, a3) = (n1.addr, n2.addr, free_addr());
    // Accounts and contacts made through node 1 while node 2 runs: node 2 takes them in.
    cluster.pair(&a1.to_string(), "alice", "bob");
    // alice on node 1 (node 3, the other address of her list, does not run yet); bob on 2.
    let mut alice = Proc::spawn(
        "alice",
        cluster.client(
            &format!("{a1},{a3}"),
            "alice",
            &["status", "online", "--json"],
        ),
    );
    let mut bob = Proc::spawn(
        "bob",
        cluster.client(&a2.to_string(), "bob", &["status", "busy", "--json"]),
    );
    bob.wait_for(
        "alice online",
        Duration::from_secs(15),
        seen("alice", "online"),
    );
    alice.wait_for("bob busy", Duration::from_secs(15), seen("bob", "busy"));
    assert_eq!(metric(&n1, "rendezvous_sessions_online"), 1);
    assert_eq!(metric(&n2, "rendezvous_sessions_online"), 1);

    // Blocks cross nodes both ways, and so does the unblock.
    cluster.run(&a1.to_string(), "alice", &["contacts", "block", "bob"]);
    bob.wait_for(
        "alice blocked him",
        Duration::from_secs(10),
        seen("alice", "offline"),
    );
    cluster.run(&a1.to_string(), "alice", &["contacts", "allow", "bob"]);
    bob.wait_for(
        "alice allowed him",
        Duration::from_secs(10),
        seen("alice", "online"),
    );
    cluster.run(&a2.to_string(), "bob", &["contacts", "block", "alice"]);
    alice.wait_for(
        "bob blocked her",
        Duration::from_secs(10),
        seen("bob", "offline"),
    );
    cluster.run(&a2.to_string(), "bob", &["contacts", "allow", "alice"]);
    alice.wait_for(
        "bob allowed her",
        Duration::from_secs(10),
        seen("bob", "busy"),
    );

    // Node 1 dies without a word: bob sees alice offline within 15 s.
    let before_kill = bob.events().len();
    let killed = Instant::now();
    n1.proc.signal(libc::SIGKILL);
    n1.proc.wait_exit(Duration::from_secs(10));
    bob.wait_for(
        "alice offline after her node died",
        Duration::from_secs(15),
        seen("alice", "offline"),
    );
    let offline_after = killed.elapsed();
    assert!(offline_after < Duration::from_secs(15), "{offline_after:?}");
    assert!(
        n2.proc.logs().contains("cluster: node gone (no heartbeat)"),
        "{}",
        n2.proc.logs()
    );
    // Node 1 is no longer a member, nor a peer for XFR.
    wait_metric(&n2, "rendezvous_cluster_nodes", 0, Duration::from_secs(5));
    // Node 3 starts: alice's client, retrying her list, logs in there and is online again.
    let n3 = parts.node("n3", a3);
    alice.wait_stderr("p2p-client: server: connected", 1, Duration::from_secs(30));
    bob.wait_for(
        "alice online again",
        Duration::from_secs(15),
        seen("alice", "online"),
    );
    // Between the kill and her return bob saw exactly: offline, then online. Never a stale
    // online: the one online came after she was logged in on node 3.
    let bob_changes = changes(&bob.events()[before_kill..]);
    assert_eq!(
        bob_changes,
        [pair("alice", "offline"), pair("alice", "online")],
        "{:#?}",
        bob.seen
    );
    assert_eq!(metric(&n3, "rendezvous_sessions_online"), 1);
    // And alice, on node 3, sees bob on node 2 again (her new login's list).
    alice.wait_for("bob busy after the move", Duration::from_secs(15), |e| {
        e.iter()
            .filter(|e| e["name"] == "bob" && e["presence"] == "busy")
            .count()
            >= 3
    });
    for p in [&mut alice, &mut bob] {
        p.signal(libc::SIGINT);
        assert!(p.wait_exit(Duration::from_secs(10)).success());
    }
}

#[test]
fn a_nats_restart_loses_no_account_contact_or_presence() {
    let test = "a_nats_restart_loses_no_account_contact_or_presence";
    let Some(mut parts) = NatsCluster::start(test, "natsrestart") else {
        return;
    };
    let cluster = &parts.cluster;
    let (n1, n2) = parts.two_nodes();
    let (a1, a2) = (n1.addr, n2.addr);
    cluster.pair(&a1.to_string(), "alice", "bob");
    let mut alice = Proc::spawn(
        "alice",
        cluster.client(&a1.to_string(), "alice", &["status", "online", "--json"]),
    );
    let bob_status = || {
        Proc::spawn(
            "bob",
            cluster.client(&a2.to_string(), "bob", &["status", "away", "--json"]),
        )
    };
    let mut bob = bob_status();
    alice.wait_for("bob away", Duration::from_secs(15), seen("bob", "away"));

    // NATS goes away for longer than the heartbeat timeout, then comes back on its port.
    parts.nats.restart(Duration::from_secs(7));
    n1.proc
        .wait_stderr("cluster: connected to NATS", 1, Duration::from_secs(15));
    wait_metric(&n1, "rendezvous_cluster_nodes", 1, Duration::from_secs(15));
    wait_metric(&n2, "rendezvous_cluster_nodes", 1, Duration::from_secs(15));
    // The heartbeats' snapshots bring the presence back (during the outage each node could
    // not tell the other from a dead one, so alice may have seen bob offline meanwhile).
    alice.wait_for(
        "bob away after the restart",
        Duration::from_secs(15),
        seen("bob", "away"),
    );
    // Changes cross again: bob leaves, alice sees it; he comes back, she sees that too.
    bob.signal(libc::SIGINT);
    assert!(bob.wait_exit(Duration::from_secs(10)).success());
    alice.wait_for(
        "bob offline",
        Duration::from_secs(10),
        seen("bob", "offline"),
    );
    let mut bob = bob_status();
    alice.wait_for("bob back", Duration::from_secs(10), seen("bob", "away"));
    // Nothing in the directory was lost: accounts and contacts are as they were, on both nodes.
    for node in [a1, a2] {
        let out = cluster.run(&node.to_string(), "bob", &["contacts", "list"]);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("alice"),
            "{out:?}"
        );
    }

    // A list change that no NATS message carries (written while NATS is down, shorter than
    // the heartbeat timeout, so nobody takes anybody for dead): each node reads the lists
    // again when its NATS connection comes back, and alice sees bob's block take effect.
    let resyncs = metric(&n1, "rendezvous_cluster_list_resyncs_total");
    parts.nats.kill();
    parts.sql("INSERT INTO blocks (owner, blocked) VALUES ('bob', 'alice')");
    parts.nats.start_again();
    wait_metric(
        &n1,
        "rendezvous_cluster_list_resyncs_total",
        resyncs + 1,
        Duration::from_secs(15),
    );
    alice.wait_for(
        "bob's block, read from the database",
        Duration::from_secs(10),
        seen("bob", "offline"),
    );
    assert!(
        n1.proc
            .logs()
            .contains("cluster: lists read again from the database changed=1"),
        "{}",
        n1.proc.logs()
    );
    for p in [&mut alice, &mut bob] {
        p.signal(libc::SIGINT);
        assert!(p.wait_exit(Duration::from_secs(10)).success());
    }
}

#[test]
fn a_chat_between_nodes_is_introduced_and_relayed_by_one_switchboard() {
    let test = "a_chat_between_nodes_is_introduced_and_relayed_by_one_switchboard";
    let Some(parts) = NatsCluster::start(test, "natschat") else {
        return;
    };
    let cluster = &parts.cluster;
    let (n1, n2) = parts.two_nodes();
    let (a1, a2) = (n1.addr, n2.addr);
    cluster.pair(&a1.to_string(), "alice", "bob");
    // alice only on node 1, bob only on node 2; both invite each other at once.
    let mut alice = cluster.chat(&a1.to_string(), "alice", "bob");
    let mut bob = cluster.chat(&a2.to_string(), "bob", "alice");
    let connected = has_event("connected");
    alice.wait_for("the introduction", Duration::from_secs(30), &connected);
    bob.wait_for("the introduction", Duration::from_secs(30), &connected);
    let sid = |p: &Proc| {
        p.events()
            .iter()
            .find(|e| e["event"] == "connected")
            .map(|e| e["sid"].clone())
            .unwrap()
    };
    // One introduction, not one per invitation.
    assert_eq!(sid(&alice), sid(&bob));
    alice.send_lines(&["hello from node 1".to_owned()]);
    bob.wait_for(
        "alice's message",
        Duration::from_secs(20),
        got("hello from node 1"),
    );
    bob.send_lines(&["hello from node 2".to_owned()]);
    alice.wait_for(
        "bob's message",
        Duration::from_secs(20),
        got("hello from node 2"),
    );
    // Both tickets were for one switchboard, the introducing node's: both peers joined there
    // and nobody joined the other.
    let joins = |n: &Node| metric(n, "switchboard_joins_total{outcome=\"ok\"}");
    let (j1, j2) = (joins(&n1), joins(&n2));
    assert!(
        (j1, j2) == (2, 0) || (j1, j2) == (0, 2),
        "joins: node 1 {j1}, node 2 {j2}"
    );
    let introducer = if j1 == 2 { &n1 } else { &n2 };
    assert_eq!(metric(introducer, "switchboard_sessions_started_total"), 1);
    assert_eq!(metric(introducer, "rendezvous_introductions_total"), 1);
    // Both outcome reports reach the introducing node, the other's through its node, and the
    // introduction is counted there once.
    wait_metric(
        introducer,
        "p2p_link_reports_total{map=\"none\"}",
        2,
        Duration::from_secs(20),
    );
    let other = if j1 == 2 { &n2 } else { &n1 };
    assert_eq!(metric(other, "p2p_link_reports_total{map=\"none\"}"), 0);
    for p in [&mut alice, &mut bob] {
        p.signal(libc::SIGINT);
        p.wait_exit(Duration::from_secs(10));
    }
}

#[test]
fn a_lost_list_message_is_found_by_the_heartbeat_count_and_repaired() {
    let test = "a_lost_list_message_is_found_by_the_heartbeat_count_and_repaired";
    let Some(parts) = NatsCluster::start(test, "natsgap") else {
        return;
    };
    let cluster = &parts.cluster;
    let n1 = parts.node("n1", free_addr());
    // The resync every (re)connection makes has run: what follows is another one.
    wait_metric(
        &n1,
        "rendezvous_cluster_list_resyncs_total",
        1,
        Duration::from_secs(10),
    );
    let a1 = n1.addr.to_string();
    cluster.pair(&a1, "alice", "bob");
    let mut alice = Proc::spawn(
        "alice",
        cluster.client(&a1, "alice", &["status", "online", "--json"]),
    );
    let mut bob = Proc::spawn(
        "bob",
        cluster.client(&a1, "bob", &["status", "online", "--json"]),
    );
    alice.wait_for("bob online", Duration::from_secs(15), seen("bob", "online"));
    // Another node (this test, speaking NATS) has published no list message yet...
    let heartbeat = |lists: u64| {
        format!(
            r#"{{"node":4660,"rendezvous":"127.0.0.1:9","accepting":false,"lists":{lists},"users":[]}}"#
        )
    };
    // A heartbeat in parts (what a node with more users than fit one NATS message sends).
    let part = |beat: u64, part: u32, parts: u32, users: &str| {
        format!(
            r#"{{"node":4660,"rendezvous":"127.0.0.1:9","accepting":false,"lists":1,"beat":{beat},"part":{part},"parts":{parts},"users":[{users}]}}"#
        )
    };
    parts.nats.publish("p2p.rdv.all.heartbeat", &heartbeat(0));
    wait_metric(&n1, "rendezvous_cluster_nodes", 1, Duration::from_secs(5));
    // ...then stores a block whose message is lost, and its next heartbeat counts it.
    parts.sql("INSERT INTO blocks (owner, blocked) VALUES ('bob', 'alice')");
    parts.nats.publish("p2p.rdv.all.heartbeat", &heartbeat(1));
    alice.wait_for(
        "bob's block, found missing and read from the database",
        Duration::from_secs(10),
        seen("bob", "offline"),
    );
    assert_eq!(metric(&n1, "rendezvous_cluster_list_resyncs_total"), 2);
    assert!(
        n1.proc
            .logs()
            .contains("cluster: list changes of a node were lost"),
        "{}",
        n1.proc.logs()
    );

    // carol, alice's contact, is online on that node according to its next heartbeat, which
    // comes in two parts: nothing changes for alice until both are in.
    cluster.run(&a1, "carol", &["register", "--kdf", TEST_KDF]);
    cluster.run(&a1, "alice", &["contacts", "add", "carol"]);
    cluster.run(&a1, "carol", &["contacts", "add", "alice"]);
    parts.nats.publish(
        "p2p.rdv.all.heartbeat",
        &part(7, 0, 2, r#"["carol","BSY"]"#),
    );
    std::thread::sleep(Duration::from_millis(1500));
    alice.drain();
    assert!(
        !alice
            .events()
            .iter()
            .any(|e| e["name"] == "carol" && e["presence"] == "busy"),
        "a part alone changed presence: {:#?}",
        alice.seen
    );
    parts
        .nats
        .publish("p2p.rdv.all.heartbeat", &part(7, 1, 2, ""));
    alice.wait_for(
        "carol busy once the whole snapshot is in",
        Duration::from_secs(5),
        seen("carol", "busy"),
    );
    for p in [&mut alice, &mut bob] {
        p.signal(libc::SIGINT);
        assert!(p.wait_exit(Duration::from_secs(10)).success());
    }
}

/// A CA, and a certificate for 127.0.0.1 it signed with its key, as PEM files in `dir`:
/// `ca.pem`, `server-cert.pem`, `server-key.pem`.
fn make_ca(dir: &TempDir) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    std::fs::write(dir.path("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.path("server-cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.path("server-key.pem"), key.serialize_pem()).unwrap();
}

#[test]
fn nodes_join_through_a_nats_server_that_wants_tls_and_a_password() {
    let test = "nodes_join_through_a_nats_server_that_wants_tls_and_a_password";
    let Some((_pg, store)) = shared_store(test) else {
        return;
    };
    let secrets = TempDir::new("natstls-secrets");
    make_ca(&secrets);
    std::fs::write(secrets.path("password"), "s3cret-nats-pw\n").unwrap();
    std::fs::write(secrets.path("wrong"), "not-the-password\n").unwrap();
    let path = |name: &str| secrets.path(name).to_str().unwrap().to_owned();
    let nats_args = [
        "--tls",
        "--tlscert",
        &path("server-cert.pem"),
        "--tlskey",
        &path("server-key.pem"),
        "--user",
        "rdv",
        "--pass",
        "s3cret-nats-pw",
    ]
    .map(str::to_owned);
    let Some(nats) = Nats::start_with(test, &nats_args) else {
        return;
    };
    let cluster = Cluster::new("natstls", Some(store));
    let url = nats.tls_url();
    let (ca_file, password, wrong) = (path("ca.pem"), path("password"), path("wrong"));
    let access = |password: &str, with_ca: bool| -> Vec<String> {
        let mut args = vec!["--cluster", &url, "--cluster-user", "rdv"];
        args.extend(["--cluster-password-file", password]);
        if with_ca {
            args.extend(["--cluster-ca", &ca_file]);
        }
        args.into_iter().map(str::to_owned).collect()
    };
    let node = |name: &str, args: &[String]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cluster.node(name, free_addr(), &args)
    };
    // Two nodes with the CA and the password: members of one cluster, heartbeats crossing.
    let n1 = node("n1", &access(&password, true));
    let n2 = node("n2", &access(&password, true));
    for n in [&n1, &n2] {
        wait_metric(n, "rendezvous_cluster_nodes", 1, Duration::from_secs(15));
    }
    // A wrong password, and a server certificate checked against the system's roots (which
    // do not have the test's CA): neither gets in.
    let bad_password = node("bad-password", &access(&wrong, true));
    let no_ca = node("no-ca", &access(&password, false));
    std::thread::sleep(Duration::from_secs(3));
    for n in [&bad_password, &no_ca] {
        assert_eq!(
            metric(n, "rendezvous_cluster_nodes"),
            0,
            "{}",
            n.proc.logs()
        );
    }
    assert_eq!(metric(&n1, "rendezvous_cluster_nodes"), 1);
    // The logs name the server, TLS and the user, never the password.
    for n in [&n1, &n2, &bad_password, &no_ca] {
        let logs = n.proc.logs();
        assert!(!logs.contains("s3cret-nats-pw"), "{logs}");
        assert!(!logs.contains("not-the-password"), "{logs}");
    }
    assert!(
        n1.proc.logs().contains(&format!("{url} as rdv")),
        "{}",
        n1.proc.logs()
    );
    drop(nats);
}
