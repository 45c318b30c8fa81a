//! Verifiable blocks: every 4 KiB carries a header (magic, crc32c, file
//! offset, sequence) so that a read can tell corruption, misdirected I/O and
//! lost writes apart, and name the offset.

use std::sync::atomic::{AtomicU64, Ordering};

pub const MAGIC: u32 = 0x5250_5631; // "RPV1"
/// The verified unit.
pub const SUB: usize = 4096;

/// Writes a verifiable 4 KiB sub-block: magic, crc32c of bytes 4.., file
/// offset, sequence, then a payload derived from both (incompressible).
pub fn stamp(block: &mut [u8], offset: u64, seq: u64) {
    let mut x = offset.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seq.wrapping_mul(0xc2b2_ae3d_27d4_eb4f) | 1;
    for chunk in block[24..].chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    block[8..16].copy_from_slice(&offset.to_le_bytes());
    block[16..24].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32c::crc32c(&block[8..]);
    block[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    block[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// Checks a sub-block read at `offset`; returns its sequence, or what is wrong.
pub fn check(block: &[u8], offset: u64) -> Result<u64, String> {
    let magic = u32::from_le_bytes(block[0..4].try_into().expect("4 bytes"));
    if magic != MAGIC {
        return Err(format!("offset {offset}: no ringpool verify header (magic {magic:#x}); lay the file out again"));
    }
    let crc = u32::from_le_bytes(block[4..8].try_into().expect("4 bytes"));
    let actual = crc32c::crc32c(&block[8..]);
    if crc != actual {
        return Err(format!("offset {offset}: checksum mismatch (stored {crc:#010x}, computed {actual:#010x})"));
    }
    let at = u64::from_le_bytes(block[8..16].try_into().expect("8 bytes"));
    if at != offset {
        return Err(format!("offset {offset}: block belongs at offset {at} (misdirected I/O)"));
    }
    Ok(u64::from_le_bytes(block[16..24].try_into().expect("8 bytes")))
}

/// The sequence each 4 KiB sub-block was last written with (completed),
/// and which were written at all.
pub struct Ledger {
    pub seq: Vec<AtomicU64>,
    pub written: Vec<AtomicU64>,
}

/// A ledger sequence meaning "a write whose completion was not observed
/// (its handle was dropped): any version may be on disk".
pub const UNCERTAIN: u64 = u64::MAX;

impl Ledger {
    pub fn new(size: u64) -> Ledger {
        let n = (size / SUB as u64) as usize;
        Ledger {
            seq: (0..n).map(|_| AtomicU64::new(0)).collect(),
            written: (0..n.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Records a completed write of `[offset, offset + len)` with `seq`
    /// (or [`UNCERTAIN`]). An uncertain block stays uncertain.
    pub fn record(&self, offset: u64, len: u64, seq: u64) {
        for i in (offset / SUB as u64)..((offset + len) / SUB as u64) {
            let cell = &self.seq[i as usize];
            if seq == UNCERTAIN || cell.load(Ordering::Relaxed) != UNCERTAIN {
                cell.store(seq, Ordering::Relaxed);
            }
            self.written[i as usize / 64].fetch_or(1 << (i % 64), Ordering::Relaxed);
        }
    }

    /// Indexes of the sub-blocks ever written.
    pub fn written_blocks(&self) -> Vec<u64> {
        self.written
            .iter()
            .enumerate()
            .flat_map(|(w, bits)| {
                let b = bits.load(Ordering::Relaxed);
                (0..64).filter(move |i| b & (1 << i) != 0).map(move |i| (w * 64 + i) as u64)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_catch_corruption_and_misplacement() {
        let mut b = vec![0u8; SUB];
        stamp(&mut b, 8192, 7);
        assert_eq!(check(&b, 8192), Ok(7));
        assert!(check(&b, 4096).unwrap_err().contains("misdirected"));
        b[100] ^= 1;
        assert!(check(&b, 8192).unwrap_err().contains("checksum"));
        assert!(check(&vec![0u8; SUB], 0).unwrap_err().contains("no ringpool verify header"));
    }

    #[test]
    fn uncertain_blocks_stay_uncertain() {
        let l = Ledger::new(1 << 20);
        l.record(0, 8192, 5);
        l.record(4096, 4096, UNCERTAIN);
        l.record(0, 8192, 9);
        assert_eq!(l.seq[0].load(Ordering::Relaxed), 9);
        assert_eq!(l.seq[1].load(Ordering::Relaxed), UNCERTAIN);
        assert_eq!(l.written_blocks(), vec![0, 1]);
    }
}
