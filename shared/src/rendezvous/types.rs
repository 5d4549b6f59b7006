//! The vocabulary of the rendezvous protocol: user names, presence states, the password KDF,
//! stored credentials, and the changes the server asks its driver to persist.

use std::fmt;
use std::str::FromStr;

/// A user name: 1 to 32 characters from `a-z 0-9 . _ -`, case-insensitive (stored lower-case).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserName(String);

/// The longest user name.
pub const MAX_NAME_LEN: usize = 32;

impl UserName {
    /// Lower-cases and checks a name.
    pub fn parse(name: &str) -> Result<UserName, NameError> {
        let lower = name.to_ascii_lowercase();
        let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-_".contains(c);
        if lower.is_empty() || lower.len() > MAX_NAME_LEN || !lower.chars().all(ok_char) {
            return Err(NameError(name.chars().take(40).collect()));
        }
        Ok(UserName(lower))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl FromStr for UserName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        UserName::parse(s)
    }
}

/// A name that is not a valid [`UserName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid user name {0:?}: use 1 to 32 characters from a-z, 0-9, '.', '_', '-'")]
pub struct NameError(pub String);

/// The MSN presence states (docs/PROTOCOL.md section 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Presence {
    /// `NLN`
    Online,
    /// `BSY`
    Busy,
    /// `IDL`
    Idle,
    /// `BRB`
    BeRightBack,
    /// `AWY`
    Away,
    /// `LUN`
    OutToLunch,
    /// `PHN`
    OnThePhone,
    /// `HDN`: online, but shown to everyone as offline.
    AppearOffline,
    /// `FLN`
    Offline,
}

impl Presence {
    /// Every state, in the order of the protocol's table.
    pub const ALL: [Presence; 9] = [
        Presence::Online,
        Presence::Busy,
        Presence::Idle,
        Presence::BeRightBack,
        Presence::Away,
        Presence::OutToLunch,
        Presence::OnThePhone,
        Presence::AppearOffline,
        Presence::Offline,
    ];

    /// The three-letter wire code.
    pub fn code(self) -> &'static str {
        match self {
            Presence::Online => "NLN",
            Presence::Busy => "BSY",
            Presence::Idle => "IDL",
            Presence::BeRightBack => "BRB",
            Presence::Away => "AWY",
            Presence::OutToLunch => "LUN",
            Presence::OnThePhone => "PHN",
            Presence::AppearOffline => "HDN",
            Presence::Offline => "FLN",
        }
    }

    /// The state for a wire code.
    pub fn from_code(code: &str) -> Option<Presence> {
        Presence::ALL.into_iter().find(|p| p.code() == code)
    }

    /// A word for people and for the CLI: `online`, `busy`, `idle`, `brb`, `away`, `lunch`,
    /// `phone`, `invisible`, `offline`.
    pub fn word(self) -> &'static str {
        match self {
            Presence::Online => "online",
            Presence::Busy => "busy",
            Presence::Idle => "idle",
            Presence::BeRightBack => "brb",
            Presence::Away => "away",
            Presence::OutToLunch => "lunch",
            Presence::OnThePhone => "phone",
            Presence::AppearOffline => "invisible",
            Presence::Offline => "offline",
        }
    }

    /// The state for a [`word`](Self::word) or a wire code, case-insensitive.
    pub fn from_word(word: &str) -> Option<Presence> {
        let lower = word.to_ascii_lowercase();
        Presence::ALL
            .into_iter()
            .find(|p| p.word() == lower || p.code().eq_ignore_ascii_case(&lower))
            .or(match lower.as_str() {
                "be-right-back" => Some(Presence::BeRightBack),
                "out-to-lunch" => Some(Presence::OutToLunch),
                "on-the-phone" => Some(Presence::OnThePhone),
                "appear-offline" | "hidden" => Some(Presence::AppearOffline),
                _ => None,
            })
    }

    /// How available the state is, for showing one state for a user logged in more than once
    /// (docs/PROTOCOL.md section 6): higher is more available, in the order NLN > IDL > BRB >
    /// AWY > LUN > PHN > BSY > HDN > FLN. A user's shown state is its sessions' most available.
    pub fn availability(self) -> u8 {
        match self {
            Presence::Online => 8,
            Presence::Idle => 7,
            Presence::BeRightBack => 6,
            Presence::Away => 5,
            Presence::OutToLunch => 4,
            Presence::OnThePhone => 3,
            Presence::Busy => 2,
            Presence::AppearOffline => 1,
            Presence::Offline => 0,
        }
    }

    /// The most available of `states` (`FLN` for none).
    pub fn most_available(states: impl IntoIterator<Item = Presence>) -> Presence {
        states
            .into_iter()
            .max_by_key(|p| p.availability())
            .unwrap_or(Presence::Offline)
    }

    /// What contacts allowed to see this user are shown: `HDN` shows as `FLN`.
    pub fn as_seen(self) -> Presence {
        match self {
            Presence::AppearOffline => Presence::Offline,
            other => other,
        }
    }
}

