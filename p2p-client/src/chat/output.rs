//! What `chat` prints: lines for people, or one JSON object per line with `--json`.
//!
//! In JSON mode stdout carries only the objects below; everything else (progress, warnings)
//! goes to stderr through `tracing` or [`Output::note`].
//!
//! | `event` | other keys | when |
//! |---|---|---|
//! | `connected` | `peer`, `sid`, `role` | the server introduced us to the peer |
//! | `path` | `path` (`direct` or `relayed`), `remote` (`ip:port`) | the path in use changed |
//! | `message` | `from`, `text` | a message arrived (each exactly once, in order) |
//! | `peer_left` | `peer` | the peer ended the chat (its goodbye), or stopped answering for 14 s |
//! | `undelivered` | `id`, `text`, `reason` | a message of ours the peer did not acknowledge (`id`: its number in the order typed, from 1; `reason`: `too long`, `peer left`, `not acknowledged`, `interrupted`, `chat failed`); the exit status is then 1 |
//! | `server` | `state` (`reconnecting` or `connected`) | the connection to the rendezvous server was lost, or is back (logged in again) |
//! | `error` | `message` | the chat ends with an error (printed before the exit status 1) |
//! | `server_pinned` | `server`, `fingerprint` | first connection to the server: its key is pinned |
//! | `key_changed` | `peer`, `old`, `new` | the peer's key is not the pinned one: no chat (exit status 3) |

use std::io::Write;
use std::net::SocketAddr;

use serde_json::json;

pub use crate::link::PathKind;

/// Something to show the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shown<'a> {
    /// The server introduced us.
    Connected {
        /// The peer's name.
        peer: &'a str,
        /// The session id (hex).
        sid: &'a str,
        /// Our Noise role (`initiator` or `responder`).
        role: &'a str,
    },
    /// The path in use changed.
    Path {
        /// Which kind.
        path: PathKind,
        /// The peer's address on a direct path, or the switchboard's on a relayed one.
        remote: SocketAddr,
    },
    /// A message from the peer.
    Message {
        /// Its sender.
        from: &'a str,
        /// Its text (invalid UTF-8 replaced).
        text: &'a str,
    },
    /// The peer went offline.
    PeerLeft {
        /// Who.
        peer: &'a str,
    },
    /// A message of ours that did not reach the peer.
    Undelivered {
        /// Its number in the order typed (from 1).
        id: u64,
        /// Its text.
        text: &'a str,
        /// Why (`too long`, `peer left`, ...).
        reason: &'a str,
    },
    /// The state of the connection to the rendezvous server.
    Server {
        /// `reconnecting` or `connected`.
        state: &'a str,
    },
    /// The chat failed.
    Error {
        /// Why.
        message: &'a str,
    },
    /// The rendezvous server's key was pinned (first connection).
    ServerPinned {
        /// The server (`HOST:PORT`).
        server: &'a str,
        /// Its key's fingerprint.
        fingerprint: &'a str,
    },
    /// The direct path went down and punching starts again.
    PunchingAgain {
        /// Which attempt this is (from 1).
        attempt: u32,
    },
    /// The peer's identity key is not the pinned one: the chat does not start.
    KeyChanged {
        /// The peer.
        peer: &'a str,
        /// The pinned key's fingerprint.
        old: &'a str,
        /// The safety number with the new key.
        safety_number: &'a str,
        /// The new key's fingerprint.
        new: &'a str,
    },
}

impl Shown<'_> {
    /// The JSON line (without the newline).
    pub fn json_line(&self) -> String {
        let value = match self {
            Shown::Connected { peer, sid, role } => {
                json!({"event": "connected", "peer": peer, "sid": sid, "role": role})
            }
            Shown::Path { path, remote } => {
                json!({"event": "path", "path": path.word(), "remote": remote.to_string()})
            }
            Shown::Message { from, text } => {
                json!({"event": "message", "from": from, "text": text})
            }
            Shown::PeerLeft { peer } => json!({"event": "peer_left", "peer": peer}),
            Shown::Undelivered { id, text, reason } => {
                json!({"event": "undelivered", "id": id, "text": text, "reason": reason})
            }
            Shown::Server { state } => json!({"event": "server", "state": state}),
            Shown::Error { message } => json!({"event": "error", "message": message}),
            Shown::ServerPinned {
                server,
                fingerprint,
            } => json!({"event": "server_pinned", "server": server, "fingerprint": fingerprint}),
            Shown::PunchingAgain { attempt } => {
                json!({"event": "punching_again", "attempt": attempt})
            }
            Shown::KeyChanged {
                peer,
                old,
                new,
                safety_number,
            } => json!({
                "event": "key_changed", "peer": peer, "old": old, "new": new,
                "safety_number": safety_number
            }),
        };
        value.to_string()
    }

    /// The line for people (without the newline), and whether it belongs on stdout (messages)
    /// rather than stderr (status).
    pub fn human_line(&self) -> (String, bool) {
        match self {
            Shown::Connected { peer, .. } => (
                format!("-- connected to {peer}; type a line and Enter to send, Ctrl-D to end"),
                false,
            ),
            Shown::Path {
                path: PathKind::Direct,
                remote,
            } => (format!("-- path: direct to {remote}"), false),
            Shown::Path {
                path: PathKind::Relayed,
                remote,
            } => (
                format!("-- path: relayed via the switchboard {remote}"),
                false,
            ),
            Shown::Message { from, text } => (format!("<{from}> {text}"), true),
            Shown::PeerLeft { peer } => (format!("-- {peer} left the chat"), false),
            Shown::Undelivered { id, text, reason } => (
                format!("-- not delivered ({reason}): message {id}: {text}"),
                false,
            ),
            Shown::Server { state } => (format!("-- server: {state}"), false),
            Shown::Error { message } => (format!("-- error: {message}"), false),
            Shown::ServerPinned {
                server,
                fingerprint,
            } => (
                format!("-- pinned the server {server} with key {fingerprint}"),
                false,
            ),
            Shown::PunchingAgain { attempt } => (
                format!("-- the direct path is down; punching again (attempt {attempt})"),
                false,
            ),
            Shown::KeyChanged {
                peer,
                old,
                new,
                safety_number,
            } => (
                format!(
                    "-- {peer}'s identity key changed from {old} to {new} (safety number with \
                     the new key: {safety_number})"
                ),
                false,
            ),
        }
    }
}

