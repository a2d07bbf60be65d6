//! Locating the `pod-tool` binary, the client and server the test bed runs inside pods.
//!
//! Integration tests of this crate get it built by cargo (`CARGO_BIN_EXE_pod-tool`); other crates
//! (xtask demo, benchmarks) link only the library, so the lookup falls back to the target directory
//! of the running executable and finally builds it with cargo.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use anyhow::{Context, Result, bail};

const NAME: &str = "pod-tool";
/// Environment override, checked first.
pub const POD_TOOL_ENV: &str = "SOCKMESH_POD_TOOL";

static PATH: OnceLock<PathBuf> = OnceLock::new();
static BUILD: Mutex<()> = Mutex::new(());

/// Pins the pod-tool path, e.g. `testbed::set_pod_tool(env!("CARGO_BIN_EXE_pod-tool"))` at the
/// start of a test. The first path set wins.
pub fn set_pod_tool(path: impl Into<PathBuf>) {
    let _ = PATH.set(path.into());
}

/// Path of the pod-tool binary: the pinned path, `$SOCKMESH_POD_TOOL`, a `pod-tool` next to the
/// running executable or in its parent directory (`target/<profile>/deps/..`), or a fresh
/// `cargo build -p sockmesh-tests --bin pod-tool` into the running executable's target directory.
pub fn pod_tool() -> Result<&'static Path> {
    if let Some(p) = PATH.get() {
        return Ok(p);
    }
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = PATH.get() {
        return Ok(p);
    }
    let found = match env::var_os(POD_TOOL_ENV) {
        Some(p) => PathBuf::from(p),
        None => find_near_exe().map_or_else(build, Ok)?,
    };
    if !found.is_file() {
        bail!("pod-tool not found at {}", found.display());
    }
    Ok(PATH.get_or_init(|| found))
}

fn exe_dir() -> Result<PathBuf> {
    let exe = env::current_exe().context("current_exe")?;
    Ok(exe.parent().context("exe has no parent")?.to_owned())
}

fn find_near_exe() -> Option<PathBuf> {
    let dir = exe_dir().ok()?;
    [Some(dir.as_path()), dir.parent()]
        .into_iter()
        .flatten()
        .map(|d| d.join(NAME))
        .find(|p| p.is_file())
}

/// Builds pod-tool with the profile and target directory of the running executable.
fn build() -> Result<PathBuf> {
    let mut profile_dir = exe_dir()?;
    if profile_dir.ends_with("deps") || profile_dir.ends_with("examples") {
        profile_dir.pop();
    }
    let target_dir = profile_dir.parent().context("no target dir")?;
    let release = profile_dir.ends_with("release");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "--bin", NAME, "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir);
    if release {
        cmd.arg("--release");
    }
    let status = cmd.status().context("run cargo to build pod-tool")?;
    if !status.success() {
        bail!("{cmd:?} failed");
    }
    Ok(target_dir
        .join(if release { "release" } else { "debug" })
        .join(NAME))
}
