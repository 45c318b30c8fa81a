//! The byte form of a shared pool's layout: the part of a handover
//! message that describes the pool (see `handover::wire`), and the growth
//! notice an owner sends the processes whose rings follow its growth
//! (`"RPG1"` and the layout after the growth). Little-endian, every length
//! checked; the decoder never trusts the sender.
//!
//! ```text
//! page u8 | segment_size u64 | alignment u64
//! | maps u16 | map len u64 ...
//! | segments u16 | (index u16, map u16, map_off u64, len u64, addr u64) ...
//! ```

use super::view::{Layout, MapDesc, SegDesc};
use crate::types::PageKind;

const NOTICE: &[u8; 4] = b"RPG1";
const SHRINK: &[u8; 4] = b"RPK1";

/// What an owner tells a process whose rings follow its pool.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Notice {
    /// The pool grew: its layout now (the memfds travel beside it).
    Grew(Layout),
    /// The pool shrank to its first `n` segments; the rings no longer
    /// hold the others' slots.
    Shrank(u16),
}

/// The shrink notice: `"RPK1"` and the segment count (u16).
pub(crate) fn encode_shrink_notice(segments: u16) -> Vec<u8> {
    let mut v = SHRINK.to_vec();
    v.extend_from_slice(&segments.to_le_bytes());
    v
}

impl Notice {
    /// Decodes and checks a notice of either kind.
    pub(crate) fn decode(b: &[u8]) -> Result<Notice, String> {
        if b.starts_with(SHRINK) {
            let mut r = Reader::new(b);
            r.take(4, "magic")?;
            let n = r.u16("segment count")?;
            if r.at != b.len() {
                return Err(format!("{} bytes after the end of the shrink notice", b.len() - r.at));
            }
            if n == 0 {
                return Err("a shrink notice to no segments (a pool keeps one at least)".into());
            }
            return Ok(Notice::Shrank(n));
        }
        Layout::decode_notice(b).map(Notice::Grew)
    }
}

/// A cursor that fails, instead of panicking, past the end.
pub(crate) struct Reader<'a> {
    pub(crate) b: &'a [u8],
    pub(crate) at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Self {
        Reader { b, at: 0 }
    }
    pub(crate) fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len());
        let Some(end) = end else {
            return Err(format!("truncated message: {what} at byte {} of {}", self.at, self.b.len()));
        };
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    pub(crate) fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }
    pub(crate) fn u16(&mut self, what: &str) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().expect("2 bytes")))
    }
    pub(crate) fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().expect("4 bytes")))
    }
    pub(crate) fn u64(&mut self, what: &str) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().expect("8 bytes")))
    }
}

fn page_code(p: PageKind) -> u8 {
    match p {
        PageKind::Base => 0,
        PageKind::Transparent => 1,
        PageKind::Huge2M => 2,
        PageKind::Huge1G => 3,
    }
}

impl Layout {
    /// Appends the layout's bytes to `v` (counts bounded by
    /// [`Layout::check`]: at most 16384 segments and 63 mappings).
    pub(crate) fn encode_into(&self, v: &mut Vec<u8>) {
        v.push(page_code(self.page));
        v.extend_from_slice(&self.segment_size.to_le_bytes());
        v.extend_from_slice(&self.alignment.to_le_bytes());
        v.extend_from_slice(&(self.maps.len() as u16).to_le_bytes());
        for map in &self.maps {
            v.extend_from_slice(&map.len.to_le_bytes());
        }
        v.extend_from_slice(&(self.segs.len() as u16).to_le_bytes());
        for s in &self.segs {
            v.extend_from_slice(&s.index.to_le_bytes());
            v.extend_from_slice(&s.map.to_le_bytes());
            v.extend_from_slice(&s.map_off.to_le_bytes());
            v.extend_from_slice(&s.len.to_le_bytes());
            v.extend_from_slice(&s.addr.to_le_bytes());
        }
    }

