//! Running the `git` command, with one constructor per kind of repository.
//!
//! All git work goes through `git` (not a library) so that the node's SSH
//! configuration, agents and known_hosts apply. Every command gets the locale
//! C, no stdin, and none of the caller's `GIT_*` variables but `GIT_SSH*`.
//! Root's repository (`Repo::deploy`) also gets a fixed configuration: no
//! system or user configuration but root's `/etc/troops/gitconfig`, no
//! replace objects, no hooks, and fsck on every object that arrives, so that
//! nothing a member or a remote wrote can choose what root's git runs.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, bail};

use crate::paths::Node;

/// Transports root's git may use; remote helpers (`ext::`, `fd::`) never.
const PROTOCOLS: &[&str] = &["ssh", "https", "http", "git", "file"];

/// A repository: a bare git dir, a work tree, or root's own.
#[derive(Debug, Clone)]
pub struct Repo {
    path: PathBuf,
    kind: Kind,
    /// A push's quarantine and the object store it borrows from.
    quarantine: Option<(PathBuf, PathBuf)>,
}

#[derive(Debug, Clone)]
enum Kind {
    Bare,
    WorkTree,
    /// Root's repository, with root's pull configuration if readable.
    Deploy {
        config: Option<PathBuf>,
    },
}

impl Repo {
    pub fn bare(git_dir: &Path) -> Repo {
        Repo {
            path: git_dir.to_path_buf(),
            kind: Kind::Bare,
            quarantine: None,
        }
    }

    pub fn work_tree(dir: &Path) -> Repo {
        Repo {
            path: dir.to_path_buf(),
            kind: Kind::WorkTree,
            quarantine: None,
        }
    }

    /// A bare repository whose own configuration is not trusted (a static
    /// mirror's directory, which a web server's sync account may write):
    /// its git runs pinned, so that file cannot choose hooks or programs.
    pub fn untrusted_bare(git_dir: &Path) -> Repo {
        Repo {
            path: git_dir.to_path_buf(),
            kind: Kind::Deploy { config: None },
            quarantine: None,
        }
    }

    /// A root-only bare repository at `path`, made if missing (the HTTP
    /// fetch repositories, the reports' ones): its git runs pinned.
    pub fn scratch(node: &Node, path: &Path) -> Result<Repo> {
        if !path.join("HEAD").exists() {
            let mut cmd = pinned(None);
            cmd.args(["init", "--quiet", "--bare", "--template=", "--"])
                .arg(path);
            output(&mut cmd).with_context(|| format!("cannot create `{}`", path.display()))?;
            crate::paths::set_mode(path, 0o700)?;
        }
        Ok(Repo::bare(path).pinned(node))
    }

