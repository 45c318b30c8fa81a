//! The handover message: what travels with a ring's fd and the pool's
//! memfds over a Unix socket. Little-endian, versioned, every length
//! checked; the decoder never trusts the sender (a fuzz target runs it).
//!
//! ```text
//! magic "RPH1" | version u16 | total_len u32 | params_len u16 | params
//! | page u8 | segment_size u64 | alignment u64
//! | maps u16 | map len u64 ...
//! | segments u16 | (index u16, map u16, map_off u64, len u64, addr u64) ...
//! | lease_start u16 | lease_end u16 | owner u32 | ring_fd i32 | flags u32
//! | holder u32
//! ```
//! `flags` bit 0: the ring follows the pool's growth; bit 1: the sender
//! enabled the ring already (it restricted the ring, and a restriction is
//! in force only once the ring is enabled). The descriptors
//! travel in the same message: one memfd per mapping, in order, then the
//! lease token (a pipe's write end) when the lease range is not empty, then
//! the growth channel (a SOCK_SEQPACKET socket) when the ring follows growth. The ring's own fd cannot travel (Linux refuses io_uring fds
//! in SCM_RIGHTS since 6.7): `ring_fd` is its number in the sender, which
//! the receiver duplicates with `pidfd_getfd` (same user) while the sender
//! keeps it open, then acknowledges with one byte. `holder`, when not 0, is
//! the pid of the process to duplicate it from instead of the sender (a
//! broker's ring holder, `sys::holder`), where it is descriptor `ring_fd`:
//! its pidfd then travels last (a pid would name another process in
//! another pid namespace).

use std::ops::Range;

use crate::memory::{Layout, Reader};
#[cfg(test)]
use crate::memory::{MapDesc, SegDesc};
#[cfg(test)]
use crate::types::PageKind;

const MAGIC: &[u8; 4] = b"RPH1";
const VERSION: u16 = 3;
/// `flags` bit: the ring follows the pool's growth (a channel follows).
const FOLLOWS_GROWTH: u32 = 1;
/// `flags` bit: the ring is enabled already.
const ENABLED: u32 = 2;
/// Largest message accepted: 16384 segments of 28 bytes, and the rest.
pub(crate) const MAX_MESSAGE: usize = 16384 * 28 + 64 * 8 + 4096;

/// What a handed-over ring's process needs besides the descriptors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    /// The ring's `io_uring_params`, as the kernel filled them in.
    pub params: Vec<u8>,
    pub layout: Layout,
    /// The segments the receiving process leases from alone.
    pub leases: Range<u16>,
    /// The process that registered the pool.
    pub owner: u32,
    /// The ring's fd in the sending process (-1 where it does not apply).
    pub ring_fd: i32,
    /// The ring follows the pool's growth: its growth channel travels last.
    pub follows_growth: bool,
    /// The process that holds the ring's fd for the receiver to duplicate
    /// (0: the sender).
    pub holder: u32,
    /// The sender enabled the ring (a restricted one): the receiver does
    /// not.
    pub enabled: bool,
}

impl Message {
    /// Descriptors that travel with it: one memfd per mapping, and the
    /// lease token when it has lease segments.
    pub(crate) fn fds(&self) -> usize {
        self.layout.maps.len()
            + usize::from(!self.leases.is_empty())
            + usize::from(self.follows_growth)
            + usize::from(self.holder != 0)
    }
}

pub(crate) fn encode(m: &Message) -> Vec<u8> {
    let mut v = Vec::with_capacity(64 + m.params.len() + m.layout.segs.len() * 28);
    v.extend_from_slice(MAGIC);
    v.extend_from_slice(&VERSION.to_le_bytes());
    // The total length, filled in at the end.
    v.extend_from_slice(&0u32.to_le_bytes());
    // At most a few hundred bytes of parameters; 16384 segments, 63 maps
    // (Layout::check bounds what is encoded).
    v.extend_from_slice(&(m.params.len() as u16).to_le_bytes());
    v.extend_from_slice(&m.params);
    m.layout.encode_into(&mut v);
    v.extend_from_slice(&m.leases.start.to_le_bytes());
    v.extend_from_slice(&m.leases.end.to_le_bytes());
    v.extend_from_slice(&m.owner.to_le_bytes());
    v.extend_from_slice(&m.ring_fd.to_le_bytes());
    let flags = if m.follows_growth { FOLLOWS_GROWTH } else { 0 } | if m.enabled { ENABLED } else { 0 };
    v.extend_from_slice(&flags.to_le_bytes());
    v.extend_from_slice(&m.holder.to_le_bytes());
    // At most MAX_MESSAGE bytes (Layout::check bounds the counts).
    let total = v.len() as u32;
    v[6..10].copy_from_slice(&total.to_le_bytes());
    v
}

