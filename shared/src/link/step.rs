//! One step of [`LinkCore`]: everything the link does at `now`, after any input.
//!
//! The order matters and is the order of every core, applied to the composition: the
//! puncher's transmits before its events (an event's command may close a socket a transmit
//! names); the path's timers and re-punching before the session's transmits (so they take
//! the path chosen at `now`); the session's events last, and again from the top while any
//! core reported something (an event may change what the others must do).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_core::RngCore;

use crate::SocketIndex;
use crate::chat::{ChatError, ChatEvent, MessageId};
use crate::punch::PunchEvent;
use crate::punch::wire::PACKET_LEN as PUNCH_PACKET_LEN;
use crate::stun::TransactionId;
use crate::stun_client::{BindingRequest, BindingTransaction, RetransmitConfig};

use super::LinkCore;
use super::ending::{LinkEnd, LinkFailure, UndeliveredReason};
use super::message::LinkMessage;
use super::output::{Destination, LinkCommand, LinkCoreEvent, LinkTransmit};
use super::path::Route;
use super::repunch::RepunchAction;

/// Room for a STUN Binding request (it is 28 bytes with FINGERPRINT).
const STUN_BUF: usize = 256;
/// A re-punch's STUN Binding resends this often, without backoff: on a path that loses
/// packets a steady resend finds a gap sooner than a doubling one, and the budget is short.
const GATHER_RTO: Duration = Duration::from_millis(250);

impl LinkCore {
    /// Does everything due at `now`; see the [module docs](self).
    pub(super) fn step(&mut self, now: Instant) {
        if self.closed || self.end.is_some() {
            return;
        }
        loop {
            let mut again = self.step_puncher(now);
            self.path.handle_timeout(now);
            self.drive_repunch(now);
            self.send_probes(now);
            if let Err(failure) = self.push_pending(now) {
                self.end_with(LinkEnd::Failed(failure));
            }
            while let Some(packet) = self.chat.poll_transmit(now) {
                self.send_on_route(packet);
            }
            while let Some(event) = self.chat.poll_event() {
                again = true;
                if let Err(failure) = self.on_chat_event(event) {
                    self.end_with(LinkEnd::Failed(failure));
                }
            }
            while let Some(change) = self.path.poll_change() {
                self.events.push_back(LinkCoreEvent::Path(change));
            }
            if !again {
                break;
            }
        }
        self.check_end(now);
    }

    /// The puncher's timers, transmits and events; whether it reported any event.
    fn step_puncher(&mut self, now: Instant) -> bool {
        let Some(p) = &mut self.puncher else {
            return false;
        };
        if p.poll_timeout().is_some_and(|t| t <= now) {
            p.handle_timeout(now);
        }
        let mut buf = [0u8; PUNCH_PACKET_LEN];
        while let Some(t) = p.poll_transmit(now, &mut buf) {
            self.transmits.push_back(LinkTransmit {
                destination: Destination::Udp {
                    socket: t.socket,
                    remote: t.destination,
                    ttl: t.ttl,
                },
                data: buf[..t.size].to_vec(),
            });
        }
        let events: Vec<PunchEvent> = std::iter::from_fn(|| p.poll_event()).collect();
        let any = !events.is_empty();
        for event in events {
            self.on_punch_event(now, event);
        }
        any
    }

    fn on_punch_event(&mut self, now: Instant, event: PunchEvent) {
        match event {
            PunchEvent::OpenSockets(n) => self.commands.push_back(LinkCommand::OpenSockets(n)),
            PunchEvent::Primed => self
                .commands
                .push_back(LinkCommand::SendPrimed(self.punch_sid)),
            PunchEvent::Connected { socket, remote } => {
                self.commands
                    .push_back(LinkCommand::CloseExtraSockets { keep: socket });
                self.events
                    .push_back(LinkCoreEvent::DirectConfirmed { socket, remote });
                self.path.direct_confirmed(now, socket, remote);
                self.report_direct(now, remote);
                self.had_direct = true;
                self.repunch.handle_punch_ended(true);
            }
            PunchEvent::Failed => {
                self.punch_over = true;
                let again = self.repunch.in_progress();
                self.repunch.handle_punch_ended(false);
                let report = self.path.relay_alive() && !again;
                self.events.push_back(LinkCoreEvent::PunchFailed { report });
                self.report_settled();
            }
            PunchEvent::PathLost => {
                // The re-punch machine sees the path down in this same step.
                self.punch_over = true;
                self.path.direct_lost();
                self.events.push_back(LinkCoreEvent::DirectLost);
            }
        }
    }

