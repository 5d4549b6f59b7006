//! The SQLite backend: one file, opened in WAL mode so the operator's `stun-server user add`
//! can write while the server runs (the server picks new users up with
//! [`SqliteStore::users_since`]). The schema version lives in `PRAGMA user_version`; a database
//! written by a newer server is refused rather than misread, and an older one is migrated in
//! place when opened.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::RngCore;
use rusqlite::{Connection, OptionalExtension, params};
use shared::rendezvous::{
    Credentials, DirectorySnapshot, MAX_DEVICE_KEYS, StoreOp, UserName, UserRecord,
};

use super::{
    Pairs, SCHEMA_VERSION, StoreError, UserSummary, device_key, kdf, name, now_secs, user_record,
};

/// How long a write waits for another process (the operator's CLI) holding the lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Version 1: accounts, lists and the secret.
const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS users (
    name       TEXT PRIMARY KEY NOT NULL,
    kdf        TEXT NOT NULL,
    salt       BLOB NOT NULL,
    stored_key BLOB NOT NULL,
    server_key BLOB NOT NULL,
    created    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS contacts (
    owner   TEXT NOT NULL,
    contact TEXT NOT NULL,
    PRIMARY KEY (owner, contact)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blocks (
    owner   TEXT NOT NULL,
    blocked TEXT NOT NULL,
    PRIMARY KEY (owner, blocked)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value BLOB NOT NULL
) WITHOUT ROWID;
";

/// Version 2: device identity keys. `seq` orders one owner's keys by registration (higher is
/// more recent): each registration takes the owner's highest `seq` plus one, no clock needed.
const SCHEMA_V2: &str = "
CREATE TABLE IF NOT EXISTS devices (
    owner TEXT NOT NULL,
    key   BLOB NOT NULL CHECK (length(key) = 32),
    seq   INTEGER NOT NULL,
    PRIMARY KEY (owner, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS devices_by_seq ON devices (owner, seq);
";

/// An open SQLite database.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    secret: [u8; 32],
}

impl SqliteStore {
    /// Opens the database at `path`, creating it (and its parent directories) if needed.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|error| StoreError::CreateDir {
                dir: dir.to_owned(),
                error,
            })?;
        }
        let open_err = |error| StoreError::Open {
            path: path.to_owned(),
            error,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        // The first statement that reads the file: a non-database file fails here.
        let found: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(open_err)?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                database: path.display().to_string(),
                found,
            });
        }
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        let mut store = SqliteStore {
            conn,
            path: path.to_owned(),
            secret: [0; 32],
        };
        store.migrate(found)?;
        store.secret = store.load_or_make_secret()?;
        Ok(store)
    }

    /// Creates the tables of a new database (version 0 is SQLite's "never set"), or brings an
    /// older one up to [`SCHEMA_VERSION`], in one transaction.
    fn migrate(&mut self, found: i64) -> Result<(), StoreError> {
        if found == SCHEMA_VERSION {
            return Ok(());
        }
        let tx = self.conn.transaction()?;
        if found < 1 {
            tx.execute_batch(SCHEMA_V1)?;
        }
        if found < 2 {
            tx.execute_batch(SCHEMA_V2)?;
        }
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        tx.commit()?;
        Ok(())
    }

    /// The 32-byte server secret, made from OS randomness the first time. Two processes
    /// opening a new database at once agree on one secret: the second insert is ignored.
    fn load_or_make_secret(&mut self) -> Result<[u8; 32], StoreError> {
        let mut fresh = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut fresh);
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('secret', ?1)",
            params![&fresh[..]],
        )?;
        let stored: Vec<u8> =
            tx.query_row("SELECT value FROM meta WHERE key = 'secret'", [], |row| {
                row.get(0)
            })?;
        tx.commit()?;
        stored
            .try_into()
            .map_err(|_| StoreError::Corrupt("the server secret is not 32 bytes".into()))
    }

    /// The file this store was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The server secret (for the core's fake salts of unknown users).
    pub fn secret(&self) -> [u8; 32] {
        self.secret
    }

    /// Everything persisted, for the server core at start-up.
    pub fn load(&self) -> Result<DirectorySnapshot, StoreError> {
        let users = self.users_since(0)?.into_iter().map(|(_, u)| u).collect();
        let (contacts, blocks) = self.lists()?;
        Ok(DirectorySnapshot {
            users,
            contacts,
            blocks,
            device_keys: self.device_keys()?,
        })
    }

    /// The contact and block lists, `(owner, other)` pairs.
    pub fn lists(&self) -> Result<(Pairs, Pairs), StoreError> {
        let pairs = |sql: &str| -> Result<Pairs, StoreError> {
            let mut stmt = self.conn.prepare(sql)?;
            let rows = stmt.query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (a, b) = row?;
                out.push((name(&a)?, name(&b)?));
            }
            Ok(out)
        };
        Ok((
            pairs("SELECT owner, contact FROM contacts ORDER BY owner, contact")?,
            pairs("SELECT owner, blocked FROM blocks ORDER BY owner, blocked")?,
        ))
    }

    /// Every device key, by owner, each owner's least recently registered first.
    pub fn device_keys(&self) -> Result<Vec<(UserName, [u8; 32])>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT owner, key FROM devices ORDER BY owner, seq")?;
        let rows = stmt.query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, Vec<u8>>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (owner, key) = row?;
            out.push(device_key(&owner, key)?);
        }
        Ok(out)
    }

    /// Persists one change the server core asked for.
    pub fn apply(&mut self, op: &StoreOp) -> Result<(), StoreError> {
        apply_op(&self.conn, op)
    }

    /// Persists many changes in one transaction (all or none): for bulk loads such as
    /// benchmarks and imports, far faster than one [`apply`](Self::apply) per change.
    pub fn apply_batch(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        for op in ops {
            apply_op(&tx, op)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Adds an account (the operator's `user add`, or a registration). Fails with
    /// [`StoreError::NameTaken`] if the name exists.
    pub fn add_user(
        &mut self,
        name: &UserName,
        credentials: &Credentials,
    ) -> Result<(), StoreError> {
        insert_user(&self.conn, name, credentials)
    }

    /// Whether an account with this name exists.
    pub fn has_user(&self, name: &UserName) -> Result<bool, StoreError> {
        let found: Option<i64> = self
            .conn
            .query_row(
                "SELECT 1 FROM users WHERE name = ?1",
                [name.as_str()],
                |row| row.get(0),
            )
            .optional()?;
        Ok(found.is_some())
    }

    /// Every account, sorted by name.
    pub fn list_users(&self) -> Result<Vec<UserSummary>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, kdf, created FROM users ORDER BY name")?;
        let rows = stmt.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (n, k, created) = row?;
            out.push(UserSummary {
                name: name(&n)?,
                kdf: kdf(&k)?,
                created,
            });
        }
        Ok(out)
    }

    /// Accounts whose row id is greater than `rowid`, in row-id order, with their row ids: the
    /// server polls this to pick up users the operator added while it runs.
    pub fn users_since(&self, rowid: i64) -> Result<Vec<(i64, UserRecord)>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT rowid, name, kdf, salt, stored_key, server_key FROM users \
             WHERE rowid > ?1 ORDER BY rowid",
        )?;
        let rows = stmt.query_map([rowid], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, Vec<u8>>(3)?,
                row.get::<_, Vec<u8>>(4)?,
                row.get::<_, Vec<u8>>(5)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, n, k, salt, stored_key, server_key) = row?;
            out.push((id, user_record(&n, &k, salt, stored_key, server_key)?));
        }
        Ok(out)
    }

    /// The highest account row id so far (0 for none).
    pub fn max_user_rowid(&self) -> Result<i64, StoreError> {
        let max: Option<i64> = self
            .conn
            .query_row("SELECT MAX(rowid) FROM users", [], |row| row.get(0))
            .optional()?
            .flatten();
        Ok(max.unwrap_or(0))
    }
}

