//! The store's contract, checked the same way against both backends: an SQLite file and a
//! real PostgreSQL server (started by the test, see `pg_support`). Whatever the server core
//! relies on must hold for both: accounts, lists, device keys and their limit, a secret stable
//! across reopening, users added by another connection showing up in `users_since`, a newer
//! schema refused, a refused write reported.

// Test code: a panic with the failing value is the report we want.
#![allow(clippy::unwrap_used)]

mod pg_support;

use std::path::PathBuf;
use std::sync::Arc;

use p2p_servers::rendezvous::{SCHEMA_VERSION, Store, StoreError, StoreLocation};
use shared::rendezvous::{Credentials, Kdf, MAX_DEVICE_KEYS, StoreOp, UserName, UserRecord};

/// One backend with a fresh, empty database.
enum Fixture {
    Sqlite(PathBuf),
    Postgres {
        cluster: Arc<pg_support::Cluster>,
        database: String,
    },
}

impl Fixture {
    fn location(&self) -> StoreLocation {
        match self {
            Fixture::Sqlite(dir) => StoreLocation::Sqlite(dir.join("r.db")),
            Fixture::Postgres { cluster, database } => {
                StoreLocation::Postgres(cluster.url(database).parse().unwrap())
            }
        }
    }

    fn open(&self) -> Store {
        Store::open_location(&self.location()).unwrap()
    }

