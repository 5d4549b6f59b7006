//! `p2p-client chat` between two processes on loopback, against the real rendezvous server,
//! switchboard and STUN server started in-process: a direct path, and the relay when punching
//! is switched off. Both users share one fresh client home per test (`P2P_HOME`): identity
//! keys and pins are per user name in it, the pinned server key is shared.

// Test code: a panic with the failing value is the report we want.
#![allow(clippy::unwrap_used)]

mod client;
mod loopback;
mod sessions;

use std::net::SocketAddr;
use std::time::Duration;

use client::Proc;
use serde_json::Value;
use sessions::{Servers, chat};

const MESSAGES: usize = 100;

fn paths(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|e| e["event"] == "path")
        .map(|e| {
            (
                e["path"].as_str().unwrap().to_owned(),
                e["remote"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn messages(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|e| e["event"] == "message")
        .map(|e| {
            (
                e["from"].as_str().unwrap().to_owned(),
                e["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn count_messages(events: &[Value]) -> usize {
    events.iter().filter(|e| e["event"] == "message").count()
}

fn lines_of(user: &str) -> Vec<String> {
    (0..MESSAGES)
        .map(|i| format!("{user} says {i}: \"quoted\" \\ ünïcode"))
        .collect()
}

/// Waits for the exit of a chat whose input was closed; asserts it succeeded and that its
/// stdout was nothing but JSON objects, and returns them.
fn finish(chat: &mut Proc) -> Vec<Value> {
    let status = chat.wait_exit(Duration::from_secs(20));
    let events = chat.events();
    assert!(
        status.success(),
        "{}: exit {status}; events: {events:#?}\nstderr:\n{}",
        chat.name,
        chat.logs()
    );
    assert!(
        events.iter().all(Value::is_object),
        "{}: {events:#?}",
        chat.name
    );
    events
}

/// Both chats exchange 100 lines each way; asserts in-order, exactly-once delivery and a clean
/// exit, and returns every event of each side.
fn exchange(mut a: Proc, mut b: Proc) -> (Vec<Value>, Vec<Value>) {
    let (a_lines, b_lines) = (lines_of(&a.name), lines_of(&b.name));
    a.send_lines(&a_lines);
    b.send_lines(&b_lines);
    let all = |events: &[Value]| count_messages(events) >= MESSAGES;
    a.wait_for("all messages", Duration::from_secs(30), all);
    b.wait_for("all messages", Duration::from_secs(30), all);
    // Both inputs end before either exit is awaited: each side's end reaches the other.
    a.close_stdin();
    b.close_stdin();
    let a_events = finish(&mut a);
    let b_events = finish(&mut b);
    let (a_name, b_name) = (a.name.clone(), b.name.clone());
    let expect = |from: &str, lines: &[String]| -> Vec<(String, String)> {
        lines.iter().map(|l| (from.to_owned(), l.clone())).collect()
    };
    assert_eq!(messages(&a_events), expect(&b_name, &b_lines));
    assert_eq!(messages(&b_events), expect(&a_name, &a_lines));
    for events in [&a_events, &b_events] {
        assert!(events.iter().all(|e| e["event"] != "error"), "{events:#?}");
        assert_eq!(events[0]["event"], "connected", "{events:#?}");
    }
    (a_events, b_events)
}

#[test]
fn two_peers_on_loopback_chat_over_a_direct_path() {
    let servers = Servers::start();
    servers.pair("alice", "bob");
    let mut a = chat(&servers, "alice", "bob", &[]);
    let mut b = chat(&servers, "bob", "alice", &[]);
    let direct = |events: &[Value]| paths(events).last().is_some_and(|(p, _)| p == "direct");
    a.wait_for("direct path", Duration::from_secs(20), direct);
    b.wait_for("direct path", Duration::from_secs(20), direct);
    let (a_events, b_events) = exchange(a, b);
    for (events, name) in [(&a_events, "alice"), (&b_events, "bob")] {
        let paths = paths(events);
        let (last, remote) = paths.last().unwrap();
        assert_eq!(last, "direct", "{name}: {paths:?}");
        let remote: SocketAddr = remote.parse().unwrap();
        assert!(remote.ip().is_loopback(), "{name}: {remote}");
        assert_ne!(remote, servers.switchboard);
    }
}

#[test]
fn without_punching_the_chat_goes_through_the_switchboard() {
    let servers = Servers::start();
    servers.pair("carol", "dave");
    let mut a = chat(&servers, "carol", "dave", &["--no-direct"]);
    let mut b = chat(&servers, "dave", "carol", &["--no-direct"]);
    let relayed = |events: &[Value]| !paths(events).is_empty();
    a.wait_for("a path", Duration::from_secs(20), relayed);
    b.wait_for("a path", Duration::from_secs(20), relayed);
    let (a_events, b_events) = exchange(a, b);
    let sb = servers.switchboard.to_string();
    for events in [&a_events, &b_events] {
        assert_eq!(paths(events), vec![("relayed".to_owned(), sb.clone())]);
    }
}

#[test]
fn a_peer_that_never_comes_is_a_clear_error() {
    let servers = Servers::start();
    servers.pair("erin", "frank");
    // stdin stays open: the chat waits for the peer, not for input.
    let mut a = chat(&servers, "erin", "frank", &["--wait", "1"]);
    let error = |events: &[Value]| events.iter().any(|e| e["event"] == "error");
    a.wait_for("an error", Duration::from_secs(10), error);
    let status = a.wait_exit(Duration::from_secs(10));
    assert!(!status.success());
    let events = a.events();
    let last = events.last().unwrap();
    assert_eq!(last["event"], "error", "{events:?}");
    assert!(
        last["message"].as_str().unwrap().contains("frank"),
        "{last}"
    );
}
