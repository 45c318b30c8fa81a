//! `IoBuf`: a lease of pool memory.
//!
//! # Safety
//!
//! An `IoBuf` is built only from a [`Grant`], which only the buddy allocator
//! creates, for a block it removed from its free lists; the block returns to
//! the allocator only in `IoBuf::drop`. So the byte range of a live `IoBuf`
//! overlaps no other live `IoBuf`, and the `IoBuf` is the only safe handle
//! to it. While an operation runs, the in-flight slot owns the `IoBuf`, so
//! no Rust reference to its bytes exists while the kernel may write them.
//! The `Arc<PoolShared>` keeps the mapping alive.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::Arc;

use crate::alloc::Grant;
use crate::error::{Error, Result};
use crate::memory::PoolShared;

/// A lease of pool memory: `capacity()` bytes inside one segment, aligned to
/// the pool's alignment, with the `buf_index` of that segment. Returned to
/// the allocator when dropped.
///
/// I/O operations take an `IoBuf` by value and hand it back with the result,
/// so no code can touch bytes the kernel may still be writing.
///
/// `len()` is the part that I/O uses (all of it at first); shorten it with
/// [`IoBuf::set_len`].
pub struct IoBuf {
    /// First byte of the lease.
    ptr: NonNull<u8>,
    /// The window I/O uses: `[start, start + len)` of the lease.
    start: usize,
    len: usize,
    buf_index: u16,
    grant: Option<Grant>,
    pool: Arc<PoolShared>,
}

// SAFETY: an IoBuf exclusively owns its bytes (see the module doc), like a
// Box<[u8]>; the pool it points to is Send + Sync.
unsafe impl Send for IoBuf {}
// SAFETY: &IoBuf gives only shared access to the bytes.
unsafe impl Sync for IoBuf {}

impl IoBuf {
    pub(crate) fn from_grant(pool: Arc<PoolShared>, grant: Grant, buf_index: u16) -> IoBuf {
        let ptr = pool.addr_of(grant.offset()) as *mut u8;
        // SAFETY: the address is inside a live mapping of the pool (the
        // grant's segment), which is never at address 0.
        let ptr = unsafe { NonNull::new_unchecked(ptr) };
        IoBuf { ptr, start: 0, len: grant.len(), buf_index, grant: Some(grant), pool }
    }

    /// Bytes leased (the request rounded up to the alignment).
    pub fn capacity(&self) -> usize {
        self.grant.as_ref().map_or(0, |g| g.len())
    }

    /// Bytes that I/O on this buffer transfers.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether `len()` is zero.
    pub fn is_empty(&self) -> bool {
        self.len == 0
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

    /// The registered table entry this buffer lies in.
    pub fn buf_index(&self) -> u16 {
        self.buf_index
    }

    /// Offset of the lease's first byte in the pool.
    pub fn pool_offset(&self) -> u64 {
        self.grant.as_ref().map_or(0, |g| g.offset())
    }

    /// Address of the window's first byte.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr().wrapping_add(self.start)
    }

    pub(crate) fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr().wrapping_add(self.start)
    }

    pub(crate) fn pool(&self) -> &Arc<PoolShared> {
        &self.pool
    }
}

impl Deref for IoBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: start + len <= capacity (set_window), so the range is inside
        // the lease, which this IoBuf owns exclusively (module doc); &self
        // prevents mutation.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.len) }
    }
}

impl DerefMut for IoBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in deref, and &mut self makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.as_mut_ptr(), self.len) }
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
            .field("buf_index", &self.buf_index)
            .field("pool_offset", &self.pool_offset())
            .field("window_start", &self.start)
            .field("len", &self.len)
            .field("capacity", &self.capacity())
            .finish()
    }
}

impl Drop for IoBuf {
    fn drop(&mut self) {
        if let Some(g) = self.grant.take() {
            self.pool.release(g);
        }
    }
}
