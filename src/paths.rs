//! Where Troops keeps things on a node, relative to a relocatable root.
//!
//! Every path Troops touches is derived from one `Node` so that tests (and
//! admins trying things out) can run many nodes side by side with `--root`.
//! Nothing here touches the disk; `init` creates what these paths name.

use std::path::{Path, PathBuf};

/// The paths of one node, all below `root` (`/` on a real node).
#[derive(Debug, Clone)]
pub struct Node {
    root: PathBuf,
}

impl Node {
    pub fn new(root: &Path) -> Node {
        Node {
            root: root.to_path_buf(),
        }
    }

    /// The relocation root itself, handed to deploys as `TROOPS_ROOT`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `/var/lib/troops`: everything Troops owns.
    pub fn lib(&self) -> PathBuf {
        self.root.join("var/lib/troops")
    }

    /// The bare repository that pushes land in and pulls fetch into.
    pub fn repo(&self) -> PathBuf {
        self.lib().join("repo/main.git")
    }

    /// The node's SSH identity used when fetching.
    pub fn ssh_key(&self) -> PathBuf {
        self.lib().join("ssh/id_ed25519")
    }

    /// Deploy lock, history records and logs.
    pub fn state(&self) -> PathBuf {
        self.lib().join("state")
    }

    pub fn lock_file(&self) -> PathBuf {
        self.state().join("lock")
    }

    pub fn history_dir(&self) -> PathBuf {
        self.state().join("history")
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.state().join("logs")
    }

    /// Holds the SHA of the commit whose deploy last succeeded.
    pub fn deployed_file(&self) -> PathBuf {
        self.state().join("deployed")
    }

    /// Virtualenvs keyed by requirements, Python and Troops version.
    pub fn venvs(&self) -> PathBuf {
        self.lib().join("cache/venvs")
    }

    /// Checked-out commits that deploys run in.
    pub fn work(&self) -> PathBuf {
        self.lib().join("work")
    }

    /// Where the embedded `troops` Python module is written for virtualenvs.
    pub fn python_lib(&self) -> PathBuf {
        self.lib().join("lib/python")
    }

    /// `/etc/troops`: node configuration, written by seeding or by hand.
    pub fn etc(&self) -> PathBuf {
        self.root.join("etc/troops")
    }

    pub fn config_file(&self) -> PathBuf {
        self.etc().join("troops.toml")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_is_below_the_root() {
        let node = Node::new(Path::new("/tmp/n1"));
        for p in [
            node.repo(),
            node.ssh_key(),
            node.lock_file(),
            node.venvs(),
            node.work(),
            node.python_lib(),
            node.config_file(),
        ] {
            assert!(p.starts_with("/tmp/n1"), "{} escapes the root", p.display());
        }
        assert_eq!(
            node.repo(),
            Path::new("/tmp/n1/var/lib/troops/repo/main.git")
        );
    }
}
