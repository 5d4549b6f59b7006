//! The rendezvous server's durable state: accounts, contact and block lists, device identity
//! keys, and the server secret that makes the fake logins of unknown users stable across
//! restarts.
//!
//! Two backends keep it: an SQLite file ([`SqliteStore`], the embedded default for one node and
//! for the README's first command) and a PostgreSQL database ([`PostgresStore`], chosen with
//! `--store postgres://...`, for several nodes sharing one directory). Both hold the same
//! tables, refuse a database written by a newer server, store the secret once (two first starts
//! at once agree on it) and keep the same device-key rule ([`MAX_DEVICE_KEYS`], least recently
//! registered dropped first).
//!
//! [`Store`] is an enum over the two rather than a trait object or a type parameter: the set is
//! closed (both live in this crate), every caller (the driver, `stun-server user`, the
//! benchmark) wants "whichever one the options name" at run time, and an enum gives that
//! without generics spreading through the driver and the public handles, and without boxing.
//! The one cost, a `match` per call, is nothing next to a disk or network write.
//!
//! [`MAX_DEVICE_KEYS`]: shared::rendezvous::MAX_DEVICE_KEYS

mod postgres;
mod sqlite;
mod url;

use std::fmt;
use std::path::PathBuf;

use shared::rendezvous::{Credentials, DirectorySnapshot, Kdf, StoreOp, UserName, UserRecord};

pub use self::postgres::PostgresStore;
pub use self::sqlite::SqliteStore;
pub use self::url::{PostgresUrl, StoreUrlError};

/// The schema this code writes and reads, in both backends (SQLite's `PRAGMA user_version`,
/// PostgreSQL's `schema_version` table). Versions: 1 has `users`, `contacts`, `blocks` and
/// `meta`; 2 adds `devices`.
pub const SCHEMA_VERSION: i64 = 2;

/// `(owner, other)` pairs of a contact or block list.
pub type Pairs = Vec<(UserName, UserName)>;

/// Why the database could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The directory that should hold the database could not be created.
    #[error("cannot create directory {} for the database: {error}", dir.display())]
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// The system error (not a `source`: it is part of this message).
        error: std::io::Error,
    },
    /// The file could not be opened or is not a usable SQLite database.
    #[error("cannot open database {}: {error}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// What SQLite said (not a `source`: it is part of this message).
        error: rusqlite::Error,
    },
    /// The PostgreSQL server could not be reached or refused the login.
    #[error("cannot connect to PostgreSQL at {target}: {}", pg_message(error))]
    Connect {
        /// `host:port` (or the socket directory) and the database, never the password.
        target: String,
        /// What the client said (not a `source`: it is part of this message).
        error: ::postgres::Error,
    },
    /// The database was written by a newer server with a schema this one does not know.
    #[error(
        "database {database} has schema version {found}, newer than this server's \
         {SCHEMA_VERSION}: run a newer stun-server"
    )]
    NewerSchema {
        /// The database: the SQLite file or the PostgreSQL target.
        database: String,
        /// The version found in the database.
        found: i64,
    },
    /// `add_user` for a name that already has an account.
    #[error("user {0} already exists")]
    NameTaken(UserName),
    /// A row that does not decode (a bad name, KDF or key length).
    #[error("corrupt database: {0}")]
    Corrupt(String),
    /// A store operation this driver does not know how to persist.
    #[error("unsupported store operation: {0}")]
    Unsupported(String),
    /// Any other SQLite failure.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Any other PostgreSQL failure (a refused write, a lost connection).
    #[error("database error: {}", pg_message(.0))]
    Postgres(::postgres::Error),
    /// The thread that talks to PostgreSQL could not be started.
    #[error("cannot start the PostgreSQL connection thread: {0}")]
    Thread(std::io::Error),
    /// The thread that talks to PostgreSQL has stopped (it panicked).
    #[error("the PostgreSQL connection thread has stopped")]
    WorkerGone,
}

impl From<::postgres::Error> for StoreError {
    fn from(error: ::postgres::Error) -> Self {
        StoreError::Postgres(error)
    }
}

/// The client's message with its causes on one line: its own `Display` is only the kind
/// ("db error", "error connecting to server"), the useful part is in the sources.
fn pg_message(error: &::postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!("{}: {}", db.severity(), db.message());
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// One account as `stun-server user list` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserSummary {
    /// The name.
    pub name: UserName,
    /// The KDF the verifier was made with.
    pub kdf: Kdf,
    /// When the account was created, in seconds since the Unix epoch.
    pub created: i64,
}

/// Which database holds the state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreLocation {
    /// An SQLite file, created with its parent directories if missing.
    Sqlite(PathBuf),
    /// A PostgreSQL database, whose tables are created (or migrated) on first connection.
    Postgres(PostgresUrl),
}

impl fmt::Display for StoreLocation {
    /// The file, or the URL without its password: fit for logs and messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreLocation::Sqlite(path) => write!(f, "{}", path.display()),
            StoreLocation::Postgres(url) => write!(f, "{url}"),
        }
    }
}

