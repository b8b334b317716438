//! One error type for the HTTP layer, mapped to a response in exactly one place.
//! Clients get a stable machine `code`, a `message`, and the offending `field` where
//! there is one; internal errors are logged once and answered opaquely.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mspbridge_domain::integration::TestReport;
use mspbridge_domain::{FieldError, ValidationError};
use mspbridge_store::StoreError;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{}", .0)]
    Validation(ValidationError),
    #[error("authentication required")]
    Unauthenticated,
    #[error("your role does not allow this: {0} permission on integration settings is needed")]
    Forbidden(&'static str),
    #[error("the form has expired or did not come from this site; reload the page and try again")]
    Csrf,
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("{provider} cannot be connected yet: {note}")]
    ConnectorNotAvailable {
        provider: &'static str,
        note: &'static str,
    },
    #[error("{message}")]
    ConnectionFailed {
        message: String,
        fix_hint: String,
        report: Box<TestReport>,
    },
    #[error("{what}; try again in {retry_after} seconds")]
    RateLimited {
        retry_after: u64,
        what: &'static str,
    },
    /// The vendor answered the connection test but a later read failed.
    #[error("{provider} could not be read: {message}")]
    Vendor {
        provider: &'static str,
        message: String,
    },
    /// A PSA refused (or could not take) a change written to it.
    #[error("{provider} did not take the change: {message}")]
    VendorWrite {
        provider: &'static str,
        message: String,
    },
    #[error("internal error")]
    Internal(String),
    /// Input refused before it reached a handler (an unreadable path, query or form, a
    /// method the route lacks, a body too large or too slow), with the status to answer.
    #[error("{message}")]
    Rejected { status: StatusCode, message: String },
}

impl ApiError {
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        ApiError::Validation(ValidationError::one(field, message))
    }

    /// A body over [`crate::extract::BODY_LIMIT`].
    pub fn too_large() -> Self {
        ApiError::Rejected {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!(
                "the request body is larger than {} KiB",
                crate::extract::BODY_LIMIT / 1024
            ),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Rejected { status, .. } => *status,
            ApiError::Validation(_)
            | ApiError::ConnectorNotAvailable { .. }
            | ApiError::ConnectionFailed { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthenticated => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::Csrf => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Vendor { .. } | ApiError::VendorWrite { .. } => StatusCode::BAD_GATEWAY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Validation(_) => "validation_failed",
            ApiError::Unauthenticated => "unauthenticated",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::Csrf => "csrf_failed",
            ApiError::NotFound => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::ConnectorNotAvailable { .. } => "connector_not_available",
            ApiError::ConnectionFailed { .. } => "connection_failed",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Vendor { .. } | ApiError::VendorWrite { .. } => "vendor_error",
            ApiError::Internal(_) => "internal",
            ApiError::Rejected { status, .. } => match *status {
                StatusCode::BAD_REQUEST => "bad_request",
                StatusCode::UNAUTHORIZED => "unauthenticated",
                StatusCode::FORBIDDEN => "forbidden",
                StatusCode::NOT_FOUND => "not_found",
                StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
                StatusCode::REQUEST_TIMEOUT => "request_timeout",
                StatusCode::CONFLICT => "conflict",
                StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
                StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
                StatusCode::UNPROCESSABLE_ENTITY => "validation_failed",
                StatusCode::TOO_MANY_REQUESTS => "rate_limited",
                StatusCode::SERVICE_UNAVAILABLE => "unavailable",
                s if s.is_server_error() => "internal",
                _ => "bad_request",
            },
        }
    }

    pub fn body(&self) -> ErrorBody {
        let (field, fields) = match self {
            ApiError::Validation(v) => (
                v.fields().first().map(|f| f.field.clone()),
                v.fields().to_vec(),
            ),
            _ => (None, vec![]),
        };
        ErrorBody {
            code: self.code(),
            message: self.to_string(),
            field,
            fields,
            fix_hint: match self {
                ApiError::ConnectionFailed { fix_hint, .. } => Some(fix_hint.clone()),
                _ => None,
            },
            test: match self {
                ApiError::ConnectionFailed { report, .. } => Some((**report).clone()),
                _ => None,
            },
        }
    }
}

/// The JSON error body of every API error.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable machine code, e.g. `validation_failed`.
    pub code: &'static str,
    pub message: String,
    /// The first offending field, e.g. `credentials.site`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Every offending field with its message.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix_hint: Option<String>,
    /// The connection test that failed, for `connection_failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test: Option<TestReport>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            tracing::error!(detail = %detail, "internal error");
        }
        let mut resp = (self.status(), axum::Json(self.body())).into_response();
        if let ApiError::RateLimited { retry_after, .. } = self {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        }
        resp
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        ApiError::Validation(e)
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError::Validation(e.into())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::NotFound,
            StoreError::Conflict(m) => ApiError::Conflict(m),
            other => ApiError::Internal(other.to_string()),
        }
    }
}
