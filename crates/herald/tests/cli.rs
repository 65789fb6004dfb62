//! The command line itself. (Having an integration test here also makes `cargo test --workspace`
//! build the `herald` binary that the end-to-end tests in `tests/` run.)

use std::process::Command;

#[test]
fn version_and_usage() {
    let out = Command::new(env!("CARGO_BIN_EXE_herald")).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), concat!("herald ", env!("CARGO_PKG_VERSION")));
    let out = Command::new(env!("CARGO_BIN_EXE_herald")).arg("frobnicate").output().unwrap();
    assert!(!out.status.success());
}

#[test]
fn config_comes_from_herald_config_when_no_flag() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.yaml");
    std::fs::write(&path, "upstream:\n  url: http://127.0.0.1:1\nroutes: []\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_herald")).arg("check").env("HERALD_CONFIG", &path).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("g.yaml:3:9: routes: at least one route is required"), "{stderr}");
}
