//! Errors as RFC 9457 `application/problem+json`.
//!
//! Handlers return [`ApiError`]; it becomes a response carrying a [`Problem`] in its extensions.
//! The [`problem_responses`] middleware then writes every error response (ours, axum's
//! rejections, the body limit, the timeout, unmatched routes) as problem+json with `instance`
//! (the request path) and `request_id` filled in.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::model::submission::ItemError;
use crate::model::{Invalid, UnknownState};
use crate::queue::submit::SubmitError;

pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";
const TYPE_BASE: &str = "https://stacksmith.dev/problems/";

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// URI identifying the problem type.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// Short summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong in this occurrence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The request path this problem occurred on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The request id (also in the `x-request-id` response header).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// For a batch: every bad item, by its position in the request (from 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<ItemError>>,
}

impl Problem {
    fn new(status: StatusCode, slug: &str, title: &str, detail: Option<String>) -> Self {
        Self {
            problem_type: format!("{TYPE_BASE}{slug}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail,
            instance: None,
            request_id: None,
            errors: None,
        }
    }

    /// The generic problem for a bare status code (RFC 9457 `about:blank`).
    fn from_status(status: StatusCode) -> Self {
        Self {
            problem_type: "about:blank".to_owned(),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: None,
            instance: None,
            request_id: None,
            errors: None,
        }
    }
}

/// Everything a handler can fail with. Each variant maps to one status code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("authentication required")]
    Unauthorized(&'static str),
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("request body too large: {0}")]
    PayloadTooLarge(String),
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    #[error("invalid request: {0}")]
    Unprocessable(String),
    /// Some items of a batch are invalid: each with its position.
    #[error("invalid items: {0:?}")]
    InvalidItems(Vec<ItemError>),
    #[error("idempotency key reused with a different request")]
    IdempotencyMismatch,
    #[error("too many requests ({0} limit)")]
    TooManyRequests(&'static str),
    #[error("service unavailable: {0}")]
    Unavailable(&'static str),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unprocessable(_) | Self::InvalidItems(_) | Self::IdempotencyMismatch => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Database(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn problem(&self) -> Problem {
        let status = self.status();
        match self {
            Self::BadRequest(detail) => {
                Problem::new(status, "bad-request", "Bad request", Some(detail.clone()))
            }
            Self::Unauthorized(detail) => Problem::new(
                status,
                "unauthorized",
                "Authentication required",
                Some((*detail).to_owned()),
            ),
            Self::Forbidden(detail) => {
                Problem::new(status, "forbidden", "Forbidden", Some((*detail).to_owned()))
            }
            Self::NotFound(what) => Problem::new(
                status,
                "not-found",
                "Not found",
                Some(format!("{what} not found")),
            ),
            Self::Conflict(detail) => {
                Problem::new(status, "conflict", "Conflict", Some(detail.clone()))
            }
            Self::PayloadTooLarge(detail) => Problem::new(
                status,
                "payload-too-large",
                "Request body too large",
                Some(detail.clone()),
            ),
            Self::UnsupportedMediaType(detail) => Problem::new(
                status,
                "unsupported-media-type",
                "Unsupported media type",
                Some(detail.clone()),
            ),
            Self::Unprocessable(detail) => Problem::new(
                status,
                "invalid-request",
                "Invalid request",
                Some(detail.clone()),
            ),
            Self::InvalidItems(errors) => Problem {
                errors: Some(errors.clone()),
                ..Problem::new(
                    status,
                    "invalid-items",
                    "Invalid items",
                    Some(format!(
                        "{} item(s) of the batch are invalid (see `errors`); nothing was stored",
                        errors.len()
                    )),
                )
            },
            Self::IdempotencyMismatch => Problem::new(
                status,
                "idempotency-key-reused",
                "Idempotency key reused",
                Some("this Idempotency-Key was first used with a different request".to_owned()),
            ),
            Self::TooManyRequests(scope) => Problem::new(
                status,
                "rate-limited",
                "Too many requests",
                Some(format!(
                    "the {scope} rate limit is exhausted; see Retry-After"
                )),
            ),
            Self::Unavailable(detail) => Problem::new(
                status,
                "unavailable",
                "Service unavailable",
                Some((*detail).to_owned()),
            ),
            // Never leak internals to the client; the log has the details.
            Self::Database(_) | Self::Internal(_) => {
                Problem::new(status, "internal", "Internal server error", None)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status().is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let mut response = self.status().into_response();
        response.extensions_mut().insert(self.problem());
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let detail = rejection.body_text();
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge(detail),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::UnsupportedMediaType(detail),
            StatusCode::UNPROCESSABLE_ENTITY => Self::Unprocessable(detail),
            _ => Self::BadRequest(detail),
        }
    }
}

impl From<Invalid> for ApiError {
    fn from(invalid: Invalid) -> Self {
        Self::Unprocessable(invalid.0)
    }
}

impl From<UnknownState> for ApiError {
    fn from(unknown: UnknownState) -> Self {
        Self::Internal(unknown.to_string())
    }
}

impl From<SubmitError> for ApiError {
    fn from(error: SubmitError) -> Self {
        match error {
            SubmitError::Database(error) => Self::Database(error),
            SubmitError::KeyContended => Self::Conflict(
                "an idempotency key of this request is being used by concurrent requests; retry"
                    .to_owned(),
            ),
            SubmitError::KeysReused(_) => Self::IdempotencyMismatch,
            SubmitError::CommitterStopped => Self::Unavailable("the server is shutting down"),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::BadRequest(rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::BadRequest(rejection.body_text())
    }
}

/// `axum::Json` whose rejections are problem+json.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// `axum::extract::Path` whose rejections are problem+json.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// `axum::extract::Query` whose rejections are problem+json.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// Writes every 4xx/5xx response as problem+json, filling in `instance` and `request_id`.
pub async fn problem_responses(request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let mut problem = match parts.extensions.remove::<Problem>() {
        Some(problem) => problem,
        None if has_json_body(&parts.headers) => {
            // Already a document of its own: a replayed idempotent problem, a readiness report.
            return Response::from_parts(parts, body);
        }
        None => Problem::from_status(status),
    };
    problem.instance = Some(path);
    problem.request_id = request_id;
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
    );
    Response::from_parts(parts, axum::body::Body::from(body))
}

fn has_json_body(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value.starts_with(PROBLEM_CONTENT_TYPE) || value.starts_with("application/json")
        })
}
