//! W3C Trace Context (`traceparent`) for a job's attempts.
//!
//! Owns parsing the `traceparent` a publisher attached to a job and deriving
//! the one each provider request carries: the same trace id, a new span id
//! (the attempt is a child of whatever published the job). A job that came
//! without a valid `traceparent` gets a trace id derived from its job id
//! (both are 128 bits), so all its attempts, retries included, share one
//! trace. Randomness is passed in; this module never draws it.
//!
//! Spec: <https://www.w3.org/TR/trace-context/#traceparent-header>.

use std::fmt;

/// One hop of a trace: the `traceparent` header's fields (version 00).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: u128,
    span_id: u64,
    sampled: bool,
}

impl TraceContext {
    /// Parses a `traceparent` header. `None` for anything the spec says to
    /// ignore: wrong shape, upper-case hex, all-zero ids, version `ff`.
    /// Future versions are read by their version-00 prefix, as the spec asks.
    pub fn parse(header: &str) -> Option<TraceContext> {
        let header = header.trim();
        let mut parts = header.splitn(5, '-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let span = parts.next()?;
        let flags = parts.next()?;
        let rest = parts.next();
        if !is_lower_hex(version, 2) || version == "ff" {
            return None;
        }
        if version == "00" && rest.is_some() {
            return None;
        }
        if !is_lower_hex(trace, 32) || !is_lower_hex(span, 16) || !is_lower_hex(flags, 2) {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok()?;
        let span_id = u64::from_str_radix(span, 16).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        if trace_id == 0 || span_id == 0 {
            return None;
        }
        Some(TraceContext {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    /// The context of an attempt: a child of `parent` when the job carried
    /// one, else a span of the job's own trace `job_trace` (its id's bits).
    /// `span_seed` is random; zero (which the spec forbids) becomes one.
    pub fn for_attempt(
        parent: Option<TraceContext>,
        job_trace: u128,
        span_seed: u64,
    ) -> TraceContext {
        let span_id = span_seed.max(1);
        match parent {
            Some(parent) => TraceContext { span_id, ..parent },
            None => TraceContext {
                trace_id: job_trace.max(1),
                span_id,
                sampled: true,
            },
        }
    }

    /// A context from its raw parts (zero ids, which the spec forbids,
    /// become one).
    pub fn from_bits(trace_id: u128, span_id: u64, sampled: bool) -> TraceContext {
        TraceContext {
            trace_id: trace_id.max(1),
            span_id: span_id.max(1),
            sampled,
        }
    }

    pub fn trace_id_bits(&self) -> u128 {
        self.trace_id
    }

    pub fn span_id_bits(&self) -> u64 {
        self.span_id
    }

    pub fn sampled(&self) -> bool {
        self.sampled
    }

    /// The trace id as 32 lower-case hex digits (what tracing back-ends
    /// search by).
    pub fn trace_id(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The span id as 16 lower-case hex digits.
    pub fn span_id(&self) -> String {
        format!("{:016x}", self.span_id)
    }
}

/// The `traceparent` header value.
impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id,
            self.span_id,
            u8::from(self.sampled)
        )
    }
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_the_spec_example() {
        let ctx = TraceContext::parse(EXAMPLE).expect("valid");
        assert_eq!(ctx.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ctx.span_id(), "00f067aa0ba902b7");
        assert_eq!(ctx.to_string(), EXAMPLE);
    }

    #[test]
    fn rejects_what_the_spec_says_to_ignore() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_future_version_is_read_by_its_prefix() {
        let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more";
        let ctx = TraceContext::parse(future).expect("readable");
        assert_eq!(ctx.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn an_attempt_continues_the_trace_with_a_new_span() {
        let ctx = TraceContext::for_attempt(TraceContext::parse(EXAMPLE), 7, 42);
        assert_eq!(ctx.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ctx.span_id(), format!("{:016x}", 42));
        assert!(ctx.to_string().ends_with("-01"));
    }

    #[test]
    fn a_job_without_a_valid_parent_starts_a_trace() {
        for parent in [None, TraceContext::parse("garbage")] {
            let ctx = TraceContext::for_attempt(parent, 7, 0);
            assert_eq!(ctx.trace_id(), format!("{:032x}", 7));
            assert_eq!(ctx.span_id(), format!("{:016x}", 1));
        }
    }

    proptest! {
        #[test]
        fn what_we_write_we_read_back(trace in 1u128.., span in 1u64.., sampled: bool) {
            let ctx = TraceContext { trace_id: trace, span_id: span, sampled };
            prop_assert_eq!(TraceContext::parse(&ctx.to_string()), Some(ctx));
        }

        #[test]
        fn parsing_never_panics(s in "\\PC{0,80}") {
            let _ = TraceContext::parse(&s);
        }
    }
}
