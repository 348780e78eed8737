//! Bearer tokens with scopes.
//!
//! Owns resolving the configured tokens (secret references, never literals)
//! and checking a request's `Authorization` header against them in constant
//! time. It must never log or return a token.

use crate::error::ApiError;
use axum::http::HeaderMap;
use courier_core::config::{AdminToken, Scope};
use courier_provider::secret::{self, Secret, SecretError};
use subtle::ConstantTimeEq;

#[derive(Debug, thiserror::Error)]
#[error("admin.tokens {name:?}: {source}")]
pub struct AuthError {
    name: String,
    #[source]
    source: SecretError,
}

#[derive(Debug)]
struct Resolved {
    name: String,
    secret: Secret,
    scopes: Vec<Scope>,
}

/// The configured tokens, resolved.
#[derive(Debug)]
pub struct Tokens(Vec<Resolved>);

impl Tokens {
    pub fn resolve(configured: &[AdminToken]) -> Result<Tokens, AuthError> {
        configured
            .iter()
            .map(|t| {
                Ok(Resolved {
                    name: t.name.clone(),
                    secret: secret::resolve(&t.secret).map_err(|source| AuthError {
                        name: t.name.clone(),
                        source,
                    })?,
                    scopes: t.scopes.clone(),
                })
            })
            .collect::<Result<_, _>>()
            .map(Tokens)
    }

    /// The name of the token presented in `headers`, if it carries `scope`.
    /// Every configured token is compared, in constant time, so timing tells
    /// nothing about which (if any) matched.
    pub fn authorize(&self, headers: &HeaderMap, scope: Scope) -> Result<String, ApiError> {
        let presented = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(ApiError::Unauthorized)?;
        let mut matched: Option<&Resolved> = None;
        for token in &self.0 {
            if bool::from(token.secret.expose().as_bytes().ct_eq(presented.as_bytes())) {
                matched = Some(token);
            }
        }
        let token = matched.ok_or(ApiError::Unauthorized)?;
        if token.scopes.contains(&scope) {
            Ok(token.name.clone())
        } else {
            Err(ApiError::Forbidden(scope.as_str()))
        }
    }
}
