//! Making a link, up to the introduction: the endpoint socket and its server-reflexive
//! address, the NAT classification, the offer, the invitation and its answer, and the check
//! of the peer's identity key against the one pinned for it.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shared::identity::{Fingerprint, safety_number};
use shared::nat_classifier::{NatType, Report};
use shared::rendezvous::{SessionId, UserName};
use tokio::sync::mpsc;

use crate::classify::{ClassifyOptions, classify};
use crate::home::{KeyCheck, UserHome};
use crate::portmap::{self, HeldMapping, Method};
use crate::rendezvous::{
    Allocation, Backoff, Candidate, CandidateKind, CloseReason, MAX_CANDIDATES, NatKind, Offer,
    OutReason, RendezvousClient,
};

use super::endpoint::Endpoint;
use super::event::{LinkEvent, ServerState};
use super::intro::{self, Introduced};
use super::{LinkConfig, LinkError, LinkSession, driver};

/// How long the STUN Binding may take before we go on without a srflx candidate.
const STUN_BUDGET: Duration = Duration::from_secs(2);
/// How long PCP or NAT-PMP may take before we go on without it. A gateway that runs the
/// service answers within milliseconds; one that runs none answers with ICMP at once, or
/// drops the request (a firewall on the router's input), which costs this whole budget. One
/// PCP request and two NAT-PMP requests (0 and 250 ms) fit in it.
const MAPPING_BUDGET: Duration = Duration::from_millis(600);
/// How long UPnP-IGD may take: SSDP discovery alone may take 3.5 s (`portmap::upnp`), then
/// two SOAP exchanges on the LAN.
const UPNP_BUDGET: Duration = Duration::from_secs(5);
/// The lease a link's mapping asks for; renewed at half of what is granted while the link
/// lives, so a mapping a crashed client leaves behind ends within this.
const MAPPING_LEASE: Duration = Duration::from_secs(120);

