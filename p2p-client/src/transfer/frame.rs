//! Control frames over quinn streams.

use quinn::{RecvStream, SendStream};
use shared::transfer::{LEN_PREFIX, Message, body_len, decode_body};

use super::TransferError;

pub(super) async fn write_message(
    send: &mut SendStream,
    message: &Message,
) -> Result<(), TransferError> {
    send.write_all(&message.to_vec()?).await?;
    Ok(())
}

/// Reads exactly one frame: the prefix, then the announced body (bounded by
/// [`shared::transfer::MAX_FRAME_BODY`] before anything is allocated).
pub(super) async fn read_message(recv: &mut RecvStream) -> Result<Message, TransferError> {
    let mut prefix = [0u8; LEN_PREFIX];
    recv.read_exact(&mut prefix).await?;
    let mut body = vec![0u8; body_len(prefix)?];
    recv.read_exact(&mut body).await?;
    Ok(decode_body(&body)?)
}

/// Finishes `send` and waits until the peer has all of it, so that a last frame (a refusal,
/// an ack) is not lost when our caller closes the connection right after we return.
pub(super) async fn finish_and_flush(send: &mut SendStream) {
    if send.finish().is_ok() {
        let _ = send.stopped().await;
    }
}
