//! The tokio-side wire codecs: one `tokio_util::codec` [`Decoder`](tokio_util::codec::Decoder)
//! and [`Encoder`](tokio_util::codec::Encoder) per TCP protocol, used by the servers in
//! `stun-server` and by the client in `p2p-client` alike, so both sides frame the same bytes
//! the same way and report the same errors.
//!
//! The framing itself is sans-IO and lives in `shared` ([`shared::rendezvous::wire`],
//! [`shared::switchboard::wire`]); this crate only adapts it to `tokio_util`, which `shared`
//! may not depend on (docs/DESIGN.md section 1).
//!
//! - [`line::LineCodec`]: rendezvous lines, for the server side or the client side
//!   ([`line::Side`]): the side decides which lines carry a payload.
//! - [`switchboard::SbCodec`]: switchboard frames, for either side.
//!
//! ```
//! use bytes::BytesMut;
//! use codecs::line::{LineCodec, Side};
//! use tokio_util::codec::Decoder;
//!
//! let mut server = LineCodec::new(Side::Server);
//! let mut buf = BytesMut::from(&b"PNG 1\r\n"[..]);
//! let line = server.decode(&mut buf).unwrap().unwrap().unwrap();
//! assert_eq!(line.command.as_str(), "PNG");
//! ```

#![forbid(unsafe_code)]

pub mod line;
pub mod switchboard;
