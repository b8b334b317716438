//! ConnectWise `conditions` syntax, the subset the connector sends and the sandbox
//! evaluates: `field op value` terms joined by `AND`, where values are numbers,
//! `"strings"`, `[2025-01-01T00:00:00Z]` dates or `true`/`false`, and fields are
//! paths such as `id`, `lastUpdated` (an alias of `_info/lastUpdated`) or `company/id`.

use chrono::{DateTime, Utc};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Number(f64),
    Text(String),
    Date(DateTime<Utc>),
    Bool(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    pub path: String,
    pub op: Op,
    pub value: Operand,
}

/// Formats a timestamp the way conditions expect it.
pub fn date(ts: DateTime<Utc>) -> String {
    format!("[{}]", ts.format("%Y-%m-%dT%H:%M:%SZ"))
}

/// Parses `a AND b AND …`. Errors read like ConnectWise's own.
pub fn parse(input: &str) -> Result<Vec<Term>, String> {
    let mut terms = Vec::new();
    for raw in split_and(input) {
        let raw = raw
            .trim()
            .trim_start_matches('(')
            .trim_end_matches(')')
            .trim();
        if raw.is_empty() {
            return Err(format!("conditions: empty expression in '{input}'"));
        }
        let ops = [
            (">=", Op::Ge),
            ("<=", Op::Le),
            ("!=", Op::Ne),
            ("=", Op::Eq),
            (">", Op::Gt),
            ("<", Op::Lt),
        ];
        let (idx, sym, op) = ops
            .iter()
            .filter_map(|(s, o)| raw.find(s).map(|i| (i, *s, *o)))
            .min_by_key(|(i, s, _)| (*i, std::cmp::Reverse(s.len())))
            .ok_or_else(|| format!("conditions: no operator in '{raw}'"))?;
        let path = raw[..idx].trim();
        let value = raw[idx + sym.len()..].trim();
        if path.is_empty()
            || !path
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '/' || c == '_')
        {
            return Err(format!("conditions: '{path}' is not a field"));
        }
        let path = if path == "lastUpdated" {
            "_info/lastUpdated".to_string()
        } else {
            path.to_string()
        };
        let value = if let Some(d) = value.strip_prefix('[').and_then(|v| v.strip_suffix(']')) {
            Operand::Date(
                d.parse()
                    .map_err(|_| format!("conditions: '{d}' is not a date"))?,
            )
        } else if let Some(s) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            Operand::Text(s.to_string())
        } else if value == "true" || value == "false" {
            Operand::Bool(value == "true")
        } else {
            Operand::Number(
                value
                    .parse()
                    .map_err(|_| format!("conditions: '{value}' is not a value"))?,
            )
        };
        terms.push(Term { path, op, value });
    }
    Ok(terms)
}

fn split_and(input: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let bytes = input.as_bytes();
    let mut in_str = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => in_str = !in_str,
            b' ' if !in_str
                && input[i..].len() >= 5
                && input[i..i + 5].eq_ignore_ascii_case(" and ") =>
            {
                parts.push(&input[start..i]);
                start = i + 5;
                i += 4;
            }
            _ => {}
        }
        i += 1;
    }
    parts.push(&input[start..]);
    parts
}

fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('/').try_fold(v, |cur, key| cur.get(key))
}

/// Whether a record (as vendor JSON) satisfies every term.
pub fn matches(record: &Value, terms: &[Term]) -> bool {
    terms.iter().all(|t| {
        let Some(field) = lookup(record, &t.path) else {
            return false;
        };
        let ord = match (&t.value, field) {
            (Operand::Number(n), Value::Number(f)) => f.as_f64().and_then(|f| f.partial_cmp(n)),
            (Operand::Text(s), Value::String(f)) => Some(f.as_str().cmp(s.as_str())),
            (Operand::Bool(b), Value::Bool(f)) => Some(f.cmp(b)),
            (Operand::Date(d), Value::String(f)) => {
                f.parse::<DateTime<Utc>>().ok().map(|f| f.cmp(d))
            }
            _ => None,
        };
        let Some(ord) = ord else { return false };
        match t.op {
            Op::Eq => ord.is_eq(),
            Op::Ne => ord.is_ne(),
            Op::Lt => ord.is_lt(),
            Op::Le => ord.is_le(),
            Op::Gt => ord.is_gt(),
            Op::Ge => ord.is_ge(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_and_evaluates_the_connector_conditions() {
        let t = parse("id > 120 AND lastUpdated > [2026-01-02T00:00:00Z]").unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[1].path, "_info/lastUpdated");
        let rec = json!({"id": 121, "_info": {"lastUpdated": "2026-01-03T00:00:00Z"}});
        assert!(matches(&rec, &t));
        assert!(!matches(
            &json!({"id": 120, "_info": {"lastUpdated": "2026-01-03T00:00:00Z"}}),
            &t
        ));
        assert!(!matches(
            &json!({"id": 121, "_info": {"lastUpdated": "2026-01-01T00:00:00Z"}}),
            &t
        ));
        assert!(
            !matches(&json!({"id": 121}), &t),
            "a missing field never matches"
        );
    }

    #[test]
    fn strings_booleans_and_paths() {
        let t = parse(r#"company/identifier = "Acme and Sons" and inactiveFlag = false"#).unwrap();
        assert_eq!(t.len(), 2, "'and' inside a string does not split");
        assert!(matches(
            &json!({"company": {"identifier": "Acme and Sons"}, "inactiveFlag": false}),
            &t
        ));
    }

    #[test]
    fn bad_conditions_are_explained() {
        assert!(parse("id >").unwrap_err().contains("not a value"));
        assert!(
            parse("lastUpdated > [yesterday]")
                .unwrap_err()
                .contains("not a date")
        );
        assert!(parse("id 5").unwrap_err().contains("no operator"));
        assert_eq!(
            date("2026-01-02T03:04:05Z".parse().unwrap()),
            "[2026-01-02T03:04:05Z]"
        );
    }
}