fn apply_op(conn: &Connection, op: &StoreOp) -> Result<(), StoreError> {
    let pair = |sql: &str, a: &UserName, b: &UserName| -> Result<(), StoreError> {
        conn.prepare_cached(sql)?
            .execute(params![a.as_str(), b.as_str()])?;
        Ok(())
    };
    match op {
        StoreOp::CreateUser(record) => insert_user(conn, &record.name, &record.credentials),
        StoreOp::SetCredentials { name, credentials } => {
            let changed = conn
                .prepare_cached(
                    "UPDATE users SET kdf = ?2, salt = ?3, stored_key = ?4, server_key = ?5 \
                     WHERE name = ?1",
                )?
                .execute(params![
                    name.as_str(),
                    credentials.kdf.to_string(),
                    credentials.salt,
                    &credentials.stored_key[..],
                    &credentials.server_key[..],
                ])?;
            if changed == 0 {
                return Err(StoreError::Corrupt(format!("no user {name} to update")));
            }
            Ok(())
        }
        StoreOp::AddContact { owner, contact } => pair(
            "INSERT OR IGNORE INTO contacts (owner, contact) VALUES (?1, ?2)",
            owner,
            contact,
        ),
        StoreOp::RemoveContact { owner, contact } => pair(
            "DELETE FROM contacts WHERE owner = ?1 AND contact = ?2",
            owner,
            contact,
        ),
        StoreOp::Block { owner, blocked } => pair(
            "INSERT OR IGNORE INTO blocks (owner, blocked) VALUES (?1, ?2)",
            owner,
            blocked,
        ),
        StoreOp::Allow { owner, blocked } => pair(
            "DELETE FROM blocks WHERE owner = ?1 AND blocked = ?2",
            owner,
            blocked,
        ),
        StoreOp::AddDeviceKey { owner, key } => add_device_key(conn, owner, key),
        other => Err(StoreError::Unsupported(format!("{other:?}"))),
    }
}

