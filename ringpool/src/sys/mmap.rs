//! Anonymous memory mappings for the IO memory pool.
//!
//! # Safety
//!
//! A [`Mapping`] owns `[base, base + map_len)` from the `mmap` call that
//! created it until `Drop` unmaps it. The usable range `[ptr, ptr + len)`
//! lies inside it. Code that gives an address inside the mapping to the kernel
//! (registration, an SQE) holds an `Arc<Mapping>` for as long as the kernel may
//! use that address.

use std::io;
use std::ptr::NonNull;

/// How the pages of a mapping are backed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backing {
    /// hugetlbfs pages of `1 << shift` bytes (21 = 2 MiB, 30 = 1 GiB).
    Hugetlb { shift: u32 },
    /// Anonymous memory with `MADV_HUGEPAGE` (aligned to 2 MiB).
    Transparent,
    /// Anonymous memory with `MADV_NOHUGEPAGE`: base pages only.
    Base,
}

/// One anonymous mapping, unmapped on drop.
#[derive(Debug)]
pub(crate) struct Mapping {
    /// What `mmap` returned (may precede `ptr` when we aligned by hand).
    base: NonNull<u8>,
    map_len: usize,
    /// First usable byte.
    ptr: NonNull<u8>,
    len: usize,
    /// The process that mapped it: a private mapping is MADV_DONTFORK, so
    /// absent in a forked child (which must neither touch nor unmap the
    /// range: another mapping of the child's may lie there).
    pid: u32,
}

// SAFETY: a Mapping is plain memory; it has no thread affinity. Access to the
// bytes goes through raw pointers whose exclusivity the allocator guarantees.
unsafe impl Send for Mapping {}
// SAFETY: as above; &Mapping only exposes addresses and bounds-checked copies.
unsafe impl Sync for Mapping {}

const THP_ALIGN: usize = 2 << 20;

impl Mapping {
    /// Maps `len` bytes (already a multiple of the page size) with `backing`,
    /// starting on a multiple of `align` (a power of two; for hugetlb at most
    /// the page size, which aligns by itself).
    ///
    /// The memory is also marked `MADV_DONTFORK`: a forked child must not get a
    /// copy-on-write view of memory the kernel has pinned for DMA.
    pub(crate) fn map(len: usize, backing: Backing, align: usize) -> io::Result<Mapping> {
        if len == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let mut flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
        // Over-allocate so that the usable range can start on the boundary
        // (2 MiB at least for THP).
        let align = match backing {
            Backing::Hugetlb { .. } => 1,
            Backing::Transparent => align.max(THP_ALIGN),
            Backing::Base => align,
        };
        let extra = if align > 4096 { align } else { 0 };
        if let Backing::Hugetlb { shift } = backing {
            flags |= libc::MAP_HUGETLB | ((shift as libc::c_int) << libc::MAP_HUGE_SHIFT);
        }
        let map_len = len.checked_add(extra).ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        // SAFETY: a fresh anonymous mapping at an address of the kernel's choice;
        // no existing memory is affected.
        let addr =
            unsafe { libc::mmap(std::ptr::null_mut(), map_len, libc::PROT_READ | libc::PROT_WRITE, flags, -1, 0) };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(addr.cast::<u8>()).ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        let mut m = Mapping { base, map_len, ptr: base, len, pid: super::pid::current_pid() };
        if extra > 0 {
            let start = base.as_ptr() as usize;
            let aligned = (start + align - 1) & !(align - 1);
            // SAFETY: aligned - start < align = extra, so aligned + len is inside the mapping.
            m.ptr = unsafe { NonNull::new_unchecked(base.as_ptr().add(aligned - start)) };
        }
        if backing == Backing::Transparent {
            m.advise(libc::MADV_HUGEPAGE)?;
        } else if backing == Backing::Base {
            // If THP is "always", this keeps the policy honest: base pages only.
            m.advise(libc::MADV_NOHUGEPAGE)?;
        }
        m.advise(libc::MADV_DONTFORK)?;
        Ok(m)
    }

    fn advise(&self, advice: libc::c_int) -> io::Result<()> {
        // SAFETY: the whole mapping belongs to self; madvise with these advices
        // changes no contents.
        let rc = unsafe { libc::madvise(self.base.as_ptr().cast(), self.map_len, advice) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Whether the range is mapped in the calling process (not in a forked
    /// child: MADV_DONTFORK).
    pub(crate) fn is_mapped_here(&self) -> bool {
        self.pid == super::pid::current_pid()
    }

    /// First usable byte.
    pub(crate) fn addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    /// Usable length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Faults `[offset, offset + len)` in for writing with
    /// `MADV_POPULATE_WRITE` (Linux 5.14+), so that registration and I/O
    /// never wait for first touch. `Ok(false)`: the kernel lacks it (see
    /// [`Mapping::touch`]).
    pub(crate) fn populate(&self, offset: usize, len: usize) -> io::Result<bool> {
        self.check(offset, len)?;
        if len == 0 {
            return Ok(true);
        }
        // SAFETY: the range is inside the mapping (checked above).
        let start = unsafe { self.ptr.as_ptr().add(offset) };
        // SAFETY: populate only faults pages in; it does not change contents.
        let rc = unsafe { libc::madvise(start.cast(), len, libc::MADV_POPULATE_WRITE) };
        if rc == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            // An advice this kernel does not know.
            Some(libc::EINVAL) => Ok(false),
            // ENOMEM / EFAULT: the memory is not there (hugetlb pages taken by
            // someone else after mmap, or the OOM situation).
            _ => Err(err),
        }
    }

    /// Faults `[offset, offset + len)` in by rewriting one byte per `page`
    /// with its own value: for kernels without `MADV_POPULATE_WRITE`.
    ///
    /// The caller must hold the range free of leases (the allocator's lock
    /// over a free range): a concurrent writer could lose a byte.
    pub(crate) fn touch(&self, offset: usize, len: usize, page: usize) -> io::Result<()> {
        self.check(offset, len)?;
        let mut at = 0;
        while at < len {
            // SAFETY: offset + at < offset + len, inside the mapping (checked
            // above); no lease covers the range (the caller's contract), so
            // no Rust reference to the byte exists, and a volatile
            // read-then-write of the same value faults the page in for
            // writing without changing what it holds.
            unsafe {
                let p = self.ptr.as_ptr().add(offset + at);
                std::ptr::write_volatile(p, std::ptr::read_volatile(p));
            }
            at += page.max(1);
        }
        Ok(())
    }

    fn check(&self, offset: usize, len: usize) -> io::Result<()> {
        if !self.is_mapped_here() {
            // A forked child: the range is not mapped here.
            return Err(io::Error::from_raw_os_error(libc::EFAULT));
        }
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(io::Error::from_raw_os_error(libc::EFAULT)),
        }
    }

    /// A pointer to `offset`, for building iovecs and SQEs.
    pub(crate) fn ptr_at(&self, offset: usize) -> *mut u8 {
        debug_assert!(offset <= self.len);
        self.ptr.as_ptr().wrapping_add(offset)
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if !self.is_mapped_here() {
            // A forked child never had the range: unmapping it could take
            // away a mapping of the child's own at the same address.
            return;
        }
        // SAFETY: base/map_len are exactly what mmap returned; every user of
        // the range held an Arc<Mapping>, so none is left.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.map_len);
        }
    }
}
