//! Any bytes as an SQS message body, as EventBridge would deliver an EC2
//! event (issue 16): no panic, and whatever comes out as an event has an
//! instance id, account and region of their documented forms, so nothing
//! a sender writes reaches a DescribeInstances filter or a log line
//! unchecked.
#![no_main]

use fleetdns::inventory::events::{parse, Parsed, MAX_BODY};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    match parse(body) {
        Parsed::Event(event) => {
            assert!(body.len() <= MAX_BODY);
            let hex = event.instance_id.strip_prefix("i-").expect("i-");
            assert!(matches!(hex.len(), 8 | 17), "{:?}", event.instance_id);
            assert!(hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            if let Some(account) = &event.account {
                assert!(account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()));
            }
            if let Some(region) = &event.region {
                assert!(!region.is_empty() && region.len() <= 32);
                assert!(region
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
            }
        }
        Parsed::Malformed(reason) => {
            // the reason quotes at most 64 characters of the body per field
            assert!(
                reason.len() < 1024 || reason.starts_with("not an event"),
                "{}",
                reason.len()
            );
        }
        Parsed::Other => {}
    }
});
