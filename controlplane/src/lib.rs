//! Stacksmith control plane: the HTTP API teams call to submit and follow tasks.
//!
//! `router(state)` builds the application; `serve(config)` connects to Postgres and Redis,
//! binds and serves until SIGTERM. Tests use [`server::Server`] to bind 127.0.0.1:0.

pub mod api;
pub mod auth;
pub mod autoscaler;
pub mod config;
pub mod db;
pub mod metrics;
pub mod openapi;
pub mod problem;
pub mod rate_limit;
pub mod scheduler;
pub mod server;
pub mod shutdown;
pub mod state;
pub mod worker;
pub mod workflow_client;

pub use config::Config;
pub use server::{ServeError, Server, connect, router, serve};
pub use state::AppState;
