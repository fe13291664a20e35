//! shardci's scheduling: the synchronous scheduler core (queue, priorities, label matching,
//! leases, attempts, fencing, retries, cancellation) driven by events with an injected clock,
//! and the simulator that drives the same core in virtual time to size fleets and compare
//! strategies. No I/O: the coordinator's actor and the simulator are its only drivers.

pub mod schedule;
pub mod simulate;
