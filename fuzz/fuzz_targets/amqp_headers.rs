//! AMQP frames as the broker could deliver them (properties and headers a
//! publisher chose), through lapin's own frame parser and then Courier's
//! decoding: neither panics, a short string that is not UTF-8 is an error
//! (not a crash), and what Courier reads from headers is bounded (a
//! `traceparent` that is not W3C is dropped) and what it writes back into a
//! dead letter's headers stays within the publisher's limits.
#![no_main]

use amq_protocol::frame::{AMQPFrame, parse_frame};
use courier_amqp::headers::{DeadLetterHeaders, DeliveryMeta, dead_letter_properties};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A content header frame: type 2, channel, size, class, weight, body
    // size, property flags and list, frame end. Prefix what the fuzzer
    // writes so that most inputs reach the property parser.
    let mut frame = vec![2, 0, 1];
    frame.extend((data.len() as u32 + 12).to_be_bytes());
    frame.extend([0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9]);
    frame.extend(data);
    frame.push(0xCE);
    let Ok((_, AMQPFrame::Header(_, header))) = parse_frame(frame.as_slice()) else {
        return;
    };
    let meta = DeliveryMeta::of_properties(&header.properties);
    if let Some(tp) = &meta.traceparent {
        assert_eq!(tp.len(), 55, "{tp:?}");
    }
    let dead = DeadLetterHeaders {
        reason: "invalid",
        detail: meta.message_id.as_deref().unwrap_or(""),
        attempts: meta.attempts,
        last_status: None,
        cut_body: None,
    };
    let _ = dead_letter_properties(&meta, &dead);
});
