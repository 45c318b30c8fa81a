//! `ringpool._ringpool.Pool`: the registered pool, its reads (all in
//! flight at once, the GIL released) and writes. The Python class
//! `ringpool.Pool` wraps it.

use std::str::FromStr;
use std::sync::{Arc, RwLock};

use pyo3::prelude::*;
use pyo3::types::PyDict;
use ringpool::types::PagePolicy;
use ringpool::{IoMemory, IoPool, MemoryOptions, Op, RangeRequest};

use crate::errors::Fail;
use crate::file::File;
use crate::lease::{Holder, Lease};

/// Bytes of one lease a write goes through at most.
const WRITE_CHUNK: usize = 8 << 20;

/// The registered pool.
#[pyclass(module = "ringpool._ringpool", name = "Pool", frozen)]
pub(crate) struct Pool {
    inner: RwLock<Option<Arc<IoPool>>>,
    memory: IoMemory,
}

impl Pool {
    fn get(&self) -> Result<Arc<IoPool>, Fail> {
        self.inner.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone().ok_or(Fail::Closed)
    }
}

#[pymethods]
impl Pool {
    /// A pool of `size` bytes of `page` memory ("auto", "1g", "2m", "thp"
    /// or "4k"), mapped, prefaulted and registered once; `workers`: at most
    /// this many worker threads (operations of calling threads run on
    /// their own rings); `segment_size`: bytes of each registered buffer
    /// (at most 1 GiB; the pool's default otherwise).
    #[new]
    #[pyo3(signature = (size, page = "auto", workers = None, segment_size = None))]
    fn new(py: Python<'_>, size: u64, page: &str, workers: Option<usize>, segment_size: Option<u64>) -> PyResult<Self> {
        let policy = PagePolicy::from_str(page).map_err(|e| Fail::Value(format!("page {page:?}: {e}")))?;
        let mut mem = MemoryOptions::new().page(policy);
        if let Some(s) = segment_size {
            mem = mem.segment_size(s);
        }
        let max = workers.unwrap_or(2);
        if max == 0 {
            return Err(Fail::Value("workers must be at least 1".into()).into());
        }
        let pool =
            py.detach(|| IoPool::builder().size(size).memory(mem).workers(0, max).build()).map_err(Fail::from)?;
        let memory = pool.memory().clone();
        Ok(Pool { inner: RwLock::new(Some(Arc::new(pool))), memory })
    }

    /// A pool served by a ring broker (`ringpool serve`) at `socket`: the
    /// daemon's pool, mapped here, with `leases` segments set aside for
    /// this process to lease from and rings cloned by the daemon.
    #[staticmethod]
    #[pyo3(signature = (socket, leases = 1, workers = None))]
    fn from_broker(py: Python<'_>, socket: std::path::PathBuf, leases: u16, workers: Option<usize>) -> PyResult<Self> {
        let max = workers.unwrap_or(2);
        if max == 0 {
            return Err(Fail::Value("workers must be at least 1".into()).into());
        }
        let pool =
            py.detach(|| IoPool::builder().broker(socket, leases).workers(1, max).build()).map_err(Fail::from)?;
        let memory = pool.memory().clone();
        Ok(Pool { inner: RwLock::new(Some(Arc::new(pool))), memory })
    }

