//! Enrichment: what turns a kernel event into an access event. Volumes
//! (scan, watcher, registry), cgroups, pods (store, kube watch), the
//! Service endpoint map (store, kube watch), denied-open resolution, the
//! correlation maps, and the [`enricher`] itself: a function from a decoded
//! kernel event to an access event or a counted reason it was dropped.
//!
//! It may use `model` and `kernel`; outputs and the API read its stores.

pub mod cgroup;
pub mod correlation;
pub mod denied;
pub mod enricher;
pub mod follow;
pub mod pods;
pub mod services;
pub mod signals;
pub mod volumes;
pub mod watcher;