/// Argon2id parameters: the key-stretching function of our SCRAM (docs/PROTOCOL.md section 4).
/// Written `argon2id:m=19456:t=2:p=1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Kdf {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Iterations.
    pub iterations: u32,
    /// Lanes.
    pub lanes: u32,
}

impl Default for Kdf {
    /// OWASP's recommendation for Argon2id: 19 MiB, 2 iterations, 1 lane.
    fn default() -> Self {
        Kdf {
            memory_kib: 19_456,
            iterations: 2,
            lanes: 1,
        }
    }
}

impl Kdf {
    /// Whether `self` costs at least as much as `min` in memory and in iterations.
    pub fn at_least(&self, min: &Kdf) -> bool {
        self.memory_kib >= min.memory_kib && self.iterations >= min.iterations
    }
}

impl fmt::Display for Kdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "argon2id:m={}:t={}:p={}",
            self.memory_kib, self.iterations, self.lanes
        )
    }
}

/// A KDF string that does not parse, or parameters Argon2 refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad KDF {0:?}: expected argon2id:m=KIB:t=N:p=N (m >= 8*p, t >= 1, 1 <= p <= 16)")]
pub struct KdfError(pub String);

impl FromStr for Kdf {
    type Err = KdfError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || KdfError(s.chars().take(60).collect());
        let mut parts = s.split(':');
        if parts.next() != Some("argon2id") {
            return Err(err());
        }
        let mut field = |key: &str| -> Result<u32, KdfError> {
            parts
                .next()
                .and_then(|p| p.strip_prefix(key))
                .and_then(|p| p.strip_prefix('='))
                .and_then(|v| v.parse().ok())
                .ok_or_else(err)
        };
        let kdf = Kdf {
            memory_kib: field("m")?,
            iterations: field("t")?,
            lanes: field("p")?,
        };
        let sane = (1..=16).contains(&kdf.lanes)
            && kdf.iterations >= 1
            && kdf.iterations <= 64
            && kdf.memory_kib >= 8 * kdf.lanes
            && kdf.memory_kib <= 4 * 1024 * 1024;
        if parts.next().is_some() || !sane {
            return Err(err());
        }
        Ok(kdf)
    }
}

/// What the server stores for a user instead of a password (docs/PROTOCOL.md section 4).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// How the password was stretched.
    pub kdf: Kdf,
    /// The salt (16 bytes when we make it; 8 to 64 accepted).
    pub salt: Vec<u8>,
    /// `SHA-256(HMAC(SaltedPassword, "Client Key"))`.
    pub stored_key: [u8; 32],
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: [u8; 32],
}

impl fmt::Debug for Credentials {
    /// Keys are not printed: logs must not carry verifiers.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("kdf", &self.kdf)
            .finish_non_exhaustive()
    }
}

/// One account as the store keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    /// The name.
    pub name: UserName,
    /// The verifier.
    pub credentials: Credentials,
}

