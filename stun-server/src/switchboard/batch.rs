//! The batch a writer task sends with one vectored write (the framing itself is
//! [`codecs::switchboard::SbCodec`], shared with the client).

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use shared::switchboard::Frame;
use shared::switchboard::wire;

/// `DATA` payloads at least this long go out as their own buffer (no copy); shorter frames are
/// copied into one contiguous run, which costs less than an extra `iovec` each.
const ZERO_COPY_MIN: usize = 1024;

/// Outgoing frames gathered for one vectored write: small frames copied into runs, large
/// payloads by reference. Implements [`Buf`], so `write_all_buf` sends it with `writev`.
#[derive(Debug, Default)]
pub(crate) struct OutBatch {
    chunks: VecDeque<Bytes>,
    staging: BytesMut,
    remaining: usize,
}

impl OutBatch {
    /// Appends one frame. Frames the codec cannot encode (none the core produces) are skipped.
    /// Call [`seal`](Self::seal) before writing.
    pub(crate) fn push(&mut self, frame: &Frame) {
        match frame {
            Frame::Data(payload) if payload.len() >= ZERO_COPY_MIN => {
                let Some(header) = wire::data_header(payload.len()) else {
                    return;
                };
                self.staging.put_slice(&header);
                self.seal();
                self.remaining += payload.len();
                self.chunks.push_back(payload.clone());
            }
            _ => {
                // Nothing is written on error, and the core only produces encodable frames.
                let _ = wire::encode(frame, &mut self.staging);
            }
        }
    }

    /// Ends the current run of copied frames, so everything pushed is part of the batch.
    pub(crate) fn seal(&mut self) {
        if !self.staging.is_empty() {
            let run = self.staging.split().freeze();
            self.remaining += run.len();
            self.chunks.push_back(run);
        }
    }
}

impl Buf for OutBatch {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.chunks.front().map_or(&[], |c| &c[..])
    }

    fn advance(&mut self, mut cnt: usize) {
        cnt = cnt.min(self.remaining);
        self.remaining -= cnt;
        while cnt > 0 {
            let Some(front) = self.chunks.front_mut() else {
                return;
            };
            if cnt < front.len() {
                front.advance(cnt);
                return;
            }
            cnt -= front.len();
            self.chunks.pop_front();
        }
        while self.chunks.front().is_some_and(Bytes::is_empty) {
            self.chunks.pop_front();
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, chunk) in dst.iter_mut().zip(self.chunks.iter()) {
            *slot = IoSlice::new(chunk);
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_batch_writes_exactly_what_encode_writes() {
        let frames = [
            Frame::Joined { peer_present: true },
            Frame::Data(Bytes::from(vec![1u8; 10])),
            Frame::Data(Bytes::from(vec![2u8; 5000])),
            Frame::Data(Bytes::from(vec![3u8; 20])),
            Frame::Data(Bytes::from(vec![4u8; ZERO_COPY_MIN])),
            Frame::PeerLeft,
        ];
        let mut expected = BytesMut::new();
        let mut batch = OutBatch::default();
        for f in &frames {
            wire::encode(f, &mut expected).unwrap();
            batch.push(f);
        }
        batch.seal();
        assert_eq!(batch.remaining(), expected.len());
        // Drain it in odd steps, as short writes would.
        let mut got = Vec::new();
        while batch.has_remaining() {
            let take = batch.chunk().len().min(777);
            got.extend_from_slice(&batch.chunk()[..take]);
            batch.advance(take);
        }
        assert_eq!(got, expected);
        assert!(batch.staging.is_empty() && batch.chunks.is_empty());
    }
}
