//! Anonymous memory mappings for the IO memory pool.
//!
//! # Safety
//!
//! A [`Mapping`] owns `[base, base + map_len)` from the `mmap` call that
//! created it until `Drop` unmaps it. The usable range `[ptr, ptr + len)`
//! lies inside it. Code that gives an address inside the mapping to the kernel
//! (registration, an SQE) holds an `Arc<Mapping>` for as long as the kernel may
//! use that address.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
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
    /// The memfd of a shared mapping (which forked children inherit, and
    /// other processes map from the memfd).
    memfd: Option<OwnedFd>,
    /// Bytes of `[ptr, ptr + len)` still mapped: a shrink releases the
    /// tail (`Mapping::release_tail`).
    kept: std::sync::atomic::AtomicUsize,
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
        let mut m = Mapping {
            base,
            map_len,
            ptr: base,
            len,
            pid: super::pid::current_pid(),
            memfd: None,
            kept: std::sync::atomic::AtomicUsize::new(len),
        };
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

    /// Maps `len` bytes of a new memfd (`MFD_HUGETLB` for hugetlb backing)
    /// shared, starting on a multiple of `align`: memory a forked child
    /// inherits and other processes map from the memfd. Not MADV_DONTFORK.
    pub(crate) fn map_shared(len: usize, backing: Backing, align: usize) -> io::Result<Mapping> {
        if len == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let mut flags = libc::MFD_CLOEXEC;
        if let Backing::Hugetlb { shift } = backing {
            flags |= libc::MFD_HUGETLB | (shift << libc::MFD_HUGE_SHIFT);
        }
        let name: &CStr = c"ringpool";
        // SAFETY: a NUL-terminated name and plain flags.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just returned by memfd_create and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let size = libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: ftruncate on our own fd.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), size) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let m = Self::map_memfd(fd, len, backing, align)?;
        Ok(m)
    }

    /// Maps `len` bytes of the memfd `fd` (made by [`Mapping::map_shared`],
    /// in this process or another) shared, on a multiple of `align`.
    pub(crate) fn map_memfd(fd: OwnedFd, len: usize, backing: Backing, align: usize) -> io::Result<Mapping> {
        if len == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // A hugetlb memfd maps only at addresses aligned to its page size.
        let align = match backing {
            Backing::Hugetlb { shift } => (1usize << shift).max(align),
            Backing::Transparent => align.max(THP_ALIGN),
            Backing::Base => align.max(4096),
        };
        // Reserve a range with room to align, then map the memfd over its
        // aligned part and give the slack back.
        let map_len = len.checked_add(align).ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        let reserve_flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
        // SAFETY: a fresh inaccessible anonymous mapping at an address of the
        // kernel's choice; no existing memory is affected.
        let addr = unsafe { libc::mmap(std::ptr::null_mut(), map_len, libc::PROT_NONE, reserve_flags, -1, 0) };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let start = addr as usize;
        let aligned = (start + align - 1) & !(align - 1);
        // SAFETY: [aligned, aligned + len) lies inside the reservation just
        // made (aligned - start < align), which nothing else uses: MAP_FIXED
        // replaces only it.
        let got = unsafe {
            libc::mmap(
                aligned as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_FIXED,
                fd.as_raw_fd(),
                0,
            )
        };
        let failed = (got == libc::MAP_FAILED).then(io::Error::last_os_error);
        // SAFETY: the slack before and after [aligned, aligned + len) is part
        // of our reservation and unused.
        unsafe {
            if aligned > start {
                libc::munmap(addr, aligned - start);
            }
            let tail = start + map_len - (aligned + len);
            if tail > 0 {
                libc::munmap((aligned + len) as *mut libc::c_void, tail);
            }
        }
        if let Some(e) = failed {
            // SAFETY: the aligned part is still our reservation.
            unsafe { libc::munmap(aligned as *mut libc::c_void, len) };
            return Err(e);
        }
        // SAFETY: aligned is inside a live mapping, never 0.
        let base = unsafe { NonNull::new_unchecked(aligned as *mut u8) };
        let m = Mapping {
            base,
            map_len: len,
            ptr: base,
            len,
            pid: super::pid::current_pid(),
            memfd: Some(fd),
            kept: std::sync::atomic::AtomicUsize::new(len),
        };
        match backing {
            Backing::Transparent => m.advise(libc::MADV_HUGEPAGE)?,
            Backing::Base => m.advise(libc::MADV_NOHUGEPAGE)?,
            Backing::Hugetlb { .. } => {}
        }
        Ok(m)
    }

    /// The memfd of a shared mapping.
    pub(crate) fn memfd(&self) -> Option<BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.memfd.as_ref().map(|f| f.as_fd())
    }

    /// Whether the range is mapped in the calling process: always for a
    /// shared mapping (a forked child inherits it), only in the process that
    /// made it for a private one (MADV_DONTFORK).
    pub(crate) fn is_mapped_here(&self) -> bool {
        self.memfd.is_some() || self.pid == super::pid::current_pid()
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
        // Not past a tail a shrink released.
        let kept = self.kept.load(std::sync::atomic::Ordering::Acquire);
        match offset.checked_add(len) {
            Some(end) if end <= kept => Ok(()),
            _ => Err(io::Error::from_raw_os_error(libc::EFAULT)),
        }
    }

    /// A pointer to `offset`, for building iovecs and SQEs.
    pub(crate) fn ptr_at(&self, offset: usize) -> *mut u8 {
        debug_assert!(offset <= self.len);
        self.ptr.as_ptr().wrapping_add(offset)
    }
}

