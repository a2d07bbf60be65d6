//! A `perf record` of the proxies over one run, for finding where their CPU goes.
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{Context as _, Result, bail};

/// A running `perf record` attached to the proxies' processes.
pub struct Recording {
    child: Child,
}

impl Recording {
    /// Starts sampling the given processes (user and kernel stacks, 999 Hz) into `out`.
    pub fn start(pids: &[u32], out: &Path) -> Result<Self> {
        let pid_list = pids
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let child = Command::new("perf")
            .args(["record", "-q", "-F", "999", "-g", "-p", &pid_list, "-o"])
            .arg(out)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting perf record (Debian package linux-perf)")?;
        Ok(Self { child })
    }

    /// Stops the recording with SIGINT, so perf writes a complete file.
    pub fn finish(mut self) -> Result<()> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )?;
        let status = self.child.wait()?;
        let interrupted = std::os::unix::process::ExitStatusExt::signal(&status) == Some(2);
        if !status.success() && !interrupted {
            bail!("perf record ended with {status}");
        }
        Ok(())
    }
}
