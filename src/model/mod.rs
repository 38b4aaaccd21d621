//! Plain data shared by every layer, with no I/O: volume types and file
//! identities, the access event, pod/workload/source types, correlation
//! records, counters, health conditions and the enumerations the
//! configuration selects from.
//!
//! Nothing here imports another layer; every other layer may import it.

pub mod correlation;
pub mod event;
pub mod health;
pub mod pod;
pub mod settings;
pub mod stats;
pub mod volume;
