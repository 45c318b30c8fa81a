//! ringpool's errors as Python exceptions: `OSError` subclasses carrying
//! the errno and ringpool's message (which says what to do), one class per
//! kind a caller may want to catch.

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;

pyo3::create_exception!(
    ringpool,
    RingpoolError,
    PyOSError,
    "Base of ringpool's errors: an OSError with the errno and ringpool's message."
);
pyo3::create_exception!(
    ringpool,
    MemlockError,
    RingpoolError,
    "Pinning the pool or a ring would pass RLIMIT_MEMLOCK (raise it, or make the pool smaller)."
);
pyo3::create_exception!(
    ringpool,
    HugePagesError,
    RingpoolError,
    "Not enough huge pages of the size asked for (reserve them, or use page=\"auto\")."
);
pyo3::create_exception!(
    ringpool,
    AlignmentError,
    RingpoolError,
    "An O_DIRECT transfer whose offset, length or memory is not aligned as the file needs."
);
pyo3::create_exception!(
    ringpool,
    PoolExhaustedError,
    RingpoolError,
    "The pool has no free room of the size asked for (make it larger, or drop arrays that hold it)."
);
pyo3::create_exception!(ringpool, PoolClosedError, RingpoolError, "The pool was closed.");

/// What a native call failed with.
#[derive(Debug)]
pub(crate) enum Fail {
    /// ringpool's own error.
    Ring(ringpool::Error),
    /// A bad argument (`ValueError`).
    Value(String),
    /// The pool was closed.
    Closed,
}

impl From<ringpool::Error> for Fail {
    fn from(e: ringpool::Error) -> Self {
        Fail::Ring(e)
    }
}

impl From<Fail> for PyErr {
    fn from(f: Fail) -> PyErr {
        use ringpool::Error as E;
        match f {
            Fail::Value(m) => PyValueError::new_err(m),
            Fail::Closed => PoolClosedError::new_err((libc_ebadf(), "the pool is closed".to_string())),
            Fail::Ring(e) => {
                let args = (e.errno(), e.to_string());
                match e {
                    // A plan that does not fit: huge pages short, else memlock.
                    E::DoesNotFit { plan } if plan.hugepages_needed > plan.hugepages_free => {
                        HugePagesError::new_err(args)
                    }
                    E::RingMemlock { .. } | E::MemlockLimit { .. } | E::DoesNotFit { .. } => {
                        MemlockError::new_err(args)
                    }
                    E::HugePagesUnavailable { .. }
                    | E::HugePagesReserveFailed { .. }
                    | E::PageSizeUnavailable { .. } => HugePagesError::new_err(args),
                    E::Misaligned { .. } => AlignmentError::new_err(args),
                    E::PoolExhausted { .. } | E::LeaseTooLarge { .. } | E::CapacityExhausted { .. } => {
                        PoolExhaustedError::new_err(args)
                    }
                    E::ShutDown => PoolClosedError::new_err(args),
                    E::InvalidArgument { .. } | E::ZeroLength { .. } | E::RangePastEnd { .. } => {
                        PyValueError::new_err(e.to_string())
                    }
                    _ => RingpoolError::new_err(args),
                }
            }
        }
    }
}

fn libc_ebadf() -> i32 {
    9
}

/// Registers the exception classes in the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("RingpoolError", py.get_type::<RingpoolError>())?;
    m.add("MemlockError", py.get_type::<MemlockError>())?;
    m.add("HugePagesError", py.get_type::<HugePagesError>())?;
    m.add("AlignmentError", py.get_type::<AlignmentError>())?;
    m.add("PoolExhaustedError", py.get_type::<PoolExhaustedError>())?;
    m.add("PoolClosedError", py.get_type::<PoolClosedError>())?;
    Ok(())
}
