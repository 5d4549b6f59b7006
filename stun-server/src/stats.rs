//! Counters of a running server: the core's, plus what only the driver sees.

use shared::stun_server::ServerStats;

/// A snapshot of a server's counters, summed over its workers and TCP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// What the protocol core counted (requests, responses, drops by reason).
    pub core: ServerStats,
    /// Datagrams larger than a receive slot, dropped before parsing.
    pub truncated: u64,
    /// Responses the kernel would not take (full send buffer), dropped.
    pub send_dropped: u64,
    /// TCP connections accepted.
    pub tcp_connections: u64,
    /// TCP connections refused because the connection limit was reached.
    pub tcp_refused: u64,
}

impl Stats {
    /// Adds another snapshot's counters to these.
    pub fn merge(&mut self, other: &Stats) {
        self.core.merge(&other.core);
        self.truncated += other.truncated;
        self.send_dropped += other.send_dropped;
        self.tcp_connections += other.tcp_connections;
        self.tcp_refused += other.tcp_refused;
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.core;
        write!(
            f,
            "received={} responses={} errors={} malformed={} truncated={} not_request={} \
             rate_limited={} change_refused={} response_address_ignored={} send_dropped={} \
             tcp_connections={} tcp_refused={}",
            c.received,
            c.responses,
            c.error_responses,
            c.malformed,
            self.truncated,
            c.not_request,
            c.rate_limited,
            c.change_refused,
            c.response_address_ignored,
            self.send_dropped,
            self.tcp_connections,
            self.tcp_refused
        )
    }
}
