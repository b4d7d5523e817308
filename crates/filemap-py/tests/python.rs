//! The Python package's test suite (`tests/test_filemap.py`), run by `cargo test`: builds
//! the wheel with maturin, installs it into a folder of its own under `target/`, and runs
//! pytest with the `filemap` CLI at hand. Needs `python3` with maturin and pytest (and
//! numpy for the buffer tests): `python3 -m pip install maturin pytest numpy`.
// Linux only: no Windows CPython runs here (the extension is only built for Windows).
#![cfg(target_os = "linux")]
#![allow(clippy::disallowed_macros)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn run(what: &str, cmd: &mut Command) {
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("{what}: cannot start {cmd:?}: {e}"));
    assert!(status.success(), "{what} failed ({status}): {cmd:?}");
}

#[test]
fn the_python_package_passes_its_tests() {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let workspace = crate_dir.join("../..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let out = target.join(format!("filemap-py-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    struct Clean<'a>(&'a Path);
    impl Drop for Clean<'_> {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(self.0);
        }
    }
    let _clean = Clean(&out);
    // The CLI, for the tests that pair Python with Rust.
    run(
        "building the CLI",
        Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "filemap-cli"])
            .current_dir(&workspace),
    );
    let wheels = out.join("wheels");
    run(
        "maturin build",
        Command::new("python3")
            .args(["-m", "maturin", "build", "-q", "-m"])
            .arg(crate_dir.join("Cargo.toml"))
            .arg("-o")
            .arg(&wheels)
            .args(["--interpreter", "python3"]),
    );
    let wheel = std::fs::read_dir(&wheels)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .expect("maturin made no wheel");
    let site = out.join("site");
    run(
        "installing the wheel",
        Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "-q",
                "--no-deps",
                "--disable-pip-version-check",
                "--target",
            ])
            .arg(&site)
            .arg(&wheel),
    );
    run(
        "pytest",
        Command::new("python3")
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
            // pytest's temporary folders go with the rest of this run's files, not under
            // /tmp/pytest-of-USER, where every run would leave some behind.
            .arg("--basetemp")
            .arg(out.join("pytest-tmp"))
            .arg(crate_dir.join("tests"))
            .env("PYTHONPATH", &site)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("FILEMAP_EXE", target.join("debug/filemap")),
    );
}
