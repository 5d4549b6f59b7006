//! The STUN servers the lab tests run on the server host, held so that a test which panics
//! still stops them: ours in-process, or a child process (stund, coturn, the `stun-server`
//! binary). One definition, so every lab test stops its server the same way.

use std::ffi::OsStr;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Child;

use p2p_servers::{ServerHandle, ServerOptions, StartError};
use shared::stun_server::RateLimitConfig;

use super::{Lab, SERVER_IPS, SERVER_IPS6, in_namespace};

/// A STUN server running on a lab's server host; stopped on drop.
pub enum LabServer {
    /// Ours, in-process; its sockets were bound inside the server namespace. Boxed: the
    /// handle is large next to a child.
    InProcess(Option<Box<ServerHandle>>),
    /// A child process, killed by its own pid (`Child::kill`); `pidfile`, where the server
    /// writes one (coturn), is removed with it.
    Child {
        /// The server process.
        child: Child,
        /// The pid file to remove once it is stopped.
        pidfile: Option<PathBuf>,
    },
}

impl LabServer {
    /// Our server in-process at `port` and `alt_port`, on both server addresses or
    /// (`both_ips` false) the first only, with one worker, UDP only and no rate limit (the
    /// lab's clients all come from a few addresses).
    pub fn start_ours(
        lab: &Lab,
        both_ips: bool,
        port: u16,
        alt_port: u16,
    ) -> Result<LabServer, StartError> {
        let alternate = both_ips.then_some(IpAddr::V4(SERVER_IPS[1]));
        Self::start_ours_on(lab, IpAddr::V4(SERVER_IPS[0]), alternate, port, alt_port)
    }

    /// [`LabServer::start_ours`] on the server's two IPv6 addresses ([`SERVER_IPS6`]). One
    /// server serves one address family (its two addresses must be of one family): a lab that
    /// wants STUN over both runs this next to an IPv4 one, on the same ports.
    pub fn start_ours6(lab: &Lab, port: u16, alt_port: u16) -> Result<LabServer, StartError> {
        let (primary, alternate) = (IpAddr::V6(SERVER_IPS6[0]), IpAddr::V6(SERVER_IPS6[1]));
        Self::start_ours_on(lab, primary, Some(alternate), port, alt_port)
    }

    fn start_ours_on(
        lab: &Lab,
        primary: IpAddr,
        alternate: Option<IpAddr>,
        port: u16,
        alt_port: u16,
    ) -> Result<LabServer, StartError> {
        let options = ServerOptions {
            primary,
            alternate,
            port,
            alt_port,
            workers: 1,
            tcp: false,
            rate_limit: RateLimitConfig {
                per_second: 0,
                burst: 0,
            },
            ..ServerOptions::default()
        };
        // The thread that binds must be inside the namespace; the sockets stay there.
        let handle = in_namespace(&lab.server().ns, || Ok(ServerHandle::start(options)))
            .unwrap_or_else(|e| panic!("cannot enter {}: {e}", lab.server().ns))?;
        Ok(LabServer::InProcess(Some(Box::new(handle))))
    }

    /// `args` started on the server host with its output discarded (see
    /// [`Lab::spawn_quiet`]); `pidfile` is removed when it is stopped.
    pub fn start_child<S: AsRef<OsStr>>(
        lab: &Lab,
        args: &[S],
        pidfile: Option<PathBuf>,
    ) -> io::Result<LabServer> {
        let child = lab.spawn_quiet(&lab.server().ns, args)?;
        Ok(LabServer::Child { child, pidfile })
    }
}

impl Drop for LabServer {
    fn drop(&mut self) {
        match self {
            LabServer::InProcess(handle) => {
                if let Some(handle) = handle.take() {
                    handle.shutdown();
                }
            }
            LabServer::Child { child, pidfile } => {
                let _ = child.kill();
                let _ = child.wait();
                if let Some(path) = pidfile.take() {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
    }
}
