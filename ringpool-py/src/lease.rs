//! `ringpool.Lease`: pool memory that holds the bytes of a read, exposed to
//! numpy through `__array_interface__` (numpy keeps the Lease as the
//! array's base, and every view keeps its base: the memory goes back to
//! the pool only when the last view is collected).

use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use ringpool::{IoBuf, RangeBuf};

/// What keeps the bytes valid.
pub(crate) enum Holder {
    /// A lease of the pool's allocator (held for its drop).
    Lease(#[allow(dead_code)] IoBuf),
    /// A ranged read's memory (one lease, or whole segments back to back).
    Range(#[allow(dead_code)] RangeBuf),
}

/// Bytes of the pool holding a read: `address` is the first byte asked for
/// (the pool read the aligned cover around it).
#[pyclass(module = "ringpool._ringpool", frozen)]
pub(crate) struct Lease {
    /// Held, never moved out: the address stays valid while it lives.
    _holder: Mutex<Holder>,
    address: usize,
    nbytes: usize,
    pool_offset: u64,
}

impl Lease {
    pub(crate) fn new(holder: Holder, address: usize, nbytes: usize, pool_offset: u64) -> Lease {
        Lease { _holder: Mutex::new(holder), address, nbytes, pool_offset }
    }
}

#[pymethods]
impl Lease {
    /// numpy's array interface (version 3): `numpy.asarray(lease)` is a
    /// uint8 array over these bytes, without a copy.
    #[getter]
    fn __array_interface__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("shape", (self.nbytes,))?;
        d.set_item("typestr", "|u1")?;
        d.set_item("data", (self.address, false))?;
        d.set_item("version", 3)?;
        Ok(d)
    }

    /// The address of the first byte.
    #[getter]
    fn address(&self) -> usize {
        self.address
    }

    /// Its length in bytes.
    #[getter]
    fn nbytes(&self) -> usize {
        self.nbytes
    }

    /// The offset of its first byte in the pool.
    #[getter]
    fn pool_offset(&self) -> u64 {
        self.pool_offset
    }

    fn __len__(&self) -> usize {
        self.nbytes
    }

    fn __repr__(&self) -> String {
        format!("ringpool.Lease(nbytes={}, pool_offset={})", self.nbytes, self.pool_offset)
    }
}
