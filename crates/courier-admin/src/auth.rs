//! Bearer tokens with scopes.
//!
//! Owns resolving the configured tokens (secret references, never literals;
//! a `token_file` rotates without a restart and is revoked when removed), checking a request's
//! `Authorization` header against them in constant time, and the
//! [`Authorized`] extractor every handler takes first: axum runs extractors
//! in order, so no query string or body is parsed for a caller whose token
//! failed. It must never log or return a token.

use crate::AdminState;
use crate::error::ApiError;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use courier_core::config::{AdminToken, Scope};
use courier_telemetry::secret::{Rules, SecretError, SecretSource};
use std::marker::PhantomData;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Shortest configured token accepted: a guessable token guards nothing.
pub const MIN_TOKEN_BYTES: usize = 16;
/// Longest presented token compared; longer ones are refused unread.
pub const MAX_TOKEN_BYTES: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("admin.tokens {name:?}: {source}")]
    Secret {
        name: String,
        #[source]
        source: SecretError,
    },
}

/// An admin token is 16 to 512 bytes; one whose file is removed (or
/// emptied) is revoked.
const TOKEN_RULES: Rules = Rules {
    check: |v| {
        if (MIN_TOKEN_BYTES..=MAX_TOKEN_BYTES).contains(&v.len()) {
            Ok(())
        } else {
            Err(format!(
                "an admin token is {MIN_TOKEN_BYTES} to {MAX_TOKEN_BYTES} bytes"
            ))
        }
    },
    revoke_when_gone: true,
};

#[derive(Debug)]
struct Resolved {
    name: String,
    secret: SecretSource,
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
                let secret = SecretSource::open(&t.secret, TOKEN_RULES).map_err(|source| {
                    AuthError::Secret {
                        name: t.name.clone(),
                        source,
                    }
                })?;
                Ok(Resolved {
                    name: t.name.clone(),
                    secret,
                    scopes: t.scopes.clone(),
                })
            })
            .collect::<Result<_, _>>()
            .map(Tokens)
    }

    /// The token presented in `headers`: its name and scopes. The scheme
    /// is case-insensitive (RFC 9110); every configured token is compared,
    /// in constant time, so timing tells nothing about which (if any)
    /// matched.
    pub fn identify(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let presented = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|token| !token.is_empty() && token.len() <= MAX_TOKEN_BYTES)
            .ok_or(ApiError::Unauthorized)?;
        let mut matched: Option<&Resolved> = None;
        for token in &self.0 {
            // A revoked token (its file removed) matches nothing.
            if let Some(secret) = token.secret.current()
                && bool::from(secret.expose().as_bytes().ct_eq(presented.as_bytes()))
            {
                matched = Some(token);
            }
        }
        let token = matched.ok_or(ApiError::Unauthorized)?;
        Ok(Caller {
            name: token.name.clone(),
            scopes: token.scopes.clone(),
        })
    }

    /// The name of the token presented in `headers`, if it carries `scope`.
    pub fn authorize(&self, headers: &HeaderMap, scope: Scope) -> Result<String, ApiError> {
        let caller = self.identify(headers)?;
        if caller.scopes.contains(&scope) {
            Ok(caller.name)
        } else {
            Err(ApiError::Forbidden(scope.as_str()))
        }
    }
}

/// Who presented a valid token: its configured name and scopes.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub scopes: Vec<Scope>,
}

impl FromRequestParts<Arc<AdminState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AdminState>,
    ) -> Result<Self, Self::Rejection> {
        state.tokens.identify(&parts.headers)
    }
}

/// A scope a route needs, as a type.
pub trait Needs: Send + Sync {
    const SCOPE: Scope;
}

#[derive(Debug)]
pub struct Read;
#[derive(Debug)]
pub struct Requeue;
#[derive(Debug)]
pub struct Purge;
#[derive(Debug)]
pub struct Pause;

impl Needs for Read {
    const SCOPE: Scope = Scope::Read;
}
impl Needs for Requeue {
    const SCOPE: Scope = Scope::Requeue;
}
impl Needs for Purge {
    const SCOPE: Scope = Scope::Purge;
}
impl Needs for Pause {
    const SCOPE: Scope = Scope::Pause;
}

/// The caller, authorized for `S`: the token's name (recorded as the actor).
#[derive(Debug)]
pub struct Authorized<S>(pub String, pub PhantomData<S>);

impl<S: Needs> FromRequestParts<Arc<AdminState>> for Authorized<S> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AdminState>,
    ) -> Result<Self, Self::Rejection> {
        let name = state.tokens.authorize(&parts.headers, S::SCOPE)?;
        Ok(Authorized(name, PhantomData))
    }
}

/// A route layer (`axum::middleware::from_fn_with_state`) that refuses a
/// caller without a token carrying `S` before the layers inside it run: the
/// body of an action is not read for a caller who may not act.
pub async fn require<S: Needs>(
    State(state): State<Arc<AdminState>>,
    req: Request,
    next: Next,
) -> Response {
    match state.tokens.authorize(req.headers(), S::SCOPE) {
        Ok(_) => next.run(req).await,
        Err(refused) => refused.into_response(),
    }
}
