//! Processes placed in a cgroup and (optionally) a network namespace.
//!
//! The child joins the cgroup first and then the netns, in `pre_exec`, so nothing in between can
//! run outside the pod. `ip netns exec` is not used because it remounts /sys and hides cgroup2.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::cgroup::Cgroup;

/// Default limit for [`crate::Pod::run`] and the client helpers.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a child process runs: always a cgroup, a netns for pods, none (root netns) for agents.
#[derive(Debug, Clone)]
pub(crate) struct Placement {
    pub(crate) cgroup: Cgroup,
    pub(crate) netns: Option<PathBuf>,
}

impl Placement {
    /// Makes `cmd` join the cgroup and the netns between fork and exec.
    fn apply(&self, cmd: &mut Command) -> Result<()> {
        // Opened before fork: pre_exec may only make async-signal-safe calls (no allocation, no open).
        let procs: OwnedFd = OpenOptions::new()
            .write(true)
            .open(self.cgroup.path().join("cgroup.procs"))
            .with_context(|| format!("open cgroup.procs of {}", self.cgroup.rel()))?
            .into();
        let netns: Option<OwnedFd> = match &self.netns {
            Some(p) => Some(
                File::open(p)
                    .with_context(|| format!("open {}", p.display()))?
                    .into(),
            ),
            None => None,
        };
        // SAFETY: the closure only calls write(2) and setns(2) on descriptors it owns.
        unsafe {
            cmd.pre_exec(move || {
                // "0" moves the writing process itself.
                if libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 {
                    return Err(io::Error::last_os_error());
                }
                if let Some(ns) = &netns
                    && libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(())
    }

    /// Starts `cmd` with stdout and stderr appended to `log`.
    pub(crate) fn spawn(&self, mut cmd: Command, log: PathBuf) -> Result<Process> {
        self.apply(&mut cmd)?;
        let file = OpenOptions::new().create(true).append(true).open(&log)?;
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        let child = cmd.spawn().with_context(|| format!("spawn {cmd:?}"))?;
        Ok(Process { child, log })
    }

    /// Runs `cmd` to completion and collects its output; kills it after `timeout`.
    pub(crate) fn run(&self, mut cmd: Command, timeout: Duration) -> Result<Output> {
        self.apply(&mut cmd)?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| format!("spawn {cmd:?}"))?;
        let stdout = drain(child.stdout.take().expect("piped"));
        let stderr = drain(child.stderr.take().expect("piped"));
        let status = wait_until(&mut child, Instant::now() + timeout)?;
        let Some(status) = status else {
            let _ = child.kill();
            let _ = child.wait();
            let err = stderr.join().unwrap_or_default();
            bail!(
                "{cmd:?} timed out after {timeout:?}; stderr: {}",
                String::from_utf8_lossy(&err)
            );
        };
        Ok(Output {
            status,
            stdout: stdout.join().unwrap_or_default(),
            stderr: stderr.join().unwrap_or_default(),
        })
    }
}

fn drain(mut r: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

fn wait_until(child: &mut Child, deadline: Instant) -> Result<Option<ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// A running child process; SIGKILLed and reaped on drop.
#[derive(Debug)]
pub struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// File holding the process's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything the process has written to stdout and stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle` (e.g. a readiness line); fails if the process exits first.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "process exited ({status}) before logging {needle:?}; log:\n{}",
                    self.log()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "no {needle:?} in log after {timeout:?}; log:\n{}",
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends `signal` (e.g. SIGTERM to test a graceful agent shutdown).
    pub fn signal(&self, signal: Signal) -> Result<()> {
        kill(Pid::from_raw(self.pid() as i32), signal).context("kill")
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        wait_until(&mut self.child, Instant::now() + timeout)
    }

    /// SIGTERM, then SIGKILL if it is still running after `grace`.
    pub fn stop(mut self, grace: Duration) -> Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        self.signal(Signal::SIGTERM)?;
        if let Some(status) = self.wait_timeout(grace)? {
            return Ok(status);
        }
        self.child.kill()?;
        Ok(self.child.wait()?)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
