//! The PostgreSQL backend: the same tables and rules as the SQLite one, for several server
//! nodes (and the operator's `stun-server user`) sharing one database.
//!
//! # Why a thread of its own
//! The store is called synchronously: the driver writes each change before it queues the next
//! line (an answer never promises what a crash could forget), and `stun-server user` is a plain
//! program. The blocking `postgres` client fits that, but it drives its connection with a
//! private tokio runtime and so panics when called on a thread that already runs one (the
//! driver's). Each [`PostgresStore`] therefore owns one thread that owns the connection; calls
//! hand it a closure and wait for the answer, exactly as long as a local SQLite write would
//! block, just over a socket. The thread reconnects when it finds the connection closed (the
//! database restarted), so one outage fails the writes made during it, not all later ones.
//!
//! # Migrations
//! `migrations/postgres/NNNN_*.sql` in this crate, one file per schema version, applied in one
//! transaction under an advisory lock (two nodes starting on an empty database at once do not
//! both create the tables); the version reached is the single row of `schema_version`.
//!
//! # Row ids
//! `users_since` polls `users.id`, a sequence. Sequence values are handed out before commit, so
//! two concurrent registrations could commit ids out of order and a poll between the two
//! commits would skip the smaller one for good. Inserting a user therefore locks the table
//! against other inserts (not against reads) until commit: ids become visible in order, as
//! SQLite's single writer guarantees for its row ids.

use std::sync::mpsc;
use std::thread::JoinHandle;

use postgres::{Client, GenericClient, IsolationLevel, NoTls, Transaction};
use rand::RngCore;
use shared::rendezvous::{
    Credentials, DirectorySnapshot, MAX_DEVICE_KEYS, StoreOp, UserName, UserRecord,
};

use super::{
    Pairs, PostgresUrl, SCHEMA_VERSION, StoreError, UserSummary, device_key, kdf, name, now_secs,
    user_record,
};

/// One SQL file per schema version, in order: entry `n` takes a database from version `n` to
/// `n + 1`.
const MIGRATIONS: [&str; 2] = [
    include_str!("../../../migrations/postgres/0001_accounts.sql"),
    include_str!("../../../migrations/postgres/0002_devices.sql"),
];
const _: () = assert!(MIGRATIONS.len() as i64 == SCHEMA_VERSION);

/// The first key of this server's advisory locks (the rendezvous port, for recognisability in
/// `pg_locks`); the second says what is locked.
const LOCK_SPACE: i32 = 1863;
/// The second advisory-lock key that serialises migrations.
const MIGRATION_LOCK: i32 = 0;

/// Work for the connection thread: it runs it with its state and sends the answer itself.
type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// An open PostgreSQL database (see the module docs).
#[derive(Debug)]
pub struct PostgresStore {
    url: PostgresUrl,
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    secret: [u8; 32],
}

/// The connection thread's state: the client, made again when found closed.
struct Connection {
    url: PostgresUrl,
    client: Option<Client>,
}

impl Connection {
    fn client(&mut self) -> Result<&mut Client, StoreError> {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            tracing::warn!(database = %self.url, "the PostgreSQL connection closed; reconnecting");
            self.client = None;
        }
        let client = match self.client.take() {
            Some(client) => client,
            None => self
                .url
                .config()
                .connect(NoTls)
                .map_err(|error| StoreError::Connect {
                    target: self.url.target(),
                    error,
                })?,
        };
        Ok(self.client.insert(client))
    }
}

