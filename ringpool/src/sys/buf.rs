//! Leases of pool memory: the unsafe core under [`crate::IoBuf`].
//!
//! # Safety
//!
//! A [`Lease`] is made only from a [`Grant`] and the [`LeaseOwner`] that
//! granted it. The owner's contract (on the trait) makes the lease's byte
//! range mapped for as long as the owner lives and covered by no other live
//! grant, and the lease holds an `Arc` of its owner. So the lease is the
//! only handle to its bytes and may turn them into slices: shared through
//! `&self`, exclusive through `&mut self`. While an operation runs, the
//! in-flight slot owns the lease, so no Rust reference to the bytes exists
//! while the kernel may write them.

use std::ptr::NonNull;
use std::sync::Arc;

/// A block of the pool handed out by the buddy allocator (alloc.rs), the
/// only code that calls [`Grant::new`]; it never grants overlapping blocks.
/// Or a region ([`Grant::region`]): bytes outside every segment the
/// allocator leases from, which the caller of the unsafe
/// `IoMemory::region` promises no one else touches while it lives.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Grant {
    offset: u64,
    order: u32,
    len: usize,
}

impl Grant {
    /// A grant of `len` bytes at pool offset `offset`, from a buddy block of
    /// order `order`. Called by the allocator only.
    pub(crate) fn new(offset: u64, order: u32, len: usize) -> Grant {
        Grant { offset, order, len }
    }

    /// A region of `len` bytes at pool offset `offset` that no allocator
    /// granted: nothing to give back on release.
    pub(crate) fn region(offset: u64, len: usize) -> Grant {
        Grant { offset, order: Self::REGION, len }
    }

    const REGION: u32 = u32::MAX;

    /// Whether this is a region ([`Grant::region`]).
    pub(crate) fn is_region(&self) -> bool {
        self.order == Self::REGION
    }

    /// Offset of the block in the pool.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Buddy order of the block.
    pub(crate) fn order(&self) -> u32 {
        self.order
    }

    /// Usable bytes (the request rounded up to the alignment).
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

/// Where leases come from (the pool).
///
/// # Contract
///
/// The unsafe code of this module relies on it: for every grant that
/// [`LeaseOwner::addr`] is asked about, the returned address starts
/// `grant.len()` bytes that stay mapped read-write for as long as the owner
/// lives, and no other live grant of the owner covers any of them.
/// [`LeaseOwner::is_mapped_here`] is `false` where they are not mapped in the
/// calling process (a forked child of the process that mapped them).
pub(crate) trait LeaseOwner: Send + Sync + 'static {
    /// Address of the granted block.
    fn addr(&self, grant: &Grant) -> NonNull<u8>;
    /// Takes the block back.
    fn release(&self, grant: Grant);
    /// Whether the memory is mapped in the calling process.
    fn is_mapped_here(&self) -> bool;
    /// Whether this is the process whose allocator granted the block (a
    /// forked child holds a copy of the allocator that it must not touch:
    /// a lock in it may have been held by another thread at the fork).
    fn is_home(&self) -> bool;
}

/// An exclusively owned block of pool memory; returned to its owner on drop.
pub(crate) struct Lease {
    ptr: NonNull<u8>,
    grant: Option<Grant>,
    owner: Arc<dyn LeaseOwner>,
}

// SAFETY: a Lease exclusively owns its bytes (module doc), like a Box<[u8]>;
// its owner is Send + Sync.
unsafe impl Send for Lease {}
// SAFETY: &Lease gives only shared access to the bytes.
unsafe impl Sync for Lease {}

impl Lease {
    /// The lease of `grant`, which `owner` granted.
    pub(crate) fn new(owner: Arc<dyn LeaseOwner>, grant: Grant) -> Lease {
        let ptr = owner.addr(&grant);
        Lease { ptr, grant: Some(grant), owner }
    }

    /// Bytes leased.
    pub(crate) fn capacity(&self) -> usize {
        self.grant.as_ref().map_or(0, Grant::len)
    }

    /// Offset of the first byte in the pool.
    pub(crate) fn offset(&self) -> u64 {
        self.grant.as_ref().map_or(0, Grant::offset)
    }

    /// Address of byte `at` of the lease (for SQEs and iovecs).
    pub(crate) fn ptr_at(&self, at: usize) -> *mut u8 {
        self.ptr.as_ptr().wrapping_add(at)
    }

    /// The owner, to compare pools.
    pub(crate) fn owner(&self) -> &Arc<dyn LeaseOwner> {
        &self.owner
    }

    /// Whether the bytes may be touched from this process.
    pub(crate) fn is_usable(&self) -> bool {
        self.owner.is_mapped_here()
    }

    /// `[start, start + len)` of the lease, clamped to it; empty where the
    /// memory is not mapped in this process.
    pub(crate) fn bytes(&self, start: usize, len: usize) -> &[u8] {
        let (start, len) = self.clamp(start, len);
        // SAFETY: the clamped range lies inside the lease, which is mapped here
        // (clamp gives 0 bytes otherwise) and owned by self alone (module doc);
        // &self prevents mutation through this lease.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(start), len) }
    }

    /// As [`Lease::bytes`], mutable.
    pub(crate) fn bytes_mut(&mut self, start: usize, len: usize) -> &mut [u8] {
        let (start, len) = self.clamp(start, len);
        // SAFETY: as in bytes, and &mut self makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(start), len) }
    }

    fn clamp(&self, start: usize, len: usize) -> (usize, usize) {
        if !self.is_usable() {
            return (0, 0);
        }
        let cap = self.capacity();
        let start = start.min(cap);
        (start, len.min(cap - start))
    }
}

/// `[start, start + len)` of the concatenation of `leases`, which must lie
/// back to back in memory (each ending where the next begins) and be mapped
/// here: one slice over several leases. `None` when they are not adjacent,
/// not mapped in this process, or the range passes their end.
pub(crate) fn adjacent_bytes<'a>(leases: &[&'a Lease], start: usize, len: usize) -> Option<&'a [u8]> {
    let first = leases.first()?;
    let mut end = first.ptr.as_ptr() as usize;
    for l in leases {
        if !l.is_usable() || l.ptr.as_ptr() as usize != end {
            return None;
        }
        end = end.checked_add(l.capacity())?;
    }
    let total = end - first.ptr.as_ptr() as usize;
    if start.checked_add(len)? > total {
        return None;
    }
    // SAFETY: the leases are mapped here and lie back to back (checked), so
    // [first, end) is exactly their union, and each lease owns its bytes
    // alone (module doc); they are borrowed shared for 'a, so nothing
    // mutates them through a lease meanwhile. The range lies inside it.
    Some(unsafe { std::slice::from_raw_parts(first.ptr.as_ptr().add(start), len) })
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(g) = self.grant.take() {
            if self.owner.is_home() {
                self.owner.release(g);
            }
        }
    }
}

/// The owner of a lease of no memory: an [`crate::IoBuf`] handed back where
/// an operation's own buffers cannot be (its completion was lost with a
/// ring, or it was in flight in the parent of a forked child).
pub(crate) struct Nowhere;

impl LeaseOwner for Nowhere {
    fn addr(&self, _grant: &Grant) -> NonNull<u8> {
        NonNull::dangling()
    }
    fn release(&self, _grant: Grant) {}
    fn is_mapped_here(&self) -> bool {
        // Zero bytes: nothing to read, nothing mapped.
        false
    }
    fn is_home(&self) -> bool {
        true
    }
}
