//! Strict JSON parsing for untrusted documents: like `serde_json::from_slice`
//! into a `Value`, but an object with a repeated key is an error instead of
//! "last one wins". Two parsers that resolve duplicates differently would see
//! two different statements behind one signature; we refuse to pick one.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// Marker at the start of the serde error message for a repeated key.
const DUPLICATE_PREFIX: &str = "duplicate key ";

/// Why a document is not acceptable JSON.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum JsonError {
    /// Not well-formed JSON (syntax, invalid UTF-8, trailing data, nesting too deep).
    #[error("not valid json: {reason}")]
    Syntax {
        /// serde_json's description, with line and column.
        reason: String,
    },
    /// An object repeats a key.
    #[error("duplicate key {key:?} in a json object")]
    DuplicateKey {
        /// The repeated key.
        key: String,
    },
}

/// Parse `bytes` as one JSON document, refusing duplicate object keys.
pub(crate) fn parse_strict(bytes: &[u8]) -> Result<Value, JsonError> {
    match serde_json::from_slice::<StrictValue>(bytes) {
        Ok(v) => Ok(v.0),
        Err(e) => {
            let msg = e.to_string();
            match msg.strip_prefix(DUPLICATE_PREFIX) {
                Some(rest) if e.is_data() => {
                    // rest is `"key" at line L column C`; the key is Debug-quoted.
                    let quoted = rest.rsplit_once(" at line ").map_or(rest, |(k, _)| k);
                    let key = serde_json::from_str::<String>(quoted)
                        .unwrap_or_else(|_| quoted.to_string());
                    Err(JsonError::DuplicateKey { key })
                }
                _ => Err(JsonError::Syntax { reason: msg }),
            }
        }
    }
}

struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any json value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        StrictValue::deserialize(d).map(|v| v.0)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(StrictValue(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!("{DUPLICATE_PREFIX}{key:?}")));
            }
            let StrictValue(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_key_is_reported_with_its_name() {
        assert_eq!(
            parse_strict(br#"{"a":1,"b":{"c":1,"c":2}}"#),
            Err(JsonError::DuplicateKey { key: "c".into() })
        );
        assert_eq!(
            parse_strict(br#"{"we\"ird":1,"we\"ird":2}"#),
            Err(JsonError::DuplicateKey {
                key: "we\"ird".into()
            })
        );
    }

    #[test]
    fn syntax_errors_and_deep_nesting_are_errors_not_panics() {
        assert!(matches!(parse_strict(b"{"), Err(JsonError::Syntax { .. })));
        assert!(matches!(
            parse_strict(b"{} x"),
            Err(JsonError::Syntax { .. })
        ));
        assert!(matches!(
            parse_strict(b"\"\xff\""),
            Err(JsonError::Syntax { .. })
        ));
        let deep = "[".repeat(100_000);
        assert!(matches!(
            parse_strict(deep.as_bytes()),
            Err(JsonError::Syntax { .. })
        ));
    }

    #[test]
    fn well_formed_json_round_trips() {
        let v = parse_strict(br#"{"a":[1,-2,3.5,true,null,"x"],"b":{}}"#).unwrap();
        assert_eq!(v, serde_json::json!({"a":[1,-2,3.5,true,null,"x"],"b":{}}));
    }
}
