//! The rendezvous server and the switchboard relay, started together and wired the way the
//! `stun-server` binary runs them: the switchboard binds first, so the rendezvous can advertise
//! its real address (`sb=` of `CFG` and `ITR`), and every ticket an introduction issues is
//! granted to the switchboard before the `ITR` lines that carry it are sent.
//!
//! ```no_run
//! use stun_server::rendezvous::RendezvousOptions;
//! use stun_server::services::{self, ServicesOptions};
//! use stun_server::switchboard::SwitchboardOptions;
//! let running = services::start(ServicesOptions {
//!     rendezvous: RendezvousOptions {
//!         listen: "127.0.0.1:0".parse()?,
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

/// What [`start`] needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicesOptions {
    /// The rendezvous server. Its `config.switchboard_addr` is replaced by the switchboard's
    /// advertised address (or `None` without a switchboard).
    pub rendezvous: RendezvousOptions,
    /// The switchboard relay; `None` runs without one (`CFG` and `ITR` then carry no `sb=`).
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
}

/// Starts the switchboard (if asked for), then the rendezvous server advertising it and handing
/// it every ticket.
pub fn start(options: ServicesOptions) -> Result<Services, ServicesError> {
    let ServicesOptions {
        mut rendezvous,
        switchboard,
        advertise_switchboard,
    } = options;
    if switchboard.is_none() && advertise_switchboard.is_some() {
        return Err(ServicesError::Invalid(
            "a switchboard address to advertise needs a switchboard",
        ));
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
    let granter = switchboard.as_ref().map(SwitchboardHandle::granter);
    let rendezvous = RendezvousHandle::start_with_switchboard(rendezvous, granter)?;
    Ok(Services {
        rendezvous,
        switchboard,
        advertised,
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
