//! Any bytes as a tag value: a valid DNS name or a skip, never a panic,
//! and sanitising is idempotent.
#![no_main]

use fleetdns::naming::{is_valid_name, sanitize};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let value = String::from_utf8_lossy(data);
    // Room left by a typical zone (253 - len("fleet.internal") - 1).
    let max_len = 238;
    if let Ok(name) = sanitize(&value, max_len) {
        assert!(
            is_valid_name(&name, max_len),
            "{value:?} gave invalid {name:?}"
        );
        assert_eq!(sanitize(&name, max_len).as_deref(), Ok(name.as_str()));
    }
});
