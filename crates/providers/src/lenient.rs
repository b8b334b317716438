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
