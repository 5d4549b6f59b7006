//! Presence, contact lists, blocks, the connection rule table and keepalives.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use super::tests::{Harness, config, name, stores, to};
use super::*;

/// alice and bob are mutual contacts; alice has carol but carol does not have alice; dave and
/// alice are mutual but alice blocks dave.
fn world() -> Harness {
    Harness::new(
        &["alice", "bob", "carol", "dave"],
        &[
            ("alice", "bob"),
            ("bob", "alice"),
            ("alice", "carol"),
            ("alice", "dave"),
            ("dave", "alice"),
        ],
        &[("alice", "dave")],
    )
}

#[test]
fn presence_reaches_only_mutual_unblocked_contacts() {
    let mut h = world();
    let bob = h.online("bob", "NLN");
    let carol = h.online("carol", "NLN");
    let dave = h.online("dave", "NLN");
    let alice = h.login("alice");
    h.drain();
    h.log.clear();
    // Offline to others until the first CHG.
    assert!(to(&h.log, bob).is_empty());
    assert_eq!(h.ask(alice, "CHG 5 BSY"), ["CHG 5 BSY"]);
    assert_eq!(to(&h.log, bob), ["NLN 0 BSY alice"]);
    assert!(to(&h.log, carol).is_empty());
    assert!(to(&h.log, dave).is_empty());
    // HDN shows as FLN; back online shows NLN; the same visible state twice pushes nothing.
    h.ask(alice, "CHG 6 HDN");
    h.ask(alice, "CHG 7 HDN");
    h.ask(alice, "CHG 8 NLN");
    h.ask(alice, "CHG 9 NLN");
    assert_eq!(
        to(&h.log, bob),
        ["NLN 0 BSY alice", "FLN 0 alice", "NLN 0 NLN alice"]
    );
    // A dropped connection is offline at once.
    h.server.handle_disconnected(h.now, alice);
    h.drain();
    assert_eq!(to(&h.log, bob).last().unwrap(), "FLN 0 alice");
    assert!(to(&h.log, dave).is_empty() && to(&h.log, carol).is_empty());
    assert_eq!(h.server.online_count(), 3);
}

#[test]
fn chg_parameters() {
    let mut h = world();
    let alice = h.login("alice");
    assert_eq!(h.ask(alice, "CHG 5 FLN"), ["201 5 invalid parameter"]);
    assert_eq!(h.ask(alice, "CHG 6 XYZ"), ["201 6 invalid parameter"]);
    assert_eq!(h.ask(alice, "CHG 7"), ["201 7 invalid parameter"]);
    assert_eq!(h.ask(alice, "CHG 8 NLN x"), ["201 8 invalid parameter"]);
    for state in ["NLN", "BSY", "IDL", "BRB", "AWY", "LUN", "PHN", "HDN"] {
        assert_eq!(
            h.ask(alice, &format!("CHG 9 {state}")),
            [format!("CHG 9 {state}")]
        );
    }
}

#[test]
fn iln_at_login_lists_only_visible_contacts() {
    let mut h = Harness::new(
        &["alice", "bob", "carol", "dave", "erin", "frank"],
        &[
            ("alice", "bob"),
            ("bob", "alice"),
            ("alice", "carol"),
            ("alice", "dave"),
            ("dave", "alice"),
            ("alice", "erin"),
            ("erin", "alice"),
            ("alice", "frank"),
            ("frank", "alice"),
        ],
        &[("dave", "alice")],
    );
    h.online("bob", "BSY");
    h.online("carol", "NLN"); // not mutual
    h.online("dave", "NLN"); // blocks alice
    h.online("erin", "HDN"); // hidden
    h.login("frank"); // logged in, no CHG yet
    let alice = h.hello();
    let answers = h.try_login(alice, "alice", "alice-pw");
    assert_eq!(answers[2..], ["ILN 0 BSY bob"]);
}

