//! Leasing pool memory: `IoBuf`s from the buddy allocator.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use super::IoMemory;
use crate::alloc::{AllocStats, Grant};
use crate::buf::IoBuf;
use crate::error::{Error, Result};
use crate::sys::buf::{Lease, LeaseOwner};
use crate::types::MAX_IOVECS;
use crate::units::Bytes;

impl IoMemory {
    /// Leases `len` bytes (rounded up to the alignment) or fails at once.
    ///
    /// # Errors
    /// [`Error::Forked`] in a forked child; [`Error::PoolExhausted`] when no
    /// block is free;
    /// [`Error::LeaseTooLarge`] beyond one segment; [`Error::InvalidArgument`]
    /// for zero.
    pub fn try_alloc(&self, len: usize) -> Result<IoBuf> {
        self.check_len(len)?;
        match self.shared.alloc.try_alloc(len, None) {
            Some(g) => Ok(self.lease(g)),
            // Segments handed to processes that are done may be free again.
            None if self.reclaim_handed_segments() > 0 => self.try_alloc(len),
            None => Err(self.exhausted(len)),
        }
    }

    /// Leases `len` bytes inside segment `segment` (table entry
    /// `buf_index == segment`).
    ///
    /// # Errors
    /// As [`IoMemory::try_alloc`]; [`Error::InvalidArgument`] for a segment
    /// past the end.
    pub fn try_alloc_in(&self, segment: u16, len: usize) -> Result<IoBuf> {
        self.check_len(len)?;
        let count = self.shared.segment_count();
        if segment >= count {
            return Err(Error::invalid("segment", segment, format!("the pool has {count} segments")));
        }
        match self.shared.alloc.try_alloc(len, Some(u32::from(segment))) {
            Some(g) => Ok(self.lease(g)),
            None if self.reclaim_handed_segments() > 0 => self.try_alloc_in(segment, len),
            None => Err(self.exhausted(len)),
        }
    }

    /// Leases `count` blocks of `len` bytes, all in one segment, so that one
    /// vectored fixed operation (READV_FIXED / WRITEV_FIXED, whose buffers
    /// must lie in one registered entry) can take them all. The blocks are
    /// wherever the segment has room: not adjacent in general.
    ///
    /// # Errors
    /// [`Error::PoolExhausted`] when no segment has room for all of them;
    /// [`Error::TooManyBuffers`] above 1024 (IOV_MAX); as
    /// [`IoMemory::try_alloc`] for `len`.
    pub fn try_alloc_vec(&self, count: usize, len: usize) -> Result<Vec<IoBuf>> {
        self.check_len(len)?;
        if count == 0 {
            return Err(Error::invalid("lease count", 0, "ask for at least one block"));
        }
        if count > MAX_IOVECS {
            return Err(Error::TooManyBuffers { op: "alloc", count, max: MAX_IOVECS });
        }
        match self.shared.alloc.try_alloc_many(count, len) {
            Some(grants) => Ok(grants.into_iter().map(|g| self.lease(g)).collect()),
            None => {
                let total = len.saturating_mul(count);
                Err(self.exhausted(total))
            }
        }
    }

    /// Leases `len` bytes, waiting up to `timeout` for leases to come back.
    ///
    /// # Errors
    /// [`Error::Timeout`]; [`Error::LeaseTooLarge`]; [`Error::InvalidArgument`].
    pub fn alloc_timeout(&self, len: usize, timeout: Duration) -> Result<IoBuf> {
        self.check_len(len)?;
        match self.shared.alloc.alloc_wait(len, Some(timeout)) {
            Some(g) => Ok(self.lease(g)),
            None => Err(Error::Timeout { what: format!("a lease of {}", Bytes(len as u64)), waited: timeout }),
        }
    }

    /// Leases `len` bytes, waiting as long as it takes.
    ///
    /// # Errors
    /// [`Error::LeaseTooLarge`]; [`Error::InvalidArgument`] (never exhaustion).
    pub fn alloc(&self, len: usize) -> Result<IoBuf> {
        self.check_len(len)?;
        let g = self.shared.alloc.alloc_wait(len, None).expect("an untimed wait returns only with a block");
        Ok(self.lease(g))
    }

    /// Leases `len` bytes as a future that resolves when a block is free
    /// (runtime-agnostic: woken by the free that makes room).
    pub fn alloc_async(&self, len: usize) -> AllocFuture {
        AllocFuture { mem: self.clone(), len, checked: self.check_len(len).err() }
    }

    /// Allocator statistics.
    pub fn stats(&self) -> AllocStats {
        self.shared.alloc.stats()
    }

    fn check_len(&self, len: usize) -> Result<()> {
        // In a forked child the memory is not mapped, and the allocator is a
        // copy of the parent's (its lock may be held for ever).
        self.check_home()?;
        if len == 0 {
            return Err(Error::invalid("lease length", 0, "it must be at least 1 byte"));
        }
        if len as u64 > self.shared.segment_size {
            return Err(Error::LeaseTooLarge {
                requested: Bytes(len as u64),
                segment: Bytes(self.shared.segment_size),
            });
        }
        Ok(())
    }

    fn exhausted(&self, len: usize) -> Error {
        let st = self.stats();
        let rounded = self.shared.alloc.with_buddy(|b| b.round(len as u64));
        Error::PoolExhausted { requested: Bytes(rounded), in_use: Bytes(st.bytes_in_use), capacity: Bytes(st.capacity) }
    }

    fn lease(&self, g: Grant) -> IoBuf {
        let segment = self.shared.segment_of(g.offset());
        let owner: Arc<dyn LeaseOwner> = self.shared.clone();
        IoBuf::new(Lease::new(owner, g), segment)
    }
}

/// A lease that resolves when memory is free: [`IoMemory::alloc_async`].
#[derive(Debug)]
pub struct AllocFuture {
    mem: IoMemory,
    len: usize,
    checked: Option<Error>,
}

impl Future for AllocFuture {
    type Output = Result<IoBuf>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(e) = self.checked.take() {
            return Poll::Ready(Err(e));
        }
        match self.mem.shared.alloc.poll_alloc(self.len, cx.waker()) {
            Some(g) => Poll::Ready(Ok(self.mem.lease(g))),
            None => Poll::Pending,
        }
    }
}