    /// Reads each `(file, offset, length)` into the pool, all in flight at
    /// once on this thread's ring with the GIL released; a Lease per
    /// request (all or nothing).
    fn read_many(&self, py: Python<'_>, reqs: Vec<(PyRef<'_, File>, u64, u64)>) -> PyResult<Vec<Lease>> {
        let pool = self.get()?;
        let reqs: Vec<RangeRequest> =
            reqs.iter().map(|(f, offset, len)| RangeRequest::new(&f.inner, *offset, *len)).collect();
        let got = py.detach(|| pool.read_ranges(&reqs)).map_err(Fail::from)?;
        Ok(got
            .into_iter()
            .map(|r| {
                let (addr, len, off) = (r.as_ptr() as usize, r.len(), r.pool_offset());
                Lease::new(Holder::Range(r), addr, len, off)
            })
            .collect())
    }

    /// Writes `data` at `offset` of `file` through the pool (copied into
    /// leases of up to 8 MiB); the bytes written. On an O_DIRECT file the
    /// offset and the length must be multiples of its `offset_align`.
    fn write(&self, py: Python<'_>, file: PyRef<'_, File>, offset: u64, data: &[u8]) -> PyResult<u64> {
        let pool = self.get()?;
        let file = file.inner.clone();
        let mut written = 0u64;
        for chunk in data.chunks(WRITE_CHUNK) {
            let mut buf = pool.memory().try_alloc(chunk.len()).map_err(Fail::from)?;
            buf.set_len(chunk.len()).map_err(Fail::from)?;
            buf.copy_from_slice(chunk);
            let at = offset.checked_add(written).ok_or_else(|| Fail::Value("offset overflows".into()))?;
            let (res, _buf) = py.detach(|| pool.run(Op::write(&file, at, buf))).into_one();
            let n = res.map_err(Fail::from)? as u64;
            written += n;
            if n < chunk.len() as u64 {
                break;
            }
        }
        Ok(written)
    }

    /// A writable Lease of `length` bytes of the pool (zeroed), for data
    /// to fill in place.
    fn alloc(&self, length: usize) -> PyResult<Lease> {
        let pool = self.get()?;
        let mut buf = pool.memory().try_alloc(length).map_err(Fail::from)?;
        buf.set_len(length).map_err(Fail::from)?;
        buf.fill(0);
        let (addr, off) = (buf.as_ptr() as usize, buf.pool_offset());
        Ok(Lease::new(Holder::Lease(buf), addr, length, off))
    }

    /// The pool's figures now, as a dict.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        let a = self.memory.stats();
        d.set_item("pool_bytes", self.memory.len())?;
        d.set_item("page_kind", self.memory.page_kind().short_name())?;
        d.set_item("segment_size", self.memory.segment_size())?;
        d.set_item("segments", self.memory.segment_count())?;
        d.set_item("leases", a.leases)?;
        d.set_item("bytes_in_use", a.bytes_in_use)?;
        d.set_item("capacity", a.capacity)?;
        d.set_item("largest_free", a.largest_free)?;
        d.set_item("closed", self.get().is_err())?;
        if let Ok(pool) = self.get() {
            let st = pool.stats();
            d.set_item("workers", st.workers)?;
            d.set_item("local_rings", st.local_rings)?;
            d.set_item("local_rings_made", st.local_rings_made)?;
            d.set_item("local_ops", st.local_ops)?;
            d.set_item("submitted", st.submitted)?;
            d.set_item("completed", st.completed)?;
            d.set_item("failed", st.failed)?;
            d.set_item("pinned_bytes", st.pinned_bytes)?;
        }
        Ok(d)
    }

    /// Stops the pool's workers and unregisters its table. Arrays that
    /// still view its memory stay valid (their leases keep it mapped);
    /// later calls raise PoolClosedError.
    fn close(&self, py: Python<'_>) {
        let pool = self.inner.write().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(p) = pool {
            py.detach(move || {
                p.shutdown();
                drop(p);
            });
        }
    }

    /// Whether it was closed.
    #[getter]
    fn closed(&self) -> bool {
        self.get().is_err()
    }

    /// The address of the pool's first byte in this process.
    #[getter]
    fn address(&self) -> usize {
        self.memory.addr()
    }

    /// Its size in bytes.
    #[getter]
    fn size(&self) -> u64 {
        self.memory.len()
    }

    /// Bytes of each registered segment.
    #[getter]
    fn segment_size(&self) -> u64 {
        self.memory.segment_size()
    }

    /// The pages it got: "1g", "2m", "thp" or "4k".
    #[getter]
    fn page_kind(&self) -> &'static str {
        self.memory.page_kind().short_name()
    }

    /// Whether `address` lies in the pool's memory.
    fn contains_address(&self, address: usize) -> bool {
        self.memory.segments().iter().any(|s| s.addr <= address && address < s.addr + s.len as usize)
    }
}
