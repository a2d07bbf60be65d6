//! Network namespaces: run a closure inside a pod's namespace and come back.
//!
//! Sockets keep the namespace they were created in, so the proxy creates listeners and upstream
//! sockets inside the pod's namespace and then serves them from any tokio thread.
use std::{
    fs::File,
    io,
    os::{fd::AsFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
    sync::OnceLock,
};

use anyhow::Context as _;
use nix::sched::{CloneFlags, setns};

/// The agent's own network namespace, opened once at start so every switch can return to it.
static HOME: OnceLock<File> = OnceLock::new();

/// Records the calling thread's namespace as the agent's home. Call once at start-up.
pub fn init_home() -> anyhow::Result<()> {
    let home = File::open("/proc/thread-self/ns/net").context("opening the agent's netns")?;
    let _ = HOME.set(home);
    Ok(())
}

/// An open handle to a network namespace.
#[derive(Debug)]
pub struct Netns {
    file: File,
    path: PathBuf,
    inode: u64,
}

impl Netns {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let file = File::open(path).with_context(|| format!("opening netns {}", path.display()))?;
        let inode = file.metadata()?.ino();
        Ok(Self {
            file,
            path: path.to_path_buf(),
            inode,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The namespace's inode: stable identity, used to name its pinned sk_lookup link.
    pub fn inode(&self) -> u64 {
        self.inode
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Runs `f` on the calling thread inside this namespace, then switches back.
    ///
    /// `f` must not block or await: the thread is a shared tokio worker.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> io::Result<T> {
        let home = HOME
            .get()
            .ok_or_else(|| io::Error::other("netns::init_home was not called"))?;
        setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        let out = f();
        // A thread stranded in a pod's namespace would create every later socket there: abort.
        setns(home.as_fd(), CloneFlags::CLONE_NEWNET)
            .expect("cannot return to the agent's network namespace");
        Ok(out)
    }
}
