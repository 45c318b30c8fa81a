//! The C example and the C test of the error paths, compiled with the
//! system C compiler against the generated header and this build's shared
//! library, and run.

use std::path::{Path, PathBuf};
use std::process::Command;

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The directory of this build's libringpool_c.so (target/<profile>),
/// built once for the tests of this file: `cargo test` builds the crate as
/// an rlib only, so the shared library is built here with the same cargo
/// and target directory.
fn lib_dir() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().unwrap();
            let dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>").to_path_buf();
            let target = dir.parent().expect("target/").to_path_buf();
            let mut cmd = Command::new(env!("CARGO"));
            cmd.args(["build", "-p", "ringpool-c", "--lib"]).env("CARGO_TARGET_DIR", &target);
            if dir.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            let status = cmd.status().expect("run cargo build -p ringpool-c");
            assert!(status.success(), "cargo build -p ringpool-c failed");
            assert!(dir.join("libringpool_c.so").exists(), "{} has no libringpool_c.so", dir.display());
            dir
        })
        .clone()
}

/// A scratch file path on a file system with O_DIRECT.
fn scratch(name: &str) -> PathBuf {
    let base = std::env::var("RINGPOOL_TEST_DIR").unwrap_or_else(|_| "/var/tmp".into());
    PathBuf::from(base).join(format!("ringpool-c-{name}-{}.dat", std::process::id()))
}

fn compile_and_run(source: &Path, name: &str) -> String {
    let lib = lib_dir();
    let out = std::env::temp_dir().join(format!("ringpool-c-{name}-{}", std::process::id()));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(["-std=c11", "-D_GNU_SOURCE", "-O1", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(manifest().join("include"))
        .arg(source)
        .arg("-L")
        .arg(&lib)
        .arg("-lringpool_c")
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-o")
        .arg(&out)
        .status()
        .unwrap_or_else(|e| panic!("running {cc}: {e}"));
    assert!(status.success(), "{cc} failed on {}", source.display());
    let data = scratch(name);
    let run = Command::new(&out).arg(&data).output().unwrap();
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(&data);
    let text = format!("{}{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "{name} failed:\n{text}");
    text
}

#[test]
fn the_c_example_runs() {
    let text = compile_and_run(&manifest().join("examples/example.c"), "example");
    assert!(text.contains("handover: a forked child did fixed I/O") && text.ends_with("ok\n"), "{text}");
}

#[test]
fn the_c_error_paths_fail_cleanly() {
    let text = compile_and_run(&manifest().join("tests/errors.c"), "errors");
    for what in ["bad path", "misaligned length", "buffer of another pool", "ring enabled twice", "malformed handover"]
    {
        assert!(text.contains(what), "{what} was not checked:\n{text}");
    }
}

#[test]
fn the_committed_header_is_the_generated_one() {
    // build.rs generates the header from the extern "C" functions into
    // OUT_DIR; C programs include the committed one.
    let generated = std::fs::read_to_string(concat!(env!("OUT_DIR"), "/ringpool.h")).unwrap();
    let committed = std::fs::read_to_string(manifest().join("include/ringpool.h")).unwrap();
    assert!(
        generated == committed,
        "include/ringpool.h is not the header of the current API: RINGPOOL_WRITE_HEADER=1 cargo build -p ringpool-c"
    );
    for f in ["rp_pool_new", "rp_read_at", "rp_error_free", "rp_handed_enable", "rp_queue_reap", "rp_broker_serve"] {
        assert!(committed.contains(&format!("{f}(")), "{f} is missing from ringpool.h");
    }
    assert!(committed.contains("typedef struct rp_pool rp_pool;"), "opaque handles");
}
