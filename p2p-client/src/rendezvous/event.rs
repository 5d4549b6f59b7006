//! What the server tells us: pushes ([`Event`]), the login configuration ([`LoginInfo`]) and the
//! contact list ([`ContactEntry`]).

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use shared::identity::Fingerprint;
use shared::rendezvous::{Line, Presence, SessionId, UserName};

use super::offer::{Introduction, parse_session_id};

/// Why the server logged us out (`OUT 0 REASON`, docs/PROTOCOL.md section 9).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OutReason {
    /// `OTH`: the same user logged in from another connection.
    OtherLogin,
    /// `TMO`: the connection was silent too long.
    Idle,
    /// `ERR`: too many errors (or failed logins) on this connection.
    TooManyErrors,
    /// `SSD`: the server is shutting down.
    Shutdown,
    /// A reason this client does not know.
    Other(String),
}

impl OutReason {
    /// The reason for its wire code.
    pub fn from_code(code: &str) -> OutReason {
        match code {
            "OTH" => OutReason::OtherLogin,
            "TMO" => OutReason::Idle,
            "ERR" => OutReason::TooManyErrors,
            "SSD" => OutReason::Shutdown,
            other => OutReason::Other(other.to_owned()),
        }
    }

    /// The wire code.
    pub fn code(&self) -> &str {
        match self {
            OutReason::OtherLogin => "OTH",
            OutReason::Idle => "TMO",
            OutReason::TooManyErrors => "ERR",
            OutReason::Shutdown => "SSD",
            OutReason::Other(code) => code,
        }
    }
}

impl fmt::Display for OutReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            OutReason::OtherLogin => "logged in elsewhere",
            OutReason::Idle => "idle too long",
            OutReason::TooManyErrors => "too many errors",
            OutReason::Shutdown => "server shutting down",
            OutReason::Other(_) => "unknown reason",
        };
        write!(f, "{text} ({})", self.code())
    }
}

/// Why an invitation was cancelled (`CAN 0 sid reason`, docs/PROTOCOL.md section 8).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CancelReason {
    /// The invitee declined.
    Declined,
    /// Nobody answered in time.
    Timeout,
    /// The other side went offline.
    Offline,
    /// Another session of ours answered the invitation (it rang every session of ours that
    /// set a presence).
    Answered,
    /// A reason this client does not know.
    Other(String),
}

impl CancelReason {
    /// The reason for its wire word.
    pub fn from_word(word: &str) -> CancelReason {
        match word {
            "declined" => CancelReason::Declined,
            "timeout" => CancelReason::Timeout,
            "offline" => CancelReason::Offline,
            "answered" => CancelReason::Answered,
            other => CancelReason::Other(other.to_owned()),
        }
    }

    /// The wire word.
    pub fn word(&self) -> &str {
        match self {
            CancelReason::Declined => "declined",
            CancelReason::Timeout => "timeout",
            CancelReason::Offline => "offline",
            CancelReason::Answered => "answered",
            CancelReason::Other(word) => word,
        }
    }
}

impl fmt::Display for CancelReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

/// Something the server pushed (TrID 0). `PNG 0` is answered by the client itself and never
/// shows up here.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A contact's presence: `ILN` (initial, `initial: true`), `NLN` or `FLN`
    /// ([`Presence::Offline`]).
    Presence {
        /// Whose.
        name: UserName,
        /// What we may see of it.
        presence: Presence,
        /// Whether this is the initial presence (at login, or when a list change made the
        /// contact visible) rather than a change.
        initial: bool,
    },
    /// `RNG 0 sid name`: `from` invites us; [`answer`](super::RendezvousClient::answer) or
    /// [`decline`](super::RendezvousClient::decline).
    Ring {
        /// The session id to answer.
        sid: SessionId,
        /// Who invites.
        from: UserName,
    },
    /// `ITR`: the server introduced us to a peer.
    Introduced(Box<Introduction>),
    /// `CAN 0 sid reason`: an invitation is off.
    Cancelled {
        /// Which one.
        sid: SessionId,
        /// Why.
        reason: CancelReason,
    },
    /// `PRM 0 sid`: the other peer of the introduced session `sid` has primed its NAT (see
    /// [`primed`](super::RendezvousClient::primed)).
    PeerPrimed {
        /// The session.
        sid: SessionId,
    },
    /// A `CFG` push outside the login (the login's own is in [`LoginInfo`]).
    Config(LoginInfo),
    /// `OUT 0 REASON`: the server is closing the connection.
    LoggedOut(OutReason),
}

