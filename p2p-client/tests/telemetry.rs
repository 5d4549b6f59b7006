//! Connectivity telemetry end to end on loopback: `p2p-client chat` processes report how their
//! introduction turned out, and the server's `/metrics` (scraped over HTTP, parsed as the
//! Prometheus text format) counts exactly the introductions that were reported, on their NAT
//! pair, and none that were not: `--no-telemetry` on one side leaves that side's report out,
//! `P2P_NO_TELEMETRY=1` on both leaves the introduction out.

#![allow(clippy::unwrap_used)]

mod client;
mod loopback;
mod sessions;
// The one parser of the tests crate, which this crate cannot depend on; not every helper in
// it is used here.
#[allow(dead_code)]
#[path = "../../tests/src/prometheus/text.rs"]
mod prometheus_text;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use p2p_servers::metrics::BoundMetrics;
use prometheus_text::{Series, parse, sum};
use sessions::{Servers, direct};

/// `GET /metrics`, parsed (every family declared with `# TYPE` first, no series twice).
fn scrape(addr: SocketAddr) -> BTreeMap<Series, f64> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    parse(body).unwrap()
}

/// One chat between alice and bob with these extra arguments (and environment), until both
/// are direct; a few lines, then both end and exit 0.
fn chat_once(servers: &Servers, extra: [&[&str]; 2], env: Option<(&str, &str)>) {
    let mut procs = [("alice", "bob"), ("bob", "alice")].map(|(me, peer)| {
        let i = usize::from(me == "bob");
        let mut args = vec!["--no-classify"];
        args.extend_from_slice(extra[i]);
        let mut cmd = servers.command(me, &client::chat_args(peer, &args));
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        client::Proc::spawn(me, cmd)
    });
    for p in &mut procs {
        p.wait_for("a direct path", Duration::from_secs(20), direct);
    }
    procs[0].send_lines(&["hello".to_owned()]);
    procs[1].wait_for("the message", Duration::from_secs(10), |e| {
        sessions::texts(e).len() == 1
    });
    for p in &mut procs {
        p.close_stdin();
    }
    for p in &mut procs {
        assert!(p.finish(Duration::from_secs(20)).success(), "{}", p.logs());
    }
}

#[test]
fn reported_introductions_are_counted_on_their_nat_pair_and_opted_out_ones_are_not() {
    let servers = Servers::start();
    servers.pair("alice", "bob");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let metrics =
        BoundMetrics::bind("127.0.0.1:0".parse().unwrap(), servers.metrics_sources()).unwrap();
    let addr = metrics.local_addr();
    runtime.spawn(metrics.run(std::future::pending()));
    let attempts = "p2p_link_attempts_total";
    // Polls the scrape until `done` (reports are sent as the outcome is known, a lone one is
    // counted when the session ends at a logout), at most 5 s.
    let settle = |done: &dyn Fn(&BTreeMap<Series, f64>) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let samples = scrape(addr);
            if done(&samples) || Instant::now() > deadline {
                return samples;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    // Both report: one direct introduction, on the pair of two unclassified offers.
    chat_once(&servers, [&[], &[]], None);
    let samples = settle(&|s| sum(s, attempts, &[]) >= 1.0);
    let pair = [("pair", "unknown/unknown"), ("method", "plain")];
    let direct = [pair[0], pair[1], ("outcome", "direct")];
    assert_eq!(sum(&samples, attempts, &direct), 1.0, "{samples:#?}");
    assert_eq!(sum(&samples, attempts, &[]), 1.0);
    for outcome in ["relayed", "failed"] {
        let labels = [pair[0], pair[1], ("outcome", outcome)];
        assert_eq!(
            sum(&samples, attempts, &labels),
            0.0,
            "a zero series for {outcome}"
        );
    }
    let count = "p2p_link_time_to_direct_seconds_count";
    assert_eq!(sum(&samples, count, &pair), 1.0);
    let within = [pair[0], pair[1], ("le", "5")];
    assert_eq!(
        sum(&samples, "p2p_link_time_to_direct_seconds_bucket", &within),
        1.0
    );
    // On loopback the peer answers from an address it offered.
    let candidates = "p2p_link_direct_candidates_total";
    assert_eq!(sum(&samples, candidates, &[pair[0]]), 2.0);
    assert_eq!(
        sum(&samples, "p2p_link_reports_total", &[("map", "none")]),
        2.0
    );

    // Bob opts out on the command line: alice's report alone counts the introduction.
    chat_once(&servers, [&[], &["--no-telemetry"]], None);
    let samples = settle(&|s| sum(s, attempts, &[]) >= 2.0);
    assert_eq!(sum(&samples, attempts, &direct), 2.0);
    assert_eq!(
        sum(&samples, "p2p_link_reports_total", &[("map", "none")]),
        3.0
    );

    // Both opt out by the environment: nothing more is counted.
    chat_once(&servers, [&[], &[]], Some(("P2P_NO_TELEMETRY", "1")));
    let samples = settle(&|s| sum(s, attempts, &[]) >= 3.0);
    assert_eq!(sum(&samples, attempts, &[]), 2.0);
    assert_eq!(sum(&samples, "p2p_link_reports_total", &[]), 3.0);
    assert_eq!(sum(&samples, "rendezvous_introductions_total", &[]), 3.0);
}