impl PostgresStore {
    /// Connects, creates or migrates the tables, and reads (or makes) the server secret.
    pub fn connect(url: &PostgresUrl) -> Result<PostgresStore, StoreError> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let mut connection = Connection {
            url: url.clone(),
            client: None,
        };
        let thread = std::thread::Builder::new()
            .name("rendezvous-pg".into())
            .spawn(move || {
                for job in queue {
                    job(&mut connection);
                }
            })
            .map_err(StoreError::Thread)?;
        let mut store = PostgresStore {
            url: url.clone(),
            jobs: Some(jobs),
            thread: Some(thread),
            secret: [0; 32],
        };
        let database = url.to_string();
        store.call(move |c| migrate(c, &database))?;
        store.secret = store.call(load_or_make_secret)?;
        Ok(store)
    }

    /// Runs `job` on the connection thread and waits for its answer.
    fn call<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Client) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (answer, reply) = mpsc::sync_channel(1);
        let jobs = self.jobs.as_ref().ok_or(StoreError::WorkerGone)?;
        jobs.send(Box::new(move |connection: &mut Connection| {
            let _ = answer.send(connection.client().and_then(job));
        }))
        .map_err(|_| StoreError::WorkerGone)?;
        reply.recv().map_err(|_| StoreError::WorkerGone)?
    }

    /// The database this store was opened on.
    pub fn url(&self) -> &PostgresUrl {
        &self.url
    }

    /// The server secret (for the core's fake salts of unknown users).
    pub fn secret(&self) -> [u8; 32] {
        self.secret
    }

    /// Everything persisted, read in one snapshot, for the server core at start-up.
    pub fn load(&self) -> Result<DirectorySnapshot, StoreError> {
        self.call(|c| {
            let mut tx = read_snapshot(c)?;
            let users = users_since(&mut tx, 0)?
                .into_iter()
                .map(|(_, u)| u)
                .collect();
            let (contacts, blocks) = lists(&mut tx)?;
            let device_keys = device_keys(&mut tx)?;
            tx.commit()?;
            Ok(DirectorySnapshot {
                users,
                contacts,
                blocks,
                device_keys,
            })
        })
    }

    /// The contact and block lists, `(owner, other)` pairs, read in one snapshot.
    pub fn lists(&self) -> Result<(Pairs, Pairs), StoreError> {
        self.call(|c| {
            let mut tx = read_snapshot(c)?;
            let both = lists(&mut tx)?;
            tx.commit()?;
            Ok(both)
        })
    }

    /// Every device key, by owner, each owner's least recently registered first.
    pub fn device_keys(&self) -> Result<Vec<(UserName, [u8; 32])>, StoreError> {
        self.call(device_keys)
    }

    /// Persists one change the server core asked for (in a transaction of its own).
    pub fn apply(&mut self, op: &StoreOp) -> Result<(), StoreError> {
        self.apply_batch(std::slice::from_ref(op))
    }

    /// Persists many changes in one transaction (all or none).
    pub fn apply_batch(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        let ops = ops.to_vec();
        self.call(move |c| {
            let mut tx = c.transaction()?;
            for op in &ops {
                apply_op(&mut tx, op)?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// Adds an account. Fails with [`StoreError::NameTaken`] if the name exists.
    pub fn add_user(
        &mut self,
        name: &UserName,
        credentials: &Credentials,
    ) -> Result<(), StoreError> {
        let (name, credentials) = (name.clone(), credentials.clone());
        self.call(move |c| {
            let mut tx = c.transaction()?;
            insert_user(&mut tx, &name, &credentials)?;
            tx.commit()?;
            Ok(())
        })
    }

    /// Whether an account with this name exists.
    pub fn has_user(&self, name: &UserName) -> Result<bool, StoreError> {
        let name = name.clone();
        self.call(move |c| {
            Ok(
                c.query_opt("SELECT 1 FROM users WHERE name = $1", &[&name.as_str()])?
                    .is_some(),
            )
        })
    }

    /// Every account, sorted by name.
    pub fn list_users(&self) -> Result<Vec<UserSummary>, StoreError> {
        self.call(|c| {
            let mut out = Vec::new();
            for row in c.query("SELECT name, kdf, created FROM users ORDER BY name", &[])? {
                out.push(UserSummary {
                    name: name(row.try_get(0)?)?,
                    kdf: kdf(row.try_get(1)?)?,
                    created: row.try_get(2)?,
                });
            }
            Ok(out)
        })
    }

    /// Accounts whose `id` is greater than `rowid`, in id order, with their ids.
    pub fn users_since(&self, rowid: i64) -> Result<Vec<(i64, UserRecord)>, StoreError> {
        self.call(move |c| users_since(c, rowid))
    }

    /// The highest account id so far (0 for none).
    pub fn max_user_rowid(&self) -> Result<i64, StoreError> {
        self.call(|c| {
            Ok(c.query_one("SELECT COALESCE(MAX(id), 0) FROM users", &[])?
                .try_get(0)?)
        })
    }
}

impl Drop for PostgresStore {
    /// Closes the connection: the thread ends when its queue does.
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Brings the database to [`SCHEMA_VERSION`]: nothing to do when it is there (no write, so a
/// read-only database still opens), else every missing migration in one transaction.
fn migrate(client: &mut Client, database: &str) -> Result<(), StoreError> {
    let newer = |found: i64| StoreError::NewerSchema {
        database: database.to_owned(),
        found,
    };
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])?
        .try_get(0)?;
    if exists {
        let found = schema_version(client)?;
        if found > SCHEMA_VERSION {
            return Err(newer(found));
        }
        if found == SCHEMA_VERSION {
            return Ok(());
        }
    }
    let mut tx = client.transaction()?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, $2)",
        &[&LOCK_SPACE, &MIGRATION_LOCK],
    )?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")?;
    // Again under the lock: another node may have migrated while we waited for it.
    let found = schema_version(&mut tx)?;
    if found > SCHEMA_VERSION {
        return Err(newer(found));
    }
    let from = usize::try_from(found).unwrap_or(0);
    for (version, sql) in MIGRATIONS.iter().enumerate().skip(from) {
        tracing::info!(
            database,
            version = version + 1,
            "migrating the PostgreSQL schema"
        );
        tx.batch_execute(sql)?;
    }
    tx.execute("DELETE FROM schema_version", &[])?;
    tx.execute(
        "INSERT INTO schema_version (version) VALUES ($1)",
        &[&SCHEMA_VERSION],
    )?;
    tx.commit()?;
    Ok(())
}

/// The version in `schema_version` (0 when the table is empty).
fn schema_version(client: &mut impl GenericClient) -> Result<i64, StoreError> {
    Ok(
        match client.query_opt("SELECT MAX(version) FROM schema_version", &[])? {
            Some(row) => row.try_get::<_, Option<i64>>(0)?.unwrap_or(0),
            None => 0,
        },
    )
}

/// The 32-byte server secret, made from OS randomness the first time. Two processes starting
/// on a new database at once agree on one secret: the second insert is ignored and both read
/// the first. Read first, so a read-only database with a secret still opens.
fn load_or_make_secret(client: &mut Client) -> Result<[u8; 32], StoreError> {
    const READ: &str = "SELECT value FROM meta WHERE key = 'secret'";
    let stored: Vec<u8> = match client.query_opt(READ, &[])? {
        Some(row) => row.try_get(0)?,
        None => {
            let mut fresh = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut fresh);
            client.execute(
                "INSERT INTO meta (key, value) VALUES ('secret', $1) ON CONFLICT (key) DO NOTHING",
                &[&&fresh[..]],
            )?;
            client.query_one(READ, &[])?.try_get(0)?
        }
    };
    stored
        .try_into()
        .map_err(|_| StoreError::Corrupt("the server secret is not 32 bytes".into()))
}

