//! Validation errors that name the offending field.

use serde::Serialize;

/// One problem with one input field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldError {
    /// The field as the caller named it (e.g. `credentials.site`).
    pub field: String,
    /// What is wrong and how to fix it, in words an MSP admin understands.
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// One or more field errors. The first one is the headline.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.first().map(|e| format!("{}: {}", e.field, e.message)).unwrap_or_default())]
pub struct ValidationError(pub Vec<FieldError>);

impl ValidationError {
    pub fn one(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self(vec![FieldError::new(field, message)])
    }

    pub fn fields(&self) -> &[FieldError] {
        &self.0
    }
}

impl From<FieldError> for ValidationError {
    fn from(e: FieldError) -> Self {
        Self(vec![e])
    }
}
