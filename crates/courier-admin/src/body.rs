//! Request bodies read exactly as the OpenAPI document describes them, so
//! that the server accepts what the schema allows and refuses the rest.
//!
//! Owns the [`Object`] extractor (a JSON object: serde's derived structs
//! would also take an array of their fields in order, which no schema
//! allows) and two field deserializers: [`present`] (an optional field is
//! absent or a value, never `null`) and [`whole`] (an integer is what JSON
//! Schema calls one: `3681` and `3681.0` alike, never a string). Every body
//! type also denies unknown fields. It must never widen what a field means,
//! only pin down how it is spelled.

use axum::Json;
use axum::extract::{FromRequest, OptionalFromRequest, Request};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde_json::{Map, Value};
use std::fmt;
use std::marker::PhantomData;

/// A JSON object body deserialized into `T` (a 422 otherwise, as axum's
/// `Json` answers for a body that does not fit).
#[derive(Debug)]
pub struct Object<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Object<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(map) = <Json<Map<String, Value>> as FromRequest<S>>::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        T::deserialize(Value::Object(map)).map(Object).map_err(|e| {
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("the body does not fit: {e}"),
            )
                .into_response()
        })
    }
}

/// As axum's `Json`: no `Content-Type` means no body.
impl<S: Send + Sync, T: DeserializeOwned> OptionalFromRequest<S> for Object<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, Self::Rejection> {
        if !req.headers().contains_key(header::CONTENT_TYPE) {
            return Ok(None);
        }
        <Self as FromRequest<S>>::from_request(req, state)
            .await
            .map(Some)
    }
}

/// An optional field that may be absent but not `null`.
pub fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// An optional integer field: a JSON integer or an integral JSON number;
/// absent but not `null`.
pub fn whole<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64>,
{
    struct Whole<T>(PhantomData<T>);

    impl<T: TryFrom<i64>> Whole<T> {
        fn fit<E: de::Error>(v: i64) -> Result<Option<T>, E> {
            T::try_from(v)
                .map(Some)
                .map_err(|_| E::custom(format!("{v} is out of range")))
        }
    }

    impl<T: TryFrom<i64>> Visitor<'_> for Whole<T> {
        type Value = Option<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an integer")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Self::fit(v)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Self::fit(i64::try_from(v).map_err(|_| E::custom(format!("{v} is out of range")))?)
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            // Within ±2^53 every integral f64 is exact.
            if v.fract() == 0.0 && v.abs() <= 9_007_199_254_740_992.0 {
                Self::fit(v as i64)
            } else {
                Err(E::custom(format!("{v} is not an integer")))
            }
        }
    }

    d.deserialize_any(Whole(PhantomData))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Fields {
        #[serde(default, deserialize_with = "whole")]
        n: Option<u16>,
        #[serde(default, deserialize_with = "present")]
        s: Option<String>,
    }

    fn read(v: serde_json::Value) -> Result<Fields, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    #[test]
    fn integers_are_spelled_as_json_schema_allows_and_nulls_are_refused() {
        assert_eq!(read(json!({})), Ok(Fields { n: None, s: None }));
        assert_eq!(
            read(json!({"n": 7, "s": "x"})),
            Ok(Fields {
                n: Some(7),
                s: Some("x".into())
            })
        );
        assert_eq!(read(json!({"n": 7.0})).map(|f| f.n), Ok(Some(7)));
        assert!(read(json!({"n": 7.5})).is_err());
        assert!(read(json!({"n": -1})).is_err(), "out of u16");
        assert!(read(json!({"n": 70000})).is_err(), "out of u16");
        assert!(read(json!({"n": null})).is_err());
        assert!(read(json!({"s": null})).is_err());
        assert!(
            read(json!({"n": "7"})).is_err(),
            "a string is not an integer"
        );
    }
}
