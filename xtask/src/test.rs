//! `cargo xtask test`: what CI runs. Every step after setup runs even when an earlier one failed,
//! so one run shows all that is wrong; the summary at the end names the failed steps.
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::cmd::Cmd;
use crate::{setup, soak, validate};

/// Built only by aya-build (agent/build.rs), for the bpfel target.
const EBPF_PACKAGE: &str = "sockmesh-ebpf";

pub fn run(root: &Path) -> Result<()> {
    let cargo = |args: &[&str]| Cmd::new("cargo").args(args).current_dir(root).run();
    let started = Instant::now();
    let mut steps = Steps::default();
    // Without the toolchain pieces nothing below can build; stop instead of piling up errors.
    if steps.run("setup", setup::run) {
        steps.run("fmt", || cargo(&["fmt", "--all", "--", "--check"]));
        // The eBPF crate is a no_std, no_main binary for the bpfel target: the host cannot build
        // it, so host steps exclude it and it is linted for its own target with the nightly.
        steps.run("clippy", || {
            cargo(&[
                "clippy",
                "--workspace",
                "--exclude",
                EBPF_PACKAGE,
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])
        });
        steps.run("clippy-ebpf", || {
            cargo(&[
                &format!("+{}", setup::NIGHTLY),
                "clippy",
                "--package",
                EBPF_PACKAGE,
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--",
                "-D",
                "warnings",
            ])
        });
        // End-to-end tests need root; CI runs as root, so they run there.
        steps.run("tests", || {
            cargo(&["test", "--workspace", "--exclude", EBPF_PACKAGE])
        });
        steps.run("manifests", || validate::run(root));
        // Root too; asserts that nothing reaches an app where policy says no and that the
        // agents' descriptors and capture maps return to baseline (docs/reliability.md).
        steps.run("soak-short", || soak::run(soak::SoakArgs::short()));
    }
    steps.summary(started.elapsed())
}

/// Outcomes of the steps run so far, in order.
#[derive(Default)]
struct Steps(Vec<(&'static str, Duration, Result<()>)>);

impl Steps {
    /// Runs one step and records how it went; returns whether it succeeded.
    fn run(&mut self, name: &'static str, step: impl FnOnce() -> Result<()>) -> bool {
        println!("==> {name}");
        let started = Instant::now();
        let result = step();
        let ok = result.is_ok();
        self.0.push((name, started.elapsed(), result));
        ok
    }

    fn summary(self, took: Duration) -> Result<()> {
        println!("\n==> summary ({took:.0?} in all)");
        let mut failed = Vec::new();
        for (name, took, result) in &self.0 {
            match result {
                Ok(()) => println!("  ok      {name:<12} {took:>8.1?}"),
                Err(error) => {
                    println!("  FAILED  {name:<12} {took:>8.1?}  {error:#}");
                    failed.push(*name);
                }
            }
        }
        if !failed.is_empty() {
            bail!("failed step(s): {}", failed.join(", "));
        }
        Ok(())
    }
}
