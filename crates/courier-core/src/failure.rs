//! What retrying a failed infrastructure operation can achieve.
//!
//! Owns the vocabulary every edge crate classifies its errors into, once, by
//! an exhaustive match over its own error types (courier-store for
//! PostgreSQL, courier-amqp for RabbitMQ): the worker then retries only what
//! can succeed. It must never hold the classification itself: only the
//! crate that knows a driver's error types can decide what they mean.

/// The class of an infrastructure failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Failure {
    /// The same operation can succeed if tried again: a connection lost, a
    /// timeout, a deadlock, a broker or database restarting.
    Transient,
    /// This input can never be accepted (a character PostgreSQL cannot
    /// store, a message the broker refuses); other inputs can. Retrying it is
    /// pointless and would block what comes after it: set it aside.
    Refused,
    /// Nothing will succeed until an operator changes something: a missing
    /// schema or exchange, a permission, a password. Retried slowly, and the
    /// worker reports itself not ready meanwhile.
    Setup,
}

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::Refused => "refused",
            Self::Setup => "setup",
        }
    }
}
