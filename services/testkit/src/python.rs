//! Clients we did not write, in Python: a virtual environment under `target/python/<name>`
//! with pinned packages from PyPI, made on first use and reused while its pins are the same.
//!
//! Tests drive the services with these stock clients (grpcio's reflection client, a
//! Kubernetes schema validator) to prove HelpGrid works with other people's defaults.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

/// One creation at a time within a test binary (tests of one binary run in parallel).
static CREATING: Mutex<()> = Mutex::new(());

/// `target/` of the workspace.
fn target_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target")
}

/// The Python interpreter of the environment `name`, holding exactly `packages` (pip
/// requirement strings, pinned). Panics with pip's output if the environment cannot be made.
pub fn venv(name: &str, packages: &[&str]) -> PathBuf {
    let _one_at_a_time = CREATING.lock().unwrap_or_else(|e| e.into_inner());
    let dir = target_dir().join("python").join(name);
    let python = dir.join("bin/python");
    let stamp = dir.join("helpgrid-requirements.txt");
    let wanted = packages.join("\n");
    if python.exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(&wanted) {
        return python;
    }
    let _ = std::fs::remove_dir_all(&dir);
    run(
        Command::new("python3").args(["-m", "venv"]).arg(&dir),
        "python3 -m venv (Debian: apt-get install python3-venv)",
    );
    run(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(packages),
        "pip install",
    );
    std::fs::write(&stamp, wanted).expect("write the venv's requirement stamp");
    python
}

fn run(command: &mut Command, what: &str) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs `script` with `python` and `args`; returns its stdout, or panics with both streams.
pub fn run_script(python: &Path, script: &Path, args: &[&str]) -> String {
    let output = run(
        Command::new(python).arg(script).args(args),
        &format!("{}", script.display()),
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
