//! `IoBuf`, a lease of pool memory, and `Buffers`, what an operation holds.

use std::fmt;
use std::ops::{Deref, DerefMut};

use crate::error::{Error, Result};
use crate::sys::buf::Lease;

/// A lease of pool memory: `capacity()` bytes inside one segment, aligned to
/// the pool's alignment, with the `buf_index` of that segment. Returned to
/// the allocator when dropped.
///
/// I/O operations take an `IoBuf` by value and hand it back with the result,
/// so no code can touch bytes the kernel may still be writing.
///
/// `len()` is the part that I/O uses (all of it at first); shorten it with
/// [`IoBuf::set_len`], or move it with [`IoBuf::set_window`].
pub struct IoBuf {
    lease: Lease,
    /// The window I/O uses: `[start, start + len)` of the lease.
    start: usize,
    len: usize,
    segment: u16,
}

impl IoBuf {
    /// The lease under it (for slices over adjacent leases).
    pub(crate) fn lease(&self) -> &Lease {
        &self.lease
    }

    pub(crate) fn new(lease: Lease, segment: u16) -> IoBuf {
        let len = lease.capacity();
        IoBuf { lease, start: 0, len, segment }
    }

    /// A buffer of no memory, from no pool (capacity 0): handed back with
    /// the error of an operation whose own buffers cannot be (its ring
    /// failed, or it was in flight in the parent of a forked child).
    pub fn detached() -> IoBuf {
        let owner: std::sync::Arc<dyn crate::sys::buf::LeaseOwner> = std::sync::Arc::new(crate::sys::buf::Nowhere);
        IoBuf::new(Lease::new(owner, crate::sys::buf::Grant::new(0, 0, 0)), 0)
    }

    /// Bytes leased (the request rounded up to the alignment).
    pub fn capacity(&self) -> usize {
        self.lease.capacity()
    }

    /// Bytes that I/O on this buffer transfers (0 where the memory is not
    /// mapped in this process).
    pub fn len(&self) -> usize {
        if self.lease.is_usable() {
            self.len
        } else {
            0
        }
    }

    /// Whether `len()` is zero.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sets how many bytes I/O transfers, from the window's start.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] past the end of the lease.
    pub fn set_len(&mut self, len: usize) -> Result<()> {
        self.set_window(self.start, len)
    }

    /// Sets the window I/O uses to `[start, start + len)` of the lease (for
    /// example to skip a header). The memory alignment of an O_DIRECT
    /// request is that of `as_ptr()`, the window's first byte.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] past the end of the lease.
    pub fn set_window(&mut self, start: usize, len: usize) -> Result<()> {
        if start.checked_add(len).is_none_or(|end| end > self.capacity()) {
            return Err(Error::invalid(
                "buffer window",
                format!("{start}+{len}"),
                format!("the lease holds {} bytes", self.capacity()),
            ));
        }
        self.start = start;
        self.len = len;
        Ok(())
    }

    /// Makes the window the whole lease again.
    pub fn reset_window(&mut self) {
        self.start = 0;
        self.len = self.capacity();
    }

    /// Start of the window within the lease.
    pub fn window_start(&self) -> usize {
        self.start
    }

    /// The pool segment this buffer lies in, which is also its entry in the
    /// template's table (`buf_index`); a ring whose table holds the segment
    /// elsewhere translates it.
    pub fn buf_index(&self) -> u16 {
        self.segment
    }

    /// Offset of the lease's first byte in the pool.
    pub fn pool_offset(&self) -> u64 {
        self.lease.offset()
    }

    /// Address of the window's first byte.
    pub fn as_ptr(&self) -> *const u8 {
        self.lease.ptr_at(self.start)
    }

    /// Address of the window's first byte, for the kernel to write into.
    pub(crate) fn as_mut_ptr(&mut self) -> *mut u8 {
        self.lease.ptr_at(self.start)
    }

    /// Whether the memory is mapped in this process (see the type doc).
    pub fn is_usable(&self) -> bool {
        self.lease.is_usable()
    }

    /// Identity of the pool the lease came from.
    pub(crate) fn pool_id(&self) -> *const () {
        std::sync::Arc::as_ptr(self.lease.owner()) as *const ()
    }
}

impl Deref for IoBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.lease.bytes(self.start, self.len)
    }
}

impl DerefMut for IoBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.lease.bytes_mut(self.start, self.len)
    }
}

impl AsRef<[u8]> for IoBuf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl AsMut<[u8]> for IoBuf {
    fn as_mut(&mut self) -> &mut [u8] {
        self
    }
}

impl fmt::Debug for IoBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoBuf")
            .field("buf_index", &self.segment)
            .field("pool_offset", &self.pool_offset())
            .field("window_start", &self.start)
            .field("len", &self.len)
            .field("capacity", &self.capacity())
            .finish()
    }
}

/// The buffers an operation holds, handed back with its result.
#[derive(Debug, Default)]
pub enum Buffers {
    /// None (fsync).
    #[default]
    None,
    /// One buffer (read, write).
    One(IoBuf),
    /// Several buffers, in file order (readv, writev).
    Many(Vec<IoBuf>),
}

impl Buffers {
    /// How many buffers.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The buffers, in file order.
    pub fn as_slice(&self) -> &[IoBuf] {
        match self {
            Buffers::None => &[],
            Buffers::One(b) => std::slice::from_ref(b),
            Buffers::Many(v) => v,
        }
    }

    /// The buffers, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [IoBuf] {
        match self {
            Buffers::None => &mut [],
            Buffers::One(b) => std::slice::from_mut(b),
            Buffers::Many(v) => v,
        }
    }

    /// Bytes that I/O moves: the sum of the windows.
    pub fn total_len(&self) -> usize {
        self.as_slice().iter().map(IoBuf::len).sum()
    }

    /// The single buffer of a read or write (or of a one-buffer vector).
    pub fn into_one(self) -> Option<IoBuf> {
        match self {
            Buffers::One(b) => Some(b),
            Buffers::Many(mut v) if v.len() == 1 => v.pop(),
            _ => None,
        }
    }

    /// Every buffer, in file order.
    pub fn into_vec(self) -> Vec<IoBuf> {
        match self {
            Buffers::None => Vec::new(),
            Buffers::One(b) => vec![b],
            Buffers::Many(v) => v,
        }
    }
}
