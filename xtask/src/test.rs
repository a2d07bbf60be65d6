//! `cargo xtask test`: what CI runs. Every step after setup runs even when an earlier one failed,
//! so one run shows all that is wrong; the summary at the end names the failed steps.
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::cmd::Cmd;
use crate::{setup, validate};

pub fn run(root: &Path) -> Result<()> {
    let cargo = |args: &[&str]| Cmd::new("cargo").args(args).current_dir(root).run();
    let steps: [(&str, Box<dyn Fn() -> Result<()>>); 4] = [
        (
            "fmt",
            Box::new(|| cargo(&["fmt", "--all", "--", "--check"])),
        ),
        (
            "clippy",
            Box::new(|| {
                cargo(&[
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ])
            }),
        ),
        // End-to-end tests need root; CI runs as root, so they run there.
        ("tests", Box::new(|| cargo(&["test", "--workspace"]))),
        ("manifests", Box::new(|| validate::run(root))),
    ];

    let started = Instant::now();
    let mut results: Vec<(&str, Duration, Result<()>)> = Vec::new();
    println!("==> setup");
    let setup_result = setup::run();
    let setup_failed = setup_result.is_err();
    results.push(("setup", started.elapsed(), setup_result));
    // Without the toolchain pieces nothing below can build; stop instead of piling up errors.
    if !setup_failed {
        for (name, step) in steps {
            println!("==> {name}");
            let step_started = Instant::now();
            let result = step();
            results.push((name, step_started.elapsed(), result));
        }
    }

    println!("\n==> summary ({:.0?} in all)", started.elapsed());
    let mut failed = Vec::new();
    for (name, took, result) in &results {
        match result {
            Ok(()) => println!("  ok      {name:<10} {took:>8.1?}"),
            Err(error) => {
                println!("  FAILED  {name:<10} {took:>8.1?}  {error:#}");
                failed.push(*name);
            }
        }
    }
    if !failed.is_empty() {
        bail!("failed step(s): {}", failed.join(", "));
    }
    Ok(())
}
