//! The servers the client tests run against, configured in one place: a STUN server, the
//! rendezvous server and the switchboard, in-process on loopback, accepting a KDF cheap enough
//! that registering costs nothing. Test files that start servers say `mod loopback;`, so a
//! change to how the servers are launched (a new required option, another default) is made
//! once instead of in every file's copy.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use p2p_servers::rendezvous::RendezvousOptions;
use p2p_servers::services::{self, Services, ServicesOptions};
use p2p_servers::switchboard::SwitchboardOptions;
use p2p_servers::tls::ServerTls;
use p2p_servers::{ServerHandle, ServerOptions};
use shared::rendezvous::{Kdf, RendezvousConfig};
use shared::stun_server::ServerSocket;

/// The cheapest KDF the servers accept, as `--kdf` spells it.
pub const KDF: &str = "argon2id:m=8:t=1:p=1";

/// [`KDF`] as the rendezvous configuration holds it.
pub const CHEAP: Kdf = Kdf {
    memory_kib: 8,
    iterations: 1,
    lanes: 1,
};

/// Any free port on IPv4 loopback.
pub fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A STUN server on free loopback ports (both addresses of the defaults), one worker, UDP
/// only.
pub fn stun_options() -> ServerOptions {
    ServerOptions {
        port: 0,
        alt_port: 0,
        workers: 1,
        tcp: false,
        ..ServerOptions::default()
    }
}

/// [`stun_options`] started; `tcp` adds its TCP listener.
pub fn stun(tcp: bool) -> ServerHandle {
    ServerHandle::start(ServerOptions {
        tcp,
        ..stun_options()
    })
    .expect("STUN server")
}

/// A single-address STUN server on `[::1]`, a free port.
pub fn stun_on_ipv6_loopback() -> ServerHandle {
    ServerHandle::start(ServerOptions {
        primary: IpAddr::V6(Ipv6Addr::LOCALHOST),
        alternate: None,
        ..stun_options()
    })
    .expect("STUN server on [::1]")
}

/// A two-address STUN server on the default ports 3478/3479, on a pair of loopback addresses
/// of its own in 127.34.`net`.0/24: it never collides with a server running on the defaults of
/// 127.0.0.1 and 127.0.0.2, nor with the other test files, which pass another `net`.
pub fn stun_on_default_ports(net: u8) -> ServerHandle {
    let mut last = None;
    for n in (1..250).step_by(2) {
        let options = ServerOptions {
            primary: IpAddr::V4(Ipv4Addr::new(127, 34, net, n)),
            alternate: Some(IpAddr::V4(Ipv4Addr::new(127, 34, net, n + 1))),
            port: 3478,
            alt_port: 3479,
            ..stun_options()
        };
        match ServerHandle::start(options) {
            Ok(handle) => return handle,
            Err(e) => last = Some(e),
        }
    }
    panic!("no free pair of addresses in 127.34.{net}.0/24: {last:?}");
}

/// The primary UDP address of `stun`, what the rendezvous server announces to clients.
pub fn stun_addr(stun: &ServerHandle) -> Option<SocketAddr> {
    stun.udp_addr(ServerSocket::PRIMARY)
}

/// The rendezvous configuration of the tests: [`CHEAP`] accepted, `stun` announced.
pub fn config(stun: Option<SocketAddr>) -> RendezvousConfig {
    RendezvousConfig {
        min_kdf: CHEAP,
        stun_addr: stun,
        ..RendezvousConfig::default()
    }
}

/// The rendezvous server on `listen` with its database at `db`.
pub fn rendezvous(
    listen: SocketAddr,
    db: PathBuf,
    config: RendezvousConfig,
    tls: ServerTls,
) -> RendezvousOptions {
    RendezvousOptions {
        listen,
        db_path: db,
        postgres: None,
        config,
        max_queued_lines: 256,
        tls,
        peer_nodes: Vec::new(),
        cluster: None,
    }
}

/// `rendezvous` and a switchboard on `switchboard`, started together (the switchboard takes
/// the rendezvous server's TLS identity).
pub fn services(rendezvous: RendezvousOptions, switchboard: SocketAddr) -> Services {
    services::start(ServicesOptions {
        rendezvous,
        switchboard: Some(SwitchboardOptions {
            listen: switchboard,
            ..SwitchboardOptions::default()
        }),
        advertise_switchboard: None,
    })
    .expect("rendezvous server and switchboard")
}

/// Removes the SQLite database at `db` with the journal files SQLite may leave beside it.
pub fn remove_database(db: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut path = db.as_os_str().to_owned();
        path.push(suffix);
        let _ = std::fs::remove_file(path);
    }
}
