//! One tunnelled TCP connection: copy both ways over one QUIC stream, with half-close.

use std::io::{self, IoSlice};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use quinn::{ReadError, RecvStream, SendStream, VarInt, WriteError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};

use super::{TCP_ERROR, TunnelConnError};

/// Bytes moved by all connections of one tunnel, updated as they flow so that the totals are
/// right even for connections cut off when the tunnel ends.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) to_peer: AtomicU64,
    pub(super) from_peer: AtomicU64,
}

/// Size of a TCP read.
const BUF: usize = 64 * 1024;

/// Copies until both directions have ended. A clean end of one direction (TCP EOF, or the
/// stream's finish) is passed on as a half-close and the other direction keeps flowing; an
/// error in either aborts both: the stream is reset and stopped with [`TCP_ERROR`] (unless
/// the peer's own reset caused it) and the TCP connection is dropped with a zero linger, so
/// that the local application sees a reset rather than a clean end of a truncated stream.
pub(super) async fn pump(
    mut tcp: TcpStream,
    mut send: SendStream,
    mut recv: RecvStream,
    counters: Arc<Counters>,
) -> Result<(), TunnelConnError> {
    let result = {
        let (rd, wr) = tcp.split();
        tokio::try_join!(
            tcp_to_quic(rd, &mut send, &counters),
            quic_to_tcp(&mut recv, wr, &counters),
        )
    };
    if result.is_err() {
        let code = VarInt::from_u32(TCP_ERROR);
        let _ = send.reset(code);
        let _ = recv.stop(code);
        let _ = tcp.set_zero_linger();
    }
    result.map(|_| ())
}

async fn tcp_to_quic(
    mut rd: ReadHalf<'_>,
    send: &mut SendStream,
    counters: &Counters,
) -> Result<(), TunnelConnError> {
    let mut buf = vec![0u8; BUF];
    loop {
        let n = rd.read(&mut buf).await.map_err(TunnelConnError::TcpRead)?;
        if n == 0 {
            // TCP half-close becomes the stream's end; finishing twice cannot happen here.
            let _ = send.finish();
            return Ok(());
        }
        send.write_all(&buf[..n]).await.map_err(|e| match e {
            WriteError::Stopped(code) => TunnelConnError::Stopped(code),
            e => TunnelConnError::Write(e),
        })?;
        counters.to_peer.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Chunks taken from quinn at once: each is about one packet, so taking what is there in one
/// call and writing it with one `writev` saves a system call per packet, without waiting for
/// more data than has arrived.
const CHUNKS: usize = 32;

async fn quic_to_tcp(
    recv: &mut RecvStream,
    mut wr: WriteHalf<'_>,
    counters: &Counters,
) -> Result<(), TunnelConnError> {
    let mut chunks: [Bytes; CHUNKS] = Default::default();
    loop {
        let n = recv.read_chunks(&mut chunks).await.map_err(|e| match e {
            ReadError::Reset(code) => TunnelConnError::Reset(code),
            e => TunnelConnError::Read(e),
        })?;
        let Some(n) = n else {
            // The stream's end becomes a TCP half-close.
            wr.shutdown().await.map_err(TunnelConnError::TcpWrite)?;
            return Ok(());
        };
        let mut slices = [IoSlice::new(&[]); CHUNKS];
        let mut len = 0;
        for (slice, chunk) in slices.iter_mut().zip(&chunks[..n]) {
            *slice = IoSlice::new(chunk);
            len += chunk.len();
        }
        let mut rest = &mut slices[..n];
        IoSlice::advance_slices(&mut rest, 0);
        while !rest.is_empty() {
            match wr.write_vectored(rest).await {
                Ok(0) => {
                    return Err(TunnelConnError::TcpWrite(io::ErrorKind::WriteZero.into()));
                }
                Ok(written) => IoSlice::advance_slices(&mut rest, written),
                Err(e) => return Err(TunnelConnError::TcpWrite(e)),
            }
        }
        counters.from_peer.fetch_add(len as u64, Ordering::Relaxed);
    }
}
