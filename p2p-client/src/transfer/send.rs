//! The sending side: one stream per file, then the end-of-session stream.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use quinn::{SendStream, VarInt};
use sha2::{Digest, Sha256};
use shared::transfer::{AckStatus, Message, ResumeKey, validate_name};
use tokio::sync::mpsc;
use tracing::{debug, info};

use super::event::{FileDone, Throttle, TransferEvent, hex};
use super::frame::{read_message, write_message};
use super::{CHANNEL_DEPTH, CHUNK, STREAM_ABORTED, TransferError};

/// Sends `files`, in order, to a peer running [`receive_files`](super::receive_files) on the
/// other end of `conn`, each under its base name.
///
/// Returns the files sent once the receiver has acknowledged the end of the session; stops at
/// the first error (a refusal, a hash mismatch, a lost connection), files already
/// acknowledged being in place at the receiver. Run it again with the same files to resume.
/// Two paths with the same base name cannot go in one session: the receiver refuses the
/// second as existing.
pub async fn send_files(
    conn: &quinn::Connection,
    files: &[PathBuf],
    progress: &mut (dyn FnMut(TransferEvent) + Send),
) -> Result<Vec<FileDone>, TransferError> {
    let mut done = Vec::with_capacity(files.len());
    for path in files {
        done.push(send_one(conn, path, progress).await?);
    }
    let (mut send, mut recv) = conn.open_bi().await?;
    let count = u32::try_from(done.len()).unwrap_or(u32::MAX);
    write_message(&mut send, &Message::End { files: count }).await?;
    send.finish()?;
    match read_message(&mut recv).await? {
        Message::EndAck { .. } => Ok(done),
        _ => Err(TransferError::Protocol("expected the end acknowledgement")),
    }
}

/// What the sender announces for `path`: its name and resume key, and the open file.
fn open_source(path: &Path) -> Result<(File, String, ResumeKey), TransferError> {
    let source = |source| TransferError::Source {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(source)?;
    let meta = file.metadata().map_err(source)?;
    if !meta.is_file() {
        return Err(TransferError::NotAFile {
            path: path.to_owned(),
        });
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| TransferError::SourceName {
            path: path.to_owned(),
            source: None,
        })?
        .to_owned();
    validate_name(&name).map_err(|e| TransferError::SourceName {
        path: path.to_owned(),
        source: Some(e),
    })?;
    let modified_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let key = ResumeKey {
        size: meta.len(),
        modified_ns,
    };
    Ok((file, name, key))
}

async fn send_one(
    conn: &quinn::Connection,
    path: &Path,
    progress: &mut (dyn FnMut(TransferEvent) + Send),
) -> Result<FileDone, TransferError> {
    let (file, name, key) = open_source(path)?;
    let (mut send, mut recv) = conn.open_bi().await?;
    write_message(
        &mut send,
        &Message::FileHeader {
            name: name.clone(),
            key,
        },
    )
    .await?;
    let offset = match read_message(&mut recv).await? {
        Message::Accept { offset } if offset <= key.size => offset,
        Message::Accept { .. } => {
            let _ = send.reset(VarInt::from_u32(STREAM_ABORTED));
            return Err(TransferError::Protocol(
                "resume offset beyond the file's end",
            ));
        }
        Message::Refuse { reason, detail } => {
            let _ = send.finish();
            return Err(TransferError::Refused {
                name,
                reason,
                detail,
            });
        }
        _ => return Err(TransferError::Protocol("expected accept or refuse")),
    };
    if offset > 0 {
        info!(file = %name, from = offset, "resuming");
        progress(TransferEvent::Resumed {
            file: name.clone(),
            from: offset,
        });
    }
    let sha256 = match send_data(&mut send, file, path, &name, key.size, offset, progress).await {
        Ok(sha256) => sha256,
        Err(e) => {
            let _ = send.reset(VarInt::from_u32(STREAM_ABORTED));
            return Err(e);
        }
    };
    write_message(&mut send, &Message::Trailer { sha256 }).await?;
    send.finish()?;
    match read_message(&mut recv).await? {
        Message::Ack {
            status: AckStatus::Ok,
        } => {}
        Message::Ack {
            status: AckStatus::HashMismatch,
        } => return Err(TransferError::HashMismatch { name }),
        _ => return Err(TransferError::Protocol("expected an ack")),
    }
    debug!(file = %name, bytes = key.size, "sent");
    progress(TransferEvent::Done {
        file: name.clone(),
        bytes: key.size,
        sha256_hex: hex(&sha256),
    });
    Ok(FileDone {
        name,
        path: path.to_owned(),
        bytes: key.size,
        resumed_from: offset,
        sha256,
    })
}

/// Streams bytes `offset..size` of `file` into `send` and returns the SHA-256 of bytes
/// `0..size`. A blocking task reads and hashes; this task only writes to quinn.
async fn send_data(
    send: &mut SendStream,
    file: File,
    path: &Path,
    name: &str,
    size: u64,
    offset: u64,
    progress: &mut (dyn FnMut(TransferEvent) + Send),
) -> Result<[u8; 32], TransferError> {
    let (tx, mut rx) = mpsc::channel::<Bytes>(CHANNEL_DEPTH);
    let reader = tokio::task::spawn_blocking(move || read_and_hash(file, size, offset, &tx));
    let mut throttle = Throttle::new();
    throttle.report(progress, name, offset, size, true);
    let mut sent = offset;
    let mut write_result = Ok(());
    while let Some(chunk) = rx.recv().await {
        sent += chunk.len() as u64;
        if let Err(e) = send.write_chunk(chunk).await {
            write_result = Err(e);
            break;
        }
        throttle.report(progress, name, sent, size, false);
    }
    // Dropping the receiver stops the reader if the write failed; join it either way.
    drop(rx);
    let read_result = reader.await?;
    write_result?;
    let sha256 = read_result.map_err(|source| {
        if source.kind() == io::ErrorKind::UnexpectedEof {
            TransferError::SourceChanged {
                path: path.to_owned(),
            }
        } else {
            TransferError::Source {
                path: path.to_owned(),
                source,
            }
        }
    })?;
    throttle.report(progress, name, size, size, true);
    Ok(sha256)
}

/// Hashes the first `offset` bytes, then reads, hashes and hands over the rest up to `size`
/// in [`CHUNK`]s. Stops early, without error, if the network side went away.
fn read_and_hash(
    mut file: File,
    size: u64,
    offset: u64,
    tx: &mpsc::Sender<Bytes>,
) -> io::Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    file.seek(SeekFrom::Start(0))?;
    let mut scratch = vec![0u8; CHUNK];
    let mut left = offset;
    while left > 0 {
        let n = usize::try_from(left).map_or(CHUNK, |l| l.min(CHUNK));
        file.read_exact(&mut scratch[..n])?;
        hasher.update(&scratch[..n]);
        left -= n as u64;
    }
    drop(scratch);
    let mut left = size - offset;
    while left > 0 {
        let n = usize::try_from(left).map_or(CHUNK, |l| l.min(CHUNK));
        let mut buf = vec![0u8; n];
        file.read_exact(&mut buf)?;
        hasher.update(&buf);
        left -= n as u64;
        if tx.blocking_send(Bytes::from(buf)).is_err() {
            break;
        }
    }
    Ok(hasher.finalize().into())
}
