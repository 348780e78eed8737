//! Exit codes and the last words on failure.
//!
//! | code | meaning |
//! | ---- | ------- |
//! | 0 | done |
//! | 1 | failed (the message says why) |
//! | 2 | bad command line |
//! | 3 | invalid config or input (the message names the key or field and the file) |
//! | 4 | RabbitMQ or PostgreSQL cannot be reached (the message says which, where, and how to start it) |
//! | 5 | the demo ended with jobs not in a terminal state |
//! | 6 | the job or dead letter asked for does not exist |

use courier_admin::StartError;
use courier_amqp::AmqpError;
use courier_core::{ConfigError, InvalidJob};
use courier_ops::OpsError;
use courier_store::StoreError;
use courier_worker::WorkerError;
use std::process::ExitCode;

pub const INVALID: u8 = 3;
pub const UNREACHABLE: u8 = 4;
pub const INCOMPLETE: u8 = 5;
pub const NOT_FOUND: u8 = 6;

const START_HINT: &str = "start the local services with `scripts/services.sh` (installs and starts RabbitMQ and PostgreSQL), \
or point Courier elsewhere with COURIER_AMQP_URL / COURIER_DATABASE_URL";

pub fn report(e: &anyhow::Error) -> ExitCode {
    eprintln!("error: {e:#}");
    let invalid = e.downcast_ref::<ConfigError>().is_some()
        || e.downcast_ref::<InvalidJob>().is_some()
        || matches!(e.downcast_ref::<OpsError>(), Some(OpsError::Invalid(_)));
    let code = if invalid {
        INVALID
    } else if unreachable(e) {
        eprintln!("hint: {START_HINT}");
        UNREACHABLE
    } else {
        1
    };
    ExitCode::from(code)
}

fn unreachable(e: &anyhow::Error) -> bool {
    let amqp = |a: &AmqpError| matches!(a, AmqpError::Connect { .. });
    let store = |s: &StoreError| matches!(s, StoreError::Connect { .. });
    e.chain().any(|cause| {
        cause.downcast_ref::<AmqpError>().is_some_and(amqp)
            || cause.downcast_ref::<StoreError>().is_some_and(store)
            || cause
                .downcast_ref::<OpsError>()
                .is_some_and(|o| ops(o, amqp, store))
            || cause.downcast_ref::<StartError>().is_some_and(|a| match a {
                StartError::Ops(o) => ops(o, amqp, store),
                StartError::Auth(_) | StartError::Listen { .. } => false,
            })
            || cause
                .downcast_ref::<WorkerError>()
                .is_some_and(|w| match w {
                    WorkerError::Amqp(a) => amqp(a),
                    WorkerError::Store(s) => store(s),
                    WorkerError::Provider(_) | WorkerError::Listen { .. } => false,
                })
    })
}

fn ops(
    e: &OpsError,
    amqp: impl Fn(&AmqpError) -> bool,
    store: impl Fn(&StoreError) -> bool,
) -> bool {
    match e {
        OpsError::Amqp(a) => amqp(a),
        OpsError::Store(s) => store(s),
        OpsError::Invalid(_) | OpsError::NotFound { .. } | OpsError::Recovery(_) => false,
    }
}
