//! The decoders of what crosses a process boundary: a handed-over ring's
//! message (HandedRing::receive) and a ring broker's request. Any bytes:
//! an error or a message that encodes back to the same bytes, never a
//! panic, never an allocation the input does not pay for.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(fds) = ringpool::handover::check_message(data) {
        assert!((1..=64).contains(&fds), "1 to 63 memfds and maybe a lease token, not {fds}");
    }
    if let Ok((entries, _leases)) = ringpool::handover::check_request(data) {
        assert_eq!(data.len(), 12);
        let _ = entries;
    }
});
