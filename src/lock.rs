//! The node's deploy lock: one deploy at a time, whatever started it.
//!
//! An exclusive `flock(2)` on `state/lock`. The kernel drops it when the
//! holder dies, even by SIGKILL, so a lock is never stale. While held, the
//! file names its holder so that a waiting deploy can say what it waits for.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::error::UserError;
use crate::paths::Node;

/// Held for as long as it lives; the kernel drops it when the holder dies.
#[derive(Debug)]
pub struct DeployLock {
    _file: Flock<File>,
}

/// What to do when another deploy holds the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    Block,
    Fail,
}

impl Wait {
    /// What `--no-wait` asks for.
    pub fn unless(no_wait: bool) -> Wait {
        if no_wait { Wait::Fail } else { Wait::Block }
    }
}

impl DeployLock {
    /// Takes the lock, saying so on stderr when it has to wait.
    pub fn acquire(node: &Node, wait: Wait, holder: &str) -> Result<DeployLock> {
        let path = node.lock_file();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o640)
            .open(&path)
            .with_context(|| format!("cannot open the deploy lock `{}`", path.display()))?;
        let mut locked = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let other = read_holder(&mut file);
                if wait == Wait::Fail {
                    return Err(UserError::new(format!("another deploy is in progress ({other})"))
                        .hint("try again when it has finished, or leave out --no-wait to wait for it")
                        .into());
                }
                eprintln!("troops: waiting for the deploy in progress ({other}) to finish");
                Flock::lock(file, FlockArg::LockExclusive)
                    .map_err(|(_, e)| e)
                    .with_context(|| format!("cannot lock `{}`", path.display()))?
            }
            Err((_, e)) => {
                return Err(e).with_context(|| format!("cannot lock `{}`", path.display()));
            }
        };
        write_holder(&mut locked, holder)
            .with_context(|| format!("cannot write `{}`", path.display()))?;
        Ok(DeployLock { _file: locked })
    }

    /// One push is received at a time (`state/receive.lock`), so that
    /// members running root's side at once cannot each fill a quarantine.
    /// Not the deploy lock: a slow sender never holds up a pull.
    pub fn receiving(node: &Node) -> Result<Flock<File>> {
        exclusive(&node.state().join("receive.lock"))
    }

    /// Whether a deploy holds the lock right now (for `status`).
    pub fn is_held(node: &Node) -> bool {
        let Ok(file) = File::open(node.lock_file()) else {
            return false;
        };
        matches!(
            Flock::lock(file, FlockArg::LockSharedNonblock),
            Err((_, Errno::EWOULDBLOCK))
        )
    }
}

/// Waits for, then holds, an exclusive lock on `path` (made 0600 if new)
/// until the returned value is dropped. Only in directories root alone
/// writes.
pub fn exclusive(path: &Path) -> Result<Flock<File>> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot open `{}`", path.display()))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .with_context(|| format!("cannot lock `{}`", path.display()))
}

fn read_holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    match text.trim() {
        "" => "holder unknown".to_owned(),
        t => t.to_owned(),
    }
}

fn write_holder(file: &mut File, holder: &str) -> std::io::Result<()> {
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "pid {}, {holder}", std::process::id())
}
