//! Offset paging for the API's lists, one scheme for all of them: `offset` (default 0) and
//! `limit` in the query, the body one page (a bare array, as before), and the metadata in
//! headers like `GET /api/v1/tickets`: `X-Total-Count` (every page), and while more
//! follow `X-Next-Offset` and `Link: <…?offset=…&limit=…>; rel="next"` (the same filters).

use axum::http::{HeaderMap, HeaderValue, header};

use crate::error::ApiError;

/// A validated page request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging {
    pub offset: i64,
    pub limit: i64,
}

impl Paging {
    /// `limit` 1 to `max` (default `default`), `offset` 0 or more; a refusal names the field.
    pub fn new(
        offset: Option<i64>,
        limit: Option<i64>,
        default: i64,
        max: i64,
    ) -> Result<Paging, ApiError> {
        let limit = limit.unwrap_or(default);
        if !(1..=max).contains(&limit) {
            return Err(ApiError::field("limit", format!("must be from 1 to {max}")));
        }
        let offset = offset.unwrap_or(0);
        if offset < 0 {
            return Err(ApiError::field("offset", "must be 0 or more"));
        }
        Ok(Paging { offset, limit })
    }

    /// The headers of a page of `returned` items out of `total`; `path` is the list's
    /// path and `filters` its query parameters other than the paging ones.
    pub fn headers(
        &self,
        path: &str,
        filters: &[(&str, String)],
        returned: usize,
        total: i64,
    ) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-total-count", HeaderValue::from(total));
        let next = self.offset + returned as i64;
        if returned > 0 && next < total {
            let mut q = form_urlencoded::Serializer::new(String::new());
            for (k, v) in filters {
                q.append_pair(k, v);
            }
            q.append_pair("offset", &next.to_string());
            q.append_pair("limit", &self.limit.to_string());
            headers.insert("x-next-offset", HeaderValue::from(next));
            if let Ok(link) =
                HeaderValue::from_str(&format!("<{path}?{}>; rel=\"next\"", q.finish()))
            {
                headers.insert(header::LINK, link);
            }
        }
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_link_keeps_the_filters_and_stops_at_the_end() {
        let p = Paging::new(Some(2), Some(2), 100, 500).unwrap();
        let h = p.headers("/api/v1/outbox", &[("state", "failed".into())], 2, 5);
        assert_eq!(h["x-total-count"], "5");
        assert_eq!(h["x-next-offset"], "4");
        assert_eq!(
            h[header::LINK],
            "</api/v1/outbox?state=failed&offset=4&limit=2>; rel=\"next\""
        );
        let last = Paging::new(Some(4), Some(2), 100, 500).unwrap();
        let h = last.headers("/api/v1/outbox", &[], 1, 5);
        assert!(h.get(header::LINK).is_none() && h.get("x-next-offset").is_none());
        assert!(Paging::new(None, Some(0), 100, 500).is_err());
        assert!(Paging::new(Some(-1), None, 100, 500).is_err());
    }
}
