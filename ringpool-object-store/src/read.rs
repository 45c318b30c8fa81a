//! The store's reads: `get_opts` (a stream of chunks read ahead through
//! the pool) and `get_ranges` (every range at once, close ones coalesced),
//! with `LocalFileSystem`'s metadata, ETags, conditions and errors.

use std::ops::Range;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, StreamExt};
use object_store::path::Path;
use object_store::{Error, GetOptions, GetResult, GetResultPayload, ObjectMeta, Result};
use ringpool::types::DirectIo;
use ringpool::{DirectFile, IoPool, RangeRequest};

use crate::RingpoolStore;

const STORE: &str = "RingpoolStore";

/// ringpool's (or any) error as object_store's.
pub(crate) fn generic(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Generic { store: STORE, source: Box::new(e) }
}

fn not_found(path: &std::path::Path, source: std::io::Error) -> Error {
    Error::NotFound { path: path.display().to_string(), source: Box::new(source) }
}

/// Opens the object's file as `LocalFileSystem` does (a directory is not
/// found), O_DIRECT where the file system has it.
fn open(store: &RingpoolStore, location: &Path) -> Result<(DirectFile, PathBuf)> {
    let path = store.local.path_to_filesystem(location)?;
    if std::fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
        return Err(not_found(&path, std::io::Error::new(std::io::ErrorKind::NotFound, "is directory")));
    }
    let file = DirectFile::options().read(true).direct(DirectIo::Optional).open(&path).map_err(|e| {
        match e.raw_os_error() {
            Some(libc::ENOENT) => not_found(&path, std::io::Error::from_raw_os_error(libc::ENOENT)),
            _ => generic(e),
        }
    })?;
    if !file.is_direct() {
        static SAID: AtomicBool = AtomicBool::new(false);
        if !SAID.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                path = %path.display(),
                "RingpoolStore: this file system has no O_DIRECT (tmpfs?): reads go through the page cache"
            );
        }
    }
    Ok((file, path))
}

/// `LocalFileSystem`'s metadata of the open file: size, mtime, and its
/// ETag (`"inode-mtime_us-size"`, hex).
fn meta(file: &DirectFile, path: &std::path::Path, location: &Path) -> Result<ObjectMeta> {
    let md = file.metadata().map_err(generic)?;
    if md.is_dir() {
        return Err(not_found(path, std::io::Error::new(std::io::ErrorKind::NotFound, "is directory")));
    }
    let modified = md.modified().map_err(generic)?;
    let micros = modified.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_micros();
    Ok(ObjectMeta {
        location: location.clone(),
        last_modified: modified.into(),
        size: md.len(),
        e_tag: Some(format!("\"{:x}-{:x}-{:x}\"", md.ino(), micros, md.len())),
        version: None,
    })
}

/// One range through the pool as a `Bytes` that owns its memory; through
/// a plain `pread` on the blocking pool (a copy) when the pool is full,
/// so that a caller holding many `Bytes` never fails for lack of room.
async fn read_one(pool: &IoPool, file: &DirectFile, path: &std::path::Path, r: Range<u64>) -> Result<Bytes> {
    match pool.read_ranges_async(&[RangeRequest::new(file, r.start, r.end - r.start)]).await {
        Ok(mut v) => Ok(Bytes::from_owner(v.pop().expect("one range"))),
        Err(ringpool::Error::PoolExhausted { .. }) => pread(path, vec![r]).await.map(|mut v| v.remove(0)),
        Err(e) => Err(generic(e)),
    }
}

/// `ranges` read with `pread` on tokio's blocking pool (the fallback).
async fn pread(path: &std::path::Path, ranges: Vec<Range<u64>>) -> Result<Vec<Bytes>> {
    static SAID: AtomicBool = AtomicBool::new(false);
    if !SAID.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "RingpoolStore: the pool is full (Bytes of earlier reads hold it): reading with pread meanwhile"
        );
    }
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let f = std::fs::File::open(&path).map_err(|e| not_found(&path, e))?;
        ranges
            .iter()
            .map(|r| {
                let mut v = vec![0u8; (r.end - r.start) as usize];
                f.read_exact_at(&mut v, r.start).map_err(generic)?;
                Ok(Bytes::from(v))
            })
            .collect()
    })
    .await
    .map_err(|e| Error::JoinError { source: e })?
}

