//! `--metrics ADDR`: the servers' counters at `GET /metrics`, in the Prometheus text format
//! (version 0.0.4), for Prometheus or anything that scrapes like it. docs/METRICS.md lists
//! every series with a query for it.
//!
//! Nothing is counted for the sake of metrics: a scrape reads what the servers already publish
//! for their own logs. The STUN workers publish their counters every 250 ms (one lock per
//! worker per interval, none per packet: the hot path runs at the batched-UDP ceiling), so STUN
//! series are up to 250 ms old; the rendezvous core task publishes after every step it takes;
//! the switchboard's counters are read under its lock at scrape time.
//!
//! The HTTP side is as small as a scrape needs: one request per connection, `GET /metrics`
//! answered, any other path 404 and any other method on it 405, a bounded request head and a
//! few seconds to send it, a few connections at a time. It runs as a task on the caller's
//! runtime, like the rendezvous server ([`BoundMetrics::run`]).
//!
//! ```no_run
//! # async fn f(stun: &p2p_servers::ServerHandle) -> Result<(), Box<dyn std::error::Error>> {
//! use p2p_servers::metrics::{BoundMetrics, MetricsSources};
//! let metrics = BoundMetrics::bind("127.0.0.1:9100".parse()?, MetricsSources::new(Some(stun), None))?;
//! println!("scrape http://{}/metrics", metrics.local_addr());
//! metrics.run(std::future::pending()).await?;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use shared::rendezvous::telemetry::{Outcome, PortMapping, TIME_BUCKETS, Telemetry};
use shared::stun_server::{IpSlot, PortSlot, RequestKind, ServerSocket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::rendezvous::Counts;
use crate::server::StatsSource;
use crate::services::Services;
use crate::switchboard::RelayStatsSource;
use crate::{ServerHandle, Stats};

/// The longest request head read; a scrape's is a few hundred bytes.
const MAX_HEAD: usize = 8 * 1024;
/// A connection must have sent its request head, and taken its answer, within this.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more are closed at accept (scrapers are few).
const MAX_CONNECTIONS: usize = 16;

/// Why the metrics endpoint could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// The listening socket could not be bound.
    #[error("cannot listen for metrics on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the kernel said.
        source: std::io::Error,
    },
    /// The listener could not be handed to the runtime.
    #[error("metrics listener: {0}")]
    Io(#[from] std::io::Error),
}

/// What a scrape reads: handles on the counters of the servers that run, each optional.
#[derive(Clone, Debug, Default)]
pub struct MetricsSources {
    stun: Option<StatsSource>,
    rendezvous: Option<Arc<Counts>>,
    switchboard: Option<RelayStatsSource>,
}

impl MetricsSources {
    /// The STUN server's counters, and the rendezvous server's and the switchboard's when the
    /// services run. The handles may be dropped later: a scrape then reads the last values.
    pub fn new(stun: Option<&ServerHandle>, services: Option<&Services>) -> Self {
        MetricsSources {
            stun: stun.map(ServerHandle::stats_source),
            rendezvous: services.map(|s| s.rendezvous().counts()),
            switchboard: services
                .and_then(Services::switchboard)
                .map(|sb| sb.stats_source()),
        }
    }

    /// Every series, in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self.clone()));
        let mut text = String::new();
        // Writing to a String cannot fail, and our collector returns no errors of its own.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry);
        text
    }
}

impl Collector for MetricsSources {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        if let Some(stun) = &self.stun {
            encode_stun(&mut encoder, &stun.udp(), &stun.tcp())?;
        }
        if let Some(counts) = &self.rendezvous {
            encode_rendezvous(&mut encoder, counts)?;
            encode_telemetry(&mut encoder, &counts.telemetry())?;
        }
        if let Some(sb) = &self.switchboard {
            encode_switchboard(&mut encoder, sb)?;
        }
        Ok(())
    }
}

/// A label set: static names and values only (every label here has a closed set of values).
type Labels<const N: usize> = [(&'static str, &'static str); N];

/// One counter family: `name_total` with a sample per label set.
fn counters<const N: usize>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: &[(Labels<N>, u64)],
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        ConstCounter::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