#[test]
fn list_changes_push_iln_and_fln() {
    let mut h = Harness::new(&["alice", "bob"], &[("bob", "alice")], &[]);
    let alice = h.online("alice", "AWY");
    let bob = h.online("bob", "BSY");
    h.log.clear();
    // ADC makes the pair mutual: each gets the other's initial presence.
    h.send_raw(alice, "ADC 5 Bob");
    let out = h.drain();
    assert_eq!(
        stores(&out),
        [StoreOp::AddContact {
            owner: name("alice"),
            contact: name("bob")
        }]
    );
    assert!(matches!(out[0], Output::Store { .. }));
    assert_eq!(to(&out, alice), ["ADC 5 bob", "ILN 0 BSY bob"]);
    assert_eq!(to(&out, bob), ["ILN 0 AWY alice"]);
    // BLK hides alice from bob only.
    h.send_raw(alice, "BLK 6 bob");
    let out = h.drain();
    assert_eq!(to(&out, alice), ["BLK 6 bob"]);
    assert_eq!(to(&out, bob), ["FLN 0 alice"]);
    assert_eq!(h.ask(bob, "CHG 7 IDL"), ["CHG 7 IDL"]);
    assert_eq!(to(&h.log, alice).last().unwrap(), "NLN 0 IDL bob");
    h.send_raw(alice, "CHG 8 PHN");
    assert!(to(&h.drain(), bob).is_empty());
    // ALW shows alice again.
    h.send_raw(alice, "ALW 9 bob");
    let out = h.drain();
    assert_eq!(to(&out, bob), ["ILN 0 PHN alice"]);
    assert_eq!(
        stores(&out),
        [StoreOp::Allow {
            owner: name("alice"),
            blocked: name("bob")
        }]
    );
    // REM: both stop seeing each other.
    h.send_raw(bob, "REM 10 alice");
    let out = h.drain();
    assert_eq!(to(&out, bob), ["REM 10 alice", "FLN 0 alice"]);
    assert_eq!(to(&out, alice), ["FLN 0 bob"]);
    assert_eq!(
        stores(&out),
        [StoreOp::RemoveContact {
            owner: name("bob"),
            contact: name("alice")
        }]
    );
}

#[test]
fn list_errors() {
    let small = RendezvousConfig {
        max_contacts: 1,
        ..config()
    };
    let mut h = Harness::with_config(small, &["alice", "bob", "carol"], &[], &[]);
    let alice = h.login("alice");
    let cases = [
        ("ADC 1 alice", "219 1 cannot add yourself"),
        ("ADC 1 nobody", "205 1 no such user"),
        ("ADC 1 bad,name", "205 1 no such user"),
        ("ADC 1", "201 1 invalid parameter"),
        ("ADC 1 bob", "ADC 1 bob"),
        ("ADC 1 BOB", "215 1 already a contact"),
        ("ADC 1 carol", "210 1 contact list full"),
        ("REM 1 carol", "216 1 not a contact"),
        ("REM 1 nobody", "216 1 not a contact"),
        ("BLK 1 nobody", "205 1 no such user"),
        ("BLK 1 ALICE", "219 1 cannot block yourself"),
        ("BLK 1 carol", "BLK 1 carol"),
        ("BLK 1 carol", "218 1 already blocked"),
        ("BLK 1 bob", "210 1 contact list full"),
        ("ALW 1 bob", "216 1 not blocked"),
        ("ALW 1 carol", "ALW 1 carol"),
        ("REM 1 bob", "REM 1 bob"),
    ];
    for (line, expect) in cases {
        assert_eq!(h.ask(alice, line), [expect], "{line}");
    }
    assert_eq!(stores(&h.log).len(), 4);
}

