//! The STUN server's driver: sockets, worker threads, TCP and shutdown around the sans-IO core
//! in [`shared::stun_server`].
//!
//! ```no_run
//! use p2p_servers::{ServerHandle, ServerOptions};
//! let server = ServerHandle::start(ServerOptions::default())?; // 127.0.0.1 + 127.0.0.2
//! println!("listening on {:?}", server.udp_addrs());
//! let stats = server.shutdown();
//! # Ok::<(), p2p_servers::StartError>(())
//! ```
//!
//! Each UDP worker thread owns its own four sockets (SO_REUSEPORT), reads and writes them in
//! batches of 32 with `recvmmsg`/`sendmmsg`, and runs its own copy of the protocol core, so
//! workers share nothing and scale with cores. TCP runs on one more thread.
//!
//! The same package runs the rendezvous server ([`rendezvous`]): accounts, presence and
//! introductions over TLS, with its SQLite store, and the switchboard relay ([`switchboard`]);
//! [`services`] starts the two wired together, as the binary does, with one certificate
//! ([`tls`]). [`metrics`] serves all their counters to Prometheus.

pub mod metrics;
mod options;
pub mod rendezvous;
mod server;
pub mod services;
mod sockets;
mod stats;
pub mod switchboard;
mod tcp;
pub mod tls;
pub mod udp_batch;
mod udp_worker;

pub use options::{DEFAULT_ALT_PORT, DEFAULT_PORT, OptionsError, ServerOptions};
pub use rendezvous::{
    BoundRendezvous, RendezvousError, RendezvousHandle, RendezvousOptions, TicketBook,
};
pub use server::{ServerHandle, StartError};
pub use sockets::{BindError, set_buffers};
pub use stats::Stats;

/// Lifts the soft limit on open files to the hard limit (every rendezvous client and every
/// switchboard peer is a socket). Used by the binary at start and by the benchmarks.
/// Returns the new limit when it changed.
pub fn raise_open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only the struct we pass, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur >= limit.rlim_max {
        return None;
    }
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: setrlimit reads only the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return None;
    }
    Some(limit.rlim_cur)
}

/// Gives the heap pages freed so far back to the kernel (glibc's `malloc_trim`): after a large
/// transient allocation, such as reading the whole directory at start, glibc keeps the freed
/// memory in its arenas and the process's RSS stays at the peak. Nothing elsewhere.
pub(crate) fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only releases free pages of the heap.
    unsafe {
        libc::malloc_trim(0);
    }
}