    fn name(&self) -> &'static str {
        match self {
            Fixture::Sqlite(_) => "sqlite",
            Fixture::Postgres { .. } => "postgres",
        }
    }

    /// Makes writes to the server's tables fail from outside, like a full disk.
    fn break_writes(&self) {
        match self {
            Fixture::Sqlite(dir) => {
                let conn = rusqlite::Connection::open(dir.join("r.db")).unwrap();
                for table in ["users", "contacts", "blocks", "devices"] {
                    for op in ["INSERT", "UPDATE", "DELETE"] {
                        conn.execute_batch(&format!(
                            "CREATE TRIGGER fail_{table}_{op} BEFORE {op} ON {table} \
                             BEGIN SELECT RAISE(ABORT, 'test: the disk is full'); END;"
                        ))
                        .unwrap();
                    }
                }
            }
            Fixture::Postgres { cluster, database } => {
                pg_support::break_writes(cluster, database);
            }
        }
    }

    /// Marks the database as written by a newer server.
    fn set_newer_version(&self) {
        match self {
            Fixture::Sqlite(dir) => {
                let conn = rusqlite::Connection::open(dir.join("r.db")).unwrap();
                conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
                    .unwrap();
            }
            Fixture::Postgres { cluster, database } => {
                cluster
                    .admin(database)
                    .execute(
                        "UPDATE schema_version SET version = $1",
                        &[&(SCHEMA_VERSION + 1)],
                    )
                    .unwrap();
            }
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Fixture::Sqlite(dir) = self {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Runs `check` against SQLite, then against PostgreSQL (skipped loudly outside CI when it is
/// not installed).
fn on_both(test: &str, check: impl Fn(&Fixture)) {
    let dir = std::env::temp_dir().join(format!("store-contract-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    check(&Fixture::Sqlite(dir));
    if let Some(cluster) = pg_support::cluster(test) {
        let database = cluster.create_database(test);
        check(&Fixture::Postgres { cluster, database });
    }
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

fn key_op(owner: &str, byte: u8) -> StoreOp {
    StoreOp::AddDeviceKey {
        owner: user(owner),
        key: [byte; 32],
    }
}

#[test]
fn accounts_lists_and_the_secret_survive_reopening() {
    on_both("accounts", |f| {
        let mut store = f.open();
        let secret = store.secret();
        store.add_user(&user("alice"), &creds(1)).unwrap();
        store
            .apply(&StoreOp::CreateUser(UserRecord {
                name: user("bob"),
                credentials: creds(2),
            }))
            .unwrap();
        // Names sort by bytes, whatever the database's locale: "_" (0x5f) after "B".."Z".
        store.add_user(&user("a_b"), &creds(4)).unwrap();
        store.add_user(&user("a-b"), &creds(5)).unwrap();
        assert!(
            matches!(
                store.add_user(&user("alice"), &creds(3)),
                Err(StoreError::NameTaken(_))
            ),
            "{}",
            f.name()
        );
        assert!(store.has_user(&user("alice")).unwrap());
        assert!(!store.has_user(&user("carol")).unwrap());
        for op in [
            StoreOp::AddContact {
                owner: user("alice"),
                contact: user("bob"),
            },
            // Twice is once.
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
            StoreOp::Block {
                owner: user("bob"),
                blocked: user("a_b"),
            },
            StoreOp::Allow {
                owner: user("bob"),
                blocked: user("a_b"),
            },
            StoreOp::SetCredentials {
                name: user("bob"),
                credentials: creds(9),
            },
        ] {
            store.apply(&op).unwrap();
        }
        // Changing the verifier of nobody is an error, not a silent no-op.
        assert!(
            store
                .apply(&StoreOp::SetCredentials {
                    name: user("nobody"),
                    credentials: creds(1),
                })
                .is_err()
        );
        let rowid = store.max_user_rowid().unwrap();
        let since = store.users_since(rowid - 2).unwrap();
        let names: Vec<_> = since.iter().map(|(_, u)| u.name.clone()).collect();
        assert_eq!(names, [user("a_b"), user("a-b")], "{}", f.name());
        drop(store);

        let store = f.open();
        assert_eq!(store.secret(), secret, "{}", f.name());
        let snap = store.load().unwrap();
        assert_eq!(snap.users.len(), 4);
        let bob = snap.users.iter().find(|u| u.name == user("bob")).unwrap();
        assert_eq!(bob.credentials, creds(9));
        assert_eq!(snap.contacts, vec![(user("alice"), user("bob"))]);
        assert_eq!(snap.blocks, vec![(user("bob"), user("alice"))]);
        let names: Vec<_> = store
            .list_users()
            .unwrap()
            .into_iter()
            .map(|u| u.name)
            .collect();
        assert_eq!(
            names,
            [user("a-b"), user("a_b"), user("alice"), user("bob")],
            "{}",
            f.name()
        );
    });
}

#[test]
fn device_keys_keep_the_most_recent_within_the_limit() {
    on_both("devices", |f| {
        let mut store = f.open();
        store.add_user(&user("alice"), &creds(1)).unwrap();
        store.add_user(&user("bob"), &creds(2)).unwrap();
        for op in [
            key_op("alice", 1),
            key_op("bob", 9),
            key_op("alice", 2),
            key_op("alice", 3),
            // Registered again: becomes alice's most recent.
            key_op("alice", 1),
        ] {
            store.apply(&op).unwrap();
        }
        drop(store);
        let mut store = f.open();
        assert_eq!(
            store.load().unwrap().device_keys,
            vec![
                (user("alice"), [2; 32]),
                (user("alice"), [3; 32]),
                (user("alice"), [1; 32]),
                (user("bob"), [9; 32]),
            ],
            "{}",
            f.name()
        );
        // Beyond the limit, the least recently registered keys go (in a batch too).
        let ops: Vec<StoreOp> = (10..10 + MAX_DEVICE_KEYS as u8)
            .map(|b| key_op("alice", b))
            .collect();
        store.apply_batch(&ops).unwrap();
        store.apply(&key_op("alice", 3)).unwrap();
        let alice: Vec<[u8; 32]> = store
            .device_keys()
            .unwrap()
            .into_iter()
            .filter(|(o, _)| *o == user("alice"))
            .map(|(_, k)| k)
            .collect();
        assert_eq!(alice.len(), MAX_DEVICE_KEYS, "{}", f.name());
        assert_eq!(alice[0], [11; 32]);
        assert_eq!(alice[MAX_DEVICE_KEYS - 2], [25; 32]);
        assert_eq!(alice[MAX_DEVICE_KEYS - 1], [3; 32]);
        assert!(!alice.contains(&[1; 32]) && !alice.contains(&[2; 32]));
        assert_eq!(
            store.device_keys().unwrap().last(),
            Some(&(user("bob"), [9; 32]))
        );
        // The server core rebuilds the same directory from it (bob is untouched).
        let snap = store.load().unwrap();
        assert_eq!(snap.device_keys.last(), Some(&(user("bob"), [9; 32])));
    });
}

#[test]
fn a_user_added_by_another_connection_shows_up_in_users_since() {
    on_both("since", |f| {
        let mut server = f.open();
        server.add_user(&user("alice"), &creds(1)).unwrap();
        let seen = server.max_user_rowid().unwrap();
        // The operator's `stun-server user add`, on a connection of its own.
        let mut operator = f.open();
        assert_eq!(operator.secret(), server.secret(), "{}", f.name());
        operator.add_user(&user("bob"), &creds(2)).unwrap();
        let new = server.users_since(seen).unwrap();
        assert_eq!(new.len(), 1, "{}", f.name());
        assert_eq!(new[0].1.name, user("bob"));
        assert_eq!(new[0].1.credentials, creds(2));
        assert!(new[0].0 > seen);
        assert!(server.users_since(new[0].0).unwrap().is_empty());
    });
}

#[test]
fn a_batch_is_all_or_nothing() {
    on_both("batch", |f| {
        let mut store = f.open();
        store.add_user(&user("alice"), &creds(1)).unwrap();
        let err = store
            .apply_batch(&[
                StoreOp::AddContact {
                    owner: user("alice"),
                    contact: user("bob"),
                },
                // Taken: the whole batch fails, the contact above included.
                StoreOp::CreateUser(UserRecord {
                    name: user("alice"),
                    credentials: creds(2),
                }),
            ])
            .unwrap_err();
        assert!(
            matches!(err, StoreError::NameTaken(_)),
            "{}: {err}",
            f.name()
        );
        assert!(store.load().unwrap().contacts.is_empty(), "{}", f.name());
    });
}

#[test]
fn a_newer_schema_is_refused() {
    on_both("newer", |f| {
        drop(f.open());
        f.set_newer_version();
        let err = Store::open_location(&f.location()).unwrap_err();
        assert!(
            matches!(err, StoreError::NewerSchema { found, .. } if found == SCHEMA_VERSION + 1),
            "{}: {err}",
            f.name()
        );
        assert!(err.to_string().contains("newer"), "{err}");
    });
}

#[test]
fn a_refused_write_is_reported_and_changes_nothing() {
    on_both("refused", |f| {
        let mut store = f.open();
        store.add_user(&user("alice"), &creds(1)).unwrap();
        f.break_writes();
        for op in [
            StoreOp::CreateUser(UserRecord {
                name: user("bob"),
                credentials: creds(2),
            }),
            StoreOp::AddContact {
                owner: user("alice"),
                contact: user("bob"),
            },
            key_op("alice", 1),
        ] {
            let err = store.apply(&op).unwrap_err();
            assert!(
                err.to_string().contains("disk is full"),
                "{}: {err}",
                f.name()
            );
        }
        // Reads still work, and nothing changed.
        let snap = store.load().unwrap();
        assert_eq!(snap.users.len(), 1, "{}", f.name());
        assert!(snap.contacts.is_empty() && snap.device_keys.is_empty());
    });
}
