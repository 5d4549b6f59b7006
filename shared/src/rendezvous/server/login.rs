//! Version negotiation, registration, password change and the SCRAM login
//! (docs/PROTOCOL.md sections 3 to 5).

use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::conn::{ConnState, PendingLogin, params};
use super::directory::UserId;
use super::writes::Undo;
use super::{
    AUTH_FAILED, ConnId, Handled, INVALID_PARAMETER, INVALID_USER_NAME, NAME_TAKEN, NOT_EXPECTED,
    PROTOCOL_VERSION, REGISTRATION_CLOSED, Refusal, RendezvousServer, TOO_MANY_FAILURES,
    UNSUPPORTED_VERSION, WEAK_KDF,
};
use crate::rendezvous::scram::{
    self, ChannelBinding, MAX_NONCE_CHARS, MECHANISM, MIN_NONCE_BYTES, MIN_NONCE_CHARS,
    ServerExchange,
};
use crate::rendezvous::types::{Credentials, Kdf, Presence, StoreOp, UserName, UserRecord};
use crate::rendezvous::wire::{Line, TrId};

/// Salts shorter or longer than this are refused at registration.
const SALT_LEN: std::ops::RangeInclusive<usize> = 8..=64;

fn hmac_secret(secret: &[u8; 32], label: &[u8], name: &str) -> [u8; 32] {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return [0; 32];
    };
    mac.update(label);
    mac.update(name.as_bytes());
    mac.finalize().into_bytes().into()
}

fn decode_b64_text(b64: &str) -> Option<String> {
    String::from_utf8(B64.decode(b64).ok()?).ok()
}

impl RendezvousServer {
    /// `VER TrID version...`: the first line.
    /// A full or draining node answers `XFR` instead (`dispatch.rs`).
    pub(super) fn on_ver(&mut self, conn: ConnId, line: &Line) -> Handled {
        if !line.params.iter().any(|v| v == PROTOCOL_VERSION) {
            return Err(UNSUPPORTED_VERSION.closing());
        }
        if !self.admit(conn, line.trid)? {
            return Ok(());
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.state = ConnState::Anonymous;
        }
        let answer = Line::new("VER", line.trid, [PROTOCOL_VERSION.to_owned()]);
        self.send(conn, answer);
        Ok(())
    }

    /// The verifier of `REG` and `PWD`: `kdf salt StoredKey ServerKey`.
    fn parse_credentials(&self, fields: [&str; 4]) -> Result<Credentials, Refusal> {
        let [kdf, salt, stored, server] = fields;
        let kdf: Kdf = kdf.parse().map_err(|_| WEAK_KDF)?;
        if !kdf.at_least(&self.config.min_kdf) {
            return Err(WEAK_KDF);
        }
        let salt = B64
            .decode(salt)
            .ok()
            .filter(|s| SALT_LEN.contains(&s.len()));
        let key = |k: &str| {
            B64.decode(k)
                .ok()
                .and_then(|k| <[u8; 32]>::try_from(k).ok())
        };
        match (salt, key(stored), key(server)) {
            (Some(salt), Some(stored_key), Some(server_key)) => Ok(Credentials {
                kdf,
                salt,
                stored_key,
                server_key,
            }),
            _ => Err(INVALID_PARAMETER),
        }
    }

    /// `REG TrID name kdf salt StoredKey ServerKey`.
    pub(super) fn on_reg(&mut self, conn: ConnId, line: &Line) -> Handled {
        let [name, kdf, salt, stored, server] = params(line)?;
        if !self.config.registration_open {
            return Err(REGISTRATION_CLOSED);
        }
        let name = UserName::parse(name).map_err(|_| INVALID_USER_NAME)?;
        if self.dir.id(&name).is_some() {
            return Err(NAME_TAKEN);
        }
        let credentials = self.parse_credentials([kdf, salt, stored, server])?;
        let record = UserRecord {
            name: name.clone(),
            credentials,
        };
        let id = self.dir.upsert(record.clone());
        self.store(StoreOp::CreateUser(record), Undo::CreateUser(id));
        self.send(conn, Line::new("REG", line.trid, [name.to_string()]));
        Ok(())
    }