/// Prints [`Shown`] items in the chosen mode.
#[derive(Clone, Copy, Debug)]
pub struct Output {
    json: bool,
}

impl Output {
    /// JSON lines on stdout (`json`), or text for people.
    pub fn new(json: bool) -> Output {
        Output { json }
    }

    /// Whether stdout carries JSON.
    pub fn is_json(&self) -> bool {
        self.json
    }

    /// Shows one item. Write errors (a closed pipe) are ignored: the chat goes on.
    pub fn show(&self, item: &Shown<'_>) {
        if self.json {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", item.json_line());
            let _ = out.flush();
            return;
        }
        let (line, to_stdout) = item.human_line();
        if to_stdout {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        } else {
            eprintln!("{line}");
        }
    }

    /// A status note for people; on stderr in both modes (never on stdout in JSON mode).
    pub fn note(&self, text: &str) {
        eprintln!("-- {text}");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn parse(line: &str) -> serde_json::Value {
        assert!(!line.contains('\n'), "one object per line: {line:?}");
        serde_json::from_str(line).unwrap()
    }

    #[test]
    fn path_events_name_the_path_and_the_remote() {
        let remote: SocketAddr = "[2001:db8::1]:4000".parse().unwrap();
        for (path, word) in [(PathKind::Direct, "direct"), (PathKind::Relayed, "relayed")] {
            let v = parse(&Shown::Path { path, remote }.json_line());
            assert_eq!(
                v,
                json!({"event": "path", "path": word, "remote": "[2001:db8::1]:4000"})
            );
        }
    }

    #[test]
    fn messages_are_escaped_into_one_line() {
        let text = "quote \" backslash \\ tab \t newline-free \u{7f} é 🙂";
        let v = parse(&Shown::Message { from: "bob", text }.json_line());
        assert_eq!(v, json!({"event": "message", "from": "bob", "text": text}));
        let (line, to_stdout) = Shown::Message { from: "bob", text }.human_line();
        assert_eq!(line, format!("<bob> {text}"));
        assert!(to_stdout);
    }

    #[test]
    fn other_events_have_their_documented_keys() {
        let v = parse(
            &Shown::Connected {
                peer: "bob",
                sid: "00ff",
                role: "initiator",
            }
            .json_line(),
        );
        assert_eq!(
            v,
            json!({"event": "connected", "peer": "bob", "sid": "00ff", "role": "initiator"})
        );
        let v = parse(&Shown::PeerLeft { peer: "bob" }.json_line());
        assert_eq!(v, json!({"event": "peer_left", "peer": "bob"}));
        let v = parse(
            &Shown::Undelivered {
                id: 3,
                text: "hi",
                reason: "too long",
            }
            .json_line(),
        );
        assert_eq!(
            v,
            json!({"event": "undelivered", "id": 3, "text": "hi", "reason": "too long"})
        );
        let v = parse(&Shown::Server { state: "connected" }.json_line());
        assert_eq!(v, json!({"event": "server", "state": "connected"}));
        let v = parse(&Shown::Error { message: "no path" }.json_line());
        assert_eq!(v, json!({"event": "error", "message": "no path"}));
        let v = parse(
            &Shown::ServerPinned {
                server: "127.0.0.1:1863",
                fingerprint: "SHA256:x",
            }
            .json_line(),
        );
        assert_eq!(
            v,
            json!({"event": "server_pinned", "server": "127.0.0.1:1863", "fingerprint": "SHA256:x"})
        );
        let v = parse(
            &Shown::KeyChanged {
                peer: "bob",
                old: "SHA256:a",
                new: "SHA256:b",
                safety_number: "12345",
            }
            .json_line(),
        );
        assert_eq!(
            v,
            json!({"event": "key_changed", "peer": "bob", "old": "SHA256:a", "new": "SHA256:b",
                   "safety_number": "12345"})
        );
        let v = parse(&Shown::PunchingAgain { attempt: 2 }.json_line());
        assert_eq!(v, json!({"event": "punching_again", "attempt": 2}));
    }

    #[test]
    fn status_lines_go_to_stderr_for_people() {
        let remote: SocketAddr = "127.0.0.1:1865".parse().unwrap();
        let (line, to_stdout) = Shown::Path {
            path: PathKind::Relayed,
            remote,
        }
        .human_line();
        assert!(line.contains("relayed") && line.contains("127.0.0.1:1865"));
        assert!(!to_stdout);
    }
}