pub(crate) async fn get_opts(store: &RingpoolStore, location: &Path, options: GetOptions) -> Result<GetResult> {
    let (file, path) = open(store, location)?;
    let meta = meta(&file, &path, location)?;
    options.check_preconditions(&meta)?;
    let range = match &options.range {
        Some(r) => r.as_range(meta.size).map_err(generic)?,
        None => 0..meta.size,
    };
    let payload = if options.head {
        stream::empty().boxed()
    } else {
        let chunk = store.opts.chunk.max(4096);
        let parts: Vec<Range<u64>> =
            (range.start..range.end).step_by(chunk as usize).map(|s| s..(s + chunk).min(range.end)).collect();
        let (pool, file, path) = (Arc::clone(&store.pool), file, Arc::new(path));
        stream::iter(parts)
            .map(move |r| {
                let (pool, file, path) = (Arc::clone(&pool), file.clone(), Arc::clone(&path));
                async move { read_one(&pool, &file, &path, r).await }
            })
            .buffered(store.opts.chunks_in_flight.max(1))
            .boxed()
    };
    Ok(GetResult {
        payload: GetResultPayload::Stream(payload),
        meta,
        range,
        attributes: Default::default(),
        extensions: Default::default(),
    })
}

/// Ranges sorted and merged where they overlap or lie within `gap` of each
/// other; empty ranges are left out.
pub(crate) fn merge(ranges: &[Range<u64>], gap: u64) -> Vec<Range<u64>> {
    let mut v: Vec<Range<u64>> = ranges.iter().filter(|r| r.start < r.end).cloned().collect();
    v.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(v.len());
    for r in v {
        match out.last_mut() {
            Some(last) if r.start <= last.end.saturating_add(gap) => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

pub(crate) async fn get_ranges(store: &RingpoolStore, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
    if let Some(r) = ranges.iter().find(|r| r.start > r.end) {
        return Err(generic(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("range {}..{} ends before it starts", r.start, r.end),
        )));
    }
    let (file, path) = open(store, location)?;
    let merged = merge(ranges, store.opts.coalesce);
    if merged.is_empty() {
        return Ok(ranges.iter().map(|_| Bytes::new()).collect());
    }
    let reqs: Vec<RangeRequest> = merged.iter().map(|r| RangeRequest::new(&file, r.start, r.end - r.start)).collect();
    let fetched: Vec<Bytes> = match store.pool.read_ranges_async(&reqs).await {
        Ok(bufs) => bufs.into_iter().map(Bytes::from_owner).collect(),
        Err(ringpool::Error::PoolExhausted { .. }) => pread(&path, merged.clone()).await?,
        Err(e) => return Err(generic(e)),
    };
    Ok(ranges
        .iter()
        .map(|r| {
            if r.start == r.end {
                return Bytes::new();
            }
            let i = merged.partition_point(|m| m.start <= r.start) - 1;
            let m = &merged[i];
            fetched[i].slice((r.start - m.start) as usize..(r.end - m.start) as usize)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::merge;

    #[test]
    fn ranges_merge_when_close_and_keep_apart_otherwise() {
        assert_eq!(merge(&[0..10, 10..20, 30..40], 0), vec![0..20, 30..40]);
        assert_eq!(merge(&[30..40, 0..10, 12..20], 4), vec![0..20, 30..40]);
        assert_eq!(merge(&[0..100, 10..20], 0), vec![0..100]);
        assert_eq!(merge(&[5..5, 7..7], 0), Vec::<std::ops::Range<u64>>::new());
        assert_eq!(merge(&[u64::MAX - 1..u64::MAX, 0..1], u64::MAX), vec![0..u64::MAX]);
    }
}
