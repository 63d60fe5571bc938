//! Stacksmith provisioner: reads a declarative stack file and stands up the platform it describes.
//!
//! The code map is in `ARCHITECTURE.md` at the repository root.

pub mod aws;
pub mod cli;
pub mod engine;
pub mod kubernetes;
pub mod policy;
pub mod stack;
pub mod state;