/// Everything up to the introduction: the endpoint socket, the offer, the wait for the peer
/// (answering `ring` if given), the key check.
pub(super) async fn prepare(
    session: &LinkSession,
    peer: UserName,
    ring: Option<SessionId>,
    config: &LinkConfig,
    events: &mpsc::UnboundedSender<LinkEvent>,
) -> Result<(driver::Setup, Endpoint, Option<HeldMapping>), LinkError> {
    let (client, info) = (&session.client, &session.info);
    let args = config;
    let server = client.server();
    // By default one dual-stack socket, so the link can punch over IPv6 and IPv4 alike.
    let bind = args
        .bind
        .unwrap_or(SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)));
    let mut endpoint = Endpoint::bind(bind).await.map_err(|source| LinkError::Io {
        what: format!("cannot bind the UDP endpoint socket on {bind}"),
        source,
    })?;
    // The gateway is asked for a port mapping while the STUN Binding and the classification
    // run. The offer waits for the mapping only when the classification says the NAT needs
    // one (symmetric, or not classified): a gateway that drops PCP and NAT-PMP, or UPnP's
    // SSDP discovery (up to 3.5 s), then delays the offer; for any other NAT the
    // server-reflexive address serves and the offer goes as soon as the probe is done.
    let port = endpoint.local_addr().port();
    let methods = match info.stun {
        Some(stun) if !stun.ip().is_loopback() => args.port_mapping.methods(),
        // Tests and one-machine setups: never ask this machine's real gateway.
        _ => &[],
    };
    let (mapping_wanted_tx, mapping_wanted) = tokio::sync::watch::channel(true);
    let probe = async {
        let srflx = match info.stun {
            Some(stun) => match endpoint.stun_binding(stun, STUN_BUDGET).await {
                Ok(addr) => Some(addr),
                Err(e) => {
                    tracing::warn!(error = %e, "no server-reflexive address; host candidates only");
                    None
                }
            },
            None => {
                tracing::warn!("the server advertises no STUN service; host candidates only");
                None
            }
        };
        let report = if args.classify {
            classify_nat(info.stun, bind.ip()).await
        } else {
            None
        };
        if srflx.is_none() || report.as_ref().is_some_and(|r| !needs_mapping(r)) {
            let _ = mapping_wanted_tx.send(false);
        }
        (srflx, report)
    };
    let ((srflx, report), mapping) =
        tokio::join!(probe, port_mapping(methods, port, mapping_wanted));
    let mapping = match (mapping, srflx) {
        (Some(held), Some(srflx)) => keep_if_reachable(held, srflx).await,
        (Some(held), None) => {
            tracing::info!("no server-reflexive address to check the mapping against; not offered");
            held.delete().await;
            None
        }
        (None, _) => None,
    };
    let mapped = mapping
        .as_ref()
        .and_then(HeldMapping::granted)
        .map(|m| m.external);
    let keys = session.identity.keypair();
    let include_loopback = server.ip().is_loopback();
    let hosts = endpoint.host_candidates(include_loopback);
    let mut offer = build_offer(keys.public.0, &hosts, srflx, report.as_ref());
    add_mapped(&mut offer, mapped);
    tracing::info!(local = %endpoint.local_addr(), offer = ?offer.to_params(), "offer ready");

    let deadline = Instant::now() + args.wait;
    let introduced =
        await_introduction_reconnecting(session, &peer, &offer, deadline, ring, events).await;
    let checked = introduced.and_then(|(client, introduced)| {
        let event = check_peer_key(
            &session.home,
            (session.home.user(), &session.identity.public()),
            &peer,
            &introduced.intro.offer.key,
            args.accept_new_key,
        )?;
        Ok((client, introduced, event))
    });
    let (client, Introduced { intro, received }, event) = match checked {
        Ok(checked) => checked,
        Err(e) => {
            // No link: the mapping goes now, not with its lease.
            if let Some(mapping) = mapping {
                mapping.delete().await;
            }
            return Err(e);
        }
    };
    let client = &client;
    if let Some(event) = event {
        let _ = events.send(event);
    }
    // With a mapping our endpoint is reachable from anyone at the mapped address, whatever
    // the NAT does for other sockets; the peer reads our `mapped` candidate the same way.
    let local_nat = match (&mapped, report.as_ref()) {
        (Some(_), _) => {
            let info = shared::punch::NatInfo::reachable_by_mapping();
            info.nat_type.map(|t| (t, info.port_allocation))
        }
        (None, report) => report.map(|r| (r.nat_type, r.port_allocation)),
    };
    let setup = driver::Setup {
        client: client.clone(),
        peer,
        intro: *intro,
        received,
        keys,
        local_nat,
        punch: args.direct,
        stun: info.stun,
        offer,
        include_loopback,
        relogin: Some(session.relogin.clone()),
        streams: args.streams,
        report_outcomes: args.telemetry,
        port_mapping: mapping
            .as_ref()
            .and_then(HeldMapping::granted)
            .map(|m| m.method),
    };
    Ok((setup, endpoint, mapping))
}

/// Whether a NAT classified as `report` needs a port mapping for peers to reach it: only a
/// symmetric NAT (or one the classifier could not judge) hides the port our peer must reach;
/// for the others the server-reflexive address already serves.
fn needs_mapping(report: &Report) -> bool {
    matches!(
        report.nat_type,
        NatType::Symmetric | NatType::UnsupportedServer
    )
}

