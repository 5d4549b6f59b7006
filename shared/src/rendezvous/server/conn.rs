//! Connections: their state, the command dispatch (the connection rule table of
//! docs/PROTOCOL.md sections 1 and 2), and what closing one does.

use std::net::IpAddr;
use std::time::Instant;

use super::directory::UserId;
use super::{
    ConnId, Handled, INVALID_PARAMETER, Line, NOT_EXPECTED, NOT_LOGGED_IN, Output, Refusal,
    RendezvousServer, UNKNOWN_COMMAND, out_line,
};
use crate::rendezvous::scram::{ChannelBinding, ServerExchange};
use crate::rendezvous::types::Presence;

/// One TCP connection. Kept small: the benchmark holds 50,000 of them.
#[derive(Debug)]
pub(super) struct Conn {
    pub(super) state: ConnState,
    /// When the last line (or framing error) arrived.
    pub(super) last_rx: Instant,
    /// Whether `PNG 0` was sent since `last_rx`.
    pub(super) pinged: bool,
    /// Error answers sent so far.
    pub(super) errors: u32,
    /// Failed logins so far.
    pub(super) login_failures: u32,
    /// The `tls-exporter` channel binding of the connection's TLS session (server side).
    pub(super) binding: ChannelBinding,
    /// The client's IP address: its failed logins count against it (`throttle.rs`).
    pub(super) source: IpAddr,
    /// The device identity key this connection is bound to (`DEV`, or its first offer's key).
    pub(super) device: Option<[u8; 32]>,
    /// The login session id the client chose (`DEV`'s second parameter), if it sent one.
    pub(super) login_session: Option<[u8; 16]>,
    /// This session's own presence: `Offline` until its first `CHG`. What contacts see is
    /// the most available over the user's sessions.
    pub(super) presence: Presence,
}

/// Where a connection is in docs/PROTOCOL.md section 2's state diagram.
#[derive(Debug)]
pub(super) enum ConnState {
    /// Connected; the first line must be `VER`.
    AwaitVersion,
    /// Version agreed, not logged in.
    Anonymous,
    /// Between the two `USR` steps.
    LoginStep(Box<PendingLogin>),
    /// Logged in as this user.
    LoggedIn(UserId),
}

/// The server's half of a SCRAM exchange in progress.
#[derive(Debug)]
pub(super) struct PendingLogin {
    pub(super) exchange: ServerExchange,
    /// `None` for an unknown user: the exchange runs on fake values and fails at the end.
    pub(super) user: Option<UserId>,
    /// The lower-cased name from the client-first-message.
    pub(super) name: String,
    /// The second step must arrive before this.
    pub(super) deadline: Instant,
}

impl Conn {
    pub(super) fn new(now: Instant, source: IpAddr, binding: ChannelBinding) -> Conn {
        Conn {
            state: ConnState::AwaitVersion,
            last_rx: now,
            pinged: false,
            errors: 0,
            login_failures: 0,
            binding,
            source,
            device: None,
            login_session: None,
            presence: Presence::Offline,
        }
    }

    /// Any line counts as a sign of life.
    pub(super) fn heard(&mut self, now: Instant) {
        self.last_rx = now;
        self.pinged = false;
    }

    pub(super) fn user(&self) -> Option<UserId> {
        match self.state {
            ConnState::LoggedIn(user) => Some(user),
            _ => None,
        }
    }
}

/// Exactly `N` parameters, or `201`.
pub(super) fn params<const N: usize>(line: &Line) -> Result<[&str; N], Refusal> {
    let refs: Vec<&str> = line.params.iter().map(String::as_str).collect();
    refs.try_into().map_err(|_| INVALID_PARAMETER)
}

impl RendezvousServer {
    /// Routes one line by command and connection state.
    pub(super) fn dispatch(&mut self, now: Instant, conn: ConnId, line: &Line) -> Handled {
        let Some(c) = self.conns.get(&conn) else {
            return Ok(());
        };
        let cmd = &line.command.0;
        if matches!(c.state, ConnState::AwaitVersion) {
            return if cmd == b"VER" {
                self.on_ver(conn, line)
            } else {
                Err(NOT_EXPECTED.closing())
            };
        }
        let user = c.user();
        match cmd {
            b"VER" => Err(NOT_EXPECTED),
            b"PNG" => {
                self.send(conn, Line::new("QNG", line.trid, []));
                Ok(())
            }
            b"QNG" => Ok(()),
            b"OUT" => {
                self.close(conn, None);
                Ok(())
            }
            b"REG" if user.is_some() => Err(NOT_EXPECTED),
            b"REG" => self.on_reg(conn, line),
            b"USR" => self.on_usr(now, conn, line),
            b"CHG" | b"LST" | b"ADC" | b"REM" | b"BLK" | b"ALW" | b"PWD" | b"INV" | b"ANS"
            | b"DEC" | b"PRM" | b"DEV" | b"KEY" | b"RPT" => {
                let Some(me) = user else {
                    return Err(NOT_LOGGED_IN);
                };
                match cmd {
                    b"CHG" => self.on_chg(me, conn, line),
                    b"LST" => self.on_lst(me, conn, line),
                    b"ADC" => self.on_adc(me, conn, line),
                    b"REM" => self.on_rem(me, conn, line),
                    b"BLK" => self.on_blk(me, conn, line),
                    b"ALW" => self.on_alw(me, conn, line),
                    b"PWD" => self.on_pwd(me, conn, line),
                    b"INV" => self.on_inv(now, me, conn, line),
                    b"ANS" => self.on_ans(now, me, conn, line),
                    b"PRM" => self.on_prm(now, me, conn, line),
                    b"DEV" => self.on_dev(me, conn, line),
                    b"KEY" => self.on_key(me, conn, line),
                    b"RPT" => self.on_rpt(now, conn, line),
                    _ => self.on_dec(me, conn, line),
                }
            }
            _ => Err(UNKNOWN_COMMAND),
        }
    }

    /// Server-side close: `OUT 0 reason` if given, then [`Output::Close`]; the connection is
    /// forgotten and its session logged out.
    pub(super) fn close(&mut self, conn: ConnId, reason: Option<&str>) {
        if !self.conns.contains_key(&conn) {
            return;
        }
        if let Some(reason) = reason {
            self.send(conn, out_line(reason));
        }
        self.push(Output::Close(conn));
        self.forget(conn);
    }

    /// Drops what the core knows about `conn` (no output for it); logs its session out.
    pub(super) fn forget(&mut self, conn: ConnId) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        if let ConnState::LoggedIn(user) = c.state {
            self.logout(user, conn);
        }
        if self.conns.is_empty() {
            self.next_sweep = None;
        }
    }

    /// One session of `user` is gone: contacts see the presence of the sessions left (`FLN`
    /// if none is visible), the session's pending invitations are cancelled and its introduced
    /// sessions forgotten. Other sessions of the user are not touched.
    fn logout(&mut self, user: UserId, conn: ConnId) {
        let sessions = &mut self.dir.user_mut(user).sessions;
        let before = sessions.len();
        sessions.retain(|&c| c != conn);
        self.sessions_online -= before - sessions.len();
        if sessions.is_empty() {
            self.online = self.online.saturating_sub(1);
        }
        self.refresh_presence(user);
        self.cancel_intros_of(conn);
        self.forget_sessions_of(conn);
    }
}
