//! [`RendezvousError`] and the protocol's error numbers (docs/PROTOCOL.md section 9).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use shared::identity::Fingerprint;
use shared::rendezvous::scram::ScramError;

use crate::home::HomeError;
use crate::tls::TlsError;

use super::dispatch::Redirect;
use super::event::OutReason;

/// The protocol's error numbers (docs/PROTOCOL.md section 9).
pub mod code {
    /// Syntax error or unknown command.
    pub const SYNTAX: u16 = 200;
    /// Invalid parameter (also: adding or blocking yourself).
    pub const INVALID_PARAMETER: u16 = 201;
    /// No such user.
    pub const NO_SUCH_USER: u16 = 205;
    /// Invalid user name.
    pub const INVALID_NAME: u16 = 209;
    /// Contact list full.
    pub const LIST_FULL: u16 = 210;
    /// Already a contact.
    pub const ALREADY_CONTACT: u16 = 215;
    /// Not in the list.
    pub const NOT_IN_LIST: u16 = 216;
    /// User offline (also: not a mutual contact, or blocked).
    pub const USER_OFFLINE: u16 = 217;
    /// Already blocked.
    pub const ALREADY_BLOCKED: u16 = 218;
    /// This side has already reported the introduction's outcome (`RPT`).
    pub const ALREADY_REPORTED: u16 = 220;
    /// Not logged in.
    pub const NOT_LOGGED_IN: u16 = 302;
    /// Internal server error.
    pub const INTERNAL: u16 = 500;
    /// Registration is closed.
    pub const REGISTRATION_CLOSED: u16 = 710;
    /// Name taken.
    pub const NAME_TAKEN: u16 = 711;
    /// Not expected now.
    pub const NOT_EXPECTED: u16 = 715;
    /// KDF too weak or malformed.
    pub const WEAK_KDF: u16 = 716;
    /// Unsupported version.
    pub const UNSUPPORTED_VERSION: u16 = 731;
    /// Too many failed logins from this address: try again later (transient).
    pub const TOO_MANY_FAILURES: u16 = 800;
    /// Authentication failed.
    pub const AUTH_FAILED: u16 = 911;

    /// The meaning of a code, for error lines that come without text.
    pub fn meaning(code: u16) -> &'static str {
        match code {
            SYNTAX => "syntax error",
            INVALID_PARAMETER => "invalid parameter",
            NO_SUCH_USER => "no such user",
            INVALID_NAME => "invalid user name",
            LIST_FULL => "contact list full",
            ALREADY_CONTACT => "already a contact",
            NOT_IN_LIST => "not in the list",
            USER_OFFLINE => "user offline",
            ALREADY_BLOCKED => "already blocked",
            ALREADY_REPORTED => "already reported",
            NOT_LOGGED_IN => "not logged in",
            INTERNAL => "internal server error",
            REGISTRATION_CLOSED => "registration is closed",
            NAME_TAKEN => "name taken",
            NOT_EXPECTED => "not expected now",
            WEAK_KDF => "KDF too weak or malformed",
            UNSUPPORTED_VERSION => "unsupported version",
            TOO_MANY_FAILURES => "too many failed logins from this address; try again later",
            AUTH_FAILED => "authentication failed",
            _ => "error",
        }
    }
}

/// Why the connection to the server is gone.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The server said `OUT 0 REASON` before closing.
    LoggedOut(OutReason),
    /// The server closed the connection without saying why.
    ClosedByServer,
    /// This client closed it (logout, a failed server proof, or the client was dropped).
    ClosedByClient,
    /// The socket failed or the server sent bytes that cannot be framed.
    Failed(String),
    /// The node is draining and sent us to another (`XFR 0 NS ip:port draining`): the client
    /// logged out and closed; log in again there ([`super::Relogin::reconnect_after`]).
    Transferred(Box<Redirect>),
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::LoggedOut(reason) => write!(f, "the server logged us out: {reason}"),
            CloseReason::ClosedByServer => f.write_str("the server closed the connection"),
            CloseReason::ClosedByClient => f.write_str("the connection is closed"),
            CloseReason::Failed(e) => write!(f, "connection lost: {e}"),
            CloseReason::Transferred(r) => write!(f, "moving to another node: {r}"),
        }
    }
}

