//! Connectivity telemetry on the link's side: each introduction a puncher ran on is reported
//! once, when its outcome is known ([`LinkCommand::Report`], the `RPT` of docs/PROTOCOL.md
//! section 8), unless [`super::LinkCoreConfig::report_outcomes`] is off.
//!
//! The outcome is known when the puncher confirms a direct path (`direct`, with the kind of
//! the peer's address that answered and the time since the introduction), when it gives up
//! (`relayed` if the relay still carries the link, else `failed`), when a newer introduction
//! takes its place before either (judged the same way), or when the link fails before
//! either (`failed`). A link that ends normally while its puncher still runs reports
//! nothing: that introduction has no outcome to tell.

use std::net::SocketAddr;
use std::time::Instant;

use crate::punch::{Candidate, CandidateKind, Strategy};
use crate::rendezvous::SessionId;
use crate::rendezvous::telemetry::{Outcome, PunchMethod, Report, WorkedCandidate};

use super::LinkCore;
use super::config::Introduction;
use super::output::LinkCommand;

/// An introduction whose outcome is not reported yet.
#[derive(Clone, Debug)]
pub(super) struct Unreported {
    sid: SessionId,
    /// When the core took the introduction.
    since: Instant,
    method: PunchMethod,
    /// The peer's candidates, to name the kind of the one that answered.
    candidates: Vec<Candidate>,
}

/// The kind of `remote` among the peer's candidates; an address it never offered is peer
/// reflexive (a predicted port, a birthday hit). Any IPv6 address is `ipv6`.
fn worked(candidates: &[Candidate], remote: SocketAddr) -> WorkedCandidate {
    if remote.is_ipv6() {
        return WorkedCandidate::Ipv6;
    }
    match candidates.iter().find(|c| c.addr == remote).map(|c| c.kind) {
        Some(CandidateKind::Host) => WorkedCandidate::Host,
        Some(CandidateKind::ServerReflexive) => WorkedCandidate::Srflx,
        Some(CandidateKind::Mapped) => WorkedCandidate::Mapped,
        None => WorkedCandidate::Prflx,
    }
}

impl LinkCore {
    /// A puncher with `strategy` started on `intro` at `now`: its outcome is due. One still
    /// due from an earlier introduction is settled first.
    pub(super) fn report_due(&mut self, now: Instant, intro: &Introduction, strategy: Strategy) {
        self.report_settled();
        if self.config.report_outcomes {
            self.unreported = Some(Unreported {
                sid: intro.sid,
                since: now,
                method: strategy.into(),
                candidates: intro.candidates.clone(),
            });
        }
    }

    /// The puncher confirmed a direct path to `remote` at `now`.
    pub(super) fn report_direct(&mut self, now: Instant, remote: SocketAddr) {
        if let Some(u) = self.unreported.take() {
            let time = now.saturating_duration_since(u.since);
            let report = Report::direct(u.method, worked(&u.candidates, remote), time);
            self.push_report(u.sid, report);
        }
    }

    /// Punching ended without a direct path (or gave way to a newer introduction): relayed
    /// if the relay still carries the link, else failed.
    pub(super) fn report_settled(&mut self) {
        let outcome = if self.path.relay_alive() {
            Outcome::Relayed
        } else {
            Outcome::Failed
        };
        self.report_outcome(outcome);
    }

    /// The outcome still due, if any, is `outcome`.
    pub(super) fn report_outcome(&mut self, outcome: Outcome) {
        if let Some(u) = self.unreported.take() {
            self.push_report(u.sid, Report::settled(outcome, u.method));
        }
    }

    fn push_report(&mut self, sid: SessionId, mut report: Report) {
        report.mapping = self.config.port_mapping;
        self.commands.push_back(LinkCommand::Report { sid, report });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_worked_kind_is_the_offered_one_and_ipv6_counts_apart() {
        let a = |s: &str| -> SocketAddr { s.parse().unwrap() };
        let offered = [
            Candidate::host(a("10.0.0.2:4000")),
            Candidate::srflx(a("203.0.113.2:4000")),
            Candidate::mapped(a("203.0.113.2:5000")),
            Candidate::host(a("[2001:db8:1:1::2]:4000")),
        ];
        assert_eq!(worked(&offered, a("10.0.0.2:4000")), WorkedCandidate::Host);
        assert_eq!(
            worked(&offered, a("203.0.113.2:4000")),
            WorkedCandidate::Srflx
        );
        assert_eq!(
            worked(&offered, a("203.0.113.2:5000")),
            WorkedCandidate::Mapped
        );
        assert_eq!(
            worked(&offered, a("203.0.113.2:4001")),
            WorkedCandidate::Prflx
        );
        assert_eq!(
            worked(&offered, a("[2001:db8:1:1::2]:4000")),
            WorkedCandidate::Ipv6
        );
        assert_eq!(
            worked(&offered, a("[2001:db8:1:1::3]:4000")),
            WorkedCandidate::Ipv6
        );
    }
}
