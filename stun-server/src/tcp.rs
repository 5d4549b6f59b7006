//! STUN over TCP on the primary address (RFC 8489 section 6.2.2 framing: the header's length
//! field delimits messages; no extra framing).
//!
//! TCP is for clients whose UDP is blocked, so it sees little load: one thread with a
//! current-thread tokio runtime serves every connection, with a connection limit, an idle
//! timeout and a size limit so slow or hostile clients cost bounded memory.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shared::stun::{HEADER_LEN, message_length};
use shared::stun_server::{MAX_RESPONSE_OVERHEAD, Received, ServerSocket, StunServer, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use crate::Stats;
use crate::udp_worker::{RX_SLOT, STATS_EVERY};

/// Most simultaneous TCP connections.
pub(crate) const MAX_CONNECTIONS: usize = 1024;
/// A connection with no complete message for this long is closed.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves TCP until `shutdown` turns true; returns the counters. They are also copied into
/// `published` every [`STATS_EVERY`], like the UDP workers', so logs and metrics see TCP live.
pub(crate) fn run(
    listener: std::net::TcpListener,
    core: StunServer,
    mut shutdown: watch::Receiver<bool>,
    published: Arc<Mutex<Stats>>,
) -> Stats {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the TCP runtime; TCP is not served");
            return Stats::default();
        }
    };
    let core = Arc::new(Mutex::new(core));
    let counters = published;
    let accept_counters = counters.clone();
    let accept_core = core.clone();
    runtime.block_on(async move {
        let listener = match TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot use the TCP listener");
                return;
            }
        };
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let mut publish = tokio::time::interval(STATS_EVERY);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = publish.tick() => publish_core(&accept_counters, &accept_core),
                accepted = listener.accept() => {
                    let Ok((stream, peer)) = accepted else { continue };
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        if let Ok(mut c) = accept_counters.lock() { c.tcp_refused += 1; }
                        continue;
                    };
                    if let Ok(mut c) = accept_counters.lock() { c.tcp_connections += 1; }
                    let core = accept_core.clone();
                    tokio::spawn(async move {
                        serve(stream, peer, core).await;
                        drop(permit);
                    });
                }
            }
        }
    });
    // Dropping the runtime cancels the connection tasks still running.
    drop(runtime);
    publish_core(&counters, &core);
    counters.lock().map(|c| *c).unwrap_or_default()
}

/// Copies the core's counters next to the driver's.
fn publish_core(counters: &Mutex<Stats>, core: &Mutex<StunServer>) {
    if let (Ok(mut counters), Ok(core)) = (counters.lock(), core.lock()) {
        counters.core = *core.stats();
    }
}

/// Answers requests on one connection until it closes, idles out or sends garbage.
async fn serve(mut stream: TcpStream, peer: SocketAddr, core: Arc<Mutex<StunServer>>) {
    let _ = stream.set_nodelay(true);
    let mut request = vec![0u8; RX_SLOT];
    let mut response = vec![0u8; RX_SLOT + MAX_RESPONSE_OVERHEAD];
    loop {
        let header = &mut request[..HEADER_LEN];
        match tokio::time::timeout(IDLE_TIMEOUT, stream.read_exact(header)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        // Not STUN, or larger than we accept: there is no way to resynchronise a stream.
        let Some(total) = message_length(&request[..HEADER_LEN]).filter(|t| *t <= RX_SLOT) else {
            tracing::debug!(%peer, "closing TCP connection: not a STUN message");
            return;
        };
        match tokio::time::timeout(
            IDLE_TIMEOUT,
            stream.read_exact(&mut request[HEADER_LEN..total]),
        )
        .await
        {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let received = Received {
            local: ServerSocket::PRIMARY,
            transport: Transport::Tcp,
            from: peer,
            data: &request[..total],
        };
        let transmit = match core.lock() {
            Ok(mut core) => core.handle_datagram(Instant::now(), received, &mut response),
            Err(_) => return,
        };
        if let Some(t) = transmit {
            let write = stream.write_all(&response[..t.size]);
            if !matches!(tokio::time::timeout(IDLE_TIMEOUT, write).await, Ok(Ok(()))) {
                return;
            }
        }
    }
}
