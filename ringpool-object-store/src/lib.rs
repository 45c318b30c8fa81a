//! An [`ObjectStore`] for a local directory tree whose reads go through
//! ringpool: the aligned cover of every range read with O_DIRECT fixed
//! reads into a registered pool, all of a call's ranges in flight at once,
//! each result a [`Bytes`] that owns its pool memory (no copy; the memory
//! returns to the pool when the last `Bytes` over it drops).
//!
//! Swap one constructor:
//!
//! ```no_run
//! # fn main() -> object_store::Result<()> {
//! // let store = object_store::local::LocalFileSystem::new_with_prefix("/data")?;
//! let store = ringpool_object_store::RingpoolStore::new("/data", ringpool_object_store::StoreOptions::default())?;
//! # Ok(()) }
//! ```
//!
//! Everything but reads (put with every mode, multipart upload, list,
//! copy, rename, delete, metadata) is `LocalFileSystem`'s own code on the
//! same root, so paths, ETags, errors and atomicity (temporary file, then
//! rename) are exactly its. Reads (`get`, `get_opts` with ranges, suffixes,
//! offsets, conditions and `head`, `get_range`, `get_ranges`) run on the
//! pool's asynchronous path: on a tokio runtime thread, that thread's own
//! ring, completions through the runtime's reactor, so no runtime thread
//! blocks. Files on file systems without O_DIRECT (tmpfs) are read through
//! the page cache (logged once).
//!
//! Reads are O_DIRECT: they always go to the device. Data that is hot in
//! the page cache (read again and again, and small enough to stay there)
//! is served faster by `LocalFileSystem`, from memory: warm, ranged reads
//! ran at 0.35x of it here, cold at 2.2-2.8x (BENCHMARKS.md, section 14).

mod read;

use std::fmt;
use std::path::Path as FsPath;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, RenameOptions, Result,
};
use ringpool::types::PagePolicy;
use ringpool::{IoPool, MemoryOptions};

pub use bytes::Bytes;

/// How to make the store's pool when none is given.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Bytes of the pool (what the `Bytes` of reads alive at once can
    /// hold). Default 1 GiB.
    pub pool_size: u64,
    /// Its pages (default: huge pages where reserved, else transparent).
    pub page: PagePolicy,
    /// Worker threads at most (reads awaited on runtime threads need
    /// none). Default 2.
    pub workers: usize,
    /// Ranges closer than this are read as one (default 16 KiB).
    pub coalesce: u64,
    /// Bytes per read of a whole-object `get` stream (default 8 MiB), and
    /// reads of it in flight at once (default 8).
    pub chunk: u64,
    pub chunks_in_flight: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            pool_size: 1 << 30,
            page: PagePolicy::Auto,
            workers: 2,
            coalesce: 16 << 10,
            chunk: 8 << 20,
            chunks_in_flight: 8,
        }
    }
}

/// The pool a store reads into: one of yours, or one it makes.
#[derive(Debug, Clone)]
pub enum PoolChoice {
    /// An existing pool (shared with the rest of the program).
    Pool(Arc<IoPool>, StoreOptions),
    /// A pool made from these options.
    Options(StoreOptions),
}

impl From<Arc<IoPool>> for PoolChoice {
    fn from(p: Arc<IoPool>) -> Self {
        PoolChoice::Pool(p, StoreOptions::default())
    }
}

impl From<IoPool> for PoolChoice {
    fn from(p: IoPool) -> Self {
        PoolChoice::Pool(Arc::new(p), StoreOptions::default())
    }
}

impl From<StoreOptions> for PoolChoice {
    fn from(o: StoreOptions) -> Self {
        PoolChoice::Options(o)
    }
}

/// A local directory tree as an [`ObjectStore`], read through ringpool.
#[derive(Debug, Clone)]
pub struct RingpoolStore {
    local: Arc<LocalFileSystem>,
    pool: Arc<IoPool>,
    opts: StoreOptions,
}

impl RingpoolStore {
    /// The store of directory `root` (which must exist), reading into
    /// `pool` (an `Arc<IoPool>`, an `IoPool`, or [`StoreOptions`] to make
    /// one).
    ///
    /// # Errors
    /// `LocalFileSystem::new_with_prefix`'s (a root that does not exist);
    /// the pool's setup errors.
    pub fn new(root: impl AsRef<FsPath>, pool: impl Into<PoolChoice>) -> Result<Self> {
        let local = LocalFileSystem::new_with_prefix(root)?;
        let (pool, opts) = match pool.into() {
            PoolChoice::Pool(p, o) => (p, o),
            PoolChoice::Options(o) => {
                let p = IoPool::builder()
                    .size(o.pool_size)
                    .memory(MemoryOptions::new().page(o.page))
                    .workers(0, o.workers.max(1))
                    .build()
                    .map_err(read::generic)?;
                (Arc::new(p), o)
            }
        };
        Ok(RingpoolStore { local: Arc::new(local), pool, opts })
    }

    /// The same store with other options (coalescing, `get` chunks).
    pub fn with_options(mut self, opts: StoreOptions) -> Self {
        self.opts = opts;
        self
    }

    /// The pool reads go into.
    pub fn pool(&self) -> &Arc<IoPool> {
        &self.pool
    }

    /// The `LocalFileSystem` that serves everything but reads.
    pub fn local(&self) -> &LocalFileSystem {
        &self.local
    }
}

impl fmt::Display for RingpoolStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RingpoolStore({})", self.local)
    }
}

#[async_trait]
impl ObjectStore for RingpoolStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.local.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.local.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        read::get_opts(self, location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[std::ops::Range<u64>]) -> Result<Vec<Bytes>> {
        read::get_ranges(self, location, ranges).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.local.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.local.list(prefix)
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        self.local.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.local.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.local.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.local.rename_opts(from, to, options).await
    }
}
