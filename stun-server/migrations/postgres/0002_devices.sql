-- Schema version 2: device identity keys. `seq` orders one owner's keys by registration
-- (higher is more recent): each registration takes the owner's highest `seq` plus one.
CREATE TABLE devices (
    owner TEXT COLLATE "C" NOT NULL,
    key   BYTEA NOT NULL CHECK (octet_length(key) = 32),
    seq   BIGINT NOT NULL,
    PRIMARY KEY (owner, key)
);
CREATE INDEX devices_by_seq ON devices (owner, seq);
