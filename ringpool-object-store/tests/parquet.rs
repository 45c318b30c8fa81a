//! A real reader on top: parquet's async reader (ParquetObjectReader) reads
//! a multi-row-group file through RingpoolStore, and every record batch
//! equals the one read through LocalFileSystem.
//!
//! parquet 60 deprecates `ParquetObjectReader` (in favour of implementing
//! `AsyncFileReader` over a store) but it is what DataFusion-style readers
//! use today and what this test is about.
#![allow(deprecated)]

use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::async_reader::{ParquetObjectReader, ParquetRecordBatchStreamBuilder};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use ringpool::types::PagePolicy;
use ringpool_object_store::{RingpoolStore, StoreOptions};

const ROWS: usize = 200_000;

fn write_file(path: &std::path::Path) -> usize {
    let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(0..ROWS as i64));
    let vals: ArrayRef = Arc::new(Float64Array::from_iter_values((0..ROWS).map(|i| (i as f64).sin())));
    let names: ArrayRef = Arc::new(StringArray::from_iter_values((0..ROWS).map(|i| format!("row-{i}-{}", i % 97))));
    let batch = RecordBatch::try_from_iter([("id", ids), ("val", vals), ("name", names)]).unwrap();
    let props = WriterProperties::builder().set_max_row_group_row_count(Some(20_000)).build();
    let file = std::fs::File::create(path).unwrap();
    let mut w = ArrowWriter::try_new(file, batch.schema(), Some(props)).unwrap();
    w.write(&batch).unwrap();
    let meta = w.close().unwrap();
    meta.num_row_groups()
}

async fn read_all(store: Arc<dyn ObjectStore>, path: &Path) -> Vec<RecordBatch> {
    let size = store.head(path).await.unwrap().size;
    let reader = ParquetObjectReader::new(store, path.clone()).with_file_size(size);
    let stream = ParquetRecordBatchStreamBuilder::new(reader).await.unwrap().build().unwrap();
    stream.try_collect().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_batches_equal_local_file_systems() {
    let root = tempfile::TempDir::new_in("/var/tmp").unwrap();
    let groups = write_file(&root.path().join("t.parquet"));
    assert!(groups >= 10, "a multi-row-group file ({groups} groups)");
    let opts = StoreOptions { pool_size: 128 << 20, page: PagePolicy::Base, ..Default::default() };
    let ours: Arc<dyn ObjectStore> = Arc::new(RingpoolStore::new(root.path(), opts).unwrap());
    let theirs: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(root.path()).unwrap());
    let path = Path::from("t.parquet");
    let a = read_all(ours, &path).await;
    let b = read_all(theirs, &path).await;
    assert_eq!(a.iter().map(RecordBatch::num_rows).sum::<usize>(), ROWS);
    assert_eq!(a, b, "every record batch is the same");
}
