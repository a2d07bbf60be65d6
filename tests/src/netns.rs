//! Named network namespaces (`/run/netns/NAME`, visible to `ip netns` and `nsenter`) and running
//! code or `ip` commands inside them without touching the root namespace.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;

use anyhow::{Context, Result, bail};
use nix::mount::{MntFlags, umount2};
use nix::sched::{CloneFlags, setns};

/// Directory where `ip netns` keeps its bind mounts.
pub(crate) const NETNS_DIR: &str = "/run/netns";

/// A named network namespace, deleted by [`Netns::delete`] (the bed calls it on drop).
#[derive(Debug, Clone)]
pub(crate) struct Netns {
    name: String,
    path: PathBuf,
}

impl Netns {
    /// Creates `/run/netns/NAME` with loopback up and IPv6 DAD off, so addresses are usable at once.
    pub(crate) fn create(name: &str) -> Result<Netns> {
        run_ip(&["netns", "add", name])?;
        let ns = Netns {
            name: name.to_owned(),
            path: Path::new(NETNS_DIR).join(name),
        };
        let setup = ns
            .sysctl("net/ipv6/conf/all/accept_dad", "0")
            .and_then(|()| ns.sysctl("net/ipv6/conf/default/accept_dad", "0"))
            .and_then(|()| ns.ip_batch(&["link set lo up"]));
        if let Err(e) = setup {
            let _ = ns.delete();
            return Err(e);
        }
        Ok(ns)
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `ip -n NS -batch -` with one command per line.
    pub(crate) fn ip_batch(&self, cmds: &[&str]) -> Result<()> {
        let mut child = Command::new("ip")
            .args(["-n", &self.name, "-batch", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawn ip (is iproute2 installed?)")?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(cmds.join("\n").as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "ip -n {} -batch failed: {}\ncommands:\n{}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim(),
                cmds.join("\n")
            );
        }
        Ok(())
    }

    /// Writes `/proc/sys/KEY` as seen from inside this namespace (per-netns sysctls only).
    pub(crate) fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let key = key.to_owned();
        let value = value.to_owned();
        in_netns(&self.path, move || {
            fs::write(Path::new("/proc/sys").join(&key), &value)
                .with_context(|| format!("sysctl {key}"))
        })?
    }

    /// Unmounts and removes the bind mount; the kernel frees the namespace and its links when
    /// nothing else holds it.
    pub(crate) fn delete(&self) -> Result<()> {
        remove_netns_mount(&self.path)
    }
}

/// Unmounts and unlinks a `/run/netns` entry; a missing entry is not an error.
pub(crate) fn remove_netns_mount(path: &Path) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(e).with_context(|| format!("umount {}", path.display())),
    }
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("rm {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Runs `f` on a fresh thread that joined the namespace at `path`; sockets it creates stay there.
pub(crate) fn in_netns<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let file = File::open(path).with_context(|| format!("open {}", path.display()))?;
    thread::spawn(move || -> Result<T> {
        setns(&file, CloneFlags::CLONE_NEWNET).context("setns")?;
        Ok(f())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("netns thread panicked"))?
}

/// Runs one `ip` command in the root namespace (only used for `ip netns add`).
fn run_ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().context("spawn ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
