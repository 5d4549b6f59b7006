//! The receiving side: accept file streams until the sender ends the session.

use std::path::Path;

use bytes::Bytes;
use quinn::{RecvStream, SendStream, VarInt};
use shared::transfer::{AckStatus, Message, RefuseReason, ResumeKey, validate_name};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::event::{FileDone, Throttle, TransferEvent, hex};
use super::frame::{finish_and_flush, read_message, write_message};
use super::recv_fs::{self, Paths, PrepareError};
use super::{CHANNEL_DEPTH, CHUNK, STREAM_ABORTED, TransferError};

/// Receives files from a peer running [`send_files`](super::send_files) on the other end of
/// `conn` into `out_dir`, which must exist.
///
/// Returns the files received once the sender ends the session. Ends with an error on the
/// first file refused (bad name, existing name, local I/O error) or failing its hash check,
/// and when the connection is lost; an interrupted file's partial copy stays for the next
/// run to resume.
pub async fn receive_files(
    conn: &quinn::Connection,
    out_dir: &Path,
    progress: &mut (dyn FnMut(TransferEvent) + Send),
) -> Result<Vec<FileDone>, TransferError> {
    let mut done = Vec::new();
    loop {
        let (mut send, mut recv) = conn.accept_bi().await?;
        match read_message(&mut recv).await? {
            Message::FileHeader { name, key } => {
                let file = receive_one(&mut send, &mut recv, out_dir, name, key, progress).await?;
                done.push(file);
            }
            Message::End { files } => {
                if usize::try_from(files).ok() != Some(done.len()) {
                    warn!(
                        announced = files,
                        received = done.len(),
                        "file counts differ"
                    );
                }
                let files = u32::try_from(done.len()).unwrap_or(u32::MAX);
                write_message(&mut send, &Message::EndAck { files }).await?;
                finish_and_flush(&mut send).await;
                return Ok(done);
            }
            _ => {
                let _ = send.reset(VarInt::from_u32(STREAM_ABORTED));
                return Err(TransferError::Protocol("expected a file header or the end"));
            }
        }
    }
}

/// Refuses the file on its stream, waits until the refusal is delivered, and returns `err`.
async fn refuse(
    send: &mut SendStream,
    reason: RefuseReason,
    err: TransferError,
) -> Result<FileDone, TransferError> {
    warn!(error = %err, "refusing file");
    let detail = err.to_string();
    let detail = truncate(&detail, shared::transfer::MAX_DETAIL_LEN);
    write_message(send, &Message::Refuse { reason, detail }).await?;
    finish_and_flush(send).await;
    Err(err)
}

