//! A malicious rendezvous server for tests: the real sans-IO core
//! ([`shared::rendezvous::RendezvousServer`]) behind TLS, with a real switchboard, whose one
//! misdeed (once [`EvilServer::turn_evil`] was called) is to replace the peer's key in every
//! `ITR` with a key of its own, so that it could sit in the middle of the chat. It keeps every
//! line it receives, to show that no message text reaches it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::serve_in_background;
use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use p2p_servers::rendezvous::{LineCodec, Side};
use p2p_servers::switchboard::{SwitchboardHandle, SwitchboardOptions};
use p2p_servers::tls::{ServerTls, channel_binding};
use shared::rendezvous::{
    ConnId, DirectorySnapshot, Kdf, Line, Output, RendezvousConfig, RendezvousServer,
};
use tokio::sync::mpsc;
use tokio_util::codec::Framed;

/// The key the evil server hands out instead of the real ones.
pub const EVIL_KEY: [u8; 32] = [0x66; 32];

type Core = Arc<Mutex<RendezvousServer>>;
type Conns = Arc<Mutex<HashMap<ConnId, mpsc::UnboundedSender<Line>>>>;

/// The running double.
pub struct EvilServer {
    /// Where clients connect.
    pub addr: SocketAddr,
    evil: Arc<AtomicBool>,
    received: Arc<Mutex<Vec<String>>>,
    switchboard: Option<SwitchboardHandle>,
}

impl EvilServer {
    /// Starts the double on 127.0.0.1 with a switchboard of its own.
    pub fn start() -> EvilServer {
        let tls = ServerTls::ephemeral().expect("TLS");
        let switchboard = SwitchboardHandle::start(SwitchboardOptions {
            listen: "127.0.0.1:0".parse().expect("addr"),
            tls: tls.clone(),
            ..SwitchboardOptions::default()
        })
        .expect("switchboard");
        let config = RendezvousConfig {
            min_kdf: Kdf {
                memory_kib: 8,
                iterations: 1,
                lanes: 1,
            },
            switchboard_addr: Some(switchboard.local_addr()),
            switchboard_fingerprint: Some(tls.fingerprint()),
            ..RendezvousConfig::default()
        };
        let core = Arc::new(Mutex::new(RendezvousServer::new(
            config,
            DirectorySnapshot::default(),
            [3; 32],
            [4; 32],
        )));
        let granter = switchboard.granter();
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("addr");
        let evil = Arc::new(AtomicBool::new(false));
        let received = Arc::new(Mutex::new(Vec::new()));
        let conns: Conns = Arc::default();
        let (task_evil, task_received) = (evil.clone(), received.clone());
        serve_in_background(std_listener, move |listener| async move {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.config().clone());
            let next = AtomicU64::new(1);
            loop {
                let Ok((stream, remote)) = listener.accept().await else {
                    continue;
                };
                let conn = ConnId(next.fetch_add(1, Ordering::Relaxed));
                let (core, conns, acceptor) = (core.clone(), conns.clone(), acceptor.clone());
                let (evil, received, granter) =
                    (task_evil.clone(), task_received.clone(), granter.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let Ok(binding) = channel_binding(tls.get_ref().1) else {
                        return;
                    };
                    let (tx, mut rx) = mpsc::unbounded_channel();
                    conns.lock().expect("conns").insert(conn, tx);
                    let step = |input: &dyn Fn(&mut RendezvousServer)| {
                        let mut core = core.lock().expect("core");
                        input(&mut core);
                        while let Some(output) = core.poll_output() {
                            match output {
                                Output::Send { conn, mut line } => {
                                    if evil.load(Ordering::Relaxed) {
                                        rewrite_key(&mut line);
                                    }
                                    if let Some(tx) = conns.lock().expect("conns").get(&conn) {
                                        let _ = tx.send(line);
                                    }
                                }
                                Output::Close(conn) => {
                                    conns.lock().expect("conns").remove(&conn);
                                }
                                Output::Ticket(ticket) => granter.grant(ticket),
                                _ => {}
                            }
                        }
                    };
                    step(&|core| core.handle_connected(Instant::now(), conn, remote, binding));
                    let mut framed = Framed::new(tls, LineCodec::new(Side::Server));
                    loop {
                        tokio::select! {
                            line = rx.recv() => match line {
                                Some(line) => {
                                    if framed.send(line).await.is_err() {
                                        break;
                                    }
                                }
                                None => break,
                            },
                            item = framed.next() => match item {
                                Some(Ok(Ok(line))) => {
                                    received
                                        .lock()
                                        .expect("received")
                                        .push(format!("{} {} {}", line.command, line.trid, line.params.join(" ")));
                                    step(&|core| core.handle_line(Instant::now(), conn, line.clone()));
                                }
                                _ => break,
                            },
                        }
                    }
                    conns.lock().expect("conns").remove(&conn);
                    step(&|core| core.handle_disconnected(Instant::now(), conn));
                });
            }
        });
        EvilServer {
            addr,
            evil,
            received,
            switchboard: Some(switchboard),
        }
    }

    /// From now on every `ITR` carries [`EVIL_KEY`] as the peer's key.
    pub fn turn_evil(&self) {
        self.evil.store(true, Ordering::Relaxed);
    }

    /// Every line the server received, as text.
    pub fn received(&self) -> Vec<String> {
        self.received.lock().expect("received").clone()
    }

    /// Stops the switchboard and returns how many `DATA` frames it relayed.
    pub fn switchboard_frames(&mut self) -> u64 {
        self.switchboard
            .take()
            .map_or(0, |sb| sb.shutdown().core.relayed_frames)
    }
}

/// Replaces `key=...` in an `ITR` line.
fn rewrite_key(line: &mut Line) {
    if line.command.as_str() != "ITR" {
        return;
    }
    let evil = format!(
        "key={}",
        base64::engine::general_purpose::STANDARD.encode(EVIL_KEY)
    );
    for param in &mut line.params {
        if param.starts_with("key=") {
            *param = evil.clone();
        }
    }
}