    /// `PWD TrID kdf salt StoredKey ServerKey`.
    pub(super) fn on_pwd(&mut self, me: UserId, conn: ConnId, line: &Line) -> Handled {
        let [kdf, salt, stored, server] = params(line)?;
        let credentials = self.parse_credentials([kdf, salt, stored, server])?;
        let user = self.dir.user_mut(me);
        let old = std::mem::replace(&mut user.creds, credentials.clone());
        let name = user.name.clone();
        let op = StoreOp::SetCredentials { name, credentials };
        self.store(op, Undo::Credentials(me, old));
        self.send(conn, Line::new("PWD", line.trid, []));
        Ok(())
    }

    /// The KDF shown to unknown users: the default, or the operator's minimum if stronger.
    fn fake_kdf(&self) -> Kdf {
        let min = self.config.min_kdf;
        if min.at_least(&Kdf::default()) {
            min
        } else {
            Kdf::default()
        }
    }

    /// Credentials for a name with no account: stable across restarts (derived from the
    /// secret), and never matching any proof.
    fn fake_credentials(&self, name: &str) -> Credentials {
        let salt = hmac_secret(&self.secret, b"fake salt\0", name);
        Credentials {
            kdf: self.fake_kdf(),
            salt: salt[..16].to_vec(),
            stored_key: hmac_secret(&self.secret, b"fake stored key\0", name),
            server_key: hmac_secret(&self.secret, b"fake server key\0", name),
        }
    }

    /// `USR TrID SCRAM-SHA-256-ARGON2ID I|S <b64>`, counted by outcome: a login ends either
    /// at its final step or with a refusal (a first step that was answered is not counted yet).
    pub(super) fn on_usr(&mut self, now: Instant, conn: ConnId, line: &Line) -> Handled {
        let final_step = line.params.get(1).is_some_and(|step| step == "S");
        let result = self.usr_step(now, conn, line);
        let counters = &mut self.counters;
        match &result {
            Ok(()) if final_step => counters.logins_ok += 1,
            Ok(()) => {}
            Err(refusal) if refusal.code == AUTH_FAILED.code => counters.logins_auth_failed += 1,
            Err(refusal) if refusal.code == TOO_MANY_FAILURES.code => {
                counters.logins_throttled += 1;
            }
            Err(_) => counters.logins_other += 1,
        }
        result
    }

    fn usr_step(&mut self, now: Instant, conn: ConnId, line: &Line) -> Handled {
        let [mechanism, step, message] = params(line)?;
        if mechanism != MECHANISM {
            return Err(INVALID_PARAMETER);
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return Ok(());
        };
        match (step, &c.state) {
            (_, ConnState::LoggedIn(_)) => Err(NOT_EXPECTED),
            ("I", _) => {
                c.state = ConnState::Anonymous;
                let source = c.source;
                // The node may have filled up or started draining since `VER`.
                if !self.admit(conn, line.trid)? {
                    return Ok(());
                }
                if !self.throttle.may_try(now, source, self.throttle_limits()) {
                    return Err(TOO_MANY_FAILURES);
                }
                self.login_first(now, conn, line.trid, message)
            }
            ("S", ConnState::LoginStep(_)) => {
                let ConnState::LoginStep(pending) =
                    std::mem::replace(&mut c.state, ConnState::Anonymous)
                else {
                    return Err(NOT_EXPECTED);
                };
                if now >= pending.deadline {
                    return Err(NOT_EXPECTED);
                }
                let binding = c.binding;
                self.login_final(now, conn, line.trid, message, &pending, &binding)
            }
            ("S", _) => Err(NOT_EXPECTED),
            _ => Err(INVALID_PARAMETER),
        }
    }