/// Makes `key` `owner`'s most recently registered device key and keeps only the
/// [`MAX_DEVICE_KEYS`] most recent, atomically (a savepoint: inside `apply_batch`'s
/// transaction or on its own).
fn add_device_key(conn: &Connection, owner: &UserName, key: &[u8; 32]) -> Result<(), StoreError> {
    let run = || -> Result<(), StoreError> {
        conn.prepare_cached(
            "INSERT INTO devices (owner, key, seq) \
             VALUES (?1, ?2, (SELECT COALESCE(MAX(seq), 0) + 1 FROM devices WHERE owner = ?1)) \
             ON CONFLICT (owner, key) DO UPDATE SET seq = excluded.seq",
        )?
        .execute(params![owner.as_str(), &key[..]])?;
        let keep = i64::try_from(MAX_DEVICE_KEYS).unwrap_or(i64::MAX);
        conn.prepare_cached(
            "DELETE FROM devices WHERE owner = ?1 AND seq NOT IN \
             (SELECT seq FROM devices WHERE owner = ?1 ORDER BY seq DESC LIMIT ?2)",
        )?
        .execute(params![owner.as_str(), keep])?;
        Ok(())
    };
    conn.execute_batch("SAVEPOINT add_device_key")?;
    match run() {
        Ok(()) => {
            conn.execute_batch("RELEASE add_device_key")?;
            Ok(())
        }
        Err(e) => {
            // Undo the half-done change; the original error is the one worth reporting.
            let _ = conn.execute_batch("ROLLBACK TO add_device_key; RELEASE add_device_key");
            Err(e)
        }
    }
}

