//! The provisioning engine: resources and their graph, the pure planner, the provider seam, and
//! the concurrent executor that journals every provider call in state.
//!
//! Flow of `up`: derive the desired resource set from the stack ([`desired`]), build and
//! cycle-check the [`graph`], lock and load state, resolve pending operations left by a crash
//! ([`recovery`]), plan ([`planner`], pure), then walk the plan concurrently ([`executor`]).

pub mod address;
pub mod desired;
pub mod drift;
pub mod drift_render;
pub mod events;
pub mod executor;
pub mod fake;
pub mod graph;
pub mod lifetime;
pub mod plan;
pub mod planner;
pub mod provider;
pub mod recovery;
pub mod refresh;
pub mod render;
pub mod resource;
pub mod secrets;
pub mod types;
pub mod value;
pub mod zones;

pub use address::Address;
pub use resource::{DesiredResource, DesiredSet, ResourceType};