fn users_since(
    client: &mut impl GenericClient,
    rowid: i64,
) -> Result<Vec<(i64, UserRecord)>, StoreError> {
    let rows = client.query(
        "SELECT id, name, kdf, salt, stored_key, server_key FROM users \
         WHERE id > $1 ORDER BY id",
        &[&rowid],
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let record = user_record(
            row.try_get(1)?,
            row.try_get(2)?,
            row.try_get(3)?,
            row.try_get(4)?,
            row.try_get(5)?,
        )?;
        out.push((row.try_get(0)?, record));
    }
    Ok(out)
}

/// A read-only transaction that sees one snapshot of the database for all its queries.
fn read_snapshot(c: &mut Client) -> Result<Transaction<'_>, StoreError> {
    Ok(c.build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()?)
}

/// Every contact and every block pair, in `(owner, other)` order.
fn lists(client: &mut impl GenericClient) -> Result<(Pairs, Pairs), StoreError> {
    Ok((
        pairs(
            client,
            "SELECT owner, contact FROM contacts ORDER BY owner, contact",
        )?,
        pairs(
            client,
            "SELECT owner, blocked FROM blocks ORDER BY owner, blocked",
        )?,
    ))
}

fn pairs(client: &mut impl GenericClient, sql: &str) -> Result<Pairs, StoreError> {
    let mut out = Vec::new();
    for row in client.query(sql, &[])? {
        out.push((name(row.try_get(0)?)?, name(row.try_get(1)?)?));
    }
    Ok(out)
}