    /// Root's repository: what the node deploys from.
    pub fn deploy(node: &Node) -> Repo {
        Repo::bare(&node.deploy_repo()).pinned(node)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn is_bare(&self) -> bool {
        !matches!(self.kind, Kind::WorkTree)
    }

    /// The same repository with the configuration root pins and `node`'s
    /// pull configuration (a repository only root writes).
    pub fn pinned(mut self, node: &Node) -> Repo {
        let config = node.git_config();
        // The file is root's alone; anyone else reading the repository
        // (`troops roles` by a member) runs without it.
        let readable = nix::unistd::access(&config, nix::unistd::AccessFlags::R_OK).is_ok();
        self.kind = Kind::Deploy {
            config: readable.then_some(config),
        };
        self
    }

    /// The same repository reading objects from a push's quarantine first.
    pub fn with_objects(mut self, quarantine: &Path, objects: &Path) -> Repo {
        self.quarantine = Some((quarantine.to_path_buf(), objects.to_path_buf()));
        self
    }

    /// A `git` command bound to this repository.
    pub fn command(&self) -> Command {
        let mut cmd = match &self.kind {
            Kind::Deploy { config } => pinned(config.as_deref()),
            Kind::Bare | Kind::WorkTree => command(),
        };
        if let Some((quarantine, objects)) = &self.quarantine {
            cmd.env("GIT_OBJECT_DIRECTORY", quarantine)
                .env("GIT_ALTERNATE_OBJECT_DIRECTORIES", objects);
        }
        if matches!(self.kind, Kind::Deploy { .. }) && !nix::unistd::Uid::effective().is_root() {
            // Root owns it; git refuses another user's repository unless told.
            cmd.arg("-c")
                .arg(format!("safe.directory={}", self.path.display()));
        }
        match self.kind {
            Kind::WorkTree => cmd.arg("-C").arg(&self.path),
            Kind::Bare | Kind::Deploy { .. } => cmd.arg("--git-dir").arg(&self.path),
        };
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

    /// Runs git with `args` and `input` on its stdin, returning stdout; a
    /// failure carries git's stderr.
    pub fn run_with_input<I, S>(&self, args: I, input: Vec<u8>) -> Result<Vec<u8>>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command();
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        log_command(&cmd);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot run `{}`", describe(&cmd)))?;
        let mut stdin = child.stdin.take().context("git has no stdin")?;
        // Written from a thread: git may answer before it has read it all.
        let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &input));
        let out = child.wait_with_output()?;
        let written = writer
            .join()
            .map_err(|_| anyhow::anyhow!("writing to git panicked"))?;
        if !out.status.success() {
            bail!(
                "`{}` failed ({}):\n{}",
                describe(&cmd),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim_end()
            );
        }
        written.with_context(|| format!("cannot write to `{}`", describe(&cmd)))?;
        Ok(out.stdout)
    }

    /// The text of `path` in `commit`'s tree, or `None` when it has no such
    /// file.
    pub fn file_at(&self, commit: &str, path: &str) -> Result<Option<String>> {
        let mut cmd = self.command();
        cmd.args(["cat-file", "blob", &format!("{commit}:{path}")]);
        log_command(&cmd);
        let out = cmd.output().context("cannot run git cat-file")?;
        if !out.status.success() {
            return Ok(None);
        }
        Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()))
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

    /// The commit each ref matching `globs` names (an annotated tag counts
    /// as the commit it tags; a ref naming anything else, or an object that
    /// is missing, as none). Read in-process with libgit2, for root's own
    /// repositories: every pull reads them, and a git process costs a
    /// no-change pull about as much as its own work.
    pub fn commit_refs(&self, globs: &[&str]) -> Result<HashMap<String, String>> {
        let repo = self.open_in_process()?;
        let mut commits = HashMap::new();
        for glob in globs {
            for reference in repo.references_glob(glob)?.flatten() {
                if let (Ok(name), Ok(commit)) = (reference.name(), reference.peel_to_commit()) {
                    commits.insert(name.to_owned(), commit.id().to_string());
                }
            }
        }
        Ok(commits)
    }

    /// The object `name` names, without reading it (what a remote served,
    /// which `git index-pack --strict` is still to check), if it exists.
    pub fn ref_target(&self, name: &str) -> Result<Option<String>> {
        let repo = self.open_in_process()?;
        let reference = match repo.find_reference(name) {
            Ok(reference) => reference,
            Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(reference.resolve()?.target().map(|id| id.to_string()))
    }

    fn open_in_process(&self) -> Result<git2::Repository> {
        ignore_system_and_user_config_in_process();
        git2::Repository::open_bare(&self.path)
            .with_context(|| format!("cannot open `{}`", self.path.display()))
    }

    /// Whether `ancestor` is an ancestor of (or is) `descendant`.
    pub fn is_ancestor(&self, ancestor: &str, descendant: &str) -> Result<bool> {
        let mut cmd = self.command();
        cmd.args(["merge-base", "--is-ancestor", "--", ancestor, descendant])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        log_command(&cmd);
        let status = cmd.status().context("cannot run git merge-base")?;
        match status.code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => bail!("`{}` failed ({status})", describe(&cmd)),
        }
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

/// `git` with the locale C, no stdin, and none of the caller's `GIT_*`
/// variables but `GIT_SSH*` (how to reach remotes is the admin's choice;
/// which repository, index and objects is ours).
pub fn command() -> Command {
    let mut cmd = Command::new("git");
    for (name, _) in std::env::vars_os() {
        let text = name.to_string_lossy();
        if text.starts_with("GIT_") && !text.starts_with("GIT_SSH") {
            cmd.env_remove(name);
        }
    }
    cmd.env("LC_ALL", "C").stdin(Stdio::null());
    cmd
}

/// `command()` with a configuration root chose: no system or user files
/// (only `config`, root's `/etc/troops/gitconfig`), no replace objects, no
/// hooks, no filesystem monitor, fsck of every object received, and only
/// the transports Troops knows.
pub fn pinned(config: Option<&Path>) -> Command {
    let mut cmd = command();
    cmd.env("GIT_CONFIG_NOSYSTEM", "1")
        .env(
            "GIT_CONFIG_GLOBAL",
            config.unwrap_or(Path::new("/dev/null")),
        )
        .env("GIT_NO_REPLACE_OBJECTS", "1")
        .env("GIT_ATTR_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0");
    for setting in [
        "core.hooksPath=/dev/null",
        "core.fsmonitor=false",
        "transfer.fsckObjects=true",
        "protocol.allow=never",
    ] {
        cmd.arg("-c").arg(setting);
    }
    for protocol in PROTOCOLS {
        cmd.arg("-c")
            .arg(format!("protocol.{protocol}.allow=always"));
    }
    cmd
}

/// libgit2 reads no system, XDG or user configuration, as `pinned()` tells
/// the git command: nothing outside root's repositories chooses how root
/// reads them.
fn ignore_system_and_user_config_in_process() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for level in [
            git2::ConfigLevel::System,
            git2::ConfigLevel::XDG,
            git2::ConfigLevel::Global,
            git2::ConfigLevel::ProgramData,
        ] {
            // SAFETY: called once, before any libgit2 repository is open,
            // from the thread that opens them.
            if let Err(e) = unsafe { git2::opts::set_search_path(level, "") } {
                eprintln!("troops: warning: libgit2 keeps its configuration search path: {e}");
            }
        }
    });
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

pub fn log_command(cmd: &Command) {
    if std::env::var_os("TROOPS_DEBUG").is_some() {
        eprintln!("troops: running {}", describe(cmd));
    }
}

/// Short form of a commit id for messages.
pub fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// Whether `id` is a full object id (SHA-1 or SHA-256, lower-case hex).
pub fn is_object_id(id: &str) -> bool {
    matches!(id.len(), 40 | 64) && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
