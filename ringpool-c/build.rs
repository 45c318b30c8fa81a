//! Generates include/ringpool.h from the crate's `extern "C"` functions
//! (cbindgen), rewriting it only when it changes.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    let config = cbindgen::Config::from_file(format!("{dir}/cbindgen.toml")).expect("cbindgen.toml");
    let header = cbindgen::Builder::new()
        .with_crate(&dir)
        .with_config(config)
        .generate()
        .expect("generating the C header from ringpool-c/src");
    let path = format!("{dir}/include/ringpool.h");
    let mut bytes = Vec::new();
    header.write(&mut bytes);
    if std::fs::read(&path).ok().as_deref() != Some(bytes.as_slice()) {
        std::fs::write(&path, &bytes).expect("writing include/ringpool.h");
    }
}
