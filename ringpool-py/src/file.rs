//! `ringpool.File`: a file opened for the pool's I/O (O_DIRECT by default),
//! with the alignment its transfers need.

use std::path::PathBuf;

use pyo3::prelude::*;
use ringpool::types::DirectIo;
use ringpool::DirectFile;

use crate::errors::Fail;

/// A file opened for the pool's I/O. `offset_align` is what offsets and
/// lengths of its direct transfers must be multiples of (reads of any
/// range are still fine: the pool reads the aligned cover).
#[pyclass(module = "ringpool._ringpool", frozen)]
pub(crate) struct File {
    pub(crate) inner: DirectFile,
}

#[pymethods]
impl File {
    /// The path it was opened with.
    #[getter]
    fn path(&self) -> PathBuf {
        self.inner.path().to_path_buf()
    }

    /// Its size in bytes now.
    #[getter]
    fn size(&self) -> PyResult<u64> {
        Ok(self.inner.size().map_err(Fail::from)?)
    }

    /// Whether it was opened with O_DIRECT.
    #[getter]
    fn direct(&self) -> bool {
        self.inner.is_direct()
    }

    /// What the offset and length of a direct transfer must be multiples of.
    #[getter]
    fn offset_align(&self) -> u32 {
        self.inner.offset_align()
    }

    /// What a direct transfer's memory address must be a multiple of.
    #[getter]
    fn mem_align(&self) -> u32 {
        self.inner.mem_align()
    }

    /// Whether it was closed.
    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// Closes it (operations in flight finish first; later ones fail).
    fn close(&self) {
        self.inner.close();
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(&self, _t: Py<PyAny>, _v: Py<PyAny>, _tb: Py<PyAny>) -> bool {
        self.inner.close();
        false
    }

    fn __repr__(&self) -> String {
        format!(
            "ringpool.File({:?}, direct={}, offset_align={})",
            self.inner.path().display().to_string(),
            if self.inner.is_direct() { "True" } else { "False" },
            self.inner.offset_align()
        )
    }
}

/// Opens `path` for the pool's I/O: O_DIRECT (`direct=True`, the default:
/// an error where the file system has none), for writing too with
/// `write=True`, created with `create=True`.
#[pyfunction]
#[pyo3(signature = (path, direct = true, write = false, create = false))]
pub(crate) fn open(py: Python<'_>, path: PathBuf, direct: bool, write: bool, create: bool) -> PyResult<File> {
    let opts = DirectFile::options().read(true).write(write || create).create(create).direct(if direct {
        DirectIo::Required
    } else {
        DirectIo::Disabled
    });
    let inner = py.detach(|| opts.open(&path)).map_err(Fail::from)?;
    Ok(File { inner })
}
