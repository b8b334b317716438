//! Who is calling: a staff session (cookie) or an API token (`Authorization: Bearer`).
//! Sessions: random 256-bit id in an HttpOnly SameSite=Lax cookie, only its SHA-256
//! stored, a per-session CSRF token required on every unsafe request. Tokens: only
//! their hash is stored. Both carry a role; permissions are checked per handler.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, OriginalUri};
use axum::http::request::Parts;
use axum::http::{Method, header};
use mspbridge_domain::auth::{Permission, StaffRole};
use mspbridge_domain::{StaffUserId, TenantId};

use crate::AppState;
use crate::error::ApiError;

pub const SESSION_COOKIE: &str = "msb_session";
pub const LOGIN_CSRF_COOKIE: &str = "msb_login_csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";
pub const SESSION_HOURS: i64 = 12;

#[derive(Debug, Clone)]
pub enum Actor {
    Staff {
        id: StaffUserId,
        email: String,
        name: String,
    },
    Token {
        name: String,
    },
}

/// An authenticated caller. Extracting it fails with 401 when there is none.
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant_id: TenantId,
    pub role: StaffRole,
    pub actor: Actor,
    /// Set for cookie sessions: the token forms and unsafe requests must echo.
    pub csrf_token: Option<String>,
}

impl Caller {
    pub fn require(&self, needed: Permission) -> Result<(), ApiError> {
        if self.role.allows(needed) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(match needed {
                Permission::Read => "read",
                Permission::Write => "write",
                Permission::Manage => "manage",
            }))
        }
    }

    pub fn label(&self) -> String {
        match &self.actor {
            Actor::Staff { email, .. } => email.clone(),
            Actor::Token { name } => format!("token:{name}"),
        }
    }

    /// Checks a submitted CSRF token against the session's (constant time).
    pub fn check_csrf(&self, submitted: Option<&str>) -> Result<(), ApiError> {
        match (&self.csrf_token, submitted) {
            (None, _) => Ok(()),
            (Some(expected), Some(got))
                if mspbridge_vault::constant_time_eq(expected.as_bytes(), got.as_bytes()) =>
            {
                Ok(())
            }
            _ => Err(ApiError::Csrf),
        }
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie_value<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let now = state.now();
        if let Some(auth) = parts.headers.get(header::AUTHORIZATION) {
            let token = auth
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .ok_or(ApiError::Unauthenticated)?;
            let found = state
                .store
                .api_token(&mspbridge_vault::hash_token(token.trim()), now)
                .await?;
            let t = found.ok_or(ApiError::Unauthenticated)?;
            tracing::Span::current().record("tenant_id", t.tenant_id.0);
            return Ok(Caller {
                tenant_id: t.tenant_id,
                role: t.role,
                actor: Actor::Token { name: t.name },
                csrf_token: None,
            });
        }
        let sid = cookie_value(&parts.headers, SESSION_COOKIE).ok_or(ApiError::Unauthenticated)?;
        let sess = state
            .store
            .session(&mspbridge_vault::hash_token(sid), now)
            .await?
            .ok_or(ApiError::Unauthenticated)?;
        tracing::Span::current().record("tenant_id", sess.tenant_id.0);
        let caller = Caller {
            tenant_id: sess.tenant_id,
            role: sess.user.role,
            actor: Actor::Staff {
                id: sess.user.id,
                email: sess.user.email,
                name: sess.user.name,
            },
            csrf_token: Some(sess.csrf_token),
        };
        // JSON calls made with a session cookie must carry the CSRF header; HTML form
        // posts are checked by their handlers against the hidden form field.
        let unsafe_method = !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        // Nested routers see a stripped path; the original URI tells an API call apart.
        let path = parts
            .extensions
            .get::<OriginalUri>()
            .map(|u| u.0.path())
            .unwrap_or(parts.uri.path());
        if unsafe_method && path.starts_with("/api/") {
            let got = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
            caller.check_csrf(got)?;
        }
        Ok(caller)
    }
}

/// Limits failed logins per email and per client address (in this process).
#[derive(Debug, Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<String, Vec<Instant>>>,
}

const WINDOW: Duration = Duration::from_secs(15 * 60);
const MAX_PER_EMAIL: usize = 5;
const MAX_PER_ADDRESS: usize = 20;

impl LoginLimiter {
    fn keys(email: &str, addr: &str) -> [(String, usize); 2] {
        [
            (format!("email:{}", email.to_lowercase()), MAX_PER_EMAIL),
            (format!("addr:{addr}"), MAX_PER_ADDRESS),
        ]
    }

    /// `Err(seconds)` when this email or address must wait before trying again.
    pub fn check(&self, email: &str, addr: &str) -> Result<(), u64> {
        let now = Instant::now();
        let Ok(mut map) = self.failures.lock() else {
            return Ok(());
        };
        for (key, max) in Self::keys(email, addr) {
            if let Some(times) = map.get_mut(&key) {
                times.retain(|t| now.duration_since(*t) < WINDOW);
                if times.len() >= max {
                    let oldest = times.first().copied().unwrap_or(now);
                    let wait = WINDOW
                        .saturating_sub(now.duration_since(oldest))
                        .as_secs()
                        .max(1);
                    return Err(wait);
                }
            }
        }
        Ok(())
    }

    pub fn failed(&self, email: &str, addr: &str) {
        if let Ok(mut map) = self.failures.lock() {
            for (key, _) in Self::keys(email, addr) {
                map.entry(key).or_default().push(Instant::now());
            }
        }
    }

    pub fn succeeded(&self, email: &str) {
        if let Ok(mut map) = self.failures.lock() {
            map.remove(&format!("email:{}", email.to_lowercase()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_failures_per_email_lock_it() {
        let l = LoginLimiter::default();
        for _ in 0..5 {
            assert!(l.check("a@x.io", "1.1.1.1").is_ok());
            l.failed("a@x.io", "1.1.1.1");
        }
        let wait = l.check("A@x.io", "2.2.2.2").unwrap_err();
        assert!(wait > 0 && wait <= 900);
        assert!(
            l.check("b@x.io", "2.2.2.2").is_ok(),
            "another email from another address is fine"
        );
        l.succeeded("a@x.io");
        assert!(l.check("a@x.io", "3.3.3.3").is_ok());
    }

    #[test]
    fn one_address_cannot_try_many_emails() {
        let l = LoginLimiter::default();
        for i in 0..20 {
            l.failed(&format!("u{i}@x.io"), "9.9.9.9");
        }
        assert!(l.check("new@x.io", "9.9.9.9").is_err());
    }
}