/// An open database, of either backend (see the module docs for why an enum).
#[derive(Debug)]
pub enum Store {
    /// An SQLite file.
    Sqlite(SqliteStore),
    /// A PostgreSQL database.
    Postgres(PostgresStore),
}

/// Calls the same method on whichever backend `self` is.
macro_rules! each {
    ($self:expr, $store:ident => $call:expr) => {
        match $self {
            Store::Sqlite($store) => $call,
            Store::Postgres($store) => $call,
        }
    };
}

impl Store {
    /// Opens the SQLite database at `path`, creating it (and its parent directories) if needed.
    pub fn open(path: &std::path::Path) -> Result<Store, StoreError> {
        SqliteStore::open(path).map(Store::Sqlite)
    }

    /// Opens the database `location` names.
    pub fn open_location(location: &StoreLocation) -> Result<Store, StoreError> {
        match location {
            StoreLocation::Sqlite(path) => Store::open(path),
            StoreLocation::Postgres(url) => PostgresStore::connect(url).map(Store::Postgres),
        }
    }

    /// Where the data lives, for messages: the file, or the URL without its password.
    pub fn describe(&self) -> String {
        match self {
            Store::Sqlite(s) => s.path().display().to_string(),
            Store::Postgres(s) => s.url().to_string(),
        }
    }

    /// The server secret (for the core's fake salts of unknown users).
    pub fn secret(&self) -> [u8; 32] {
        each!(self, s => s.secret())
    }

    /// Everything persisted, for the server core at start-up.
    pub fn load(&self) -> Result<DirectorySnapshot, StoreError> {
        each!(self, s => s.load())
    }

    /// The contact and block lists, `(owner, other)` pairs, as stored now (a cluster node
    /// repairing its copy after list changes of other nodes may have missed it).
    pub fn lists(&self) -> Result<(Pairs, Pairs), StoreError> {
        each!(self, s => s.lists())
    }

    /// Every device key, by owner, each owner's least recently registered first.
    pub fn device_keys(&self) -> Result<Vec<(UserName, [u8; 32])>, StoreError> {
        each!(self, s => s.device_keys())
    }

    /// Persists one change the server core asked for.
    pub fn apply(&mut self, op: &StoreOp) -> Result<(), StoreError> {
        each!(self, s => s.apply(op))
    }

    /// Persists many changes in one transaction (all or none): for bulk loads such as
    /// benchmarks and imports, far faster than one [`apply`](Self::apply) per change.
    pub fn apply_batch(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        each!(self, s => s.apply_batch(ops))
    }

    /// Adds an account (the operator's `user add`, or a registration). Fails with
    /// [`StoreError::NameTaken`] if the name exists.
    pub fn add_user(
        &mut self,
        name: &UserName,
        credentials: &Credentials,
    ) -> Result<(), StoreError> {
        each!(self, s => s.add_user(name, credentials))
    }

    /// Whether an account with this name exists.
    pub fn has_user(&self, name: &UserName) -> Result<bool, StoreError> {
        each!(self, s => s.has_user(name))
    }

    /// Every account, sorted by name (byte order).
    pub fn list_users(&self) -> Result<Vec<UserSummary>, StoreError> {
        each!(self, s => s.list_users())
    }

    /// Accounts whose row id is greater than `rowid`, in row-id order, with their row ids: the
    /// server polls this to pick up users the operator added while it runs.
    pub fn users_since(&self, rowid: i64) -> Result<Vec<(i64, UserRecord)>, StoreError> {
        each!(self, s => s.users_since(rowid))
    }

    /// The highest account row id so far (0 for none).
    pub fn max_user_rowid(&self) -> Result<i64, StoreError> {
        each!(self, s => s.max_user_rowid())
    }
}

/// Decodes an account row (both backends store the same columns).
fn user_record(
    n: &str,
    k: &str,
    salt: Vec<u8>,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
) -> Result<UserRecord, StoreError> {
    let key = |v: Vec<u8>, what: &str| -> Result<[u8; 32], StoreError> {
        v.try_into()
            .map_err(|_| StoreError::Corrupt(format!("{what} of user {n:?} is not 32 bytes")))
    };
    let credentials = Credentials {
        kdf: kdf(k)?,
        salt,
        stored_key: key(stored_key, "stored_key")?,
        server_key: key(server_key, "server_key")?,
    };
    Ok(UserRecord {
        name: name(n)?,
        credentials,
    })
}

/// Decodes a device-key row.
fn device_key(owner: &str, key: Vec<u8>) -> Result<(UserName, [u8; 32]), StoreError> {
    let key: [u8; 32] = key.try_into().map_err(|_| {
        StoreError::Corrupt(format!("a device key of user {owner:?} is not 32 bytes"))
    })?;
    Ok((name(owner)?, key))
}

/// Seconds since the Unix epoch, for `users.created`.
fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn name(text: &str) -> Result<UserName, StoreError> {
    UserName::parse(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn kdf(text: &str) -> Result<Kdf, StoreError> {
    text.parse()
        .map_err(|e: shared::rendezvous::KdfError| StoreError::Corrupt(e.to_string()))
}
