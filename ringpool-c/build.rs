//! Generates the C header from the crate's `extern "C"` functions
//! (cbindgen) into OUT_DIR. The header C programs include is the committed
//! `include/ringpool.h`; the test `the_committed_header_is_the_generated_one`
//! fails when the two differ. `RINGPOOL_WRITE_HEADER=1 cargo build -p
//! ringpool-c` rewrites the committed one.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=RINGPOOL_WRITE_HEADER");
    let config = cbindgen::Config::from_file(format!("{dir}/cbindgen.toml")).expect("cbindgen.toml");
    let header = cbindgen::Builder::new()
        .with_crate(&dir)
        .with_config(config)
        .generate()
        .expect("generating the C header from ringpool-c/src");
    let mut bytes = Vec::new();
    header.write(&mut bytes);
    std::fs::write(format!("{out}/ringpool.h"), &bytes).expect("writing OUT_DIR/ringpool.h");
    if std::env::var("RINGPOOL_WRITE_HEADER").is_ok_and(|v| v == "1") {
        let path = format!("{dir}/include/ringpool.h");
        if std::fs::read(&path).ok().as_deref() != Some(bytes.as_slice()) {
            std::fs::write(&path, &bytes).expect("writing include/ringpool.h");
        }
    }
}