    /// Feeds the direct path's state to the re-punch machine and carries out what it asks
    /// for: a STUN Binding from the endpoint socket, then `INV` or `ANS` (commands).
    fn drive_repunch(&mut self, now: Instant) {
        if !self.rendezvous_open {
            // Introductions need the server; `handle_rendezvous_back` asks when it is back.
            return;
        }
        let direct_down = self.config.punch && self.had_direct && !self.path.direct_in_use();
        if direct_down || self.relay_lost() {
            self.repunch.handle_direct_down(now);
        } else {
            self.repunch.handle_direct_up();
        }
        self.repunch.handle_timeout(now);
        loop {
            self.step_gather(now);
            let Some(action) = self.repunch.poll_action() else {
                return;
            };
            match action {
                RepunchAction::Gather => {
                    self.events.push_back(LinkCoreEvent::PunchingAgain {
                        attempt: self.repunch.attempts(),
                        after_direct: self.config.punch && self.had_direct,
                    });
                    self.gathered = None;
                    match self.config.stun {
                        Some(server) => self.gather = Some(self.binding(server, now)),
                        None => self.repunch.handle_gathered(now),
                    }
                }
                RepunchAction::Invite => self.commands.push_back(LinkCommand::Invite {
                    srflx: self.gathered,
                }),
                RepunchAction::Answer(sid) => self.commands.push_back(LinkCommand::Answer {
                    sid,
                    srflx: self.gathered,
                }),
            }
        }
    }

    /// The re-punch's STUN Binding to `server` ([`gather_binding`]), with a fresh id.
    fn binding(&mut self, server: SocketAddr, now: Instant) -> BindingTransaction {
        let mut id = [0u8; 12];
        self.rng.fill_bytes(&mut id);
        gather_binding(server, id, self.config.gather_budget, now)
    }

    /// Sends what the re-punch's STUN Binding has to send; when it is over, keeps the address
    /// it learnt (none if it failed: the last one is offered) and moves the re-punch on.
    fn step_gather(&mut self, now: Instant) {
        let Some(binding) = &mut self.gather else {
            return;
        };
        binding.handle_timeout(now);
        let mut buf = [0u8; STUN_BUF];
        while let Some(t) = binding.poll_transmit(now, &mut buf) {
            self.transmits.push_back(LinkTransmit {
                destination: Destination::Udp {
                    socket: t.socket,
                    remote: t.destination,
                    ttl: t.ttl,
                },
                data: buf[..t.size].to_vec(),
            });
        }
        let Some(outcome) = binding.outcome() else {
            return;
        };
        self.gathered = outcome.as_ref().ok().and_then(|r| r.mapped);
        self.gather = None;
        self.repunch.handle_gathered(now);
    }

    /// A session probe on a quiet direct path; a keepalive on the relay while direct.
    fn send_probes(&mut self, now: Instant) {
        if !self.chat.is_established() {
            // Nothing to probe with yet; skip the probe rather than hold its timer.
            let _ = self.path.probe_due(now);
            return;
        }
        if let Some((socket, remote)) = self.path.probe_due(now)
            && let Ok(probe) = self.chat.probe_packet(now)
        {
            self.transmits.push_back(udp(socket, remote, probe));
        }
        let direct = matches!(self.path.route(), Route::Direct { .. });
        if self.has_relay && direct && self.path.relay_alive() {
            let due = *self
                .next_relay_keepalive
                .get_or_insert(now + self.config.relay_keepalive);
            if now >= due
                && let Ok(probe) = self.chat.probe_packet(now)
            {
                self.transmits.push_back(LinkTransmit {
                    destination: Destination::Relay,
                    data: probe,
                });
                self.next_relay_keepalive = Some(now + self.config.relay_keepalive);
            }
        } else {
            self.next_relay_keepalive = None;
        }
    }

