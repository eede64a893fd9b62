//! Any bytes as a queued packet: the parse never panics, and a key it
//! returns is consistent with the bytes it came from.
#![no_main]

use appfw::packet::{flow_key, PROTO_ICMP, PROTO_ICMPV6};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match flow_key(data, 7) {
        Ok(key) => {
            assert_eq!(key.netns, 7);
            let version = data[0] >> 4;
            assert!(version == 4 || version == 6, "a key from IP version {version}");
            if !matches!(key.proto, 6 | 17 | PROTO_ICMP | PROTO_ICMPV6) {
                assert_eq!((key.sport, key.dport), (0, 0));
            }
        }
        Err(u) => {
            assert_eq!(u.key.netns, 7);
            assert_eq!((u.key.sport, u.key.dport), (0, 0));
            assert!(!u.why.is_empty());
        }
    }
});
