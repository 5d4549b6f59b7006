//! Switchboard tickets issued by introductions, kept until used or expired.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use shared::rendezvous::Ticket;

/// The tickets the rendezvous core has issued (docs/PROTOCOL.md section 8: one per peer per
/// session, valid for one use before it expires). Cheap to clone: clones share one book.
///
/// The rendezvous driver fills it, for inspection; a running switchboard gets each ticket
/// through its [`TicketGranter`](crate::switchboard::TicketGranter) and redeems its own copy.
#[derive(Clone, Debug, Default)]
pub struct TicketBook {
    inner: Arc<Mutex<HashMap<[u8; 16], Ticket>>>,
}

impl TicketBook {
    /// An empty book.
    pub fn new() -> TicketBook {
        TicketBook::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<[u8; 16], Ticket>> {
        // A panic while holding the lock leaves the map consistent (every operation is one
        // map call), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps a newly issued ticket.
    pub fn insert(&self, ticket: Ticket) {
        self.lock().insert(ticket.value, ticket);
    }

    /// Takes the ticket with this value if it exists and has not expired at `now`. A ticket is
    /// valid once: it is gone after this call, whatever the caller decides.
    pub fn redeem(&self, value: &[u8; 16], now: Instant) -> Option<Ticket> {
        self.lock().remove(value).filter(|t| now < t.expires)
    }

    /// Forgets every ticket that expired at or before `now`.
    pub fn purge_expired(&self, now: Instant) {
        self.lock().retain(|_, t| now < t.expires);
    }

    /// How many tickets are kept.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no ticket is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of every ticket kept, in no particular order.
    pub fn snapshot(&self) -> Vec<Ticket> {
        self.lock().values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use shared::rendezvous::{SessionId, UserName};
    use std::time::Duration;

    #[test]
    fn a_ticket_is_valid_once_and_until_it_expires() {
        let now = Instant::now();
        let book = TicketBook::new();
        let ticket = |value: u8, life: u64| Ticket {
            value: [value; 16],
            session: SessionId([9; 16]),
            user: UserName::parse("alice").unwrap(),
            peer: UserName::parse("bob").unwrap(),
            expires: now + Duration::from_secs(life),
        };
        book.insert(ticket(1, 60));
        book.insert(ticket(2, 1));
        book.insert(ticket(3, 1));
        assert_eq!(book.len(), 3);
        assert_eq!(book.redeem(&[1; 16], now).unwrap().value, [1; 16]);
        assert!(book.redeem(&[1; 16], now).is_none());
        assert!(
            book.redeem(&[2; 16], now + Duration::from_secs(2))
                .is_none()
        );
        book.purge_expired(now + Duration::from_secs(2));
        assert!(book.is_empty());
    }
}