/// The length a handover message says it has, once its first 10 bytes
/// are in (a stream socket may deliver a long one in parts).
pub(crate) fn declared_len(b: &[u8]) -> Option<usize> {
    if b.len() < 10 || &b[..4] != MAGIC {
        return None;
    }
    Some(u32::from_le_bytes(b[6..10].try_into().expect("4 bytes")) as usize)
}

/// Decodes and checks a message (not its descriptors: see `Message::fds`).
pub(crate) fn decode(b: &[u8]) -> Result<Message, String> {
    let mut r = Reader::new(b);
    if r.take(4, "magic")? != MAGIC {
        return Err("not a ringpool handover message (bad magic)".into());
    }
    let version = r.u16("version")?;
    if version != VERSION {
        return Err(format!("handover message version {version}; this ringpool reads version {VERSION}"));
    }
    let total = r.u32("total length")? as usize;
    if total != b.len() {
        return Err(format!("the message says it has {total} bytes; {} arrived", b.len()));
    }
    let params_len = r.u16("parameter length")? as usize;
    if params_len != crate::sys::handoff::PARAMS_LEN {
        return Err(format!(
            "ring parameters of {params_len} bytes; io_uring_params has {}",
            crate::sys::handoff::PARAMS_LEN
        ));
    }
    let params = r.take(params_len, "ring parameters")?.to_vec();
    let layout = Layout::decode_from(&mut r)?;
    let leases = r.u16("lease start")?..r.u16("lease end")?;
    let owner = r.u32("owner")?;
    let ring_fd = r.u32("ring fd")? as i32;
    let flags = r.u32("flags")?;
    if flags & !(FOLLOWS_GROWTH | ENABLED) != 0 {
        return Err(format!("unknown flags {flags:#x}"));
    }
    let holder = r.u32("holder")?;
    if r.at != b.len() {
        return Err(format!("{} bytes after the end of the message", b.len() - r.at));
    }
    layout.check()?;
    if leases.start > leases.end || usize::from(leases.end) > layout.segs.len() {
        return Err(format!("lease segments {leases:?} of a pool of {} segments", layout.segs.len()));
    }
    let (follows_growth, enabled) = (flags & FOLLOWS_GROWTH != 0, flags & ENABLED != 0);
    Ok(Message { params, layout, leases, owner, ring_fd, follows_growth, holder, enabled })
}

/// What a process asks a ring broker for: `"RPQ1" | version u16 | entries
/// u32 | lease segments u16` (12 bytes); `"RPW1"` instead of `"RPQ1"`: grow
/// the pool by that many segments first and lease exactly those.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Request {
    /// Submission queue entries of the ring.
    pub entries: u32,
    /// How many segments to lease from alone (0: none).
    pub leases: u16,
    /// Grow the pool by `leases` segments, and lease those.
    pub grow: bool,
}

const REQUEST: &[u8; 4] = b"RPQ1";
const GROW_REQUEST: &[u8; 4] = b"RPW1";
const REFUSAL: &[u8; 4] = b"RPE1";
/// Longest refusal reason sent.
const MAX_REASON: usize = 1024;

pub(crate) fn encode_request(q: &Request) -> Vec<u8> {
    let mut v = Vec::with_capacity(12);
    v.extend_from_slice(if q.grow { GROW_REQUEST } else { REQUEST });
    v.extend_from_slice(&VERSION.to_le_bytes());
    v.extend_from_slice(&q.entries.to_le_bytes());
    v.extend_from_slice(&q.leases.to_le_bytes());
    v
}

/// Decodes a request (the broker never trusts it).
pub(crate) fn decode_request(b: &[u8]) -> Result<Request, String> {
    let mut r = Reader::new(b);
    let grow = match r.take(4, "magic")? {
        m if m == REQUEST => false,
        m if m == GROW_REQUEST => true,
        _ => return Err("not a ringpool ring request (bad magic)".into()),
    };
    let version = r.u16("version")?;
    if version != VERSION {
        return Err(format!("request version {version}; this broker reads version {VERSION}"));
    }
    let entries = r.u32("entries")?;
    let leases = r.u16("lease segments")?;
    if r.at != b.len() {
        return Err(format!("{} bytes after the end of the request", b.len() - r.at));
    }
    if grow && leases == 0 {
        return Err("a growth of 0 segments".into());
    }
    Ok(Request { entries, leases, grow })
}

