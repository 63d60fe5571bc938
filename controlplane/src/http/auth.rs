//! API keys and the authentication + rate limiting middleware of `/v1`.
//!
//! A key is `sk_` followed by 64 hex digits (32 random bytes); only its sha256 is stored. The
//! admin key comes from the configuration and is compared by digest as well.
//!
//! A team key found valid is remembered for `api_key_cache_ms` ([`super::key_cache`]): a request with
//! a known key then costs no database round trip, and its rate limits (per client address, per
//! key, global) are checked in one Redis call. An unknown key passes the per-client limit before
//! the database is asked, so a flood of bad keys is stopped before it reaches Postgres.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use super::key_cache::KnownKey;
use super::problem::ApiError;
use super::rate_limit::RateStatus;
use super::state::AppState;
use crate::model::api_key::{KEY_PREFIX, hash_key};
use crate::store;

/// Who is calling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    Admin,
    /// A worker (the configured worker key): leases tasks of every team.
    Worker,
    Team {
        team_id: Uuid,
        key_id: Uuid,
    },
}

impl Principal {
    /// The identity the per-key rate limiter counts (the admin has one of its own).
    fn rate_key(self) -> Uuid {
        match self {
            Self::Admin => Uuid::nil(),
            Self::Worker => Uuid::from_u128(1),
            Self::Team { key_id, .. } => key_id,
        }
    }
}

impl From<KnownKey> for Principal {
    fn from(key: KnownKey) -> Self {
        Self::Team {
            team_id: key.team_id,
            key_id: key.key_id,
        }
    }
}

/// Extractor: the calling team (403 for the admin, whose key owns no tasks).
#[derive(Debug, Clone, Copy)]
pub struct TeamCaller {
    pub team_id: Uuid,
}

impl<S: Send + Sync> FromRequestParts<S> for TeamCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Principal>() {
            Some(Principal::Team { team_id, .. }) => Ok(Self { team_id: *team_id }),
            Some(Principal::Admin | Principal::Worker) => Err(ApiError::Forbidden(
                "the admin and worker keys own no tasks; use a team key",
            )),
            None => Err(ApiError::Unauthorized("missing API key")),
        }
    }
}

/// Extractor: the administrator.
#[derive(Debug, Clone, Copy)]
pub struct AdminCaller;

impl<S: Send + Sync> FromRequestParts<S> for AdminCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Principal>() {
            Some(Principal::Admin) => Ok(Self),
            Some(Principal::Team { .. } | Principal::Worker) => {
                Err(ApiError::Forbidden("this operation needs the admin key"))
            }
            None => Err(ApiError::Unauthorized("missing API key")),
        }
    }
}

/// Extractor: a worker (the worker key or the admin key).
#[derive(Debug, Clone, Copy)]
pub struct WorkerCaller;

impl<S: Send + Sync> FromRequestParts<S> for WorkerCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Principal>() {
            Some(Principal::Admin | Principal::Worker) => Ok(Self),
            Some(Principal::Team { .. }) => Err(ApiError::Forbidden(
                "leases need the worker key (or the admin key)",
            )),
            None => Err(ApiError::Unauthorized("missing API key")),
        }
    }
}

fn bearer_token(request: &Request) -> Option<&str> {
    let value = request.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The caller when it is known without IO: the admin or worker key, or a team key found valid
/// recently.
fn known_principal(state: &AppState, digest: &[u8; 32]) -> Option<Principal> {
    if state.admin_key_hash.is_some_and(|admin| admin == *digest) {
        return Some(Principal::Admin);
    }
    if state
        .worker_key_hash
        .is_some_and(|worker| worker == *digest)
    {
        return Some(Principal::Worker);
    }
    state.key_cache.get(digest).map(Principal::from)
}

/// Looks a team key up in the database (and remembers it when valid).
async fn authenticate(
    state: &AppState,
    token: &str,
    digest: [u8; 32],
) -> Result<Principal, ApiError> {
    if !token.starts_with(KEY_PREFIX) || token.len() > 128 {
        return Err(ApiError::Unauthorized("invalid API key"));
    }
    match store::api_keys::find_active_by_hash(&state.db, &digest).await? {
        Some(row) => {
            let key = KnownKey {
                team_id: row.team_id,
                key_id: row.id,
            };
            state.key_cache.insert(digest, key);
            Ok(key.into())
        }
        None => Err(ApiError::Unauthorized("invalid or revoked API key")),
    }
}

fn limited_response(status: RateStatus) -> Response {
    crate::metrics::record_rate_limited(status.scope.as_str());
    let mut response = ApiError::TooManyRequests(status.scope.as_str()).into_response();
    status.write_headers(response.headers_mut());
    response
}

/// Middleware of `/v1`: client-address limit, authentication, per-key and global limits.
///
/// With a known caller ([`known_principal`]) the three limits are one Redis call; otherwise the
/// client-address limit is checked before the database is asked about the key.
pub async fn authenticate_and_limit(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let client: Option<IpAddr> =
        request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| {
                super::rate_limit::client_address(
                    info.0.ip(),
                    request.headers(),
                    &state.config.rate_limit.trusted_proxies,
                )
            });
    let limiters = &state.rate_limiters;
    let prefix = &state.config.redis_key_prefix;
    let token = bearer_token(&request);
    let digest = token.map(hash_key);
    let known = digest.and_then(|digest| known_principal(&state, &digest));
    let (principal, status) = match known {
        Some(principal) => {
            let status = limiters
                .check_request_shared(&state.redis, prefix, client, principal.rate_key())
                .await;
            (principal, status)
        }
        None => {
            if let Some(address) = client
                && let Some(status) = limiters
                    .check_client_shared(&state.redis, prefix, address)
                    .await
                && status.is_limited()
            {
                return limited_response(status);
            }
            let (Some(token), Some(digest)) = (token, digest) else {
                return ApiError::Unauthorized("send an API key as `Authorization: Bearer <key>`")
                    .into_response();
            };
            let principal = match authenticate(&state, token, digest).await {
                Ok(principal) => principal,
                Err(error) => return error.into_response(),
            };
            let status = limiters
                .check_request_shared(&state.redis, prefix, None, principal.rate_key())
                .await;
            (principal, status)
        }
    };
    if let Some(status) = status
        && status.is_limited()
    {
        return limited_response(status);
    }
    request.extensions_mut().insert(principal);
    let mut response = next.run(request).await;
    if let Some(status) = status {
        status.write_headers(response.headers_mut());
    }
    response
}
