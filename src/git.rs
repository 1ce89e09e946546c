//! Running the `git` command against one repository.
//!
//! All git work goes through `git` (not a library) so that the node's SSH
//! configuration, agents and known_hosts apply, and so that a pre-receive
//! hook's quarantined objects can be read. One constructor pins what must not
//! vary: the repository, the locale, no stdin, and none of the caller's
//! `GIT_*` variables but `GIT_SSH*`; a quarantine is only ever set explicitly.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, bail};

/// A repository: a bare git dir or a work tree.
#[derive(Debug, Clone)]
pub struct Repo {
    path: PathBuf,
    bare: bool,
    /// A push's quarantine and the object store it borrows from.
    quarantine: Option<(PathBuf, PathBuf)>,
}

impl Repo {
    pub fn bare(git_dir: &Path) -> Repo {
        Repo {
            path: git_dir.to_path_buf(),
            bare: true,
            quarantine: None,
        }
    }

    pub fn work_tree(dir: &Path) -> Repo {
        Repo {
            path: dir.to_path_buf(),
            bare: false,
            quarantine: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn is_bare(&self) -> bool {
        self.bare
    }

    /// The same repository reading objects from a push's quarantine first.
    pub fn with_objects(mut self, quarantine: &Path, objects: &Path) -> Repo {
        self.quarantine = Some((quarantine.to_path_buf(), objects.to_path_buf()));
        self
    }

    /// A `git` command bound to this repository.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new("git");
        for (name, _) in std::env::vars_os() {
            let text = name.to_string_lossy();
            // How to reach remotes is the admin's choice; everything else
            // (which repository, index, objects) is ours.
            if text.starts_with("GIT_") && !text.starts_with("GIT_SSH") {
                cmd.env_remove(name);
            }
        }
        if let Some((quarantine, objects)) = &self.quarantine {
            cmd.env("GIT_OBJECT_DIRECTORY", quarantine)
                .env("GIT_ALTERNATE_OBJECT_DIRECTORIES", objects);
        }
        cmd.env("LC_ALL", "C").stdin(Stdio::null());
        if self.bare {
            cmd.arg("--git-dir").arg(&self.path);
        } else {
            cmd.arg("-C").arg(&self.path);
        }
        cmd
    }

    /// Runs git with `args`, returning stdout; a failure carries git's stderr.
    pub fn run<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command();
        cmd.args(args);
        let out = output(&mut cmd)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The commit `rev` names, or `None` when it names nothing.
    pub fn resolve_commit(&self, rev: &str) -> Result<Option<String>> {
        let mut cmd = self.command();
        cmd.args(["rev-parse", "--quiet", "--verify", "--end-of-options"])
            .arg(format!("{rev}^{{commit}}"));
        let out = spawn_output(&mut cmd)?;
        if !out.status.success() {
            return Ok(None);
        }
        Ok(Some(String::from_utf8_lossy(&out.stdout).trim().to_owned()))
    }

    /// Paths with uncommitted changes (untracked ones included).
    pub fn uncommitted(&self) -> Result<Vec<String>> {
        let out = self.run(["status", "--porcelain=v1", "-z"])?;
        Ok(out
            .split('\0')
            .filter(|entry| entry.len() > 3)
            .map(|entry| entry[3..].to_owned())
            .collect())
    }

    /// Writes the tree of `commit` into the empty directory `dest`.
    ///
    /// One `read-tree -u` into a temporary index, which keeps the repository's
    /// own index (if any) untouched; git creates the index, so it goes in a
    /// fresh directory.
    pub fn export(&self, commit: &str, dest: &Path) -> Result<()> {
        let scratch = tempfile::tempdir().context("cannot create a temporary index")?;
        let mut cmd = self.command();
        cmd.env("GIT_INDEX_FILE", scratch.path().join("index"))
            .arg("--work-tree")
            .arg(dest)
            .args(["read-tree", "--reset", "-u", commit]);
        output(&mut cmd)
            .map(drop)
            .with_context(|| format!("cannot check out {commit} into `{}`", dest.display()))
    }
}

fn spawn_output(cmd: &mut Command) -> Result<Output> {
    log_command(cmd);
    cmd.output()
        .with_context(|| format!("cannot run `{}`", describe(cmd)))
}

/// Runs `cmd` to completion; a non-zero exit becomes an error with stderr.
pub fn output(cmd: &mut Command) -> Result<Output> {
    let out = spawn_output(cmd)?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        bail!(
            "`{}` failed ({}):\n{}",
            describe(cmd),
            out.status,
            stderr.trim_end()
        );
    }
    Ok(out)
}

/// The command line, for messages and debug logs.
pub fn describe(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

fn log_command(cmd: &Command) {
    if std::env::var_os("TROOPS_DEBUG").is_some() {
        eprintln!("troops: running {}", describe(cmd));
    }
}

/// Short form of a commit id for messages.
pub fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}
