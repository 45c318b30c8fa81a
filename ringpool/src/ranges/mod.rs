//! Ranged reads into the pool: any `[offset, offset + len)` of a file, read
//! as its aligned cover (O_DIRECT needs offsets and lengths that are
//! multiples of the file's block) into pool memory, many ranges in flight
//! at once, each range's bytes one contiguous slice ([`RangeBuf`]) that
//! owns its memory (no copy; the memory returns to the pool when it
//! drops).
//!
//! A cover that fits in half a segment takes one lease; a larger one takes
//! whole segments, each one lease, consecutive and back to back in memory
//! (a span: one read per segment, as fixed I/O needs a buffer inside one
//! registered segment; the kernel splits each into many requests). A
//! short read that stops on a block boundary before the bytes asked for
//! goes on from there; the end of the file inside the cover (past the
//! range) is fine. Two drivers share the plan: [`IoPool::read_ranges`] on
//! the calling thread's own ring, [`IoPool::read_ranges_async`] through
//! [`OpHandle`](crate::OpHandle)s (a tokio runtime thread's own ring with
//! the `tokio` feature).

mod drive;

use std::ops::Deref;

use crate::buf::IoBuf;
use crate::error::{Error, Result};
use crate::file::DirectFile;
use crate::memory::IoMemory;
use crate::op::Done;
use crate::pool::IoPool;

/// One range to read: `len` bytes of `file` at `offset`.
#[derive(Debug, Clone)]
pub struct RangeRequest {
    /// The file.
    pub file: DirectFile,
    /// The range's first byte.
    pub offset: u64,
    /// Its length (0: an empty buffer, nothing read).
    pub len: u64,
}

impl RangeRequest {
    /// `len` bytes of `file` at `offset`.
    pub fn new(file: &DirectFile, offset: u64, len: u64) -> RangeRequest {
        RangeRequest { file: file.clone(), offset, len }
    }
}

/// The bytes of one range, in pool memory: derefs to exactly the bytes
/// asked for (the cover read around them stays hidden). The memory (one
/// lease, or whole segments' leases back to back) returns to the pool when
/// it drops. Valid in this process only.
#[derive(Debug)]
pub struct RangeBuf {
    /// The leases, in memory order (none for an empty range).
    bufs: Vec<IoBuf>,
    /// Where the asked-for bytes start in the first lease, and how many.
    delta: usize,
    len: usize,
    pool_offset: u64,
}

impl RangeBuf {
    /// The offset of the first byte in the pool (0 for an empty range).
    pub fn pool_offset(&self) -> u64 {
        self.pool_offset
    }

    /// The address of the first byte.
    pub fn as_ptr(&self) -> *const u8 {
        self.deref().as_ptr()
    }

    /// Whether it took whole segments (a range larger than half a segment).
    pub fn is_span(&self) -> bool {
        self.bufs.len() > 1
    }
}

impl Deref for RangeBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self.bufs.as_slice() {
            [] => &[],
            [one] => &one[self.delta..self.delta + self.len],
            many => {
                let leases: Vec<&crate::sys::buf::Lease> = many.iter().map(IoBuf::lease).collect();
                // Back to back by construction (Plan::new checks it).
                crate::sys::buf::adjacent_bytes(&leases, self.delta, self.len).unwrap_or(&[])
            }
        }
    }
}

impl AsRef<[u8]> for RangeBuf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

/// One read of a plan: into `buf`, lease `idx` of request `req` (whose
/// byte 0 is file offset `file_off`), of which `need` bytes must arrive,
/// `done` so far.
#[derive(Debug)]
struct Piece {
    req: usize,
    idx: usize,
    buf: IoBuf,
    file_off: u64,
    need: u64,
    done: u64,
}

/// A piece without its buffer, while the buffer is in flight.
#[derive(Debug, Clone, Copy)]
struct Meta {
    req: usize,
    idx: usize,
    file_off: u64,
    need: u64,
    done: u64,
}

impl Meta {
    fn of(p: &Piece) -> Meta {
        Meta { req: p.req, idx: p.idx, file_off: p.file_off, need: p.need, done: p.done }
    }

