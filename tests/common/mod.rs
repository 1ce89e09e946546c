//! Test helpers: a node under a temporary root and real git repositories.
//!
//! Every command runs with a cleared environment (HOME in a temp dir, git's
//! global and system configuration off) so that the developer's setup cannot
//! change a result. Dropping a helper removes what it made.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod apt;
pub mod cluster;
pub mod nginx;
pub mod pull_fleet;
pub mod signer;
pub mod timing;

use tempfile::TempDir;

pub const HOSTNAME: &str = "shellbox-1.example.com";

/// The result of running a command, with its output decoded.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from(out: Output) -> Run {
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    #[track_caller]
    pub fn success(self) -> Run {
        assert_eq!(self.code, Some(0), "command failed:\n{}", self.stderr);
        self
    }

    #[track_caller]
    pub fn failure(self) -> Run {
        assert_eq!(
            self.code,
            Some(1),
            "expected exit 1, stderr:\n{}",
            self.stderr
        );
        self
    }
}

/// The environment every command in a test gets.
pub fn clean_command(program: impl AsRef<std::ffi::OsStr>, home: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("LC_ALL", "C")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com");
    cmd
}

/// A directory holding the PyDebianAdmin wheel, built as the package builds
/// the wheels it bundles (what TROOPS_WHEELS points at).
pub fn bundled_wheels() -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/pydebianadmin/build_wheel.py");
    let out = Command::new("/usr/bin/python3")
        .arg(script)
        .arg(dir.path())
        .output()
        .unwrap();
    Run::from(out).success();
    dir
}

/// The peers' tools (ansible-core, pyinfra from PyPI) for the benchmarks,
/// installed once under target/bench-fleet/tools by bench/fleet/setup-tools.
pub fn peer_tools() -> PathBuf {
    let top = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tools = top.join("target/bench-fleet/tools");
    eprintln!("the peers' tools in {} (installed once)", tools.display());
    let status = Command::new(top.join("bench/fleet/setup-tools"))
        .arg(&tools)
        .status()
        .unwrap();
    assert!(status.success(), "bench/fleet/setup-tools failed");
    tools
}

/// Whether a process whose command line contains `marker` is running.
pub fn running(marker: &str) -> bool {
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| fs::read(e.ok()?.path().join("cmdline")).ok())
        .any(|cmdline| String::from_utf8_lossy(&cmdline).contains(marker))
}

/// A node relocated under a temporary root.
pub struct Node {
    pub dir: TempDir,
    pub hostname: String,
}

impl Node {
    pub fn new() -> Node {
        Node {
            dir: tempfile::tempdir().unwrap(),
            hostname: HOSTNAME.to_owned(),
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn lib(&self) -> PathBuf {
        self.root().join("var/lib/troops")
    }

    pub fn home(&self) -> PathBuf {
        let home = self.root().join("home");
        fs::create_dir_all(&home).unwrap();
        home
    }

    /// `troops --root ROOT ARGS...`, not yet run.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = clean_command(env!("CARGO_BIN_EXE_troops"), &self.home());
        cmd.env("TROOPS_HOSTNAME", &self.hostname)
            .arg("--root")
            .arg(self.root())
            .args(args);
        cmd
    }

    pub fn troops<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        Run::from(self.command(args).output().unwrap())
    }

    /// `troops deploy --repository DIR`.
    pub fn deploy(&self, repo: &DeployRepo) -> Run {
        self.troops(
            ["deploy", "--repository"]
                .map(String::from)
                .into_iter()
                .chain([repo.path_str()]),
        )
    }

    pub fn status_json(&self) -> serde_json::Value {
        let run = self.troops(["status", "--json"]).success();
        serde_json::from_str(&run.stdout).unwrap()
    }

    /// Published virtualenvs (the `KEY` links in the cache).
    pub fn venv_count(&self) -> usize {
        fs::read_dir(self.lib().join("cache/venvs"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_type().unwrap().is_symlink())
            .count()
    }

    /// git on the members' repository (where pushes land).
    pub fn git(&self, args: &[&str]) -> Run {
        let out = clean_command("git", &self.home())
            .arg("--git-dir")
            .arg(self.lib().join("repo/main.git"))
            .args(args)
            .output()
            .unwrap();
        Run::from(out)
    }

    /// git on root's repository (what the node deploys from).
    pub fn root_git(&self, args: &[&str]) -> Run {
        let out = clean_command("git", &self.home())
            .arg("--git-dir")
            .arg(self.lib().join("deploy.git"))
            .args(args)
            .output()
            .unwrap();
        Run::from(out)
    }

    /// Adds a remote to root's pull configuration, /etc/troops/gitconfig
    /// (local paths are fetched only from there).
    pub fn add_remote(&self, name: &str, url: &str) {
        self.set_root_git_config(&format!("remote.{name}.url"), url);
    }

    /// Sets `key` in root's /etc/troops/gitconfig, as an admin would.
    pub fn set_root_git_config(&self, key: &str, value: &str) {
        let etc = self.root().join("etc/troops");
        fs::create_dir_all(&etc).unwrap();
        let out = clean_command("git", &self.home())
            .args(["config", "--file"])
            .arg(etc.join("gitconfig"))
            .args(["--replace-all", key, value])
            .output()
            .unwrap();
        Run::from(out).success();
    }

    /// The commit the node's deploy branch (in root's repository) names, if any.
    pub fn branch(&self) -> Option<String> {
        let run = self.root_git(&["rev-parse", "--verify", "--quiet", "refs/heads/master"]);
        (run.code == Some(0)).then(|| run.stdout.trim().to_owned())
    }

    pub fn write_config(&self, text: &str) {
        let etc = self.root().join("etc/troops");
        fs::create_dir_all(&etc).unwrap();
        fs::write(etc.join("troops.toml"), text).unwrap();
    }
}

/// A deployment: a real git repository with a work tree.
pub struct DeployRepo {
    pub dir: TempDir,
}

impl DeployRepo {
    pub fn new() -> DeployRepo {
        let repo = DeployRepo {
            dir: tempfile::tempdir().unwrap(),
        };
        repo.git(&["init", "--quiet", "--initial-branch=master"]);
        repo
    }

    /// A repository with one commit holding `deploy_py` and an empty requirements.txt.
    pub fn with(deploy_py: &str) -> DeployRepo {
        let repo = DeployRepo::new();
        repo.commit(&[("deploy.py", deploy_py), ("requirements.txt", "")]);
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn path_str(&self) -> String {
        self.path().to_string_lossy().into_owned()
    }

    pub fn git(&self, args: &[&str]) -> String {
        let out = clean_command("git", self.path())
            .arg("-C")
            .arg(self.path())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    pub fn write(&self, name: &str, content: &str) {
        let path = self.path().join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    /// Writes the files, commits them and returns the commit's SHA.
    pub fn commit(&self, files: &[(&str, &str)]) -> String {
        for (name, content) in files {
            self.write(name, content);
        }
        self.git(&["add", "--all"]);
        self.git(&["commit", "--quiet", "--allow-empty", "-m", "change"]);
        self.head()
    }

    pub fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"])
    }
}