/// A port mapping of the endpoint socket's `port` on the default gateway with the first of
/// `methods` that grants one, each tried within [`MAPPING_BUDGET`] ([`UPNP_BUDGET`] for
/// UPnP), unless `wanted` turns false first: then the attempts go on in the background and
/// whatever they are granted late is deleted at once, so giving up never leaves a mapping
/// behind and never waits for a gateway that drops our requests.
async fn port_mapping(
    methods: &'static [Method],
    port: u16,
    mut wanted: tokio::sync::watch::Receiver<bool>,
) -> Option<HeldMapping> {
    if methods.is_empty() {
        return None;
    }
    let gateway = portmap::default_gateway()?;
    let (granted, mut taken) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        if let Some(held) = try_methods(methods, gateway, port).await
            && let Err(held) = granted.send(held)
        {
            tracing::info!("a port mapping came after the link stopped wanting it; deleting it");
            held.delete().await;
        }
    });
    let unwanted = async {
        // A dropped sender means the probe finished wanting a mapping: wait for it.
        if wanted.wait_for(|wanted| !wanted).await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        biased;
        held = &mut taken => held.ok(),
        () = unwanted => {
            // One may have been granted just now: take it back rather than drop it.
            taken.close();
            if let Ok(held) = taken.try_recv() {
                held.delete().await;
            }
            tracing::debug!("the NAT needs no port mapping; not waiting for one");
            None
        }
    }
}

/// The first mapping one of `methods` grants, in their order.
async fn try_methods(
    methods: &'static [Method],
    gateway: std::net::Ipv4Addr,
    port: u16,
) -> Option<HeldMapping> {
    for &method in methods {
        let attempt = portmap::map(method, gateway, port, MAPPING_LEASE, rand::random());
        let budget = match method {
            Method::Upnp => UPNP_BUDGET,
            Method::Pcp | Method::NatPmp => MAPPING_BUDGET,
        };
        match tokio::time::timeout(budget, attempt).await {
            Ok(Ok(held)) => return Some(held),
            Ok(Err(e)) => {
                tracing::info!(protocol = method.as_str(), error = %e, "no port mapping");
            }
            Err(_) => tracing::info!(protocol = method.as_str(), "no port mapping in time"),
        }
    }
    None
}

/// `held` if its external IP is our server-reflexive IP. A mapping with another external IP
/// sits behind a further NAT and is no use to the peer: it is deleted again.
async fn keep_if_reachable(held: HeldMapping, srflx: SocketAddr) -> Option<HeldMapping> {
    let external = held.granted().map(|m| m.external);
    if external.is_some_and(|e| e.ip() == srflx.ip()) {
        return Some(held);
    }
    tracing::info!(?external, %srflx, "the mapping is behind another NAT; not offered");
    held.delete().await;
    None
}

/// Puts the `mapped` candidate first in `offer` (the peer probes it first), keeping at most
/// [`MAX_CANDIDATES`].
pub fn add_mapped(offer: &mut Offer, mapped: Option<SocketAddr>) {
    let Some(addr) = mapped else {
        return;
    };
    offer.candidates.insert(
        0,
        Candidate {
            kind: CandidateKind::Mapped,
            addr,
        },
    );
    offer.candidates.truncate(MAX_CANDIDATES);
}

/// Runs the link (`run`) while keeping `mapping` renewed, then deletes the mapping before
/// returning how the link ended: the link's end waits for the deletion (bounded by the
/// protocol's retransmissions), so a program that joins its link leaves nothing behind.
pub(super) async fn with_mapping<T>(
    mapping: Option<HeldMapping>,
    run: impl Future<Output = T>,
) -> T {
    let Some(mut mapping) = mapping else {
        return run.await;
    };
    tokio::pin!(run);
    let mut renewing = true;
    let result = loop {
        tokio::select! {
            result = &mut run => break result,
            () = mapping.maintain(), if renewing => {
                tracing::warn!("the port mapping ended; the link goes on without it");
                renewing = false;
            }
        }
    };
    let external = mapping.granted().map(|m| m.external);
    let deleted = mapping.delete().await;
    tracing::info!(
        ?external,
        deleted,
        "port mapping deleted at the end of the link"
    );
    result
}

