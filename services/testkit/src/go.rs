//! Clients we did not write, in Go: a command-line tool built with `go install` from the Go
//! module proxy at a pinned version, into `target/go/<name>-<version>/`, made on first use and
//! reused after. The module cache (`go env GOMODCACHE`) persists on the machine, so a rebuild
//! after `cargo clean` does not download again.
//!
//! Tests drive the services with these stock tools (grpcurl) to prove HelpGrid works with the
//! tools operators already have, with their default settings.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

/// One build at a time within a test binary (tests of one binary run in parallel).
static BUILDING: Mutex<()> = Mutex::new(());

/// The executable of `package` (a Go main package path, e.g.
/// `github.com/fullstorydev/grpcurl/cmd/grpcurl`) at `version`. Panics with the go command's
/// output if it cannot be built (Go is part of the machine's toolchain; see the README).
pub fn tool(package: &str, version: &str) -> PathBuf {
    let _one_at_a_time = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    let name = package.rsplit('/').next().unwrap_or(package);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/go")
        .join(format!("{name}-{version}"));
    let executable = dir.join(name);
    if executable.exists() {
        return executable;
    }
    let output = Command::new("go")
        .args(["install", &format!("{package}@{version}")])
        .env("GOBIN", &dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run `go install {package}@{version}` (is Go installed?): {e}")
        });
    assert!(
        output.status.success() && executable.exists(),
        "go install {package}@{version} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    executable
}
