//! Stacksmith control plane: the HTTP API teams call to submit and follow tasks.
//!
//! `router(state)` builds the application; `serve(config)` connects to Postgres and Redis,
//! binds and serves until SIGTERM. Tests use [`Server`] to bind 127.0.0.1:0.
//!
//! The modules are layers (see ARCHITECTURE.md; `tests/layers.rs` keeps them so): a module
//! imports only from layers below its own, and no modules import each other in a cycle.
//!
//! | layer | modules |
//! | --- | --- |
//! | 0 | `config`, `metrics`, `shutdown` |
//! | 1 | `model` |
//! | 2 | `store` |
//! | 3 | `queue` |
//! | 4 | `http` |
//! | 5 | `worker`, `autoscaler`, `client` |
//! | 6 | `serve` |

pub mod autoscaler;
pub mod client;
pub mod config;
pub mod http;
pub mod metrics;
pub mod model;
pub mod queue;
pub mod serve;
pub mod shutdown;
pub mod store;
pub mod worker;

pub use config::Config;
pub use http::server::{ServeError, Server, connect, router};
pub use http::state::AppState;
pub use serve::serve;