#[test]
fn lst_payload() {
    let mut h = Harness::new(
        &["alice", "bob", "carol", "dave", "erin"],
        &[
            ("alice", "erin"),
            ("erin", "alice"),
            ("alice", "bob"),
            ("bob", "alice"),
            ("alice", "dave"),
        ],
        &[("alice", "carol"), ("alice", "bob")],
    );
    h.online("bob", "BSY");
    h.online("dave", "NLN");
    h.online("erin", "HDN");
    let alice = h.login("alice");
    let answer = h.ask(alice, "LST 7");
    // Blocking bob does not hide bob from alice; dave is not mutual; erin is hidden.
    assert_eq!(
        answer,
        ["LST 7 49\r\nbob BSY CB\r\ncarol FLN B\r\ndave FLN C\r\nerin FLN C\r\n"]
    );
    assert_eq!(h.ask(alice, "LST 8 x"), ["201 8 invalid parameter"]);
    let lonely = h.login("carol");
    assert_eq!(h.ask(lonely, "LST 9"), ["LST 9 0"]);
}

#[test]
fn logged_in_commands_need_login() {
    let mut h = world();
    let c = h.hello();
    for cmd in [
        "CHG", "LST", "ADC", "REM", "BLK", "ALW", "PWD", "INV", "ANS", "DEC",
    ] {
        assert_eq!(h.ask(c, &format!("{cmd} 3 x")), ["302 3 not logged in"]);
    }
    assert_eq!(h.ask(c, "PNG 4"), ["QNG 4"]);
    assert!(h.ask(c, "QNG 0").is_empty());
    assert_eq!(h.ask(c, "XYZ 5 a b"), ["200 5 unknown command"]);
    assert_eq!(h.ask(c, "123 6"), ["200 6 unknown command"]);
}

#[test]
fn sixteenth_error_closes() {
    let mut h = world();
    let bob = h.online("bob", "NLN");
    let alice = h.online("alice", "NLN");
    for i in 1..16 {
        if i % 2 == 0 {
            assert_eq!(h.ask(alice, "chg 1 x"), ["200 0 syntax error"]);
        } else {
            assert_eq!(
                h.ask(alice, &format!("FOO {i}")),
                [format!("200 {i} unknown command")]
            );
        }
    }
    assert_eq!(h.ask(alice, "PNG 20"), ["QNG 20"]);
    assert_eq!(
        h.ask(alice, "CHG 21 FLN"),
        ["201 21 invalid parameter", "OUT 0 ERR", "CLOSE"]
    );
    assert_eq!(to(&h.log, bob).last().unwrap(), "FLN 0 alice");
    assert_eq!(h.server.online_count(), 1);
}

#[test]
fn ordinary_refusals_do_not_use_up_the_error_budget() {
    let mut h = world();
    let alice = h.online("alice", "NLN");
    for i in 1..40 {
        assert_eq!(
            h.ask(alice, &format!("ADC {i} nobody{i}")),
            [format!("205 {i} no such user")]
        );
    }
    assert_eq!(h.ask(alice, "PNG 50"), ["QNG 50"]);
    assert_eq!(h.server.online_count(), 1);
}

#[test]
fn fatal_frame_errors_close() {
    let mut h = world();
    let a = h.hello();
    h.server
        .handle_frame_error(h.now, a, FrameError::LineTooLong);
    assert_eq!(
        to(&h.drain(), a),
        ["200 0 line too long", "OUT 0 ERR", "CLOSE"]
    );
    let b = h.login("bob");
    // No request carries a payload, but a driver may still report one it refused.
    h.server
        .handle_frame_error(h.now, b, FrameError::BadPayload);
    assert_eq!(
        to(&h.drain(), b),
        ["200 0 payload not allowed", "OUT 0 ERR", "CLOSE"]
    );
    assert_eq!(h.server.connection_count(), 0);
    assert_eq!(h.server.online_count(), 0);
    // Events for closed connections are ignored.
    h.server
        .handle_frame_error(h.now, b, FrameError::LineTooLong);
    h.server.handle_disconnected(h.now, b);
    h.server.handle_overflow(h.now, b);
    assert!(h.drain().is_empty());
}

