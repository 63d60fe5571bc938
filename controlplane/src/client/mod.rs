//! What a team runs against the API from its own machine or CI: `controlplane workflows run`
//! and `controlplane tasks submit`.

pub mod tasks;
pub mod workflows;