/// One counter without labels.
fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> std::fmt::Result {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// One gauge without labels.
fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> std::fmt::Result {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// The `socket` label: RFC 5780's names for the four sockets (A1 the primary address, P1 the
/// primary port).
fn socket_label(socket: ServerSocket) -> &'static str {
    match (socket.ip, socket.port) {
        (IpSlot::Primary, PortSlot::Primary) => "a1p1",
        (IpSlot::Primary, PortSlot::Alternate) => "a1p2",
        (IpSlot::Alternate, PortSlot::Primary) => "a2p1",
        (IpSlot::Alternate, PortSlot::Alternate) => "a2p2",
    }
}

fn kind_label(kind: RequestKind) -> &'static str {
    match kind {
        RequestKind::Classic => "classic",
        RequestKind::Modern => "modern",
    }
}

fn encode_stun(encoder: &mut DescriptorEncoder<'_>, udp: &Stats, tcp: &Stats) -> std::fmt::Result {
    // TCP is served on A1P1 only: its other three sockets would be zeros forever.
    let transports: [(&'static str, &Stats, &[ServerSocket]); 2] = [
        ("udp", udp, &ServerSocket::ALL),
        ("tcp", tcp, &[ServerSocket::PRIMARY]),
    ];
    let mut requests = Vec::new();
    let mut responses = Vec::new();
    for (transport, stats, sockets) in transports {
        for &socket in sockets {
            for kind in RequestKind::ALL {
                let base = [
                    ("transport", transport),
                    ("socket", socket_label(socket)),
                    ("kind", kind_label(kind)),
                ];
                requests.push((base, stats.core.requests_by.get(socket, kind)));
                let [a, b, c] = base;
                let ok = stats.core.responses_by.get(socket, kind);
                let error = stats.core.error_responses_by.get(socket, kind);
                responses.push(([a, b, c, ("class", "success")], ok));
                responses.push(([a, b, c, ("class", "error")], error));
            }
        }
    }
    counters(
        encoder,
        "stun_requests",
        "STUN requests received, by the socket they arrived on (counted before the rate limit)",
        &requests,
    )?;
    counters(
        encoder,
        "stun_responses",
        "STUN responses sent, by the socket they left from",
        &responses,
    )?;
    let mut dropped = Vec::new();
    for (transport, stats, _) in transports {
        let c = &stats.core;
        let reasons = [
            ("rate_limited", c.rate_limited),
            ("malformed", c.malformed),
            ("not_request", c.not_request),
            ("change_refused", c.change_refused),
            ("truncated", stats.truncated),
            ("send_buffer_full", stats.send_dropped),
        ];
        for (reason, value) in reasons {
            dropped.push(([("transport", transport), ("reason", reason)], value));
        }
    }
    counters(
        encoder,
        "stun_dropped",
        "STUN datagrams and messages dropped without an answer, by reason",
        &dropped,
    )?;
    counters(
        encoder,
        "stun_tcp_connections",
        "STUN TCP connections, accepted or refused at the connection limit",
        &[
            ([("outcome", "accepted")], tcp.tcp_connections),
            ([("outcome", "refused")], tcp.tcp_refused),
        ],
    )
}

fn encode_rendezvous(encoder: &mut DescriptorEncoder<'_>, counts: &Counts) -> std::fmt::Result {
    let core = counts.core();
    let load = |n: &std::sync::atomic::AtomicUsize| n.load(Ordering::Relaxed) as u64;
    gauge(
        encoder,
        "rendezvous_connections",
        "Open rendezvous connections, logged in or not",
        load(&counts.connections),
    )?;
    gauge(
        encoder,
        "rendezvous_cluster_nodes",
        "Other rendezvous nodes of the cluster heard from within the heartbeat timeout (0 \
         without --cluster)",
        load(&counts.cluster_nodes),
    )?;
    gauge(
        encoder,
        "rendezvous_sessions_online",
        "Logged-in rendezvous sessions (a user on two devices has two)",
        load(&counts.sessions),
    )?;
    gauge(
        encoder,
        "rendezvous_users_online",
        "Users logged in with at least one session",
        load(&counts.online),
    )?;
    counters(
        encoder,
        "rendezvous_logins",
        "Rendezvous logins by outcome",
        &[
            ([("outcome", "ok")], core.logins_ok),
            ([("outcome", "auth_failed")], core.logins_auth_failed),
            ([("outcome", "throttled")], core.logins_throttled),
            ([("outcome", "other")], core.logins_other),
        ],
    )?;
    counter(
        encoder,
        "rendezvous_introductions",
        "Introductions made (ITR pairs sent)",
        core.introductions,
    )?;
    counter(
        encoder,
        "rendezvous_transfers",
        "Clients sent to another node with XFR (the node was full or draining)",
        core.transfers,
    )?;
    counter(
        encoder,
        "rendezvous_cluster_list_resyncs",
        "Times this node read the contact and block lists again because a list change of \
         another node may have missed it (its NATS connection was made again, or a heartbeat \
         counted list messages that never arrived)",
        counts.list_resyncs.load(Ordering::Relaxed),
    )?;
    let draining = counts.draining.load(Ordering::Relaxed);
    let mut family = encoder.encode_descriptor(
        "rendezvous_node_state",
        "1 for the state the rendezvous node is in (ready: serving; draining: sending every \
         client to another node), 0 for the other",
        None,
        MetricType::Gauge,
    )?;
    for (state, on) in [("ready", !draining), ("draining", draining)] {
        ConstGauge::new(u64::from(on)).encode(family.encode_family(&[("state", state)])?)?;
    }
    counter(
        encoder,
        "rendezvous_tls_handshake_failures",
        "Rendezvous TLS handshakes that failed or timed out",
        counts.failed_handshakes.load(Ordering::Relaxed),
    )
}

/// The connectivity telemetry (docs/PROTOCOL.md section 8, "RPT"): per NAT pair and method,
/// introductions by outcome and the time to a direct path; per pair, the kind of candidate
/// that worked; and the reports by port mapping. A pair and method appear once their first
/// introduction is counted, with all three outcomes.
fn encode_telemetry(
    encoder: &mut DescriptorEncoder<'_>,
    telemetry: &Telemetry,
) -> std::fmt::Result {
    let pairs = telemetry.pairs();
    let mut family = encoder.encode_descriptor(
        "p2p_link_attempts",
        "Introductions reported by their clients, by NAT pair, punching method and outcome",
        None,
        MetricType::Counter,
    )?;
    for (pair, method, stats) in &pairs {
        for outcome in Outcome::ALL {
            let labels = [
                ("pair", pair.to_string()),
                ("method", method.to_string()),
                ("outcome", outcome.to_string()),
            ];
            let value = stats.attempts(*outcome);
            ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
        }
    }
    let mut family = encoder.encode_descriptor(
        "p2p_link_time_to_direct_seconds",
        "Time from the introduction to the confirmed direct path, by NAT pair and method",
        None,
        MetricType::Histogram,
    )?;
    for (pair, method, stats) in &pairs {
        let labels = [("pair", pair.to_string()), ("method", method.to_string())];
        let bounds = TIME_BUCKETS
            .iter()
            .map(Duration::as_secs_f64)
            .chain([f64::INFINITY]);
        let buckets: Vec<(f64, u64)> = bounds.zip(stats.time_buckets).collect();
        let count = stats.time_buckets.iter().sum();
        let sum = stats.time_sum.as_secs_f64();
        family
            .encode_family(&labels)?
            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                sum, count, &buckets, None,
            )?;
    }
    let mut family = encoder.encode_descriptor(
        "p2p_link_direct_candidates",
        "Direct paths by NAT pair and the kind of the peer's address that answered (each side's report)",
        None,
        MetricType::Counter,
    )?;
    for (pair, cand, value) in telemetry.candidates() {
        let labels = [("pair", pair.to_string()), ("cand", cand.to_string())];
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    let reports: Vec<(Labels<1>, u64)> = PortMapping::ALL
        .iter()
        .map(|m| ([("map", m.as_str())], telemetry.reports(*m)))
        .collect();
    counters(
        encoder,
        "p2p_link_reports",
        "Outcome reports counted (one per side), by the port mapping the side used",
        &reports,
    )
}

fn encode_switchboard(
    encoder: &mut DescriptorEncoder<'_>,
    source: &RelayStatsSource,
) -> std::fmt::Result {
    let stats = source.stats();
    let core = &stats.core;
    gauge(
        encoder,
        "switchboard_connections",
        "Open switchboard connections",
        stats.open_connections as u64,
    )?;
    gauge(
        encoder,
        "switchboard_sessions",
        "Switchboard sessions that have a ticket or a connection now",
        stats.sessions as u64,
    )?;
    counters(
        encoder,
        "switchboard_joins",
        "Switchboard JOINs by outcome",
        &[
            ([("outcome", "ok")], core.joins),
            ([("outcome", "refused")], core.joins_refused),
            ([("outcome", "timeout")], core.join_timeouts),
        ],
    )?;
    counter(
        encoder,
        "switchboard_sessions_started",
        "Switchboard sessions in which both peers joined",
        core.sessions_started,
    )?;
    counter(
        encoder,
        "switchboard_sessions_ended",
        "Switchboard sessions that ended after at least one peer joined",
        core.sessions_ended,
    )?;
    counter(
        encoder,
        "switchboard_relayed_bytes",
        "Payload bytes relayed between peers",
        core.relayed_bytes,
    )?;
    counter(
        encoder,
        "switchboard_relayed_frames",
        "DATA frames relayed between peers",
        core.relayed_frames,
    )?;
    counters(
        encoder,
        "switchboard_dropped_frames",
        "DATA frames dropped, by reason",
        &[
            ([("reason", "rate_limited")], core.rate_dropped),
            ([("reason", "early_buffer_full")], core.early_dropped),
            ([("reason", "queue_full")], stats.queue_dropped),
        ],
    )?;
    counter(
        encoder,
        "switchboard_slow_readers",
        "Switchboard connections dropped because they did not read fast enough",
        stats.slow_readers,
    )
}

/// The metrics endpoint with its listener bound, not serving yet.
#[derive(Debug)]
pub struct BoundMetrics {
    listener: std::net::TcpListener,
    local_addr: SocketAddr,
    sources: MetricsSources,
}

impl BoundMetrics {
    /// Binds `addr` (port 0 picks a free port). Binding outside the runtime, before anything
    /// is served, lets a taken port be a start-up error rather than a log line later.
    pub fn bind(addr: SocketAddr, sources: MetricsSources) -> Result<Self, MetricsError> {
        let bind = || {
            let listener = std::net::TcpListener::bind(addr)?;
            listener.set_nonblocking(true)?;
            let local_addr = listener.local_addr()?;
            Ok((listener, local_addr))
        };
        let (listener, local_addr) =
            bind().map_err(|source| MetricsError::Bind { addr, source })?;
        Ok(BoundMetrics {
            listener,
            local_addr,
            sources,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves scrapes on the current tokio runtime until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), MetricsError> {
        let listener = TcpListener::from_std(self.listener)?;
        let sources = Arc::new(self.sources);
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                accepted = listener.accept() => {
                    let stream = match accepted {
                        Ok((stream, _)) => stream,
                        Err(e) => {
                            // Out of file descriptors, most likely: wait instead of spinning.
                            tracing::debug!(error = %e, "metrics accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let Ok(permit) = slots.clone().try_acquire_owned() else { continue };
                    let sources = sources.clone();
                    tokio::spawn(async move {
                        let served = tokio::time::timeout(IO_TIMEOUT, serve(stream, &sources));
                        if let Ok(Err(e)) = served.await {
                            tracing::debug!(error = %e, "metrics request failed");
                        }
                        drop(permit);
                    });
                }
            }
        }
    }
}

/// Reads one request head and answers it; the connection closes after the answer.
async fn serve(mut stream: TcpStream, sources: &MetricsSources) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return respond(&mut stream, "431 Request Header Fields Too Large", "", "").await;
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let request_line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let request_line = String::from_utf8_lossy(request_line);
    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => {
            let body = sources.render();
            let content_type = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
            respond(&mut stream, "200 OK", content_type, &body).await
        }
        (_, "/metrics") => respond(&mut stream, "405 Method Not Allowed", "", "").await,
        _ => respond(&mut stream, "404 Not Found", "", "").await,
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let content_type = if content_type.is_empty() {
        "text/plain; charset=utf-8"
    } else {
        content_type
    };
    let allow = if status.starts_with("405") {
        "Allow: GET\r\n"
    } else {
        ""
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}\
         Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without servers there is nothing to report: no series at all, rather than zeros that
    /// would look like a server that answers nobody.
    #[test]
    fn no_sources_no_series() {
        assert_eq!(MetricsSources::default().render(), "");
    }

    #[test]
    fn stun_series_carry_socket_kind_and_transport() {
        let text = {
            let mut registry = Registry::default();
            #[derive(Debug)]
            struct Fixed;
            impl Collector for Fixed {
                fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
                    let mut udp = Stats::default();
                    udp.core.rate_limited = 7;
                    encode_stun(&mut encoder, &udp, &Stats::default())
                }
            }
            registry.register_collector(Box::new(Fixed));
            let mut text = String::new();
            prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
            text
        };
        assert!(
            text.contains("# TYPE stun_requests_total counter\n"),
            "{text}"
        );
        assert!(text.contains(
            "stun_requests_total{transport=\"udp\",socket=\"a2p2\",kind=\"modern\"} 0\n"
        ));
        assert!(text.contains(
            "stun_responses_total{transport=\"tcp\",socket=\"a1p1\",kind=\"classic\",class=\"error\"} 0\n"
        ));
        // TCP has one socket: 1 x 2 kinds, against UDP's 4 x 2.
        assert_eq!(
            text.matches("stun_requests_total{transport=\"tcp\"")
                .count(),
            2
        );
        assert_eq!(
            text.matches("stun_requests_total{transport=\"udp\"")
                .count(),
            8
        );
        assert!(text.contains("stun_dropped_total{transport=\"udp\",reason=\"rate_limited\"} 7\n"));
    }

    /// One direct introduction (its two sides 1.2 s and 0.3 s) and one relayed, on one pair:
    /// two attempts, the histogram holds the smaller time once, in the text format.
    #[test]
    fn telemetry_series_per_pair_method_and_outcome() {
        use shared::rendezvous::offer::OfferNat;
        use shared::rendezvous::telemetry::{NatPair, PunchMethod, Report, WorkedCandidate};
        let mut telemetry = Telemetry::default();
        let pair = NatPair::new(OfferNat::Symmetric, OfferNat::PortRestricted);
        let direct = |ms| {
            Report::direct(
                PunchMethod::Birthday,
                WorkedCandidate::Prflx,
                Duration::from_millis(ms),
            )
        };
        telemetry.record(pair, &[direct(1200), direct(300)]);
        let relayed = Report::settled(Outcome::Relayed, PunchMethod::Birthday);
        telemetry.record(pair, &[relayed, relayed]);
        #[derive(Debug)]
        struct Fixed(Telemetry);
        impl Collector for Fixed {
            fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
                encode_telemetry(&mut encoder, &self.0)
            }
        }
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Fixed(telemetry)));
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
        let labels = "pair=\"port-restricted/symmetric\",method=\"birthday\"";
        for line in [
            "# TYPE p2p_link_attempts_total counter".to_owned(),
            format!("p2p_link_attempts_total{{{labels},outcome=\"direct\"}} 1"),
            format!("p2p_link_attempts_total{{{labels},outcome=\"relayed\"}} 1"),
            format!("p2p_link_attempts_total{{{labels},outcome=\"failed\"}} 0"),
            "# TYPE p2p_link_time_to_direct_seconds histogram".to_owned(),
            format!("p2p_link_time_to_direct_seconds_count{{{labels}}} 1"),
            format!("p2p_link_time_to_direct_seconds_sum{{{labels}}} 0.3"),
            format!("p2p_link_time_to_direct_seconds_bucket{{{labels},le=\"0.2\"}} 0"),
            format!("p2p_link_time_to_direct_seconds_bucket{{{labels},le=\"0.3\"}} 1"),
            format!("p2p_link_time_to_direct_seconds_bucket{{{labels},le=\"+Inf\"}} 1"),
            "p2p_link_direct_candidates_total{pair=\"port-restricted/symmetric\",cand=\"prflx\"} 2"
                .to_owned(),
            "p2p_link_reports_total{map=\"none\"} 4".to_owned(),
            "p2p_link_reports_total{map=\"upnp\"} 0".to_owned(),
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }
}
