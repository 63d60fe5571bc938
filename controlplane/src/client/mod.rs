//! What a team runs against the API from its own machine or CI: `controlplane workflows run`.

pub mod workflows;
