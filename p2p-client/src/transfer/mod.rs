//! `send` / `receive`: files over any QUIC connection between two peers.
//!
//! The wire protocol and its rules (name validation, when to resume) are the sans-IO
//! [`shared::transfer`]; this module moves the bytes and touches the disk. It works over any
//! [`quinn::Connection`], however it was established, and needs only tokio and quinn.
//!
//! # Guarantees
//! - **Complete or not at all.** A file is written to `.NAME.p2p-partial` in the output
//!   directory, beside a sidecar `.NAME.p2p-partial.key` holding the sender's resume key. Only
//!   when the SHA-256 of the whole file matches the sender's is it fsync'd and moved to `NAME`
//!   (a hard link that fails if `NAME` exists, then removing the partial name, so that a name
//!   that appeared meanwhile is never replaced) and the directory fsync'd. A mismatch
//!   deletes the partial copy and ends the session with [`TransferError::HashMismatch`].
//! - **Resume.** Running the same transfer again resumes an interrupted file: the receiver
//!   offers the length of its partial copy if the stored resume key (size and modification
//!   time) equals the sender's; the sender skips that prefix but still hashes it, and the
//!   receiver hashes its prefix from disk, so the check covers the whole file.
//! - **No overwrite.** If anything (file, directory, symlink) already has the name in the
//!   output directory, the file is refused with [`TransferError::Exists`], even when its
//!   content would be identical: the receiver cannot know that before receiving everything,
//!   and a silent overwrite is the one outcome users must never get.
//! - **Stays in the output directory.** Names pass [`shared::transfer::validate_name`] (a
//!   single plain component); files are opened with `O_NOFOLLOW` and created with
//!   `create_new`, so a symlink planted at the name or the partial name is not followed.
//!
//! A refusal or a hash mismatch ends the session on both sides with an error; files already
//! completed stay in place.
//!
//! # Speed
//! File reads and writes, and hashing, run on tokio's blocking pool in chunks of [`CHUNK`]
//! bytes, handed to and from quinn as [`bytes::Bytes`] without copying, so disk, hashing and
//! network overlap.

mod event;
mod frame;
mod receive;
mod recv_fs;
mod send;

use std::io;
use std::path::PathBuf;

use shared::transfer::{NameError, RefuseReason, WireError};
use thiserror::Error;

pub use event::{FileDone, TransferEvent};
pub use receive::receive_files;
pub use send::send_files;

/// Size of the chunks read from and written to disk.
pub const CHUNK: usize = 512 * 1024;

/// Chunks in flight between the disk task and the network task of one file.
const CHANNEL_DEPTH: usize = 8;

/// Application error code a side resets or stops a file stream with when it gives up on the
/// file (source read error, protocol violation).
const STREAM_ABORTED: u32 = 1;

/// Why a transfer failed.
#[derive(Debug, Error)]
pub enum TransferError {
    /// A source file could not be read.
    #[error("reading {}", path.display())]
    Source {
        /// The source file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A source path is not a regular file.
    #[error("{} is not a regular file", path.display())]
    NotAFile {
        /// The source path.
        path: PathBuf,
    },
    /// A source file's base name cannot be sent (not UTF-8, or refused by the name rules).
    #[error("{} cannot be sent under its name", path.display())]
    SourceName {
        /// The source path.
        path: PathBuf,
        /// Why, if the name is UTF-8 but refused.
        #[source]
        source: Option<NameError>,
    },
    /// A source file got shorter while it was being sent.
    #[error("{} changed while being sent", path.display())]
    SourceChanged {
        /// The source path.
        path: PathBuf,
    },
    /// Receiver: the sender's name is not a plain file name; the file was refused.
    #[error("refused file name {name:?}")]
    BadName {
        /// The name as received.
        name: String,
        /// The rule it breaks.
        #[source]
        source: NameError,
    },
    /// Receiver: the output directory's file system cannot hold the rest of the file; it
    /// was refused before anything was written.
    #[error(
        "not enough space for {name:?} in the output directory: {need} more bytes needed, \
         {available} available"
    )]
    NoSpace {
        /// The file's name.
        name: String,
        /// Bytes still to write.
        need: u64,
        /// Bytes available to us on the output directory's file system.
        available: u64,
    },
    /// Receiver: the name exists in the output directory; the file was refused.
    #[error("{name:?} already exists in the output directory; not overwriting")]
    Exists {
        /// The name.
        name: String,
    },
    /// Receiver: local file system error on a file in the output directory.
    #[error("{}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Sender: the receiver refused a file.
    #[error("the receiver refused {name:?}: {reason} ({detail})")]
    Refused {
        /// The file's name.
        name: String,
        /// The receiver's reason.
        reason: RefuseReason,
        /// The receiver's explanation.
        detail: String,
    },
    /// The SHA-256 of the received file differs from the sender's; the partial copy was
    /// deleted, so running the transfer again starts the file over.
    #[error("{name:?}: SHA-256 mismatch, partial copy deleted")]
    HashMismatch {
        /// The file's name.
        name: String,
    },
    /// The QUIC connection failed or was closed.
    #[error("connection")]
    Connection(#[from] quinn::ConnectionError),
    /// Writing to a stream failed.
    #[error("writing to the peer")]
    Write(#[from] quinn::WriteError),
    /// Reading from a stream failed.
    #[error("reading from the peer")]
    Read(#[from] quinn::ReadError),
    /// A stream ended or failed inside a frame.
    #[error("reading a frame from the peer")]
    ReadFrame(#[from] quinn::ReadExactError),
    /// A stream was used after it was closed.
    #[error("stream already closed")]
    ClosedStream(#[from] quinn::ClosedStream),
    /// The peer sent a frame that does not decode.
    #[error("malformed frame from the peer")]
    Wire(#[from] WireError),
    /// The peer sent a valid frame at the wrong moment, or the wrong amount of data.
    #[error("protocol violation by the peer: {0}")]
    Protocol(&'static str),
    /// A disk task panicked or was cancelled.
    #[error("disk task")]
    Task(#[from] tokio::task::JoinError),
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    /// The CLI spawns the drivers on a multi-threaded runtime: their futures must be `Send`.
    #[allow(dead_code)]
    fn futures_are_send(
        conn: &quinn::Connection,
        files: &[PathBuf],
        out_dir: &Path,
        progress: &mut (dyn FnMut(TransferEvent) + Send),
    ) {
        fn is_send<T: Send>(_: T) {}
        is_send(send_files(conn, files, progress));
        is_send(receive_files(conn, out_dir, progress));
    }
}