/// A broker's refusal: `"RPE1" | reason (UTF-8)`.
pub(crate) fn encode_refusal(reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(MAX_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut v = REFUSAL.to_vec();
    v.extend_from_slice(&reason.as_bytes()[..end]);
    v
}

/// The reason, when `b` is a refusal.
pub(crate) fn refusal(b: &[u8]) -> Option<String> {
    b.strip_prefix(REFUSAL.as_slice()).map(|r| String::from_utf8_lossy(r).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// What the fuzz target checks, as a property: any bytes, and any
        /// mutation of a valid message, decode to an error or to a message
        /// that encodes back to the same bytes; never a panic.
        #[test]
        fn no_input_makes_the_decoders_panic(
            junk in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
            flips in proptest::collection::vec((0usize..400, proptest::num::u8::ANY), 0..8),
        ) {
            for bytes in [junk.clone(), {
                let mut b = encode(&message());
                for &(at, v) in &flips {
                    let n = b.len();
                    b[at % n] = v;
                }
                b
            }] {
                if let Ok(m) = decode(&bytes) {
                    proptest::prop_assert_eq!(encode(&m), bytes.clone());
                }
                if let Ok(q) = decode_request(&bytes) {
                    proptest::prop_assert_eq!(encode_request(&q), bytes.clone());
                }
            }
        }
    }

    #[test]
    fn requests_and_refusals_round_trip_and_bad_ones_are_errors() {
        let q = Request { entries: 64, leases: 3, grow: false };
        let b = encode_request(&q);
        assert_eq!(decode_request(&b).unwrap(), q);
        let g = Request { grow: true, ..q };
        assert_eq!(decode_request(&encode_request(&g)).unwrap(), g);
        assert!(decode_request(&encode_request(&Request { leases: 0, ..g })).is_err());
        for n in 0..b.len() {
            assert!(decode_request(&b[..n]).is_err());
        }
        assert!(decode_request(b"GET / HTTP/1.1\r\n").is_err());
        assert_eq!(refusal(&encode_refusal("not yours")).as_deref(), Some("not yours"));
        assert_eq!(refusal(&b), None);
        let long = "é".repeat(2000);
        assert!(refusal(&encode_refusal(&long)).unwrap().len() <= MAX_REASON);
    }

    fn message() -> Message {
        Message {
            params: vec![7; crate::sys::handoff::PARAMS_LEN],
            layout: Layout {
                page: PageKind::Huge2M,
                segment_size: 1 << 30,
                alignment: 4096,
                maps: vec![MapDesc { len: 2 << 30 }],
                segs: vec![
                    SegDesc { index: 0, map: 0, map_off: 0, len: 1 << 30, addr: 0x7f00_0000_0000 },
                    SegDesc { index: 1, map: 0, map_off: 1 << 30, len: 1 << 30, addr: 0x7f00_4000_0000 },
                ],
            },
            leases: 1..2,
            owner: 4242,
            ring_fd: 7,
            follows_growth: false,
            holder: 0,
            enabled: false,
        }
    }

    #[test]
    fn a_message_round_trips() {
        let m = message();
        assert_eq!(decode(&encode(&m)).unwrap(), m);
        assert_eq!(m.fds(), 2, "one memfd, the lease token (the ring is pulled)");
        let m = Message { follows_growth: true, ..message() };
        assert_eq!(decode(&encode(&m)).unwrap(), m);
        assert_eq!(m.fds(), 3, "and the growth channel");
        let mut b = encode(&m);
        let n = b.len();
        b[n - 8] = 4;
        assert!(decode(&b).unwrap_err().contains("unknown flags"));
        let m = Message { enabled: true, ..message() };
        assert_eq!(decode(&encode(&m)).unwrap(), m, "a ring the sender enabled says so");
        let m = Message { holder: 31337, ..message() };
        assert_eq!(decode(&encode(&m)).unwrap(), m, "the holder's pid travels");
        assert_eq!(m.fds(), 3, "and the holder's pidfd");
    }

    #[test]
    fn every_truncation_and_corruption_is_an_error_not_a_panic() {
        let bytes = encode(&message());
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n]).is_err(), "a message cut at {n} bytes was accepted");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).unwrap_err().contains("arrived"), "the total length is checked");
        for (at, bad) in [(0, b'X'), (4, 9), (6, 3)] {
            let mut b = bytes.clone();
            b[at] = bad;
            assert!(decode(&b).is_err(), "byte {at} = {bad} was accepted");
        }
        // A segment outside its mapping.
        let mut m = message();
        m.layout.segs[1].map_off = 3 << 30;
        assert!(decode(&encode(&m)).unwrap_err().contains("not inside its mapping"));
        // Leases past the pool.
        let mut m = message();
        m.leases = 0..3;
        assert!(decode(&encode(&m)).unwrap_err().contains("lease segments"));
    }
}
