//! The parts of the codec property tests that are not tests: the counting allocator, the
//! message model and the strategies that generate it.

pub mod allocations;
pub mod model;
pub mod strategies;
