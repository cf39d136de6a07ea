//! Any bytes as a signed message: finding and verifying its TSIG never
//! panics, and whatever verifies strips to a message shorter than it.
//! And a round trip: any message without a TSIG, signed with the test
//! key, verifies and strips back to exactly those bytes (unless a name of
//! it points into the header, whose ARCOUNT signing changes), while the same
//! message with any one byte of it changed does not verify.
#![no_main]

use std::sync::{Arc, OnceLock};

use fleetdns::tsig::{self, Algorithm, Key, KeyRing, Secret, Verdict};
use libfuzzer_sys::fuzz_target;

/// The time every signature here is made and checked at.
const NOW: u64 = 1_800_000_000;

fn ring() -> &'static (Arc<Key>, KeyRing) {
    static RING: OnceLock<(Arc<Key>, KeyRing)> = OnceLock::new();
    RING.get_or_init(|| {
        let secret = Secret::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
        let key = Arc::new(Key::new("xfr-key", Algorithm::HmacSha256, secret).unwrap());
        (key.clone(), KeyRing::new(vec![key]))
    })
}

fuzz_target!(|data: &[u8]| {
    let (key, ring) = ring();
    if let Ok(Verdict::Signed(_, stripped)) = tsig::verify_request(data, ring, NOW) {
        assert!(stripped.len() < data.len());
    }
    let arcount = data.get(10..12).map(|b| u16::from_be_bytes([b[0], b[1]]));
    if !matches!(tsig::find(data), Ok(None)) || arcount == Some(u16::MAX) || !whole(data) {
        return;
    }
    let mut signed = data.to_vec();
    let mac = tsig::sign_request(&mut signed, key, NOW);
    match tsig::verify_request(&signed, ring, NOW) {
        Ok(Verdict::Signed(by, stripped)) => {
            assert_eq!(stripped, data, "strips back to the message");
            assert_eq!(by.mac, mac);
        }
        // A name that points into the header reads the ARCOUNT that the
        // signature raised: such a message is malformed once signed (found
        // by this target in its first 10-minute run).
        Err(_) if points_into_header(data) => return,
        other => panic!("a message signed here does not verify: {other:?}"),
    }
    // One byte changed in the signed part (the ID aside, which the TSIG's
    // original ID restores): never a good signature.
    if data.len() > 12 {
        let at = 2 + usize::from(data[data.len() - 1]) % (data.len() - 2);
        let mut bad = signed.clone();
        bad[at] ^= 0x20;
        assert!(
            !matches!(
                tsig::verify_request(&bad, ring, NOW),
                Ok(Verdict::Signed(..))
            ),
            "a changed byte at {at} still verifies"
        );
    }
});

/// Whether some two bytes of `data` read as a compression pointer to an
/// offset inside the 12-byte header (a superset of the names that do).
fn points_into_header(data: &[u8]) -> bool {
    data.windows(2)
        .any(|w| w[0] & 0xc0 == 0xc0 && ((usize::from(w[0] & 0x3f) << 8) | usize::from(w[1])) < 12)
}

/// Whether hickory-proto reads `data` as one message with nothing after
/// it (bytes after the records would sit between the message and the
/// signature appended here).
fn whole(data: &[u8]) -> bool {
    use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
    let mut decoder = BinDecoder::new(data);
    hickory_proto::op::Message::read(&mut decoder).is_ok() && decoder.is_empty()
}
