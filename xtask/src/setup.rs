//! `cargo xtask setup`: brings a machine to the point where the workspace builds and every test can run.
//! Each step checks first and acts only when something is missing, so a second run is fast and silent.
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};

use crate::cmd::{Cmd, cargo_bin_dir, path_with_cargo_bin};

/// The nightly that builds the eBPF crate; agent/build.rs names the same one. bpf-linker is linked
/// against this toolchain's LLVM, so the two must move together (DEVELOPERS.md).
pub const NIGHTLY: &str = "nightly-x86_64-unknown-linux-gnu";

/// bpf-linker release known to build against the nightly's LLVM 22 with `no-llvm-linking`.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Pinned because the manifest check reads this tool's output lines (see validate.rs).
pub const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";

/// Debian packages the tests, demo and benchmarks call; inner slices are alternatives, the first
/// one is installed when none is present.
const DEBIAN_PACKAGES: &[&[&str]] = &[
    &["iproute2"],
    &["bpftool"],
    &["tcpdump"],
    &["iperf3"],
    &["wrk"],
    &["haproxy"],
    &["nginx-light", "nginx"],
    // `openssl s_server` is the TLS server outside the mesh in the origination tests.
    &["openssl"],
    // The benchmark warms each configuration up with one request and sets per-pod sysctls.
    &["curl"],
    &["procps"],
];

pub fn run() -> Result<()> {
    let started = Instant::now();
    let steps = [
        ("rust-src", rust_src as fn() -> Result<String>),
        ("bpf-linker", bpf_linker),
        ("debian packages", debian_packages),
        ("kubernetes-validate", kubernetes_validate),
    ];
    let mut report = Vec::new();
    for (name, step) in steps {
        let outcome = step().with_context(|| format!("setup step `{name}` failed"))?;
        report.push(format!("  {name}: {outcome}"));
    }
    println!("setup done in {:.1?}:", started.elapsed());
    for line in report {
        println!("{line}");
    }
    Ok(())
}

/// `-Z build-std=core` for the bpfel target needs the nightly's library sources.
fn rust_src() -> Result<String> {
    let installed = Cmd::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", NIGHTLY])
        .read()
        .with_context(|| format!("is the toolchain {NIGHTLY} installed?"))?;
    if installed.lines().any(|line| line.trim() == "rust-src") {
        return Ok(format!("present in {NIGHTLY}"));
    }
    Cmd::new("rustup")
        .args(["component", "add", "rust-src", "--toolchain", NIGHTLY])
        .run()?;
    Ok(format!("installed into {NIGHTLY}"))
}

/// rustc ships LLVM as `lib/libLLVM-<major>-<rust version>.so`; bpf-linker links to exactly that file.
struct NightlyLlvm {
    lib_dir: PathBuf,
    /// The name for `-l dylib=`, e.g. `LLVM-22-rust-1.97.0-nightly`.
    link_name: String,
    major: String,
}

fn nightly_llvm() -> Result<NightlyLlvm> {
    let sysroot = Cmd::new("rustup")
        .args(["run", NIGHTLY, "rustc", "--print", "sysroot"])
        .read()?;
    let lib_dir = PathBuf::from(sysroot.trim()).join("lib");
    let entries =
        std::fs::read_dir(&lib_dir).with_context(|| format!("reading {}", lib_dir.display()))?;
    for entry in entries {
        let file_name = entry?.file_name();
        let Some(link_name) = file_name
            .to_str()
            .and_then(|name| name.strip_prefix("lib")?.strip_suffix(".so"))
            .filter(|name| name.starts_with("LLVM-"))
        else {
            continue;
        };
        let major = link_name["LLVM-".len()..]
            .split('-')
            .next()
            .filter(|major| !major.is_empty() && major.bytes().all(|b| b.is_ascii_digit()))
            .with_context(|| format!("cannot read LLVM's major version from {link_name}"))?;
        return Ok(NightlyLlvm {
            major: major.to_owned(),
            link_name: link_name.to_owned(),
            lib_dir,
        });
    }
    bail!(
        "no libLLVM-<major>-*.so in {}: the nightly's LLVM library is needed to build bpf-linker",
        lib_dir.display()
    )
}