/// [`intro::await_introduction`], logging in again when the rendezvous connection is lost
/// while we wait for the peer (a server restart, a network change): the wait goes on until
/// the deadline with a fresh connection and a fresh invitation. Returns the client that got
/// the introduction.
async fn await_introduction_reconnecting(
    session: &LinkSession,
    peer: &UserName,
    offer: &Offer,
    deadline: Instant,
    mut ring: Option<SessionId>,
    events: &mpsc::UnboundedSender<LinkEvent>,
) -> Result<(Arc<RendezvousClient>, Introduced), LinkError> {
    let mut client = session.client.clone();
    loop {
        let result = intro::await_introduction(&client, peer, offer, deadline, ring).await;
        let lost = match client.close_reason() {
            None | Some(CloseReason::ClosedByClient) => false,
            Some(CloseReason::LoggedOut(OutReason::OtherLogin)) => false,
            Some(_) => true,
        };
        match result {
            Err(e) if lost && !matches!(e, LinkError::PeerAbsent(_)) => {
                tracing::info!(error = %e, "the rendezvous connection was lost while waiting");
            }
            other => return other.map(|introduced| (client, introduced)),
        }
        let _ = events.send(LinkEvent::Server(ServerState::Reconnecting));
        let mut backoff = Backoff::default();
        let reason = client.close_reason();
        let relogged = tokio::select! {
            relogged = session.relogin.reconnect_after(reason.as_ref(), &mut backoff) => relogged?,
            () = tokio::time::sleep_until(deadline.into()) => {
                return Err(LinkError::PeerAbsent(peer.clone()));
            }
        };
        client = Arc::new(relogged.0);
        let _ = events.send(LinkEvent::Server(ServerState::Connected));
        // A ring from before the loss belongs to the old connection's invitation.
        ring = None;
    }
}

/// The key rule of an introduction: a peer with no pinned key gets `key` pinned (unverified);
/// the pinned key goes on; another key is [`LinkError::KeyChanged`] unless `accept_new`,
/// which re-pins it unverified. The check and the pin happen under the pins' lock. A key of
/// small order is [`LinkError::UnusablePeerKey`] before anything is pinned. Returns the event
/// to report when something was pinned.
pub fn check_peer_key(
    home: &UserHome,
    me: (&UserName, &[u8; 32]),
    peer: &UserName,
    key: &[u8; 32],
    accept_new: Option<Fingerprint>,
) -> Result<Option<LinkEvent>, LinkError> {
    if shared::identity::is_small_order_key(key) {
        return Err(LinkError::UnusablePeerKey(peer.clone()));
    }
    let new = Fingerprint::of_identity_key(key);
    // Only the very key the user accepted (by its fingerprint) replaces the pin.
    let accept_new = accept_new == Some(new);
    let check = home.update_pins(|pins| {
        let check = pins.check(peer, key);
        if check == KeyCheck::New || accept_new {
            pins.pin(peer, *key);
        }
        check
    })?;
    match check {
        KeyCheck::Same => Ok(None),
        KeyCheck::New => Ok(Some(LinkEvent::PeerKeyPinned {
            peer: peer.clone(),
            fingerprint: new,
        })),
        KeyCheck::Changed { old, .. } if !accept_new => Err(LinkError::KeyChanged {
            peer: peer.clone(),
            old: Fingerprint::of_identity_key(&old),
            new,
            safety_number: safety_number((me.0.as_str(), me.1), (peer.as_str(), key)),
        }),
        KeyCheck::Changed { old, was_verified } => Ok(Some(LinkEvent::PeerKeyReplaced {
            peer: peer.clone(),
            old: Fingerprint::of_identity_key(&old),
            new,
            was_verified,
        })),
    }
}

/// Classifies the NAT with the STUN service (on a blocking thread); `None` on any failure.
async fn classify_nat(stun: Option<SocketAddr>, bind_ip: IpAddr) -> Option<Report> {
    let Some(stun) = stun else {
        tracing::info!("no STUN service advertised: the NAT is not classified");
        return None;
    };
    let options = ClassifyOptions {
        local_ip: (!bind_ip.is_unspecified()).then_some(bind_ip),
        ..ClassifyOptions::default()
    };
    match tokio::task::spawn_blocking(move || classify(stun, options)).await {
        Ok(Ok(report)) => {
            tracing::info!(nat = ?report.nat_type, alloc = ?report.port_allocation, "classified");
            Some(report)
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot classify the NAT");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "the classification panicked");
            None
        }
    }
}