/// A change the server core asks its driver to persist before it sends the answer that
/// follows it in the output queue. A write that fails is reported back to the core
/// (`RendezvousServer::handle_store_failed`), which then withdraws what depended on it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreOp {
    /// A new account.
    CreateUser(UserRecord),
    /// A changed password.
    SetCredentials {
        /// Whose.
        name: UserName,
        /// The new verifier.
        credentials: Credentials,
    },
    /// `owner` added `contact` to its contact list.
    AddContact {
        /// Whose list.
        owner: UserName,
        /// Who was added.
        contact: UserName,
    },
    /// `owner` removed `contact` from its contact list.
    RemoveContact {
        /// Whose list.
        owner: UserName,
        /// Who was removed.
        contact: UserName,
    },
    /// `owner` blocked `blocked`.
    Block {
        /// Who blocks.
        owner: UserName,
        /// Who is blocked.
        blocked: UserName,
    },
    /// `owner` unblocked `blocked`.
    Allow {
        /// Who unblocks.
        owner: UserName,
        /// Who is unblocked.
        blocked: UserName,
    },
    /// `owner` registered `key` as a device identity key (`DEV`, or the key of its first offer
    /// on a connection without `DEV`). The store makes it `owner`'s most recently registered
    /// key (moving it to the front if it was already known) and then keeps only the
    /// [`MAX_DEVICE_KEYS`] most recently registered keys of `owner`, forgetting the rest.
    AddDeviceKey {
        /// Whose device.
        owner: UserName,
        /// The device's long-term X25519 identity public key.
        key: [u8; 32],
    },
}

/// The most device identity keys kept per user; registering one more forgets the least
/// recently registered one (docs/PROTOCOL.md section 5, `DEV`).
pub const MAX_DEVICE_KEYS: usize = 16;

/// Everything persisted, as loaded at start-up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirectorySnapshot {
    /// Every account.
    pub users: Vec<UserRecord>,
    /// `(owner, contact)` pairs of contact lists.
    pub contacts: Vec<(UserName, UserName)>,
    /// `(owner, blocked)` pairs of block lists.
    pub blocks: Vec<(UserName, UserName)>,
    /// `(owner, key)` device identity keys, in the order they were registered (least
    /// recently registered first), as [`StoreOp::AddDeviceKey`] left them. Keys of unknown
    /// users are skipped, and only the [`MAX_DEVICE_KEYS`] most recent of a user are kept.
    pub device_keys: Vec<(UserName, [u8; 32])>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_case_insensitive_and_checked() {
        assert_eq!(UserName::parse("Alice").unwrap().as_str(), "alice");
        assert!(UserName::parse("a.b-c_9").is_ok());
        for bad in ["", "a b", "al,ice", "x=y", "é", &"a".repeat(33)] {
            assert!(UserName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn presence_codes_and_words_round_trip() {
        for p in Presence::ALL {
            assert_eq!(Presence::from_code(p.code()), Some(p));
            assert_eq!(Presence::from_word(p.word()), Some(p));
            assert_eq!(Presence::from_word(p.code()), Some(p));
        }
        assert_eq!(Presence::AppearOffline.as_seen(), Presence::Offline);
        assert_eq!(Presence::from_code("XYZ"), None);
    }

    #[test]
    fn availability_orders_the_states() {
        let order = [
            "NLN", "IDL", "BRB", "AWY", "LUN", "PHN", "BSY", "HDN", "FLN",
        ];
        let ranks: Vec<u8> = order
            .iter()
            .map(|c| Presence::from_code(c).unwrap().availability())
            .collect();
        assert!(ranks.windows(2).all(|w| w[0] > w[1]), "{ranks:?}");
        let both = [Presence::Busy, Presence::Away, Presence::AppearOffline];
        assert_eq!(Presence::most_available(both), Presence::Away);
        assert_eq!(Presence::most_available([]), Presence::Offline);
    }

    #[test]
    fn kdf_round_trips_and_refuses_nonsense() {
        let k = Kdf::default();
        assert_eq!(k.to_string(), "argon2id:m=19456:t=2:p=1");
        assert_eq!(k.to_string().parse::<Kdf>(), Ok(k));
        for bad in [
            "argon2i:m=19456:t=2:p=1",
            "argon2id:m=4:t=2:p=1",
            "argon2id:m=19456:t=0:p=1",
            "argon2id:m=19456:t=2",
            "argon2id:m=19456:t=2:p=1:x",
            "argon2id:t=2:m=19456:p=1",
        ] {
            assert!(bad.parse::<Kdf>().is_err(), "{bad}");
        }
        assert!(k.at_least(&Kdf::default()));
        let weak = Kdf {
            memory_kib: 8,
            iterations: 1,
            lanes: 1,
        };
        assert!(!weak.at_least(&k));
    }
}