    /// Hands queued messages to the session while its send buffer takes them.
    fn push_pending(&mut self, now: Instant) -> Result<(), LinkFailure> {
        while let Some(entry) = self.pending.front() {
            let framed = LinkMessage::App(entry.bytes.clone()).encode();
            match self.chat.send_message(now, &framed) {
                Ok(id) => {
                    if let Some(entry) = self.pending.pop_front() {
                        self.sent.insert(id, entry);
                    }
                }
                Err(ChatError::SendBufferFull) => break,
                Err(ChatError::MessageTooLarge { .. }) => {
                    if let Some(entry) = self.pending.pop_front() {
                        self.events.push_back(LinkCoreEvent::Undelivered {
                            number: entry.number,
                            bytes: entry.bytes,
                            reason: UndeliveredReason::TooLong,
                        });
                        self.refused += 1;
                    }
                }
                Err(ChatError::Failed) => return Err(LinkFailure::Handshake),
                Err(e) => return Err(LinkFailure::Setup(e.to_string())),
            }
        }
        Ok(())
    }

    /// Sends a session packet on the path in use (or drops it: the session resends).
    fn send_on_route(&mut self, packet: Vec<u8>) {
        match self.path.route() {
            Route::Direct { socket, remote } => {
                self.transmits.push_back(udp(socket, remote, packet))
            }
            Route::Relay => self.transmits.push_back(LinkTransmit {
                destination: Destination::Relay,
                data: packet,
            }),
            Route::Drop => {}
        }
    }

    fn on_chat_event(&mut self, event: ChatEvent) -> Result<(), LinkFailure> {
        match event {
            ChatEvent::Established => self.events.push_back(LinkCoreEvent::Established),
            ChatEvent::Message { bytes, .. } => match LinkMessage::decode(&bytes) {
                Ok(LinkMessage::App(bytes)) => self.events.push_back(LinkCoreEvent::Message(bytes)),
                Ok(LinkMessage::QuicCertificate(fingerprint)) => self
                    .events
                    .push_back(LinkCoreEvent::QuicCertificate(fingerprint)),
                // Kinds of later versions.
                Err(_) => {}
            },
            ChatEvent::Delivered(id) => {
                // `id` and every earlier message.
                let rest = self.sent.split_off(&MessageId(id.0.saturating_add(1)));
                let done = std::mem::replace(&mut self.sent, rest);
                for entry in done.into_values() {
                    self.delivered += 1;
                    self.events
                        .push_back(LinkCoreEvent::Delivered(entry.number));
                }
            }
            ChatEvent::HandshakeTimedOut => return Err(LinkFailure::Handshake),
            ChatEvent::PeerClosed => self.peer_gone = true,
            ChatEvent::PeerUnresponsive => {
                self.events.push_back(LinkCoreEvent::PeerUnresponsive);
                self.peer_gone = true;
            }
        }
        Ok(())
    }
}

/// A UDP transmit with the default TTL.
fn udp(socket: SocketIndex, remote: SocketAddr, data: Vec<u8>) -> LinkTransmit {
    LinkTransmit {
        destination: Destination::Udp {
            socket,
            remote,
            ttl: None,
        },
        data,
    }
}

/// A STUN Binding transaction to `server` (modern, with FINGERPRINT, transaction id `id`) that
/// resends every 250 ms, without backoff, until about `budget` is spent: on a path that
/// loses packets a steady resend finds a gap sooner than a doubling one, and the budget is
/// short anyway. The link's gatherings (the first, in the driver, and a re-punch's, here) use
/// it.
pub fn gather_binding(
    server: SocketAddr,
    id: [u8; 12],
    budget: Duration,
    now: Instant,
) -> BindingTransaction {
    let request = BindingRequest {
        server,
        transaction_id: TransactionId::Modern(id),
        change: None,
        expect_from: None,
        fingerprint: true,
    };
    let sends = u32::try_from(budget.as_millis() / GATHER_RTO.as_millis())
        .unwrap_or(u32::MAX)
        .max(1);
    let config = RetransmitConfig {
        rto: GATHER_RTO,
        max_sends: sends,
        last_wait_factor: 1,
        backoff: false,
    };
    BindingTransaction::new(request, config, now)
}
