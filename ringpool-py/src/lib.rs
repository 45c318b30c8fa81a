//! `ringpool._ringpool`: the native part of the `ringpool` Python package
//! (a registered O_DIRECT pool, reads into it without a copy). The Python
//! package (python/ringpool) wraps it; see its docstrings.
#![deny(unsafe_code)]

mod errors;
mod file;
mod lease;
mod pool;

use pyo3::prelude::*;

#[pymodule]
fn _ringpool(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<pool::Pool>()?;
    m.add_class::<file::File>()?;
    m.add_class::<lease::Lease>()?;
    m.add_function(wrap_pyfunction!(file::open, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    errors::register(m)?;
    Ok(())
}