/// Why a rendezvous operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RendezvousError {
    /// The server's name does not resolve (or is not `HOST:PORT`).
    #[error("cannot resolve {server:?} (expected HOST:PORT): {}", io_text(error))]
    Resolve {
        /// The name as given.
        server: String,
        /// What the resolver said.
        error: std::io::Error,
    },
    /// The server presented another certificate key than the one pinned for it in
    /// `known_servers`: the TLS handshake was refused before anything was sent.
    #[error(
        "the server {server} presented the key {presented}, not the key {pinned} pinned for it \
         in {}; nothing was sent (if the server's key really changed, delete its line there)",
        file.display()
    )]
    ServerKeyChanged {
        /// The server (`HOST:PORT`, the key of `known_servers`).
        server: String,
        /// The pinned key.
        pinned: Fingerprint,
        /// The key it presented.
        presented: Fingerprint,
        /// The `known_servers` file.
        file: PathBuf,
    },
    /// The TLS connection could not be made (or the server's key not trusted).
    #[error(transparent)]
    Tls(TlsError),
    /// The TCP connection could not be opened.
    #[error("cannot connect to {addr}: {}", io_text(error))]
    Connect {
        /// Where to.
        addr: SocketAddr,
        /// What the system said.
        error: std::io::Error,
    },
    /// The server answered with an error line (`NNN TrID text`); see [`code`].
    #[error("{text} ({code})")]
    Server {
        /// The error number.
        code: u16,
        /// The server's text (for people; go by the number).
        text: String,
    },
    /// No answer within the request timeout.
    #[error("no answer to {command} from the server within {} s", after.as_secs_f32())]
    Timeout {
        /// The request's command.
        command: &'static str,
        /// How long we waited.
        after: Duration,
    },
    /// The connection is gone (before or while waiting for an answer).
    #[error("{0}")]
    Closed(CloseReason),
    /// The server's answer does not follow the protocol.
    #[error("unexpected answer from the server: {0}")]
    Unexpected(String),
    /// The SCRAM exchange failed on our side: a malformed server message, or a server that
    /// could not prove it knows our verifier (the connection is then closed).
    #[error("login failed: {0}")]
    Scram(ScramError),
    /// The password could not be stretched (bad KDF parameters).
    #[error("key derivation failed: {0}")]
    Kdf(String),
    /// What answers at the address is not a rendezvous server: it does not speak TLS 1.3, or
    /// does not answer `VER` with a protocol line in time (a STUN server's TCP port, the
    /// switchboard, anything else).
    #[error("{server} is not a rendezvous server ({why})")]
    NotRendezvous {
        /// The server as named (`HOST:PORT`).
        server: String,
        /// What it did instead.
        why: String,
    },
    /// The caller asked for something the protocol cannot carry.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The node is full or draining and sent us to another (`XFR`, docs/PROTOCOL.md section
    /// 11); it has closed the connection. Connecting through a server list follows it.
    #[error("{0}")]
    Redirected(Box<Redirect>),
    /// None of the servers of the list could be used: what each did, in the order tried.
    #[error(
        "no rendezvous server could be used ({tried} address(es) tried): {}",
        failures.join("; ")
    )]
    NoServer {
        /// Addresses tried (redirects not counted).
        tried: usize,
        /// One line per failure.
        failures: Vec<String>,
    },
}

impl From<TlsError> for RendezvousError {
    fn from(e: TlsError) -> RendezvousError {
        match e {
            TlsError::KeyChanged {
                server,
                pinned,
                presented,
                file,
            } => RendezvousError::ServerKeyChanged {
                server,
                pinned,
                presented,
                file,
            },
            other => RendezvousError::Tls(other),
        }
    }
}

impl From<HomeError> for RendezvousError {
    fn from(e: HomeError) -> RendezvousError {
        RendezvousError::Tls(TlsError::Home(e))
    }
}

impl RendezvousError {
    /// Whether the server presented another key than the pinned one.
    pub fn is_server_key_changed(&self) -> bool {
        matches!(self, RendezvousError::ServerKeyChanged { .. })
    }

    /// The server's error number, if this is an error answer.
    pub fn server_code(&self) -> Option<u16> {
        match self {
            RendezvousError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// `911`: wrong password or unknown user (the server does not say which).
    pub fn is_auth_failed(&self) -> bool {
        self.server_code() == Some(code::AUTH_FAILED)
    }

    /// `711`: the name is registered already.
    pub fn is_name_taken(&self) -> bool {
        self.server_code() == Some(code::NAME_TAKEN)
    }

    /// `205`: no account has that name.
    pub fn is_no_such_user(&self) -> bool {
        self.server_code() == Some(code::NO_SUCH_USER)
    }

    /// `217`: the peer cannot be reached (offline, not a mutual contact, or blocking us).
    pub fn is_user_offline(&self) -> bool {
        self.server_code() == Some(code::USER_OFFLINE)
    }

    /// Whether the connection is gone (every later request fails too).
    pub fn is_closed(&self) -> bool {
        matches!(
            self,
            RendezvousError::Closed(_)
                | RendezvousError::NotRendezvous { .. }
                | RendezvousError::Connect { .. }
                | RendezvousError::Resolve { .. }
                | RendezvousError::ServerKeyChanged { .. }
                | RendezvousError::Tls(_)
        )
    }

    pub(crate) fn unexpected(what: impl fmt::Display) -> RendezvousError {
        RendezvousError::Unexpected(what.to_string())
    }
}

/// An I/O error as a short lower-case phrase: "connection refused", not
/// "Connection refused (os error 111)".
pub fn io_text(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = match text.find(" (os error") {
        Some(i) => &text[..i],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) if chars.clone().next().is_some_and(char::is_lowercase) => {
            first.to_lowercase().chain(chars).collect()
        }
        _ => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_readable_line() {
        let refused = RendezvousError::Connect {
            addr: "127.0.0.1:1863".parse().unwrap(),
            error: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        assert_eq!(
            refused.to_string(),
            "cannot connect to 127.0.0.1:1863: connection refused"
        );
        let os = std::io::Error::from_raw_os_error(111);
        assert!(!io_text(&os).contains("os error"), "{}", io_text(&os));
        let auth = RendezvousError::Server {
            code: 911,
            text: "authentication failed".into(),
        };
        assert_eq!(auth.to_string(), "authentication failed (911)");
        assert!(auth.is_auth_failed() && !auth.is_name_taken() && !auth.is_closed());
        let out = RendezvousError::Closed(CloseReason::LoggedOut(OutReason::OtherLogin));
        assert_eq!(
            out.to_string(),
            "the server logged us out: logged in elsewhere (OTH)"
        );
        assert_eq!(code::meaning(code::NAME_TAKEN), "name taken");
    }
}
