//! The rendezvous ("notification") protocol: accounts, login, presence, contacts and
//! introductions, in the spirit of MSN Messenger's notification server. The protocol is specified
//! in `docs/PROTOCOL.md`; this module is its sans-IO core.
//!
//! - [`wire`]: framing of `CMD TrID params\r\n` lines and their payloads.
//! - [`scram`]: the SCRAM-SHA-256-ARGON2ID login exchange, both sides.
//! - [`server`]: the sans-IO server core.
//! - [`types`]: user names, presence states, the password KDF, credentials, store operations.

pub mod scram;
pub mod server;
pub mod types;
pub mod wire;

pub use server::{ConnId, Output, RendezvousConfig, RendezvousServer, SessionId, Ticket};
pub use types::{
    Credentials, DirectorySnapshot, Kdf, KdfError, NameError, Presence, StoreOp, UserName,
    UserRecord,
};
pub use wire::{Command, FrameError, Line, TrId};