/// The offer: our key, the srflx candidate first, then host candidates (duplicates of the
/// srflx address dropped; global IPv6 ones come first from
/// [`Endpoint::host_candidates`]), at most [`MAX_CANDIDATES`] in all; `nat=` and `alloc=`
/// when classified.
pub fn build_offer(
    key: [u8; 32],
    hosts: &[SocketAddr],
    srflx: Option<SocketAddr>,
    report: Option<&Report>,
) -> Offer {
    let mut offer = Offer::new(key);
    if let Some(addr) = srflx {
        offer.candidates.push(Candidate {
            kind: CandidateKind::Srflx,
            addr,
        });
    }
    for &addr in hosts {
        if offer.candidates.len() >= MAX_CANDIDATES {
            break;
        }
        if Some(addr) != srflx {
            offer.candidates.push(Candidate {
                kind: CandidateKind::Host,
                addr,
            });
        }
    }
    if let Some(report) = report {
        offer.nat = Some(NatKind::from(report.nat_type));
        offer.alloc = report.port_allocation.map(Allocation::from);
    }
    offer
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::home::Home;

    #[test]
    fn the_offer_leads_with_srflx_and_drops_duplicates() {
        let hosts: Vec<SocketAddr> = (1..=9)
            .map(|i| format!("10.0.0.{i}:4000").parse().unwrap())
            .collect();
        let srflx: SocketAddr = "10.0.0.1:4000".parse().unwrap();
        let offer = build_offer([1; 32], &hosts, Some(srflx), None);
        assert_eq!(offer.candidates.len(), MAX_CANDIDATES);
        assert_eq!(offer.candidates[0].kind, CandidateKind::Srflx);
        assert!(offer.candidates[1..].iter().all(|c| c.addr != srflx));
        offer.check().unwrap();
        assert_eq!(offer.nat, None);
    }

    /// The pin rules: first sight pins, the same key passes, another key stops the chat
    /// (with the new safety number) unless `--accept-new-key` names exactly that key, and a
    /// key of small order is refused before anything is pinned.
    #[test]
    fn peer_keys_are_pinned_checked_and_replaced_only_by_the_accepted_one() {
        let dir = std::env::temp_dir().join(format!(
            "p2p-chat-pins-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let home = Home::at(&dir);
        let alice = UserName::parse("alice").unwrap();
        let bob = UserName::parse("bob").unwrap();
        let user_home = home.user(&alice).unwrap();
        let me = (&alice, &[9; 32]);
        let (first, second, third) = ([1; 32], [2; 32], [3; 32]);
        let pinned = |h: &UserHome| h.pins().unwrap().get(&bob).map(|p| p.key);

        let mut low_order = [0xff; 32];
        low_order[0] = 0xec;
        low_order[31] = 0x7f;
        assert!(matches!(
            check_peer_key(&user_home, me, &bob, &low_order, None),
            Err(LinkError::UnusablePeerKey(_))
        ));
        assert_eq!(pinned(&user_home), None, "nothing pinned");

        check_peer_key(&user_home, me, &bob, &first, None).unwrap();
        assert_eq!(pinned(&user_home), Some(first));
        check_peer_key(&user_home, me, &bob, &first, None).unwrap();

        let Err(LinkError::KeyChanged {
            new, safety_number, ..
        }) = check_peer_key(&user_home, me, &bob, &second, None)
        else {
            panic!("a changed key must stop the chat");
        };
        assert_eq!(new, Fingerprint::of_identity_key(&second));
        assert_eq!(
            safety_number,
            shared::identity::safety_number(("bob", &second), ("alice", &[9; 32]))
        );
        // Accepting another fingerprint does not let this key through.
        let other = Some(Fingerprint::of_identity_key(&third));
        assert!(check_peer_key(&user_home, me, &bob, &second, other).is_err());
        assert_eq!(pinned(&user_home), Some(first));
        check_peer_key(&user_home, me, &bob, &second, Some(new)).unwrap();
        assert_eq!(pinned(&user_home), Some(second));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
