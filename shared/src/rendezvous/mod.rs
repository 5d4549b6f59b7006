//! The rendezvous ("notification") protocol: accounts, login, presence, contacts and
//! introductions, in the spirit of MSN Messenger's notification server. The protocol is specified
//! in `docs/PROTOCOL.md`; this module is its sans-IO core.
//!
//! - [`offer`]: the words of offers and introductions (`nat=`, `alloc=`, `cand=` kinds), for
//!   both sides.
//! - [`wire`]: framing of `CMD TrID params\r\n` lines and their payloads.
//! - [`scram`]: the SCRAM-SHA-256-ARGON2ID login exchange, both sides, bound to the TLS session
//!   (`tls-exporter` channel binding).
//! - [`server`]: the sans-IO server core.
//! - [`telemetry`]: the connectivity report (`RPT`) and the server's aggregates of it.
//! - [`types`]: user names, presence states, the password KDF, credentials, store operations
//!   (device identity keys included).

pub mod offer;
pub mod scram;
pub mod server;
pub mod telemetry;
pub mod types;
pub mod wire;

pub use scram::ChannelBinding;
pub use server::{
    ConnId, Output, RendezvousConfig, RendezvousCounters, RendezvousServer, SessionId, StoreId,
    Ticket,
};
pub use types::{
    Credentials, DirectorySnapshot, Kdf, KdfError, MAX_DEVICE_KEYS, NameError, Presence, StoreOp,
    UserName, UserRecord,
};
pub use wire::{Command, FrameError, Line, TrId};