    fn with(self, buf: IoBuf) -> Piece {
        Piece { req: self.req, idx: self.idx, buf, file_off: self.file_off, need: self.need, done: self.done }
    }
}

/// The memory of one request while it is read: its leases come back here
/// from their reads.
#[derive(Debug)]
struct Held {
    bufs: Vec<Option<IoBuf>>,
    pool_offset: u64,
    /// Where the asked-for bytes start in the cover, and how many.
    delta: usize,
    len: usize,
}

/// Every request's memory and the reads that fill it.
#[derive(Debug)]
struct Plan {
    held: Vec<Held>,
    pieces: Vec<Piece>,
}

impl Plan {
    fn new(mem: &IoMemory, reqs: &[RangeRequest]) -> Result<Plan> {
        let mut held = Vec::with_capacity(reqs.len());
        let mut pieces = Vec::new();
        for (i, r) in reqs.iter().enumerate() {
            let (h, p) = plan_one(mem, i, r)?;
            held.push(h);
            pieces.extend(p);
        }
        Ok(Plan { held, pieces })
    }

    /// The buffers, once every piece is read.
    fn finish(mut self, read: Vec<Piece>) -> Result<Vec<RangeBuf>> {
        for p in read {
            self.held[p.req].bufs[p.idx] = Some(p.buf);
        }
        self.held
            .into_iter()
            .map(|h| {
                let bufs = h
                    .bufs
                    .into_iter()
                    .collect::<Option<Vec<IoBuf>>>()
                    .ok_or_else(|| Error::Lost("a ranged read lost a buffer".into()))?;
                Ok(RangeBuf { bufs, delta: h.delta, len: h.len, pool_offset: h.pool_offset + h.delta as u64 })
            })
            .collect()
    }
}

/// The alignment of `file`'s transfers (1 for buffered I/O).
fn align_of(file: &DirectFile) -> u64 {
    if file.is_direct() {
        u64::from(file.offset_align()).max(1)
    } else {
        1
    }
}

fn plan_one(mem: &IoMemory, i: usize, r: &RangeRequest) -> Result<(Held, Vec<Piece>)> {
    let overflow = || Error::invalid("range", format!("{}+{}", r.offset, r.len), "it overflows 64 bits");
    let end = r.offset.checked_add(r.len).ok_or_else(overflow)?;
    let size = r.file.size()?;
    if end > size {
        return Err(Error::RangePastEnd { path: r.file.path().to_path_buf(), offset: r.offset, end, size });
    }
    if r.len == 0 {
        return Ok((Held { bufs: Vec::new(), pool_offset: 0, delta: 0, len: 0 }, Vec::new()));
    }
    let len = usize::try_from(r.len).map_err(|_| Error::invalid("range length", r.len, "it does not fit in memory"))?;
    let align = align_of(&r.file);
    let start = r.offset / align * align;
    let cover = end.div_ceil(align).checked_mul(align).ok_or_else(overflow)? - start;
    let delta = (r.offset - start) as usize;
    let need = |at: u64, n: u64| end.min(at + n).saturating_sub(at);
    let lease = (cover <= mem.segment_size() / 2).then(|| mem.try_alloc(cover as usize).ok()).flatten();
    let bufs = match lease {
        Some(mut b) => {
            b.set_len(cover as usize)?;
            vec![b]
        }
        None => span(mem, cover)?,
    };
    let pool_offset = bufs[0].pool_offset();
    let mut pieces = Vec::with_capacity(bufs.len());
    let mut at = 0u64;
    for (idx, mut buf) in bufs.into_iter().enumerate() {
        let n = (buf.capacity() as u64).min(cover - at);
        buf.set_len(n as usize)?;
        pieces.push(Piece { req: i, idx, buf, file_off: start + at, need: need(start + at, n), done: 0 });
        at += n;
    }
    let held = Held { bufs: (0..pieces.len()).map(|_| None).collect(), pool_offset, delta, len };
    Ok((held, pieces))
}

