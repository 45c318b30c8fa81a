//! A ring broker's status over its own socket: a client sends `"RPS1"`,
//! the broker answers with its state (what `ringpool serve --status`
//! prints).
//!
//! ```text
//! "RPT3" | total_len u32 | pid u32 | pool_bytes u64 | segments u16 | capacity u16
//! | served u64 | refused u64 | following u32 | growths u64 | shrinks u64 | shrink_timeouts u64
//! | clients u32 | (pid u32, uid u32, rings u32, lease_start u16, lease_end u16) ...
//! ```

use std::os::fd::AsFd;
use std::path::Path;

use crate::error::{Error, Result};
use crate::memory::Reader;
use crate::stats::{BrokerClient, BrokerStatus};
use crate::sys;

/// What a client sends to ask for the status.
pub(crate) const ASK: &[u8; 4] = b"RPS1";
const ANSWER: &[u8; 4] = b"RPT3";
/// Largest answer read: 4096 clients and the rest (more are cut).
pub(crate) const MAX_ANSWER: usize = 64 + 16 * 4096;

pub(crate) fn encode(s: &BrokerStatus) -> Vec<u8> {
    let clients = &s.clients[..s.clients.len().min(4096)];
    let mut v = Vec::with_capacity(64 + 16 * clients.len());
    v.extend_from_slice(ANSWER);
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&s.pid.to_le_bytes());
    v.extend_from_slice(&s.pool_bytes.to_le_bytes());
    v.extend_from_slice(&s.segments.to_le_bytes());
    v.extend_from_slice(&s.capacity.to_le_bytes());
    v.extend_from_slice(&s.served.to_le_bytes());
    v.extend_from_slice(&s.refused.to_le_bytes());
    v.extend_from_slice(&s.following_rings.to_le_bytes());
    v.extend_from_slice(&s.growths.to_le_bytes());
    v.extend_from_slice(&s.shrinks.to_le_bytes());
    v.extend_from_slice(&s.shrink_timeouts.to_le_bytes());
    // At most 4096 (cut above).
    v.extend_from_slice(&(clients.len() as u32).to_le_bytes());
    for c in clients {
        v.extend_from_slice(&c.pid.to_le_bytes());
        v.extend_from_slice(&c.uid.to_le_bytes());
        v.extend_from_slice(&c.rings.to_le_bytes());
        v.extend_from_slice(&c.lease_segments.start.to_le_bytes());
        v.extend_from_slice(&c.lease_segments.end.to_le_bytes());
    }
    // At most MAX_ANSWER bytes.
    let total = v.len() as u32;
    v[4..8].copy_from_slice(&total.to_le_bytes());
    v
}

pub(crate) fn decode(b: &[u8]) -> std::result::Result<BrokerStatus, String> {
    let mut r = Reader::new(b);
    if r.take(4, "magic")? != ANSWER {
        return Err("not a ring broker's status (bad magic)".into());
    }
    let total = r.u32("total length")? as usize;
    if total != b.len() {
        return Err(format!("the status says it has {total} bytes; {} arrived", b.len()));
    }
    let mut s = BrokerStatus {
        pid: r.u32("pid")?,
        pool_bytes: r.u64("pool bytes")?,
        segments: r.u16("segments")?,
        capacity: r.u16("capacity")?,
        served: r.u64("served")?,
        refused: r.u64("refused")?,
        following_rings: r.u32("following rings")?,
        growths: r.u64("growths")?,
        shrinks: r.u64("shrinks")?,
        shrink_timeouts: r.u64("shrink timeouts")?,
        clients: Vec::new(),
    };
    let n = r.u32("client count")?;
    if n > 4096 {
        return Err(format!("{n} clients"));
    }
    for _ in 0..n {
        let pid = r.u32("client pid")?;
        let uid = r.u32("client uid")?;
        let rings = r.u32("client rings")?;
        let lease_segments = r.u16("lease start")?..r.u16("lease end")?;
        s.clients.push(BrokerClient { pid, uid, rings, lease_segments });
    }
    if r.at != b.len() {
        return Err(format!("{} bytes after the end of the status", b.len() - r.at));
    }
    Ok(s)
}

impl super::RingBroker {
    /// Asks the broker at `path` for its state: the pool, the rings it
    /// handed over, its connections (as `ringpool serve --status` prints).
    ///
    /// # Errors
    /// [`Error::Io`] connecting or reading; [`Error::PeerRefused`] with the
    /// broker's reason; [`Error::BadHandover`] for an answer that is not a
    /// status.
    pub fn status(path: impl AsRef<Path>) -> Result<BrokerStatus> {
        let path = path.as_ref();
        let stream = Self::connect(path)?;
        // A broker that refuses the connection says why, then closes it (the
        // question may meet the closed end): the reason comes first.
        if let Err(e) = sys::socket::send_with_fds(stream.as_fd(), ASK, &[]) {
            let closed = matches!(e.raw_os_error(), Some(libc::EPIPE) | Some(libc::ECONNRESET));
            if closed {
                if let Ok((bytes, _)) = sys::socket::recv_with_fds(stream.as_fd(), MAX_ANSWER) {
                    if let Some(reason) = super::wire::refusal(&bytes) {
                        return Err(Error::PeerRefused { reason });
                    }
                }
            }
            return Err(Error::os("ask the broker's status", e));
        }
        let (mut bytes, _fds) = sys::socket::recv_with_fds(stream.as_fd(), MAX_ANSWER)
            .map_err(|e| Error::os("read the broker's status", e))?;
        if let Some(reason) = super::wire::refusal(&bytes) {
            return Err(Error::PeerRefused { reason });
        }
        // A long answer may arrive in parts on a stream socket.
        let declared = bytes.get(4..8).map(|w| u32::from_le_bytes(w.try_into().expect("4 bytes")) as usize);
        if let Some(total) = declared.filter(|&t| t > bytes.len() && t <= MAX_ANSWER) {
            use std::io::Read;
            let have = bytes.len();
            bytes.resize(total, 0);
            (&stream).read_exact(&mut bytes[have..]).map_err(|e| Error::os("read the broker's status", e))?;
        }
        decode(&bytes).map_err(|reason| Error::BadHandover { reason })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_round_trips_and_every_truncation_is_an_error() {
        let s = BrokerStatus {
            pid: 42,
            pool_bytes: 8 << 30,
            segments: 8,
            capacity: 16,
            served: 9,
            refused: 1,
            following_rings: 3,
            growths: 4,
            shrinks: 2,
            shrink_timeouts: 1,
            clients: vec![
                BrokerClient { pid: 100, uid: 0, rings: 2, lease_segments: 2..3 },
                BrokerClient { pid: 101, uid: 65534, rings: 1, lease_segments: 0..0 },
            ],
        };
        let b = encode(&s);
        assert_eq!(decode(&b).unwrap(), s);
        for n in 0..b.len() {
            assert!(decode(&b[..n]).is_err(), "cut at {n}");
        }
    }
}
