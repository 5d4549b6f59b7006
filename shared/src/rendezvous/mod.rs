//! The rendezvous ("notification") protocol: accounts, login, presence, contacts and
//! introductions, in the spirit of MSN Messenger's notification server. The protocol is specified
//! in `docs/PROTOCOL.md`; this module is its sans-IO core.
//!
//! - [`wire`]: framing of `CMD TrID params\r\n` lines and their payloads.
//! - [`types`]: user names, presence states, the password KDF, credentials, store operations.

pub mod types;
pub mod wire;

pub use types::{
    Credentials, DirectorySnapshot, Kdf, KdfError, NameError, Presence, StoreOp, UserName,
    UserRecord,
};
pub use wire::{Command, FrameError, Line, TrId};
