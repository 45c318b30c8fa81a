//! object_store's own integration suite against RingpoolStore: every test
//! that LocalFileSystem itself runs (object_store 0.14, src/local.rs,
//! `file_test`), on a multi-thread runtime.

use object_store::integration::*;
use ringpool::types::PagePolicy;
use ringpool_object_store::{RingpoolStore, StoreOptions};

fn store(root: &std::path::Path) -> RingpoolStore {
    let opts = StoreOptions { pool_size: 64 << 20, page: PagePolicy::Base, ..StoreOptions::default() };
    RingpoolStore::new(root, opts).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_test() {
    let root = tempfile::TempDir::new_in("/var/tmp").unwrap();
    let integration = store(root.path());

    put_get_delete_list(&integration).await;
    list_with_offset_exclusivity(&integration).await;
    get_opts(&integration).await;
    list_uses_directories_correctly(&integration).await;
    list_with_delimiter(&integration).await;
    rename_and_copy(&integration).await;
    copy_if_not_exists(&integration).await;
    copy_rename_nonexistent_object(&integration).await;
    stream_get(&integration).await;
    put_opts(&integration, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_nonexistent_object_is_not_found() {
    let root = tempfile::TempDir::new_in("/var/tmp").unwrap();
    let integration = store(root.path());
    let err = get_nonexistent_object(&integration, None).await.unwrap_err();
    assert!(matches!(err, object_store::Error::NotFound { .. }), "{err:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn file_test_on_the_current_thread_runtime() {
    // Each on a fresh store: the suite's tests expect one that is empty.
    let root = tempfile::TempDir::new_in("/var/tmp").unwrap();
    put_get_delete_list(&store(root.path())).await;
    let root = tempfile::TempDir::new_in("/var/tmp").unwrap();
    get_opts(&store(root.path())).await;
    let root = tempfile::TempDir::new_in("/var/tmp").unwrap();
    stream_get(&store(root.path())).await;
}