#[test]
fn client_out_closes_without_answer() {
    let mut h = world();
    let bob = h.online("bob", "NLN");
    let alice = h.online("alice", "NLN");
    assert_eq!(h.ask(alice, "OUT 12"), ["CLOSE"]);
    assert_eq!(to(&h.log, bob).last().unwrap(), "FLN 0 alice");
    let anon = h.hello();
    assert_eq!(h.ask(anon, "OUT 1"), ["CLOSE"]);
    assert_eq!(h.server.connection_count(), 1);
}

#[test]
fn keepalive_ping_and_idle_timeout() {
    let mut h = world();
    let bob = h.online("bob", "NLN");
    let alice = h.online("alice", "NLN");
    assert!(h.server.poll_timeout().is_some());
    let out = h.advance(Duration::from_secs(29));
    assert!(out.is_empty(), "{out:?}");
    let out = h.advance(Duration::from_millis(1500));
    assert_eq!(to(&out, alice), ["PNG 0"]);
    assert_eq!(to(&out, bob), ["PNG 0"]);
    // One ping per silence.
    assert!(h.advance(Duration::from_secs(20)).is_empty());
    // bob answers; alice stays silent.
    assert!(h.ask(bob, "QNG 0").is_empty());
    let out = h.advance(Duration::from_secs(26));
    assert_eq!(to(&out, alice), ["OUT 0 TMO", "CLOSE"]);
    assert_eq!(to(&out, bob), ["FLN 0 alice"]);
    assert_eq!(h.server.online_count(), 1);
    // bob was pinged again 30 s after his QNG, and times out 75 s after it.
    let out = h.advance(Duration::from_secs(5));
    assert_eq!(to(&out, bob), ["PNG 0"]);
    let out = h.advance(Duration::from_secs(45));
    assert_eq!(to(&out, bob), ["OUT 0 TMO", "CLOSE"]);
    assert_eq!(h.server.poll_timeout(), None);
}

#[test]
fn connections_before_ver_time_out_without_ping() {
    let mut h = world();
    let c = h.connect();
    let out = h.advance(Duration::from_secs(76));
    assert_eq!(to(&out, c), ["OUT 0 TMO", "CLOSE"]);
}

#[test]
fn overflow_drops_queued_lines_and_shows_offline() {
    let mut h = world();
    let bob = h.online("bob", "NLN");
    let alice = h.online("alice", "NLN");
    h.send_raw(alice, "CHG 5 BSY");
    h.send_raw(bob, "PNG 6");
    h.server.handle_overflow(h.now, bob);
    let out = h.drain();
    assert_eq!(to(&out, bob), ["CLOSE"]);
    assert_eq!(to(&out, alice), ["CHG 5 BSY", "FLN 0 bob"]);
    assert_eq!(h.server.online_count(), 1);
    h.send_raw(alice, "CHG 7 NLN");
    assert!(to(&h.drain(), bob).is_empty());
}

#[test]
fn shutdown_says_ssd_to_everyone() {
    let mut h = world();
    let a = h.online("alice", "NLN");
    let b = h.online("bob", "NLN");
    let anon = h.connect();
    h.server.handle_shutdown(h.now);
    let out = h.drain();
    for c in [a, b, anon] {
        assert_eq!(to(&out, c), ["OUT 0 SSD", "CLOSE"]);
    }
    assert_eq!(out.len(), 6);
    assert_eq!(
        (h.server.connection_count(), h.server.online_count()),
        (0, 0)
    );
    assert_eq!(h.server.poll_timeout(), None);
}

