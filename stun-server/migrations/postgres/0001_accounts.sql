-- Schema version 1: accounts, contact and block lists, and the server secret.
-- The same tables as the SQLite store's version 1, with `id` standing in for SQLite's rowid
-- (what `users_since` polls). Names compare byte by byte (COLLATE "C"), as in SQLite, so the
-- order of `user list` and of the lists does not depend on the database's locale.
CREATE TABLE users (
    id         BIGSERIAL NOT NULL UNIQUE,
    name       TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    kdf        TEXT NOT NULL,
    salt       BYTEA NOT NULL,
    stored_key BYTEA NOT NULL,
    server_key BYTEA NOT NULL,
    created    BIGINT NOT NULL
);
CREATE TABLE contacts (
    owner   TEXT COLLATE "C" NOT NULL,
    contact TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (owner, contact)
);
CREATE TABLE blocks (
    owner   TEXT COLLATE "C" NOT NULL,
    blocked TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (owner, blocked)
);
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value BYTEA NOT NULL
);