    /// Reads a layout at the cursor (not yet checked: see [`Layout::check`]).
    pub(crate) fn decode_from(r: &mut Reader<'_>) -> Result<Layout, String> {
        let page = match r.u8("page kind")? {
            0 => PageKind::Base,
            1 => PageKind::Transparent,
            2 => PageKind::Huge2M,
            3 => PageKind::Huge1G,
            x => return Err(format!("unknown page kind {x}")),
        };
        let segment_size = r.u64("segment size")?;
        let alignment = r.u64("alignment")?;
        let nmaps = r.u16("mapping count")? as usize;
        if nmaps == 0 || nmaps > crate::sys::socket::MAX_FDS - 1 {
            return Err(format!("{nmaps} mappings"));
        }
        let maps =
            (0..nmaps).map(|_| r.u64("mapping length").map(|len| MapDesc { len })).collect::<Result<Vec<_>, _>>()?;
        let nsegs = r.u16("segment count")? as usize;
        let mut segs = Vec::with_capacity(nsegs.min(16384));
        for _ in 0..nsegs {
            segs.push(SegDesc {
                index: r.u16("segment index")?,
                map: r.u16("segment mapping")?,
                map_off: r.u64("segment offset")?,
                len: r.u64("segment length")?,
                addr: r.u64("segment address")?,
            });
        }
        Ok(Layout { page, segment_size, alignment, maps, segs })
    }

    /// A growth notice of this layout.
    pub(crate) fn encode_notice(&self) -> Vec<u8> {
        let mut v = NOTICE.to_vec();
        self.encode_into(&mut v);
        v
    }

    /// Decodes and checks a growth notice.
    pub(crate) fn decode_notice(b: &[u8]) -> Result<Layout, String> {
        let mut r = Reader::new(b);
        if r.take(4, "magic")? != NOTICE {
            return Err("not a ringpool growth notice (bad magic)".into());
        }
        let layout = Layout::decode_from(&mut r)?;
        if r.at != b.len() {
            return Err(format!("{} bytes after the end of the notice", b.len() - r.at));
        }
        layout.check()?;
        Ok(layout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_round_trips_and_every_truncation_is_an_error() {
        let l = Layout {
            page: PageKind::Base,
            segment_size: 1 << 22,
            alignment: 4096,
            maps: vec![MapDesc { len: 1 << 23 }, MapDesc { len: 1 << 22 }],
            segs: vec![
                SegDesc { index: 0, map: 0, map_off: 0, len: 1 << 22, addr: 0x7f00_0000_0000 },
                SegDesc { index: 1, map: 0, map_off: 1 << 22, len: 1 << 22, addr: 0x7f00_0040_0000 },
                SegDesc { index: 2, map: 1, map_off: 0, len: 1 << 22, addr: 0x7e00_0000_0000 },
            ],
        };
        let b = l.encode_notice();
        assert_eq!(Layout::decode_notice(&b).unwrap(), l);
        for n in 0..b.len() {
            assert!(Layout::decode_notice(&b[..n]).is_err(), "cut at {n}");
        }
        let mut longer = b.clone();
        longer.push(0);
        assert!(Layout::decode_notice(&longer).is_err());
        let mut bad = l.clone();
        bad.segs[2].map = 5;
        assert!(Layout::decode_notice(&bad.encode_notice()).unwrap_err().contains("mapping 5"));
        assert_eq!(Notice::decode(&b).unwrap(), Notice::Grew(l));
    }

    #[test]
    fn a_layout_with_absent_segments_round_trips_and_absent_ones_carry_nothing() {
        use crate::memory::ABSENT;
        let seg = |index, map, addr| SegDesc { index, map, map_off: 0, len: 1 << 22, addr };
        let l = Layout {
            page: PageKind::Base,
            segment_size: 1 << 22,
            alignment: 4096,
            maps: vec![MapDesc { len: 1 << 22 }],
            segs: vec![seg(0, ABSENT, 0), seg(1, 0, 0x7f00_0000_0000), seg(2, ABSENT, 0)],
        };
        assert_eq!(Layout::decode_notice(&l.encode_notice()).unwrap(), l);
        let mut bad = l.clone();
        bad.segs[0].addr = 0x7f00_0040_0000;
        assert!(bad.check().unwrap_err().contains("absent segment 0"));
        let mut bad = l.clone();
        bad.segs[2].map_off = 4096;
        assert!(bad.check().is_err());
        let mut bad = l.clone();
        bad.segs[2].len = 1 << 23;
        assert!(bad.check().is_err());
    }

    #[test]
    fn a_shrink_notice_round_trips_and_bad_ones_are_errors() {
        let b = encode_shrink_notice(3);
        assert_eq!(Notice::decode(&b).unwrap(), Notice::Shrank(3));
        for n in 0..b.len() {
            assert!(Notice::decode(&b[..n]).is_err(), "cut at {n}");
        }
        let mut longer = b.clone();
        longer.push(0);
        assert!(Notice::decode(&longer).is_err());
        assert!(Notice::decode(&encode_shrink_notice(0)).unwrap_err().contains("no segments"));
    }
}