/// The benchmark's shape in-process: 50,000 logged-in users with 20 mutual contacts each.
/// Prints the process RSS and fan-out times. Run with
/// `cargo test -p shared --release --lib scale -- --ignored --nocapture`.
#[test]
#[ignore]
fn scale_50k_users_20_contacts() {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;

    use crate::rendezvous::scram::{MECHANISM, ScramClient, salted_password};
    use crate::rendezvous::types::UserRecord;

    const N: usize = 50_000;
    const K: usize = 20;
    let rss = || {
        std::fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("VmRSS"))
            .map(str::to_owned)
            .unwrap_or_default()
    };
    println!("before: {}", rss());
    let salt = b"bench-salt-16byt";
    let creds = super::tests::creds("pw", salt);
    let salted = salted_password(b"pw", salt, super::tests::CHEAP).unwrap();
    let names: Vec<String> = (0..N).map(|i| format!("user{i}")).collect();
    let mut snapshot = DirectorySnapshot::default();
    for n in &names {
        snapshot.users.push(UserRecord {
            name: name(n),
            credentials: creds.clone(),
        });
    }
    for i in 0..N {
        for d in 1..=K / 2 {
            for j in [(i + d) % N, (i + N - d) % N] {
                snapshot.contacts.push((name(&names[i]), name(&names[j])));
            }
        }
    }
    let mut server = RendezvousServer::new(config(), snapshot, [1; 32], [2; 32]);
    let now = std::time::Instant::now();
    let t0 = std::time::Instant::now();
    let say = |server: &mut RendezvousServer, c: ConnId, cmd: &str, p: Vec<String>| {
        server.handle_line(now, c, Line::new(cmd, TrId(1), p));
        let mut last = None;
        while let Some(o) = server.poll_output() {
            last = Some(o);
        }
        last
    };
    for (i, n) in names.iter().enumerate() {
        let c = ConnId(i as u64);
        server.handle_connected(now, c, "127.0.0.1:1".parse().unwrap(), super::tests::CB);
        say(&mut server, c, "VER", vec!["P2P1".into()]);
        let nonce = (i as u128).to_le_bytes()[..].repeat(2);
        let mut client =
            ScramClient::new(&name(n), &nonce, &super::tests::CB).with_min_kdf(cheap_kdf());
        let first = B64.encode(client.client_first());
        server.handle_line(
            now,
            c,
            Line::new("USR", TrId(2), [MECHANISM.into(), "I".into(), first]),
        );
        let Some(Output::Send { line, .. }) = server.poll_output() else {
            panic!()
        };
        let sf = String::from_utf8(B64.decode(&line.params[2]).unwrap()).unwrap();
        let cf = client
            .handle_server_first_with(&sf, |_| Ok(salted))
            .unwrap();
        say(
            &mut server,
            c,
            "USR",
            vec![MECHANISM.into(), "S".into(), B64.encode(cf)],
        );
        say(&mut server, c, "CHG", vec!["NLN".into()]);
    }
    assert_eq!(server.online_count(), N);
    println!("login of {N}: {:?}; after: {}", t0.elapsed(), rss());
    let mut times = Vec::new();
    for i in 0..2000 {
        let c = ConnId((i * 17 % N) as u64);
        let state = if i % 2 == 0 { "BSY" } else { "AWY" };
        let t = std::time::Instant::now();
        server.handle_line(now, c, Line::new("CHG", TrId(3), [state.to_owned()]));
        let mut pushes = 0;
        while let Some(o) = server.poll_output() {
            pushes += usize::from(matches!(o, Output::Send { .. }));
        }
        times.push(t.elapsed());
        assert!(pushes >= K);
    }
    times.sort();
    println!("fan-out p50 {:?} p99 {:?}", times[1000], times[1980]);
    let t = std::time::Instant::now();
    server.handle_timeout(now + std::time::Duration::from_secs(31));
    let mut pings = 0;
    while server.poll_output().is_some() {
        pings += 1;
    }
    println!("sweep with {pings} pings: {:?}", t.elapsed());
    assert_eq!(pings, N);
}

/// The cheap KDF the tests register with; the client must be told to accept it.
fn cheap_kdf() -> crate::rendezvous::Kdf {
    crate::rendezvous::Kdf {
        memory_kib: 8,
        iterations: 1,
        lanes: 1,
    }
}
