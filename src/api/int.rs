//! Integers as JSON Schema counts them: `4325.0` is the integer 4325 (a
//! number with no fractional part), `4325.5` is not. serde would refuse the
//! first; clients whose JSON libraries write every number as a double (and
//! the OpenAPI document, which says `type: integer`) expect it accepted.
//! Use with `#[serde(deserialize_with = "int::exact")]` (or `int::option`
//! with `default`) on any integer field of a request body.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserializer, Error, Unexpected, Visitor};

/// Largest float that converts without loss (2^53).
const FLOAT_EXACT: f64 = 9_007_199_254_740_992.0;

struct Exact<T>(PhantomData<T>);

impl<T: TryFrom<i128>> Visitor<'_> for Exact<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an integer that fits {}", std::any::type_name::<T>())
    }

    fn visit_u64<E: Error>(self, v: u64) -> Result<T, E> {
        T::try_from(i128::from(v)).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
    }

    fn visit_i64<E: Error>(self, v: i64) -> Result<T, E> {
        T::try_from(i128::from(v)).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
    }

    fn visit_f64<E: Error>(self, v: f64) -> Result<T, E> {
        if v.fract() != 0.0 || !v.is_finite() || v.abs() > FLOAT_EXACT {
            return Err(E::invalid_type(Unexpected::Float(v), &self));
        }
        T::try_from(v as i128).map_err(|_| E::invalid_value(Unexpected::Float(v), &self))
    }
}

/// An integer field.
pub fn exact<'de, D: Deserializer<'de>, T: TryFrom<i128>>(d: D) -> Result<T, D::Error> {
    d.deserialize_any(Exact(PhantomData))
}

/// An optional integer field (with `#[serde(default)]`); `null` is absent.
pub fn option<'de, D: Deserializer<'de>, T: TryFrom<i128>>(d: D) -> Result<Option<T>, D::Error> {
    struct Opt<T>(PhantomData<T>);
    impl<'de, T: TryFrom<i128>> Visitor<'de> for Opt<T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "an integer or null")
        }
        fn visit_none<E: Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }
        fn visit_unit<E: Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
            exact(d).map(Some)
        }
    }
    d.deserialize_option(Opt(PhantomData))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    struct T {
        #[serde(deserialize_with = "super::exact")]
        n: u32,
        #[serde(default, deserialize_with = "super::option")]
        m: Option<i64>,
    }

    fn parse(s: &str) -> Result<T, String> {
        serde_json::from_str(s).map_err(|e| e.to_string())
    }

    #[test]
    fn whole_floats_are_integers_and_nothing_else_is() {
        let t = parse(r#"{"n": 4325.0, "m": -2.0}"#).unwrap();
        assert_eq!((t.n, t.m), (4325, Some(-2)));
        let t = parse(r#"{"n": 7}"#).unwrap();
        assert_eq!((t.n, t.m), (7, None));
        assert_eq!(parse(r#"{"n": 1, "m": null}"#).unwrap().m, None);
        for bad in [
            r#"{"n": 1.5}"#,
            r#"{"n": -1}"#,
            r#"{"n": 4294967296}"#,
            r#"{"n": 1e300}"#,
            r#"{"n": "1"}"#,
            r#"{"n": true}"#,
            r#"{"n": 1, "m": 0.25}"#,
            r#"{"n": 1, "m": 18446744073709551615}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad} was accepted");
        }
    }
}
