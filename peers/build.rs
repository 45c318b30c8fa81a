//! Records the resolved versions of the peer crates (from Cargo.lock) and
//! the compiler's version, for the report's `machine` section.
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=Cargo.lock");
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock")).unwrap_or_default();
    let mut versions = Vec::new();
    for name in ["tokio-uring", "glommio", "monoio", "tokio", "io-uring"] {
        let mut found = Vec::new();
        let mut lines = lock.lines();
        while let Some(l) = lines.next() {
            if l.trim() == format!("name = \"{name}\"") {
                if let Some(v) = lines.next().and_then(|v| v.trim().strip_prefix("version = ")) {
                    found.push(v.trim_matches('"').to_string());
                }
            }
        }
        versions.push(format!("{name} {}", if found.is_empty() { "?".into() } else { found.join("/") }));
    }
    println!("cargo:rustc-env=PEER_VERSIONS={}", versions.join(", "));
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let v = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!("cargo:rustc-env=PEER_RUSTC={v}");
}
