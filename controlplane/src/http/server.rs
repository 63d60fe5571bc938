//! The HTTP server: the router with its protective layers, binding, and graceful shutdown.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Request, StatusCode};
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::get;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower::limit::ConcurrencyLimitLayer;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use utoipa_swagger_ui::SwaggerUi;

use super::state::AppState;
use super::{auth, metrics, openapi, problem};
use crate::config::Config;
use crate::store;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot connect to Postgres: {0}")]
    Database(#[from] sqlx::Error),
    #[error("cannot connect to Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
    #[error("the server task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// The pool autoscaler's error (`crate::autoscaler::AutoscalerError`), from `crate::serve`.
    #[error("cannot start the pool autoscaler: {0}")]
    Autoscaler(#[source] Box<dyn std::error::Error + Send + Sync>),
}

const RATE_LIMIT_CLEANUP_INTERVAL: Duration = Duration::from_secs(60);

/// The complete application: API, probes, metrics, OpenAPI document and docs page.
pub fn router(state: AppState) -> Router {
    let limits = state.config.limits.clone();
    let v1 = super::v1_routes(limits.batch_body_limit_bytes).route_layer(from_fn_with_state(
        state.clone(),
        auth::authenticate_and_limit,
    ));
    let openapi_document = openapi::document();
    let serve_document = openapi_document.clone();
    Router::new()
        .merge(v1)
        .merge(super::operational_routes())
        .route(
            "/openapi.json",
            get(move || {
                let document = serve_document.clone();
                async move { axum::Json(document) }
            }),
        )
        .merge(SwaggerUi::new("/docs").config(utoipa_swagger_ui::Config::from("/openapi.json")))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
                    let request_id = request
                        .headers()
                        .get("x-request-id")
                        .and_then(|value| value.to_str().ok())
                        .unwrap_or_default();
                    tracing::info_span!("request", request_id, method = %request.method(), path = request.uri().path())
                }).on_response(DefaultOnResponse::new().level(tracing::Level::INFO)))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(CatchPanicLayer::new())
                .layer(from_fn(problem::problem_responses))
                .layer(from_fn(metrics::track_requests))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Duration::from_millis(limits.request_timeout_ms),
                ))
                .layer(ConcurrencyLimitLayer::new(limits.concurrency_limit))
                // The largest limit of any route; each route's own is its `DefaultBodyLimit`.
                .layer(RequestBodyLimitLayer::new(
                    limits.body_limit_bytes.max(limits.batch_body_limit_bytes),
                ))
                .layer(DefaultBodyLimit::max(limits.body_limit_bytes)),
        )
        .with_state(state)
}

/// Connects to Postgres and Redis and builds the shared state.
pub async fn connect(config: Config) -> Result<AppState, ServeError> {
    // `rediss://` (and the autoscaler's kube client) use rustls with the process's provider.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let db = store::connect(
        config.database_url.expose(),
        config.database_max_connections,
    )
    .await?;
    let redis = redis::Client::open(config.redis_url.expose())?
        .get_connection_manager()
        .await?;
    if !store::migrations_applied(&db).await? {
        tracing::warn!(
            "database migrations are not applied: run `controlplane migrate`; /readyz fails until then"
        );
    }
    Ok(AppState::new(config, db, redis))
}

/// A bound server, not yet accepting requests.
pub struct Server {
    listener: TcpListener,
    state: AppState,
}

impl Server {
    pub async fn bind(state: AppState) -> Result<Self, ServeError> {
        let listener = TcpListener::bind(state.config.listen).await?;
        Ok(Self { listener, state })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then lets requests in flight finish within the
    /// configured grace period and drops whatever is left.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let state = self.state;
        let grace = Duration::from_millis(state.config.shutdown_grace_ms);
        let cleanup = tokio::spawn({
            let limiters = state.rate_limiters.clone();
            async move {
                let mut interval = tokio::time::interval(RATE_LIMIT_CLEANUP_INTERVAL);
                loop {
                    interval.tick().await;
                    limiters.forget_idle();
                }
            }
        });
        let background = state.queue.spawn_background();
        let shutdown_started = Arc::new(tokio::sync::Notify::new());
        let lifecycle = state.lifecycle.clone();
        let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
        let graceful = {
            let shutdown_started = shutdown_started.clone();
            async move {
                shutdown.await;
                lifecycle.mark_draining();
                tracing::info!("shutting down: draining requests in flight");
                shutdown_started.notify_one();
            }
        };
        // Responses go out at once, not held back by Nagle's algorithm until the client's
        // (possibly delayed) ACK of the previous segment.
        let listener = self.listener.tap_io(|stream| {
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY on a connection");
            }
        });
        let mut server = tokio::spawn(
            axum::serve(listener, app)
                .with_graceful_shutdown(graceful)
                .into_future(),
        );
        let outcome = tokio::select! {
            result = &mut server => result.map_err(ServeError::from).and_then(|r| r.map_err(ServeError::from)),
            () = shutdown_started.notified() => {
                match tokio::time::timeout(grace, &mut server).await {
                    Ok(result) => result.map_err(ServeError::from).and_then(|r| r.map_err(ServeError::from)),
                    Err(_) => {
                        tracing::warn!(grace_ms = grace.as_millis() as u64, "grace period over: dropping the remaining connections");
                        server.abort();
                        Ok(())
                    }
                }
            }
        };
        cleanup.abort();
        for task in background {
            task.abort();
        }
        outcome
    }
}
