//! The rendezvous server and the switchboard relay, started together and wired the way the
//! `stun-server` binary runs them: one TLS certificate for both, the switchboard binds first,
//! so the rendezvous can advertise its real address and key (`sb=` and `sbfp=` of `CFG` and
//! `ITR`), and every ticket an introduction issues is granted to the switchboard before the
//! `ITR` lines that carry it are sent.
//!
//! ```no_run
//! use p2p_servers::rendezvous::RendezvousOptions;
//! use p2p_servers::services::{self, ServicesOptions};
//! use p2p_servers::switchboard::SwitchboardOptions;
//! use p2p_servers::tls::ServerTls;
//! let running = services::start(ServicesOptions {
//!     rendezvous: RendezvousOptions {
//!         listen: "127.0.0.1:0".parse()?,
//!         // The one certificate both services present.
//!         tls: ServerTls::self_signed_in(&std::env::temp_dir().join("services-example"), &[])?,
//!         ..RendezvousOptions::default()
//!     },
//!     switchboard: Some(SwitchboardOptions {
//!         listen: "127.0.0.1:0".parse()?,
//!         ..SwitchboardOptions::default()
//!     }),
//!     advertise_switchboard: None,
//! })?;
//! println!(
//!     "rendezvous on {}, switchboard on {:?}",
//!     running.rendezvous().local_addr(),
//!     running.switchboard_addr()
//! );
//! running.shutdown();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::net::SocketAddr;

use crate::rendezvous::{RendezvousError, RendezvousHandle, RendezvousOptions};
use crate::switchboard::{RelayStats, SwitchboardError, SwitchboardHandle, SwitchboardOptions};
use crate::tls::ServerTls;

/// What [`start`] needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicesOptions {
    /// The rendezvous server. Its `tls` is the one certificate both services present. Its
    /// `config.switchboard_addr` and `config.switchboard_fingerprint` are replaced by the
    /// switchboard's advertised address and key (or `None` without a switchboard).
    pub rendezvous: RendezvousOptions,
    /// The switchboard relay; `None` runs without one (`CFG` and `ITR` then carry no `sb=`).
    /// Its `tls` is replaced by the rendezvous's.
    pub switchboard: Option<SwitchboardOptions>,
    /// The switchboard address to advertise instead of the bound one, for hosts behind 1:1 NAT.
    /// Port 0 stands for the bound port.
    pub advertise_switchboard: Option<SocketAddr>,
}

/// Why [`start`] failed. Whatever had started is stopped again.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServicesError {
    /// The rendezvous server did not start.
    #[error(transparent)]
    Rendezvous(#[from] RendezvousError),
    /// The switchboard did not start (not a `source`: it is part of this message).
    #[error("switchboard: {0}")]
    Switchboard(SwitchboardError),
    /// The options contradict each other.
    #[error("{0}")]
    Invalid(&'static str),
}

/// The running rendezvous server and, if it was asked for, the switchboard. Dropping it stops
/// both, as does [`shutdown`](Services::shutdown).
#[derive(Debug)]
pub struct Services {
    // Declared first so it is dropped first: no ticket is granted to a stopped switchboard.
    rendezvous: RendezvousHandle,
    switchboard: Option<SwitchboardHandle>,
    advertised: Option<SocketAddr>,
    tls: ServerTls,
}

/// Starts the switchboard (if asked for), then the rendezvous server advertising it and handing
/// it every ticket. Each runs on a runtime of its own.
pub fn start(options: ServicesOptions) -> Result<Services, ServicesError> {
    start_inner(options, None)
}

/// [`start`], with the rendezvous server served as a task on the caller's multi-threaded
/// runtime (see [`RendezvousHandle::spawn_on`]); the switchboard keeps its own current-thread
/// runtime on a thread of its own (see [`crate::switchboard`] for why). This is how the binary
/// runs them. Call [`Services::shutdown`] outside that runtime's worker threads.
pub fn start_on(
    runtime: &tokio::runtime::Handle,
    options: ServicesOptions,
) -> Result<Services, ServicesError> {
    start_inner(options, Some(runtime))
}

fn start_inner(
    options: ServicesOptions,
    runtime: Option<&tokio::runtime::Handle>,
) -> Result<Services, ServicesError> {
    let ServicesOptions {
        mut rendezvous,
        mut switchboard,
        advertise_switchboard,
    } = options;
    let tls = rendezvous.tls.clone();
    if switchboard.is_none() && advertise_switchboard.is_some() {
        return Err(ServicesError::Invalid(
            "a switchboard address to advertise needs a switchboard",
        ));
    }
    if let Some(sb) = &mut switchboard {
        sb.tls = tls.clone();
    }
    let switchboard = switchboard
        .map(SwitchboardHandle::start)
        .transpose()
        .map_err(ServicesError::Switchboard)?;
    let advertised = switchboard.as_ref().map(|sb| {
        let bound = sb.local_addr();
        match advertise_switchboard {
            Some(addr) if addr.port() == 0 => SocketAddr::new(addr.ip(), bound.port()),
            Some(addr) => addr,
            None => bound,
        }
    });
    rendezvous.config.switchboard_addr = advertised;
    rendezvous.config.switchboard_fingerprint =
        switchboard.as_ref().map(SwitchboardHandle::fingerprint);
    let granter = switchboard.as_ref().map(SwitchboardHandle::granter);
    let rendezvous = match runtime {
        Some(runtime) => RendezvousHandle::spawn_on(runtime, rendezvous, granter)?,
        None => RendezvousHandle::start_with_switchboard(rendezvous, granter)?,
    };
    Ok(Services {
        rendezvous,
        switchboard,
        advertised,
        tls,
    })
}

impl Services {
    /// The rendezvous server.
    pub fn rendezvous(&self) -> &RendezvousHandle {
        &self.rendezvous
    }

    /// The switchboard, if it runs.
    pub fn switchboard(&self) -> Option<&SwitchboardHandle> {
        self.switchboard.as_ref()
    }

    /// The fingerprint of the TLS key both services present.
    pub fn fingerprint(&self) -> shared::identity::Fingerprint {
        self.tls.fingerprint()
    }

    /// The certificate both services present.
    pub fn tls(&self) -> &ServerTls {
        &self.tls
    }

    /// The switchboard address clients are told (`sb=`), if it runs.
    pub fn switchboard_addr(&self) -> Option<SocketAddr> {
        self.advertised
    }

    /// Stops the rendezvous server (clients get `OUT 0 SSD`), then the switchboard (clients
    /// get `ERROR 503`); returns the switchboard's final counters.
    pub fn shutdown(self) -> Option<RelayStats> {
        let Services {
            rendezvous,
            switchboard,
            ..
        } = self;
        rendezvous.shutdown();
        switchboard.map(SwitchboardHandle::shutdown)
    }
}