    /// The first step: answer the server-first-message, for real or fake credentials.
    fn login_first(&mut self, now: Instant, conn: ConnId, trid: TrId, message: &str) -> Handled {
        let first = decode_b64_text(message)
            .and_then(|text| scram::parse_client_first(&text).ok())
            .filter(|f| (MIN_NONCE_CHARS..=MAX_NONCE_CHARS).contains(&f.nonce.len()))
            .ok_or(INVALID_PARAMETER)?;
        let name = first.user.to_ascii_lowercase();
        let user = self.dir.lookup(&name);
        let (salt, kdf) = match user {
            Some(id) => {
                let creds = &self.dir.user(id).creds;
                (creds.salt.clone(), creds.kdf)
            }
            None => {
                let fake = self.fake_credentials(&name);
                (fake.salt, fake.kdf)
            }
        };
        let nonce: [u8; MIN_NONCE_BYTES] = self.random();
        let exchange = ServerExchange::new(&first, &nonce, &salt, kdf);
        let server_first = B64.encode(exchange.server_first());
        let answer = Line::new(
            "USR",
            trid,
            [MECHANISM.to_owned(), "S".to_owned(), server_first],
        );
        self.send(conn, answer);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.state = ConnState::LoginStep(Box::new(PendingLogin {
                exchange,
                user,
                name,
                deadline: now + self.config.login_step_timeout,
            }));
        }
        Ok(())
    }

    /// The second step: check the channel binding and the proof; log in or count a failure.
    fn login_final(
        &mut self,
        now: Instant,
        conn: ConnId,
        trid: TrId,
        message: &str,
        pending: &PendingLogin,
        binding: &ChannelBinding,
    ) -> Handled {
        let creds = match pending.user {
            Some(id) => self.dir.user(id).creds.clone(),
            None => self.fake_credentials(&pending.name),
        };
        let verified = decode_b64_text(message).and_then(|text| {
            let exchange = &pending.exchange;
            exchange.verify_client_final(&text, &creds, binding).ok()
        });
        match (verified, pending.user) {
            (Some(server_final), Some(user)) => {
                self.login_ok(conn, trid, user, &server_final);
                Ok(())
            }
            _ => {
                let limits = self.throttle_limits();
                let Some(c) = self.conns.get_mut(&conn) else {
                    return Ok(());
                };
                self.throttle.failed(now, c.source, limits);
                c.login_failures = c.login_failures.saturating_add(1);
                if c.login_failures >= self.config.max_login_failures {
                    Err(AUTH_FAILED.closing())
                } else {
                    Err(AUTH_FAILED)
                }
            }
        }
    }

    /// The failed-login brake's settings.
    pub(super) fn throttle_limits(&self) -> super::throttle::Limits {
        super::throttle::Limits {
            burst: self.config.login_failure_burst,
            refill: self.config.login_failure_refill,
        }
    }

    /// Logs `user` in on `conn`, a new session next to any it has (offline to others until
    /// its first `CHG`): answers, pushes `CFG` and `ILN`.
    fn login_ok(&mut self, conn: ConnId, trid: TrId, user: UserId, server_final: &str) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.state = ConnState::LoggedIn(user);
        c.login_failures = 0;
        c.presence = Presence::Offline;
        let u = self.dir.user_mut(user);
        if u.sessions.is_empty() {
            self.online += 1;
        }
        u.sessions.push(conn);
        self.sessions_online += 1;
        let name = u.name.to_string();
        let ok = ["OK".to_owned(), name, B64.encode(server_final)];
        self.send(conn, Line::new("USR", trid, ok));
        let mut cfg = Vec::new();
        if let Some(stun) = self.config.stun_addr {
            cfg.push(format!("stun={stun}"));
        }
        if let Some(sb) = self.config.switchboard_addr {
            cfg.push(format!("sb={sb}"));
            if let Some(fp) = self.config.switchboard_fingerprint {
                cfg.push(format!("sbfp={fp}"));
            }
        }
        cfg.push(format!(
            "ping={}",
            self.config.ping_interval.as_secs().max(1)
        ));
        self.send(conn, Line::new("CFG", TrId::PUSH, cfg));
        self.push_initial_presence(user, conn);
        // A login that was under way when the drain began moves on like the others.
        self.transfer_if_draining(conn);
    }
}
