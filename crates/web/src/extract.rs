//! Request input, checked once for every route: JSON bodies ([`ApiJson`]) and query
//! strings ([`ApiQuery`]) whose errors name the offending field, NUL characters refused
//! wherever text comes in ([`reject_nul`]: path parameters, query strings, form bodies;
//! [`ApiJson`]: JSON bodies, by their JSON path), and every plain-text error answer (axum's
//! rejections, 405, 413) turned into the API's JSON error body ([`json_errors`]). Bodies
//! are read whole, within a size limit and a deadline, before routing goes on
//! ([`read_body`]).

use std::time::Duration;

use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::ApiError;

/// The largest request body accepted, in bytes.
pub const BODY_LIMIT: usize = 1024 * 1024;

const NUL: &str = "must not contain NUL characters";

/// The field a serde error is about: `path` (serde_path_to_error's, `.` or `?` at the top)
/// completed with the name serde gives in missing/unknown field messages; `top` when
/// there is none.
fn field_of(path: &str, msg: &str, top: &str) -> String {
    let at_top = path == "." || path == "?" || path.is_empty();
    ["missing field `", "unknown field `"]
        .iter()
        .find_map(|p| {
            msg.split_once(p)
                .and_then(|(_, rest)| rest.split_once('`'))
                .map(|(f, _)| f.to_string())
        })
        .map(|f| match path {
            _ if at_top => f,
            p if p == f || p.ends_with(&format!(".{f}")) => p.to_string(),
            p => format!("{p}.{f}"),
        })
        .unwrap_or_else(|| {
            if at_top {
                top.to_string()
            } else {
                path.to_string()
            }
        })
}

/// The JSON path (`a.b[2].c`, as serde_path_to_error writes it) of the first string or
/// key holding a NUL character; `body` for the body itself.
fn nul_in(v: &Value, path: &mut Vec<String>) -> Option<String> {
    let here = |path: &[String]| {
        if path.is_empty() {
            "body".to_string()
        } else {
            path.concat().trim_start_matches('.').to_string()
        }
    };
    match v {
        Value::String(s) if s.contains('\0') => Some(here(path)),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
            path.push(format!("[{i}]"));
            let found = nul_in(item, path);
            path.pop();
            found
        }),
        Value::Object(map) => map.iter().find_map(|(k, item)| {
            path.push(format!(".{}", k.replace('\0', "\\u0000")));
            let found = if k.contains('\0') {
                Some(here(path))
            } else {
                nul_in(item, path)
            };
            path.pop();
            found
        }),
        _ => None,
    }
}

/// A JSON object body whose errors name the offending field: a body that is not a JSON
/// object, or holds a NUL character anywhere, is refused naming `body` or the JSON path.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !is_json {
            return Err(ApiError::field(
                "body",
                "send a JSON body with Content-Type: application/json",
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::too_large()
                } else {
                    ApiError::field("body", "the request body could not be read")
                }
            })?;
        let value: Value =
            serde_json::from_slice(&bytes).map_err(|e| ApiError::field("body", e.to_string()))?;
        if !value.is_object() {
            return Err(ApiError::field(
                "body",
                "the body must be a JSON object ({ … })",
            ));
        }
        if let Some(field) = nul_in(&value, &mut Vec::new()) {
            return Err(ApiError::field(&field, NUL));
        }
        serde_path_to_error::deserialize(value)
            .map(ApiJson)
            .map_err(|e| {
                let path = e.path().to_string();
                let msg = e.into_inner().to_string();
                ApiError::field(&field_of(&path, &msg, "body"), msg)
            })
    }
}

/// A query string whose errors name the offending parameter (422, like body fields).
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(ApiQuery)
            .map_err(|e| {
                let path = e.path().to_string();
                let msg = e.into_inner().to_string();
                ApiError::field(&field_of(&path, &msg, "query"), msg)
            })
    }
}

/// The first `(name, value)` pair of an urlencoded string with a NUL in it: its name, or
/// `whole` when the name itself holds one.
fn nul_pair(encoded: &[u8], whole: &str) -> Option<String> {
    form_urlencoded::parse(encoded).find_map(|(k, v)| {
        if k.contains('\0') {
            Some(whole.to_string())
        } else {
            v.contains('\0').then(|| k.into_owned())
        }
    })
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

/// Refuses a NUL character in a path parameter, a query parameter or a form field with
/// 422 naming it (PostgreSQL cannot store NUL in text; nothing legitimate sends one).
/// JSON bodies are checked by [`ApiJson`], which names the JSON path.
pub async fn reject_nul(req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    if let Ok(params) = RawPathParams::from_request_parts(&mut parts, &()).await
        && let Some((key, _)) = params.iter().find(|(_, v)| v.contains('\0'))
    {
        return ApiError::field(key, NUL).into_response();
    }
    if let Some(field) = parts
        .uri
        .query()
        .and_then(|q| nul_pair(q.as_bytes(), "query"))
    {
        return ApiError::field(&field, NUL).into_response();
    }
    let body = if is_form(&parts.headers) {
        let bytes = match axum::body::to_bytes(body, BODY_LIMIT).await {
            Ok(b) => b,
            Err(_) => return ApiError::too_large().into_response(),
        };
        if let Some(field) = nul_pair(&bytes, "form") {
            return ApiError::field(&field, NUL).into_response();
        }
        axum::body::Body::from(bytes)
    } else {
        body
    };
    next.run(Request::from_parts(parts, body)).await
}

/// Reads the whole request body before anything else sees it: at most [`BODY_LIMIT`]
/// bytes (413) within `deadline` in total (408), so a client trickling its body cannot
/// hold a connection and a handler for longer. Both answers close the connection.
pub async fn read_body(State(deadline): State<Duration>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        return closing(ApiError::too_large());
    }
    let read = async {
        let mut stream = body.into_data_stream();
        let mut buf = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| ApiError::Rejected {
                status: StatusCode::BAD_REQUEST,
                message: "the request body could not be read".into(),
            })?;
            if buf.len() + chunk.len() > BODY_LIMIT {
                return Err(ApiError::too_large());
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf)
    };
    let bytes = match tokio::time::timeout(deadline, read).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) => return closing(e),
        Err(_) => {
            return closing(ApiError::Rejected {
                status: StatusCode::REQUEST_TIMEOUT,
                message: format!(
                    "the request body did not arrive within {} seconds",
                    deadline.as_secs_f64()
                ),
            });
        }
    };
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

/// `e` as a response after which the connection is closed (the rest of the body is
/// never read).
fn closing(e: ApiError) -> Response {
    let mut resp = e.into_response();
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// Turns every error answer that is not already JSON or an HTML page (axum's plain-text
/// rejections of paths, queries and forms, 405, 413, 415) into the API's JSON error body,
/// keeping the status and the headers that go with it (`Allow`, `Retry-After`).
pub async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let kind = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if kind.starts_with("application/json") || kind.starts_with("text/html") {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("the request failed")
            .to_lowercase()
    } else {
        text
    };
    let mut out = ApiError::Rejected { status, message }.into_response();
    for name in [header::ALLOW, header::RETRY_AFTER, header::WWW_AUTHENTICATE] {
        if let Some(v) = parts.headers.get(&name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    out
}
