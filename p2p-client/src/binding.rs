//! One STUN Binding transaction on a socket the caller owns: the loop around
//! [`BindingTransaction`] that the `binding` command and the chat endpoint's first gathering
//! share, so that retransmission, the give-up and what counts as the transaction's datagram
//! are written once (a re-punch's gathering runs inside `shared::link::LinkCore`).
//!
//! [`StunBinding`] drives the sans-IO transaction in the order of every core
//! (docs/DESIGN.md section 8: after each input the transmits, then the timeout; the
//! transaction has no events). Two ways to use it:
//!
//! - A caller with nothing else to do while the transaction runs (the `binding` command, the
//!   chat's first gathering) hands [`StunBinding::run`] a [`BindingSocket`] and awaits the
//!   outcome. A [`tokio::net::UdpSocket`] is one.
//! - A caller whose loop waits on more than the socket (one whose socket carries other
//!   packets too) keeps the [`StunBinding`] as a field:
//!   it offers each datagram to [`StunBinding::handle_datagram`] and keeps those it declines,
//!   calls [`StunBinding::send_due`] after every wake-up, and wakes up by
//!   [`StunBinding::poll_timeout`].

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use shared::stun_client::{BindingError, BindingResponse, BindingTransaction};
use shared::{SocketIndex, Transmit};
use tokio::net::UdpSocket;

use crate::link::endpoint::{Datagram, PacketClass, classify};

/// Room for a request: the header, CHANGE-REQUEST and FINGERPRINT.
const REQUEST_BUF: usize = 512;
/// The largest answer read by [`UdpSocket`]'s [`BindingSocket::recv`]; a longer datagram is
/// cut and then fails to parse, which is what it deserves.
const RESPONSE_BUF: usize = 2048;

/// A Binding transaction driven over a socket; see the [module docs](self).
#[derive(Debug)]
pub struct StunBinding {
    transaction: BindingTransaction,
}

/// The socket [`StunBinding::run`] sends and receives on.
pub trait BindingSocket {
    /// What a failed send or receive reports (a socket that would rather carry on logs its
    /// error and returns `Ok`).
    type Error;

    /// Sends `data` as `transmit` says (its destination, socket and TTL).
    fn send(
        &mut self,
        transmit: &Transmit,
        data: &[u8],
    ) -> impl Future<Output = Result<(), Self::Error>>;

    /// The next datagram if one arrives before `deadline`; `Ok(None)` once the deadline has
    /// passed.
    fn recv(
        &mut self,
        deadline: Instant,
    ) -> impl Future<Output = Result<Option<Datagram>, Self::Error>>;
}

/// Why a Binding over a [`UdpSocket`] of its own stopped before an outcome.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindingIoError {
    /// Sending the request failed (no route, a closed socket, ...).
    #[error("cannot send to {to}")]
    Send {
        /// Where the request was going.
        to: SocketAddr,
        /// The socket's error.
        #[source]
        source: io::Error,
    },
    /// Receiving failed.
    #[error("receive failed")]
    Recv(#[source] io::Error),
}

/// A socket of the transaction's alone: its only socket is [`SocketIndex::ENDPOINT`], and a
/// failure to send or receive ends the transaction (nothing else would use the socket).
impl BindingSocket for UdpSocket {
    type Error = BindingIoError;

    async fn send(&mut self, transmit: &Transmit, data: &[u8]) -> Result<(), BindingIoError> {
        let to = transmit.destination;
        self.send_to(data, to)
            .await
            .map(drop)
            .map_err(|source| BindingIoError::Send { to, source })
    }

    async fn recv(&mut self, deadline: Instant) -> Result<Option<Datagram>, BindingIoError> {
        let mut buf = vec![0u8; RESPONSE_BUF];
        match tokio::time::timeout_at(deadline.into(), self.recv_from(&mut buf)).await {
            Err(_elapsed) => Ok(None),
            Ok(Ok((n, from))) => {
                buf.truncate(n);
                Ok(Some(Datagram {
                    socket: SocketIndex::ENDPOINT,
                    from,
                    data: buf,
                }))
            }
            Ok(Err(e)) => Err(BindingIoError::Recv(e)),
        }
    }
}

impl StunBinding {
    /// Drives `transaction`, whose first send is due at the `now` it was created with.
    pub fn new(transaction: BindingTransaction) -> Self {
        Self { transaction }
    }

    /// The transaction, for its request and outcome.
    pub fn transaction(&self) -> &BindingTransaction {
        &self.transaction
    }

    /// The result, once there is one.
    pub fn outcome(&self) -> Option<&Result<BindingResponse, BindingError>> {
        self.transaction.outcome()
    }

    /// When [`StunBinding::send_due`] must be called next; `None` once finished.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.transaction.poll_timeout()
    }

    /// Time is `now`: gives up if the last wait is over, and returns the requests due (the
    /// first one, or a retransmission), each with the bytes to send.
    pub fn poll_transmits(&mut self, now: Instant) -> Vec<(Transmit, Vec<u8>)> {
        self.transaction.handle_timeout(now);
        let mut buf = [0u8; REQUEST_BUF];
        std::iter::from_fn(|| {
            let t = self.transaction.poll_transmit(now, &mut buf)?;
            Some((t, buf[..t.size].to_vec()))
        })
        .collect()
    }

    /// Time is `now`: sends on `io` what [`StunBinding::poll_transmits`] says is due.
    pub async fn send_due<S: BindingSocket>(
        &mut self,
        now: Instant,
        io: &mut S,
    ) -> Result<(), S::Error> {
        for (transmit, data) in self.poll_transmits(now) {
            io.send(&transmit, &data).await?;
        }
        Ok(())
    }

    /// Offers a datagram that arrived on `socket` from `from`. Returns true if it was STUN on
    /// the transaction's socket, which is the transaction's to judge (an answer, or a stray
    /// STUN packet it ignores); false if it is the caller's (punch, chat, anything else).
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        socket: SocketIndex,
        from: SocketAddr,
        data: &[u8],
    ) -> bool {
        if socket != SocketIndex::ENDPOINT || classify(data) != PacketClass::Stun {
            return false;
        }
        self.transaction.handle_datagram(now, socket, from, data);
        true
    }

    /// Runs the transaction to its outcome on `io`, reading the clock itself. A failed send
    /// or receive ends the run with the socket's error; datagrams that are not the
    /// transaction's are dropped (logged at debug level).
    pub async fn run<S: BindingSocket>(
        mut self,
        io: &mut S,
    ) -> Result<Result<BindingResponse, BindingError>, S::Error> {
        loop {
            self.send_due(Instant::now(), io).await?;
            if let Some(outcome) = self.transaction.outcome() {
                return Ok(*outcome);
            }
            // An unfinished transaction always has a timeout; `now` would merely poll again.
            let deadline = self.poll_timeout().unwrap_or_else(Instant::now);
            if let Some(d) = io.recv(deadline).await?
                && !self.handle_datagram(Instant::now(), d.socket, d.from, &d.data)
            {
                tracing::debug!(from = %d.from, "dropped a datagram during STUN");
            }
        }
    }
}

#[cfg(test)]
mod tests;
