//! The agent's file-descriptor limit (`RLIMIT_NOFILE`). Every proxied connection costs several
//! descriptors (two sockets, and two splice pipes for plain relays), so the default soft limit
//! (often 1024) is what a flood of idle connections exhausts first. `sockmesh run` raises the soft
//! limit to the hard limit at start ([`raise_nofile_at_start`]); [`nofile_limit`] reports the
//! current figure (for the log, and for the admin API).

use std::io;

use serde::Serialize;

/// Soft and hard `RLIMIT_NOFILE` of this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct NofileLimit {
    /// What the kernel enforces: `open`/`accept`/`socket` fail with EMFILE at this many fds.
    pub soft: u64,
    /// The ceiling an unprivileged process may raise `soft` to.
    pub hard: u64,
}

/// The current limit.
pub fn nofile_limit() -> io::Result<NofileLimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(NofileLimit {
        soft: lim.rlim_cur,
        hard: lim.rlim_max,
    })
}

/// Raises the soft limit to the hard limit; returns the limit before and after.
pub fn raise_nofile_limit() -> io::Result<(NofileLimit, NofileLimit)> {
    let before = nofile_limit()?;
    if before.soft < before.hard {
        let lim = libc::rlimit {
            rlim_cur: before.hard,
            rlim_max: before.hard,
        };
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((before, nofile_limit()?))
}

/// [`raise_nofile_limit`], logging the outcome; a failure is logged and start-up goes on with the
/// limit as it was. Returns the limit now in force, if it could be read.
pub fn raise_nofile_at_start() -> Option<NofileLimit> {
    match raise_nofile_limit() {
        Ok((before, after)) => {
            tracing::info!(
                soft = after.soft,
                hard = after.hard,
                was = before.soft,
                "file-descriptor limit (RLIMIT_NOFILE)"
            );
            Some(after)
        }
        Err(error) => {
            let now = nofile_limit().ok();
            tracing::warn!(%error, soft = now.map(|l| l.soft), "cannot raise RLIMIT_NOFILE to its hard limit");
            now
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_sets_soft_to_hard_and_is_idempotent() {
        let (before, after) = raise_nofile_limit().unwrap();
        assert_eq!(after.hard, before.hard);
        assert_eq!(after.soft, after.hard);
        assert_eq!(nofile_limit().unwrap(), after);
        let (again, same) = raise_nofile_limit().unwrap();
        assert_eq!((again, same), (after, after));
        assert_eq!(raise_nofile_at_start(), Some(after));
    }
}