/// What the server tells a client right after login (the `CFG` push, docs/PROTOCOL.md
/// section 5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginInfo {
    /// The user, as the server spells it (lower-case).
    pub user: UserName,
    /// The STUN service (`stun=`), if the server has one.
    pub stun: Option<SocketAddr>,
    /// The switchboard relay (`sb=`), if the server has one.
    pub switchboard: Option<SocketAddr>,
    /// The fingerprint of the switchboard's certificate key (`sbfp=`).
    pub switchboard_fingerprint: Option<Fingerprint>,
    /// The keepalive period (`ping=`): the server pings after this much silence.
    pub ping: Duration,
}

impl LoginInfo {
    /// Parses a `CFG` line's parameters. Unknown keys are ignored.
    pub fn from_cfg(user: UserName, line: &Line) -> Result<LoginInfo, String> {
        let addr = |key: &str| -> Result<Option<SocketAddr>, String> {
            line.keyed(key)
                .map(|v| v.parse().map_err(|_| format!("bad {key}= in CFG: {v:?}")))
                .transpose()
        };
        let ping = match line.keyed("ping") {
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|&s| s > 0)
                .map(Duration::from_secs)
                .ok_or_else(|| format!("bad ping= in CFG: {v:?}"))?,
            None => Duration::from_secs(30),
        };
        let switchboard_fingerprint = line
            .keyed("sbfp")
            .map(|v| v.parse().map_err(|_| format!("bad sbfp= in CFG: {v:?}")))
            .transpose()?;
        Ok(LoginInfo {
            user,
            stun: addr("stun")?,
            switchboard: addr("sb")?,
            switchboard_fingerprint,
            ping,
        })
    }
}

/// One line of the `LST` answer: a name in the contact list, the block list, or both.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ContactEntry {
    /// The name.
    pub name: UserName,
    /// What we may see of its presence ([`Presence::Offline`] when not visible).
    pub presence: Presence,
    /// In the contact list (flag `C`).
    pub contact: bool,
    /// In the block list (flag `B`).
    pub blocked: bool,
}

/// Parses the `LST` payload: `name STATE flags\r\n` per entry (docs/PROTOCOL.md section 7).
pub fn parse_contact_list(payload: &[u8]) -> Result<Vec<ContactEntry>, String> {
    let text = std::str::from_utf8(payload).map_err(|_| "LST payload is not text".to_owned())?;
    let mut entries = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let Some((line, tail)) = rest.split_once("\r\n") else {
            return Err(format!("LST line without CRLF: {:?}", clip(rest)));
        };
        rest = tail;
        let bad = || format!("bad LST line {:?}", clip(line));
        let mut fields = line.split(' ');
        let (Some(name), Some(state), Some(flags), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(bad());
        };
        let name = UserName::parse(name).map_err(|_| bad())?;
        let presence = Presence::from_code(state).ok_or_else(bad)?;
        let flags_ok =
            !flags.is_empty() && flags.len() <= 2 && flags.chars().all(|c| "CB".contains(c));
        if !flags_ok || (flags.len() == 2 && flags.as_bytes()[0] == flags.as_bytes()[1]) {
            return Err(bad());
        }
        entries.push(ContactEntry {
            name,
            presence,
            contact: flags.contains('C'),
            blocked: flags.contains('B'),
        });
    }
    Ok(entries)
}

fn clip(s: &str) -> String {
    s.chars().take(60).collect()
}

