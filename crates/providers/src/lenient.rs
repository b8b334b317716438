//! Reading vendor JSON leniently (issue 17): a record is rejected only for a field the
//! product cannot do without. Fields it uses with a sane default take `null` as that
//! default ([`nullable`]); fields it does not use at all never reject a record, whatever
//! they hold ([`odd_as_default`]); unknown fields are ignored (no wire type denies them).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

/// `null` (or a missing field, with `#[serde(default)]`) as `T::default()`.
pub fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Any value that does not read as `T` (a number where a string was expected, an object
/// of another shape) as `T::default()`: for fields the product does not rely on.
pub fn odd_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned + Default,
{
    let v = serde_json::Value::deserialize(d)?;
    Ok(T::deserialize(v).unwrap_or_default())
}

/// An integer id that may arrive as a whole float (`12.0`: Halo's `site_id` is typed
/// `number`/`double` in places), a numeric string, or `null`.
pub fn integer<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    use serde_json::Value;
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Ok(Some(i)),
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Some(f as i64)),
            _ => Err(serde::de::Error::custom(format!(
                "{n} is not a whole number"
            ))),
        },
        Value::String(s) if s.trim().is_empty() => Ok(None),
        Value::String(s) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("'{s}' is not a whole number"))),
        other => Err(serde::de::Error::custom(format!(
            "{other} is not a whole number"
        ))),
    }
}

/// A flag that is true unless the vendor says `false` (`null` and a missing field are
/// true): Autotask's `isActive` on companies, resources and groups.
pub fn true_unless_false<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(true))
}

/// For `#[serde(default = "…")]` beside [`true_unless_false`].
pub fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_read_whole_floats_strings_and_null() {
        #[derive(Deserialize)]
        struct Row {
            #[serde(default, deserialize_with = "integer")]
            id: Option<i64>,
        }
        let id = |j: &str| serde_json::from_str::<Row>(j).map(|r| r.id);
        assert_eq!(id(r#"{"id":12}"#).unwrap(), Some(12));
        assert_eq!(id(r#"{"id":12.0}"#).unwrap(), Some(12));
        assert_eq!(id(r#"{"id":"12"}"#).unwrap(), Some(12));
        assert_eq!(id(r#"{"id":null}"#).unwrap(), None);
        assert_eq!(id(r#"{}"#).unwrap(), None);
        assert!(id(r#"{"id":12.5}"#).is_err());
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Row {
        #[serde(default, deserialize_with = "nullable")]
        name: String,
        #[serde(default, deserialize_with = "odd_as_default")]
        phone: Option<String>,
        #[serde(default = "yes", deserialize_with = "true_unless_false")]
        active: bool,
    }

    #[test]
    fn nulls_odd_values_and_missing_fields_read_as_defaults() {
        let r: Row = serde_json::from_str(r#"{"name":null,"phone":42,"active":null}"#).unwrap();
        assert_eq!(
            r,
            Row {
                name: String::new(),
                phone: None,
                active: true
            }
        );
        let r: Row = serde_json::from_str(r#"{"phone":"+1 555","active":false,"x":[1]}"#).unwrap();
        assert_eq!((r.phone.as_deref(), r.active), (Some("+1 555"), false));
        assert!(serde_json::from_str::<Row>(r#"{"name":7}"#).is_err());
    }
}
