//! Pure domain model and rules of mspbridge. Nothing in this crate performs IO:
//! storage, HTTP and vendor calls live in other crates and speak these types.

pub mod auth;
pub mod billing;
pub mod catalogue;
pub mod error;
pub mod ids;
pub mod integration;
pub mod m365;
pub mod model;
pub mod rmm;
pub mod secret;
pub mod sync;
pub mod training;
pub mod validate;

pub use error::{FieldError, ValidationError};
pub use ids::*;
pub use secret::SecretString;