fn device_keys(client: &mut impl GenericClient) -> Result<Vec<(UserName, [u8; 32])>, StoreError> {
    let mut out = Vec::new();
    for row in client.query("SELECT owner, key FROM devices ORDER BY owner, seq", &[])? {
        out.push(device_key(row.try_get(0)?, row.try_get(1)?)?);
    }
    Ok(out)
}

fn apply_op(tx: &mut Transaction<'_>, op: &StoreOp) -> Result<(), StoreError> {
    let mut pair = |sql: &str, a: &UserName, b: &UserName| -> Result<(), StoreError> {
        tx.execute(sql, &[&a.as_str(), &b.as_str()])?;
        Ok(())
    };
    match op {
        StoreOp::CreateUser(record) => insert_user(tx, &record.name, &record.credentials),
        StoreOp::SetCredentials { name, credentials } => {
            let changed = tx.execute(
                "UPDATE users SET kdf = $2, salt = $3, stored_key = $4, server_key = $5 \
                 WHERE name = $1",
                &[
                    &name.as_str(),
                    &credentials.kdf.to_string(),
                    &credentials.salt,
                    &&credentials.stored_key[..],
                    &&credentials.server_key[..],
                ],
            )?;
            if changed == 0 {
                return Err(StoreError::Corrupt(format!("no user {name} to update")));
            }
            Ok(())
        }
        StoreOp::AddContact { owner, contact } => pair(
            "INSERT INTO contacts (owner, contact) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            owner,
            contact,
        ),
        StoreOp::RemoveContact { owner, contact } => pair(
            "DELETE FROM contacts WHERE owner = $1 AND contact = $2",
            owner,
            contact,
        ),
        StoreOp::Block { owner, blocked } => pair(
            "INSERT INTO blocks (owner, blocked) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            owner,
            blocked,
        ),
        StoreOp::Allow { owner, blocked } => pair(
            "DELETE FROM blocks WHERE owner = $1 AND blocked = $2",
            owner,
            blocked,
        ),
        StoreOp::AddDeviceKey { owner, key } => add_device_key(tx, owner, key),
        other => Err(StoreError::Unsupported(format!("{other:?}"))),
    }
}

/// Makes `key` `owner`'s most recently registered device key and keeps only the
/// [`MAX_DEVICE_KEYS`] most recent, inside the caller's transaction. An advisory lock on the
/// owner serialises two nodes registering keys for the same user (both would otherwise read
/// the same highest `seq`).
fn add_device_key(
    tx: &mut Transaction<'_>,
    owner: &UserName,
    key: &[u8; 32],
) -> Result<(), StoreError> {
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&LOCK_SPACE, &owner.as_str()],
    )?;
    tx.execute(
        "INSERT INTO devices (owner, key, seq) \
         VALUES ($1, $2, (SELECT COALESCE(MAX(seq), 0) + 1 FROM devices WHERE owner = $1)) \
         ON CONFLICT (owner, key) DO UPDATE SET seq = excluded.seq",
        &[&owner.as_str(), &&key[..]],
    )?;
    let keep = i64::try_from(MAX_DEVICE_KEYS).unwrap_or(i64::MAX);
    tx.execute(
        "DELETE FROM devices WHERE owner = $1 AND seq NOT IN \
         (SELECT seq FROM devices WHERE owner = $1 ORDER BY seq DESC LIMIT $2)",
        &[&owner.as_str(), &keep],
    )?;
    Ok(())
}

/// Inserts an account; the table lock keeps ids committing in order (see the module docs).
fn insert_user(
    tx: &mut Transaction<'_>,
    name: &UserName,
    credentials: &Credentials,
) -> Result<(), StoreError> {
    tx.batch_execute("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE")?;
    let inserted = tx.execute(
        "INSERT INTO users (name, kdf, salt, stored_key, server_key, created) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING",
        &[
            &name.as_str(),
            &credentials.kdf.to_string(),
            &credentials.salt,
            &&credentials.stored_key[..],
            &&credentials.server_key[..],
            &now_secs(),
        ],
    )?;
    if inserted == 0 {
        return Err(StoreError::NameTaken(name.clone()));
    }
    Ok(())
}