/// Whole segments as leases, enough for `cover` bytes, consecutive and back
/// to back in memory (from the top of the pool: small leases come from the
/// bottom first).
fn span(mem: &IoMemory, cover: u64) -> Result<Vec<IoBuf>> {
    let seg = mem.segment_size();
    let segs = mem.segments();
    let k = usize::try_from(cover.div_ceil(seg)).unwrap_or(usize::MAX);
    if k <= segs.len() {
        for first in (0..=segs.len() - k).rev() {
            let run = &segs[first..first + k];
            let adjacent = run.windows(2).all(|w| w[0].addr + w[0].len as usize == w[1].addr);
            if !adjacent || run[..k - 1].iter().any(|s| s.len != seg) || run.iter().map(|s| s.len).sum::<u64>() < cover
            {
                continue;
            }
            // Whole segments, but only what the cover needs of the last (a
            // lease of a partial segment must be a block its buddy allocator
            // has: the last one may be the pool's shorter tail).
            let last_need = cover - seg * (k as u64 - 1);
            let taken: Result<Vec<IoBuf>> = run
                .iter()
                .enumerate()
                .map(|(j, s)| mem.try_alloc_in(s.index, if j + 1 == k { last_need.min(s.len) } else { s.len } as usize))
                .collect();
            match taken {
                Ok(bufs)
                    if bufs.windows(2).all(|w| w[0].as_ptr() as usize + w[0].capacity() == w[1].as_ptr() as usize) =>
                {
                    return Ok(bufs);
                }
                _ => continue,
            }
        }
    }
    let st = mem.stats();
    Err(Error::PoolExhausted {
        requested: crate::types::Bytes(cover),
        in_use: crate::types::Bytes(st.bytes_in_use),
        capacity: crate::types::Bytes(st.capacity),
    })
}

/// What a piece's completion means.
#[derive(Debug)]
enum Settled {
    /// Every byte it needs is in.
    Done(Piece),
    /// A short read on a block boundary: the rest is read next.
    Again(Piece),
}

/// A piece's completion: read, to go on from where it stopped, or failed.
fn settle(m: Meta, d: Done, reqs: &[RangeRequest]) -> Result<Settled> {
    let (res, mut buf) = d.into_one();
    let done = m.done + res? as u64;
    if done >= m.need {
        buf.reset_window();
        return Ok(Settled::Done(Meta { done, ..m }.with(buf)));
    }
    let file = &reqs[m.req].file;
    if done == m.done || !done.is_multiple_of(align_of(file)) {
        return Err(Error::Io {
            op: "read",
            path: Some(file.path().to_path_buf()),
            offset: Some(m.file_off + done),
            source: std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("the file ended {done} bytes into a read that needed {}", m.need),
            ),
        });
    }
    buf.reset_window();
    let total = buf.len();
    buf.set_window(done as usize, total - done as usize)?;
    Ok(Settled::Again(Meta { done, ..m }.with(buf)))
}

impl IoPool {
    /// Reads every range into the pool, all in flight at once on the
    /// calling thread's own ring (made by clone at its first call; inline
    /// where the pool has no table). All or nothing: on an error every
    /// read in flight is waited for and every byte of memory goes back.
    ///
    /// # Errors
    /// [`Error::RangePastEnd`] for a range past the end of its file;
    /// [`Error::PoolExhausted`] when the pool has no room for a range; the
    /// reads' errors.
    pub fn read_ranges(&self, reqs: &[RangeRequest]) -> Result<Vec<RangeBuf>> {
        let Plan { held, pieces } = Plan::new(self.memory(), reqs)?;
        let read = drive::blocking(self, reqs, pieces)?;
        Plan { held, pieces: Vec::new() }.finish(read)
    }

    /// As [`IoPool::read_ranges`], awaited: every read is submitted at
    /// once ([`IoPool::submit`]; on a tokio runtime thread, with the
    /// `tokio` feature, on that thread's own ring), then awaited.
    ///
    /// # Errors
    /// As [`IoPool::read_ranges`].
    pub async fn read_ranges_async(&self, reqs: &[RangeRequest]) -> Result<Vec<RangeBuf>> {
        let Plan { held, pieces } = Plan::new(self.memory(), reqs)?;
        let read = drive::awaited(self, reqs, pieces).await?;
        Plan { held, pieces: Vec::new() }.finish(read)
    }
}