fn insert_user(
    conn: &Connection,
    name: &UserName,
    credentials: &Credentials,
) -> Result<(), StoreError> {
    let created = now_secs();
    let inserted = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO users (name, kdf, salt, stored_key, server_key, created) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            name.as_str(),
            credentials.kdf.to_string(),
            credentials.salt,
            &credentials.stored_key[..],
            &credentials.server_key[..],
            created,
        ])?;
    if inserted == 0 {
        return Err(StoreError::NameTaken(name.clone()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use shared::rendezvous::Kdf;

    fn temp_db(tag: &str) -> PathBuf {
        std::env::temp_dir()
            .join(format!("rdv-store-{tag}-{}", std::process::id()))
            .join("sub")
            .join("r.db")
    }

    fn creds(n: u8) -> Credentials {
        Credentials {
            kdf: Kdf {
                memory_kib: 8,
                iterations: 1,
                lanes: 1,
            },
            salt: vec![n; 16],
            stored_key: [n; 32],
            server_key: [n.wrapping_add(1); 32],
        }
    }

    fn user(s: &str) -> UserName {
        UserName::parse(s).unwrap()
    }

    #[test]
    fn round_trips_users_lists_and_the_secret() {
        let path = temp_db("rt");
        let _ = std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap());
        let mut store = SqliteStore::open(&path).unwrap();
        let secret = store.secret();
        store.add_user(&user("alice"), &creds(1)).unwrap();
        store
            .apply(&StoreOp::CreateUser(UserRecord {
                name: user("bob"),
                credentials: creds(2),
            }))
            .unwrap();
        assert!(matches!(
            store.add_user(&user("alice"), &creds(3)),
            Err(StoreError::NameTaken(_))
        ));
        for op in [
            StoreOp::AddContact {
                owner: user("alice"),
                contact: user("bob"),
            },
            StoreOp::AddContact {
                owner: user("bob"),
                contact: user("alice"),
            },
            StoreOp::RemoveContact {
                owner: user("bob"),
                contact: user("alice"),
            },
            StoreOp::Block {
                owner: user("bob"),
                blocked: user("alice"),
            },
            StoreOp::SetCredentials {
                name: user("bob"),
                credentials: creds(9),
            },
        ] {
            store.apply(&op).unwrap();
        }
        let since = store.users_since(1).unwrap();
        assert_eq!(since.len(), 1);
        assert_eq!(since[0].1.name, user("bob"));
        assert_eq!(store.max_user_rowid().unwrap(), 2);
        drop(store);

        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.secret(), secret);
        let mode: String = store
            .conn
            .pragma_query_value(None, "journal_mode", |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let snap = store.load().unwrap();
        assert_eq!(snap.users.len(), 2);
        assert_eq!(snap.users[1].credentials, creds(9));
        assert_eq!(snap.contacts, vec![(user("alice"), user("bob"))]);
        assert_eq!(snap.blocks, vec![(user("bob"), user("alice"))]);
        let names: Vec<_> = store
            .list_users()
            .unwrap()
            .into_iter()
            .map(|u| u.name)
            .collect();
        assert_eq!(names, vec![user("alice"), user("bob")]);
        drop(store);
        std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap()).unwrap();
    }

    #[test]
    fn a_file_that_is_not_a_database_is_an_open_error() {
        let dir = std::env::temp_dir().join(format!("rdv-store-junk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("junk.db");
        std::fs::write(&path, vec![b'x'; 4096]).unwrap();
        let err = SqliteStore::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::Open { .. }), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn key_op(owner: &str, byte: u8) -> StoreOp {
        StoreOp::AddDeviceKey {
            owner: user(owner),
            key: [byte; 32],
        }
    }

    #[test]
    fn a_version_1_database_migrates_and_keeps_its_data() {
        let path = temp_db("v1");
        let _ = std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        // A database exactly as the version 1 server left it.
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(SCHEMA_V1).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('secret', ?1)",
            params![&[7u8; 32][..]],
        )
        .unwrap();
        insert_user(&conn, &user("alice"), &creds(1)).unwrap();
        insert_user(&conn, &user("bob"), &creds(2)).unwrap();
        conn.execute(
            "INSERT INTO contacts (owner, contact) VALUES ('alice', 'bob')",
            [],
        )
        .unwrap();
        drop(conn);

        let mut store = SqliteStore::open(&path).unwrap();
        let version: i64 = store
            .conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        assert_eq!(store.secret(), [7; 32]);
        let snap = store.load().unwrap();
        assert_eq!(snap.users.len(), 2);
        assert_eq!(snap.contacts, vec![(user("alice"), user("bob"))]);
        assert!(snap.device_keys.is_empty());
        store.apply(&key_op("alice", 5)).unwrap();
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(
            store.load().unwrap().device_keys,
            vec![(user("alice"), [5; 32])]
        );
        drop(store);
        std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap()).unwrap();
    }
}
