//! Scraping the lab server's metrics endpoint, from inside the server namespace (the
//! endpoint listens on the server's address there; nothing outside the lab reaches it).

use std::collections::BTreeMap;
use std::io::{self, Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use super::super::{Lab, LabError, SERVER_IPS, in_namespace};
use super::{ChatServer, METRICS_PORT};
use crate::prometheus::{Series, parse};

impl ChatServer {
    /// The metrics endpoint's address.
    pub fn metrics() -> SocketAddr {
        SocketAddr::new(IpAddr::V4(SERVER_IPS[0]), METRICS_PORT)
    }

    /// `GET /metrics` from the server host, parsed.
    pub fn scrape(&self, lab: &Lab) -> Result<BTreeMap<Series, f64>, LabError> {
        let addr = Self::metrics();
        let fail = |what: String| LabError::Io {
            what,
            source: io::Error::other("scrape"),
        };
        let answer = in_namespace(&lab.server().ns, || {
            let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            write!(stream, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n")?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer)?;
            Ok(answer)
        })
        .map_err(|e| LabError::Io {
            what: format!("scrape {addr}"),
            source: e,
        })?;
        let (head, body) = answer
            .split_once("\r\n\r\n")
            .ok_or_else(|| fail(format!("no HTTP answer from {addr}: {answer:?}")))?;
        if !head.starts_with("HTTP/1.1 200 ") {
            return Err(fail(format!("{addr} answered {head:?}")));
        }
        parse(body).map_err(|e| fail(format!("{addr}: {e}")))
    }
}