impl Mapping {
    /// `len` bytes of address space that fault on any access
    /// (`PROT_NONE`, no memory behind them): where a view of a pool puts
    /// the segments its process may not reach, so that their pool offsets
    /// keep their places.
    pub(crate) fn inaccessible(len: usize) -> io::Result<Mapping> {
        if len == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
        // SAFETY: a fresh inaccessible anonymous mapping at an address of the
        // kernel's choice; no existing memory is affected.
        let addr = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_NONE, flags, -1, 0) };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(addr.cast::<u8>()).ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        Ok(Mapping {
            base,
            map_len: len,
            ptr: base,
            len,
            pid: super::pid::current_pid(),
            memfd: None,
            kept: std::sync::atomic::AtomicUsize::new(len),
        })
    }

    /// Punches `[offset, offset + len)` out of a shared mapping's memfd:
    /// its pages go back to the system (from every process that maps
    /// them; a later touch would fault in zeroed ones). The range stays
    /// mapped here. A private mapping is left as it is.
    ///
    /// The caller guarantees that nothing uses those bytes: no lease or
    /// region covers them, and no ring's table routes I/O to them.
    pub(crate) fn punch(&self, offset: usize, len: usize) -> io::Result<()> {
        self.check(offset, len)?;
        let Some(fd) = &self.memfd else { return Ok(()) };
        let (off, len) = (libc::off_t::try_from(offset), libc::off_t::try_from(len));
        let (Ok(off), Ok(len)) = (off, len) else { return Err(io::Error::from_raw_os_error(libc::EINVAL)) };
        // SAFETY: fallocate on our own memfd, no pointers.
        let rc = unsafe {
            libc::fallocate(fd.as_raw_fd(), libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, off, len)
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Mapping {
    /// Gives the pages of `[from, len)` back (a shrink released the
    /// segments there): unmaps them, and for a memfd punches them out of
    /// the file, so that the memory returns to the system. `from` is a
    /// multiple of `page`. Later calls only release less.
    ///
    /// The caller guarantees that nothing uses those bytes any more: no
    /// segment, lease or region covers them, and no ring's table routes
    /// I/O to them (the kernel keeps pages it pinned alive by itself).
    pub(crate) fn release_tail(&self, from: usize, page: usize) -> io::Result<()> {
        use std::sync::atomic::Ordering;
        if !from.is_multiple_of(page) || from >= self.len {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        if !self.is_mapped_here() {
            return Ok(());
        }
        let kept = self.kept.load(Ordering::Acquire);
        if from >= kept {
            return Ok(());
        }
        // SAFETY: [ptr + from, ptr + kept) lies inside the mapping, is still
        // mapped (kept), and by the caller's guarantee nothing uses it.
        let rc = unsafe { libc::munmap(self.ptr.as_ptr().add(from).cast(), kept - from) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        self.kept.store(from, Ordering::Release);
        if let Some(fd) = &self.memfd {
            // The memfd maps offset 0 at ptr: the same range of the file.
            let (off, len) = (libc::off_t::try_from(from), libc::off_t::try_from(kept - from));
            if let (Ok(off), Ok(len)) = (off, len) {
                // SAFETY: fallocate on our own memfd, no pointers.
                let rc = unsafe {
                    libc::fallocate(fd.as_raw_fd(), libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, off, len)
                };
                if rc != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        Ok(())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if !self.is_mapped_here() {
            // A forked child never had the range: unmapping it could take
            // away a mapping of the child's own at the same address.
            return;
        }
        let kept = *self.kept.get_mut();
        let end = self.ptr.as_ptr() as usize + kept;
        let tail = self.base.as_ptr() as usize + self.map_len - (self.ptr.as_ptr() as usize + self.len);
        // SAFETY: base/map_len are exactly what mmap returned; every user of
        // the range held an Arc<Mapping>, so none is left. A released tail
        // [ptr + kept, ptr + len) is unmapped already: unmap around it.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), end - self.base.as_ptr() as usize);
            if tail > 0 {
                libc::munmap((self.ptr.as_ptr() as usize + self.len) as *mut libc::c_void, tail);
            }
        }
    }
}
