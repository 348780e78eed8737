//! The job envelope parser, on any bytes: it never panics, and whatever it
//! accepts holds nothing a later step could choke on (control characters in
//! the names and key that go into PostgreSQL and HTTP headers), and whatever
//! it refuses is described in printable, bounded text.
#![no_main]

use courier_core::Job;
use courier_core::text::has_control;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match Job::parse(data, 256 * 1024) {
        Ok(job) => {
            assert!(!has_control(&job.provider) && !has_control(&job.operation));
            assert!(!has_control(&job.idempotency_key));
            assert!(job.idempotency_key.len() <= 255);
            // The same content hashes the same.
            let again = Job::parse(data, 256 * 1024).expect("parses twice");
            assert_eq!(job.fingerprint, again.fingerprint);
        }
        Err(invalid) => {
            let text = invalid.to_string();
            assert!(!has_control(&text), "{text:?}");
            assert!(text.len() < 1024);
        }
    }
});
