//! Test infrastructure for the toolkit: a deterministic network simulator and (with root) a lab
//! of real kernel NATs.
//!
//! - [`sim`]: an in-process network in virtual time with seeded loss, delay, jitter and
//!   reordering, and a NAT model on RFC 4787's axes. It drives the sans-IO cores of `shared`
//!   directly, so a whole scenario runs in milliseconds and identically every time.
//! - [`nat_types`]: the NAT types both the simulator and the lab build, and the behaviour a
//!   few raw probes must observe behind each (the contract the two must agree on).
//! - [`prometheus`]: reading a scrape of `stun-server --metrics` (the text format, and the
//!   connectivity telemetry per NAT pair).
//! - [`lab`]: real kernel NATs (network namespaces, veth pairs, nftables) for the tests in
//!   `tests/tests/lab_*.rs`, which need root and nftables (without them they print `SKIPPED`,
//!   or fail under `CI=true`).
//!
//! A whole hole-punching scenario in the simulator, in virtual time:
//!
//! ```
//! use std::time::Duration;
//! use tests::nat_types::PunchNat;
//! use tests::sim::{PairSetup, PunchPair};
//! let setup = PairSetup::new(PunchNat::PortRestrictedCone, PunchNat::FullCone, 1);
//! let outcome = PunchPair::build(&setup).run(Duration::from_secs(30)).unwrap();
//! assert!(outcome.direct);
//! ```

pub mod lab;
pub mod nat_types;
pub mod prometheus;
pub mod sim;
