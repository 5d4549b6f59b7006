//! Protocol code in the simulator, and the loop that drives it in virtual time.

use std::any::Any;
use std::net::SocketAddr;
use std::time::Instant;

use super::{Datagram, Network};

/// A sans-IO protocol core adapted to the simulator.
pub trait Agent: Any {
    /// Whether a datagram to this address is for this agent (it owns the socket).
    fn owns(&self, addr: SocketAddr) -> bool;
    /// A datagram arrived for one of the agent's sockets.
    fn handle_datagram(&mut self, now: Instant, datagram: Datagram);
    /// The next datagram to send now, if any.
    fn poll_transmit(&mut self, now: Instant) -> Option<Datagram>;
    /// When the agent next wants [`Agent::handle_timeout`].
    fn poll_timeout(&self) -> Option<Instant>;
    /// Time has reached (at least) the agent's timeout.
    fn handle_timeout(&mut self, now: Instant);
}

/// Why a simulation stopped early.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SimError {
    /// More steps than allowed: the scenario livelocks or the limit is too low.
    #[error("step limit of {0} reached")]
    StepLimit(u64),
}

/// A network and the agents on it.
pub struct Simulation {
    /// The network.
    pub net: Network,
    agents: Vec<Box<dyn Agent>>,
    /// Steps taken so far.
    pub steps: u64,
    /// Most steps [`Simulation::run_until`] may take in all.
    pub max_steps: u64,
}

impl Simulation {
    /// A simulation over `net` with a default limit of a million steps.
    pub fn new(net: Network) -> Self {
        Self {
            net,
            agents: Vec::new(),
            steps: 0,
            max_steps: 1_000_000,
        }
    }

    /// Adds an agent; returns its index for [`Simulation::agent`].
    pub fn add_agent(&mut self, agent: impl Agent) -> usize {
        self.agents.push(Box::new(agent));
        self.agents.len() - 1
    }

    /// The agent at `index` as its concrete type.
    pub fn agent<T: Agent>(&self, index: usize) -> &T {
        let any: &dyn Any = self.agents[index].as_ref();
        any.downcast_ref::<T>()
            .expect("agent type matches its index")
    }

    /// The agent at `index`, mutably.
    pub fn agent_mut<T: Agent>(&mut self, index: usize) -> &mut T {
        let any: &mut dyn Any = self.agents[index].as_mut();
        any.downcast_mut::<T>()
            .expect("agent type matches its index")
    }

    fn flush_transmits(&mut self) {
        let now = self.net.now();
        for agent in &mut self.agents {
            while let Some(d) = agent.poll_transmit(now) {
                self.net.send(d);
            }
        }
    }

    /// Runs until `deadline` (virtual), or until `done` returns true after a step. Time jumps
    /// straight to the next datagram or timer.
    pub fn run_until(
        &mut self,
        deadline: Instant,
        mut done: impl FnMut(&Simulation) -> bool,
    ) -> Result<(), SimError> {
        self.flush_transmits();
        loop {
            if done(self) {
                return Ok(());
            }
            self.steps += 1;
            if self.steps > self.max_steps {
                return Err(SimError::StepLimit(self.max_steps));
            }
            let timer = self.agents.iter().filter_map(|a| a.poll_timeout()).min();
            let packet = self.net.next_event();
            let next = match (timer, packet) {
                (Some(t), Some(p)) => t.min(p),
                (Some(t), None) => t,
                (None, Some(p)) => p,
                (None, None) => return Ok(()),
            };
            if next > deadline {
                return Ok(());
            }
            if packet == Some(next) {
                if let Some(delivery) = self.net.step() {
                    let now = self.net.now();
                    let dst = delivery.datagram.dst;
                    if let Some(agent) = self.agents.iter_mut().find(|a| a.owns(dst)) {
                        agent.handle_datagram(now, delivery.datagram);
                    }
                }
            } else {
                self.net.advance_to(next);
                let now = self.net.now();
                for agent in &mut self.agents {
                    if agent.poll_timeout().is_some_and(|t| t <= now) {
                        agent.handle_timeout(now);
                    }
                }
            }
            self.flush_transmits();
        }
    }
}