/// Turns a push line into an event. `Err` describes a malformed push (logged and dropped by the
/// connection); `Ok(None)` is a push this client does not know.
pub(crate) fn parse_push(line: &Line) -> Result<Option<Event>, String> {
    let bad = || format!("malformed {} push: {:?}", line.command, line.params);
    let name_at = |i: usize| {
        line.param(i)
            .and_then(|n| UserName::parse(n).ok())
            .ok_or_else(bad)
    };
    let sid_at = |i: usize| line.param(i).and_then(parse_session_id).ok_or_else(bad);
    let event = match line.command.as_str() {
        "ILN" | "NLN" => {
            let presence = line
                .param(0)
                .and_then(Presence::from_code)
                .ok_or_else(bad)?;
            Event::Presence {
                name: name_at(1)?,
                presence,
                initial: line.command.as_str() == "ILN",
            }
        }
        "FLN" => Event::Presence {
            name: name_at(0)?,
            presence: Presence::Offline,
            initial: false,
        },
        "RNG" => Event::Ring {
            sid: sid_at(0)?,
            from: name_at(1)?,
        },
        "ITR" => Event::Introduced(Box::new(Introduction::from_params(&line.params)?)),
        "CAN" => Event::Cancelled {
            sid: sid_at(0)?,
            reason: CancelReason::from_word(line.param(1).unwrap_or("unknown")),
        },
        "PRM" => Event::PeerPrimed { sid: sid_at(0)? },
        "OUT" => Event::LoggedOut(OutReason::from_code(line.param(0).unwrap_or("?"))),
        _ => return Ok(None),
    };
    Ok(Some(event))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::rendezvous::TrId;

    fn name(n: &str) -> UserName {
        UserName::parse(n).unwrap()
    }

    #[test]
    fn contact_list_payload_parses() {
        let list = parse_contact_list(b"bob BSY C\r\ncarol FLN CB\r\ndave FLN B\r\n").unwrap();
        assert_eq!(
            list,
            vec![
                ContactEntry {
                    name: name("bob"),
                    presence: Presence::Busy,
                    contact: true,
                    blocked: false
                },
                ContactEntry {
                    name: name("carol"),
                    presence: Presence::Offline,
                    contact: true,
                    blocked: true
                },
                ContactEntry {
                    name: name("dave"),
                    presence: Presence::Offline,
                    contact: false,
                    blocked: true
                },
            ]
        );
        assert_eq!(parse_contact_list(b"").unwrap(), vec![]);
    }

    #[test]
    fn malformed_contact_lists_are_refused() {
        for bad in [
            &b"bob BSY C"[..],
            b"bob BSY C\n",
            b"bob XYZ C\r\n",
            b"bob BSY\r\n",
            b"bob BSY C extra\r\n",
            b"bob BSY X\r\n",
            b"bob BSY CC\r\n",
            b"bob BSY CBC\r\n",
            b"b b BSY C\r\n",
            b"bob  BSY C\r\n",
            b"\xff BSY C\r\n",
        ] {
            assert!(
                parse_contact_list(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn pushes_become_events() {
        let push = |cmd: &str, params: &[&str]| {
            Line::new(cmd, TrId::PUSH, params.iter().map(|p| p.to_string()))
        };
        assert_eq!(
            parse_push(&push("ILN", &["BSY", "Bob"])).unwrap(),
            Some(Event::Presence {
                name: name("bob"),
                presence: Presence::Busy,
                initial: true
            })
        );
        assert_eq!(
            parse_push(&push("FLN", &["bob"])).unwrap(),
            Some(Event::Presence {
                name: name("bob"),
                presence: Presence::Offline,
                initial: false
            })
        );
        let sid = "00112233445566778899aabbccddeeff";
        assert_eq!(
            parse_push(&push("CAN", &[sid, "declined"])).unwrap(),
            Some(Event::Cancelled {
                sid: parse_session_id(sid).unwrap(),
                reason: CancelReason::Declined
            })
        );
        assert_eq!(
            parse_push(&push("OUT", &["OTH"])).unwrap(),
            Some(Event::LoggedOut(OutReason::OtherLogin))
        );
        assert_eq!(
            parse_push(&push("PRM", &[sid])).unwrap(),
            Some(Event::PeerPrimed {
                sid: parse_session_id(sid).unwrap()
            })
        );
        assert!(parse_push(&push("PRM", &["nothex"])).is_err());
        assert_eq!(parse_push(&push("XYZ", &[])).unwrap(), None);
        assert!(parse_push(&push("NLN", &["???", "bob"])).is_err());
        assert!(parse_push(&push("RNG", &["nothex", "bob"])).is_err());
    }

    #[test]
    fn cfg_parses_with_defaults_for_what_is_missing() {
        let cfg = Line::new(
            "CFG",
            TrId::PUSH,
            [
                "stun=127.0.0.1:3478",
                "sb=[::1]:1865",
                "sbfp=SHA256:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE",
                "ping=5",
            ]
            .map(String::from),
        );
        let info = LoginInfo::from_cfg(name("alice"), &cfg).unwrap();
        assert_eq!(info.stun, Some("127.0.0.1:3478".parse().unwrap()));
        assert_eq!(info.switchboard, Some("[::1]:1865".parse().unwrap()));
        assert_eq!(info.switchboard_fingerprint, Some(Fingerprint([1; 32])));
        assert_eq!(info.ping, Duration::from_secs(5));
        let bare = LoginInfo::from_cfg(name("alice"), &Line::new("CFG", TrId::PUSH, [])).unwrap();
        assert_eq!((bare.stun, bare.ping), (None, Duration::from_secs(30)));
        let bad = Line::new("CFG", TrId::PUSH, ["ping=x".to_owned()]);
        assert!(LoginInfo::from_cfg(name("alice"), &bad).is_err());
        let bad = Line::new("CFG", TrId::PUSH, ["sbfp=SHA256:x".to_owned()]);
        assert!(LoginInfo::from_cfg(name("alice"), &bad).is_err());
    }
}
