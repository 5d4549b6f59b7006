//! Phases of a two-sided chat test: both sides type a few lines, the test waits until each
//! side has received what the other typed, and at the end both inputs close. The chat lab and
//! the reconnect lab both drive their chats so; one definition keeps their lines and waits
//! alike.

use std::time::{Duration, Instant};

use super::{ChatOutcome, ChatPeer, messages};

/// Each side types five lines naming `phase` (`USER PHASE line K`); `sent` records them per
/// side, for the delivery check at the end.
pub fn type_phase(peers: &mut [ChatPeer; 2], sent: &mut [Vec<String>; 2], phase: &str) {
    for (peer, sent) in peers.iter_mut().zip(sent.iter_mut()) {
        let lines: Vec<String> = (0..5)
            .map(|k| format!("{} {phase} line {k}", peer.user))
            .collect();
        peer.send_lines(&lines)
            .unwrap_or_else(|e| panic!("{}: cannot type: {e}", peer.user));
        sent.extend(lines);
    }
}

/// Waits, at most `within` in all, until each side has received as many messages as the other
/// typed. The error names the side that did not, with its logs. It counts only: what arrived,
/// in which order, is for the caller's check at the end.
pub fn wait_delivered(
    peers: &mut [ChatPeer; 2],
    sent: &[Vec<String>; 2],
    within: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + within;
    for (i, peer) in peers.iter_mut().enumerate() {
        let want = sent[1 - i].len();
        let left = deadline.saturating_duration_since(Instant::now());
        if !peer.wait_for(left, |events| messages(events).len() >= want) {
            return Err(format!(
                "{}: not every message within {within:?}\n{}",
                peer.user,
                peer.logs()
            ));
        }
    }
    Ok(())
}

/// Ends both sides' input (both before either exit is awaited: each side's end reaches the
/// other), waits at most `exit` for each to exit, and returns their outcomes and reports.
pub fn end_both(mut peers: [ChatPeer; 2], exit: Duration) -> ([ChatOutcome; 2], String) {
    for peer in &mut peers {
        peer.close_stdin();
    }
    let [a, b] = peers;
    let outcomes = [a.finish(exit), b.finish(exit)];
    let reports = format!("{}\n{}", outcomes[0].report(80), outcomes[1].report(80));
    (outcomes, reports)
}