fn bpf_linker() -> Result<String> {
    let llvm = nightly_llvm()?;
    let found = which::which_in("bpf-linker", Some(path_with_cargo_bin()), ".").ok();
    let reason = match &found {
        None => "not installed".to_owned(),
        Some(path) => match staleness(path, &llvm.lib_dir)? {
            None => {
                return Ok(format!(
                    "{} up to date (linked to {})",
                    path.display(),
                    llvm.link_name
                ));
            }
            Some(reason) => reason,
        },
    };
    println!(
        "bpf-linker: {reason}; building {BPF_LINKER_VERSION} against {}",
        llvm.link_name
    );
    let lib = llvm.lib_dir.display();
    Cmd::new("cargo")
        .args(["install", "bpf-linker", "--locked", "--force"])
        .args(["--version", BPF_LINKER_VERSION, "--no-default-features"])
        .arg("--features")
        .arg(format!("llvm-{},no-llvm-linking", llvm.major))
        .env(
            "RUSTFLAGS",
            format!(
                "-L {lib} -l dylib={} -C link-arg=-Wl,-rpath,{lib}",
                llvm.link_name
            ),
        )
        // Build in cargo install's own temporary directory, not in the caller's target dir.
        .env_remove("CARGO_TARGET_DIR")
        .run()?;
    let installed = cargo_bin_dir().join("bpf-linker");
    if let Some(reason) = staleness(&installed, &llvm.lib_dir)? {
        bail!(
            "freshly installed {} is still unusable: {reason}",
            installed.display()
        );
    }
    Ok(format!(
        "installed {} ({reason} before)",
        installed.display()
    ))
}

/// Why the bpf-linker at `path` cannot be used with the nightly whose libraries are in `lib_dir`,
/// or `None` when it can: it must load an LLVM library that exists there, through an rpath that
/// points there, and it must start.
fn staleness(path: &Path, lib_dir: &Path) -> Result<Option<String>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let elf = goblin::elf::Elf::parse(&bytes)
        .with_context(|| format!("{} is not an ELF file", path.display()))?;
    let llvm: Vec<&str> = elf
        .libraries
        .iter()
        .copied()
        .filter(|lib| lib.contains("LLVM"))
        .collect();
    if llvm.is_empty() {
        return Ok(Some(
            "not linked to the nightly's LLVM (built by another recipe)".to_owned(),
        ));
    }
    if let Some(missing) = llvm.iter().find(|lib| !lib_dir.join(lib).exists()) {
        return Ok(Some(format!(
            "needs {missing}, which {} no longer has (the nightly changed)",
            lib_dir.display()
        )));
    }
    let wanted = lib_dir
        .canonicalize()
        .unwrap_or_else(|_| lib_dir.to_owned());
    let search_path_ok = elf
        .runpaths
        .iter()
        .chain(&elf.rpaths)
        .flat_map(|paths| paths.split(':'))
        .any(|dir| Path::new(dir).canonicalize().is_ok_and(|dir| dir == wanted));
    if !search_path_ok {
        return Ok(Some(format!(
            "its rpath does not point at {}",
            lib_dir.display()
        )));
    }
    if !Cmd::new(path).arg("--version").succeeds() {
        return Ok(Some("`bpf-linker --version` fails".to_owned()));
    }
    Ok(None)
}

fn is_installed(package: &str) -> bool {
    Cmd::new("dpkg-query")
        .args(["-W", "-f", "${db:Status-Status}", package])
        .read()
        .is_ok_and(|status| status.trim() == "installed")
}

pub fn debian_packages() -> Result<String> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .filter(|alternatives| !alternatives.iter().any(|package| is_installed(package)))
        .map(|alternatives| alternatives[0])
        .collect();
    if missing.is_empty() {
        return Ok("all present".to_owned());
    }
    let uid = Cmd::new("id").arg("-u").read()?;
    let sudo = uid.trim() != "0";
    let apt = |args: &[&str]| {
        let cmd = if sudo {
            Cmd::new("sudo").arg("apt-get")
        } else {
            Cmd::new("apt-get")
        };
        cmd.env("DEBIAN_FRONTEND", "noninteractive").args(args)
    };
    let install = || {
        apt(&["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .run()
    };
    // A fresh machine's package lists may be stale or empty; refresh only when that bites.
    if install().is_err() {
        apt(&["update", "-q"]).run()?;
        install()?;
    }
    Ok(format!("installed {}", missing.join(" ")))
}

/// The validator lives in its own virtualenv: it never touches the system Python (which Debian
/// marks externally managed), and survives `cargo clean`.
pub fn validator_python() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache")
        });
    cache
        .join(format!(
            "sockmesh/kubernetes-validate-{KUBERNETES_VALIDATE_VERSION}"
        ))
        .join("bin/python")
}

fn kubernetes_validate() -> Result<String> {
    let python = validator_python();
    let present = Cmd::new(&python)
        .args(["-m", "kubernetes_validate", "--version"])
        .read()
        .is_ok_and(|version| version.trim() == KUBERNETES_VALIDATE_VERSION);
    if present {
        return Ok(format!("{KUBERNETES_VALIDATE_VERSION} present"));
    }
    let venv = python
        .parent()
        .and_then(Path::parent)
        .context("validator path has no venv directory")?;
    Cmd::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(venv)
        .run()
        .context("creating the validator's virtualenv (Debian's python3 needs python3-venv)")?;
    Cmd::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .arg(format!(
            "kubernetes-validate=={KUBERNETES_VALIDATE_VERSION}"
        ))
        .run()?;
    Ok(format!(
        "installed {KUBERNETES_VALIDATE_VERSION} in {}",
        venv.display()
    ))
}