fn truncate(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

fn io_error(name: &str, e: PrepareError) -> (RefuseReason, TransferError) {
    match e {
        PrepareError::Exists => (
            RefuseReason::Exists,
            TransferError::Exists {
                name: name.to_owned(),
            },
        ),
        PrepareError::NoSpace { need, available } => (
            RefuseReason::Io,
            TransferError::NoSpace {
                name: name.to_owned(),
                need,
                available,
            },
        ),
        PrepareError::Io(path, source) => (RefuseReason::Io, TransferError::Io { path, source }),
    }
}

async fn receive_one(
    send: &mut SendStream,
    recv: &mut RecvStream,
    out_dir: &Path,
    name: String,
    key: ResumeKey,
    progress: &mut (dyn FnMut(TransferEvent) + Send),
) -> Result<FileDone, TransferError> {
    if let Err(source) = validate_name(&name) {
        return refuse(
            send,
            RefuseReason::BadName,
            TransferError::BadName { name, source },
        )
        .await;
    }
    let paths = Paths::new(out_dir, &name);
    let prepared = {
        let paths = Paths::new(out_dir, &name);
        tokio::task::spawn_blocking(move || recv_fs::prepare(&paths, &key)).await?
    };
    let (file, offset) = match prepared {
        Ok(ok) => ok,
        Err(e) => {
            let (reason, err) = io_error(&name, e);
            return refuse(send, reason, err).await;
        }
    };
    write_message(send, &Message::Accept { offset }).await?;
    if offset > 0 {
        info!(file = %name, from = offset, "resuming");
        progress(TransferEvent::Resumed {
            file: name.clone(),
            from: offset,
        });
    }

    let (tx, rx) = mpsc::channel::<Vec<Bytes>>(CHANNEL_DEPTH);
    let writer = tokio::task::spawn_blocking(move || recv_fs::write_and_hash(file, offset, rx));
    let received = receive_data(recv, tx, &name, key.size, offset, progress).await;
    let written = writer.await?;
    received?;
    let ours = written.map_err(|source| TransferError::Io {
        path: paths.partial.clone(),
        source,
    })?;
    let theirs = match read_message(recv).await? {
        Message::Trailer { sha256 } => sha256,
        _ => return Err(TransferError::Protocol("expected the trailer")),
    };
    if ours != theirs {
        warn!(file = %name, "SHA-256 mismatch, deleting the partial copy");
        let discarded = {
            let paths = Paths::new(out_dir, &name);
            tokio::task::spawn_blocking(move || recv_fs::discard(&paths)).await?
        };
        write_message(
            send,
            &Message::Ack {
                status: AckStatus::HashMismatch,
            },
        )
        .await?;
        finish_and_flush(send).await;
        discarded.map_err(|source| TransferError::Io {
            path: paths.partial.clone(),
            source,
        })?;
        return Err(TransferError::HashMismatch { name });
    }
    let committed = {
        let out_dir = out_dir.to_owned();
        tokio::task::spawn_blocking(move || recv_fs::commit(&paths, &out_dir)).await?
    };
    if let Err(e) = committed {
        let (_, err) = io_error(&name, e);
        let _ = send.reset(VarInt::from_u32(STREAM_ABORTED));
        return Err(err);
    }
    write_message(
        send,
        &Message::Ack {
            status: AckStatus::Ok,
        },
    )
    .await?;
    let _ = send.finish();
    debug!(file = %name, bytes = key.size, "received");
    progress(TransferEvent::Done {
        file: name.clone(),
        bytes: key.size,
        sha256_hex: hex(&ours),
    });
    Ok(FileDone {
        path: out_dir.join(&name),
        name,
        bytes: key.size,
        resumed_from: offset,
        sha256: ours,
    })
}

/// Reads exactly `size - offset` bytes of file data from `recv` into the writer's channel.
///
/// quinn hands data over as it arrived, about one packet per chunk; they are passed on in
/// batches of at least [`CHUNK`] bytes, without copying, so that the writer makes few large
/// writes. What has arrived is passed on even when the stream fails, for the next run to
/// resume after it.
async fn receive_data(
    recv: &mut RecvStream,
    tx: mpsc::Sender<Vec<Bytes>>,
    name: &str,
    size: u64,
    offset: u64,
    progress: &mut (dyn FnMut(TransferEvent) + Send),
) -> Result<(), TransferError> {
    let mut throttle = Throttle::new();
    throttle.report(progress, name, offset, size, true);
    let mut got = offset;
    let mut batch = Vec::new();
    let mut batch_len = 0;
    let result = loop {
        if got == size {
            break Ok(());
        }
        let want = usize::try_from(size - got).map_or(CHUNK, |l| l.min(CHUNK));
        let chunk = match recv.read_chunk(want, true).await {
            Ok(Some(chunk)) => chunk.bytes,
            Ok(None) => {
                break Err(TransferError::Protocol(
                    "stream ended inside the file's data",
                ));
            }
            Err(e) => break Err(e.into()),
        };
        got += chunk.len() as u64;
        batch_len += chunk.len();
        batch.push(chunk);
        if batch_len >= CHUNK {
            batch_len = 0;
            if tx.send(std::mem::take(&mut batch)).await.is_err() {
                // The writer failed; the caller reports its error.
                return Ok(());
            }
            throttle.report(progress, name, got, size, false);
        }
    };
    if !batch.is_empty() {
        // Send failing means the writer failed; the caller reports that.
        let _ = tx.send(batch).await;
    }
    if result.is_ok() {
        throttle.report(progress, name, size, size, true);
    }
    result
}
