//! `troops init`: create the node layout of SPEC "Layout on a node".
//!
//! Idempotent: what exists is kept (repository, key, history) and only its
//! owner and mode are put right. Files belong to root and the group `troops`
//! where that group exists, so group members can push and read history while
//! only root writes what deploys run (virtualenvs, work trees).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use nix::unistd::{Gid, Group, Uid, chown};

use crate::config::Config;
use crate::error::UserError;
use crate::git::{self, Repo};
use crate::paths::Node;
use crate::push_hook;

/// Create the node layout: repository, SSH key, state and caches
///
/// Safe to run again: existing data is kept and owners and modes are
/// repaired. With `--root DIR` everything is created below DIR.
///
/// Example: `troops --root /tmp/node1 init`
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(node: &Node, _args: Args) -> Result<()> {
    let config = Config::load(node)?;
    let gid = troops_gid();
    ensure_state(node)?;
    init_repo(node, config.branch(), gid)?;
    push_hook::install(node)?;
    ensure_key(node)?;
    eprintln!("troops: node ready at `{}`", node.lib().display());
    Ok(())
}

/// The group `troops` if it exists, else root's group.
fn troops_gid() -> Gid {
    troops_group().unwrap_or(Gid::from_raw(0))
}

/// The group `troops`, whose members may push.
pub fn troops_group() -> Option<Gid> {
    Group::from_name("troops").ok().flatten().map(|g| g.gid)
}

/// The directories every deploy needs, with their owners and modes.
pub fn ensure_state(node: &Node) -> Result<()> {
    let gid = troops_gid();
    let shared = [
        node.lib(),
        node.lib().join("repo"),
        node.state(),
        node.history_dir(),
        node.logs_dir(),
        node.lib().join("cache"),
        node.venvs(),
        node.work(),
    ];
    for dir in &shared {
        ensure_dir(dir, 0o750, gid)?;
    }
    ensure_dir(&node.lib().join("lib"), 0o755, Gid::from_raw(0))?;
    ensure_dir(&node.python_lib(), 0o755, Gid::from_raw(0))?;
    ensure_dir(&node.lib().join("ssh"), 0o700, Gid::from_raw(0))?;
    ensure_dir(&node.etc(), 0o755, Gid::from_raw(0))
}

pub fn ensure_dir(dir: &Path, mode: u32, gid: Gid) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    set_owner(dir, gid)?;
    set_mode(dir, mode)
}

pub fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of `{}`", path.display()))
}

/// Gives `path` to root and `gid`; only root can, and only root needs to.
fn set_owner(path: &Path, gid: Gid) -> Result<()> {
    if Uid::effective().is_root() {
        chown(path, Some(Uid::from_raw(0)), Some(gid))
            .with_context(|| format!("cannot change the owner of `{}`", path.display()))?;
    }
    Ok(())
}

/// A bare repository shared with the group: files 0660, directories setgid.
fn init_repo(node: &Node, branch: &str, gid: Gid) -> Result<()> {
    let path = node.repo();
    if !path.join("HEAD").exists() {
        let mut cmd = Command::new("git");
        cmd.args(["init", "--quiet", "--bare", "--shared=0660"])
            .arg(format!("--initial-branch={branch}"))
            .arg("--")
            .arg(&path);
        git::output(&mut cmd).context("cannot create the node's repository")?;
    }
    let repo = Repo::bare(&path);
    // `--shared` refuses non-fast-forward pushes; a forced push is how an admin
    // rolls back, and the deploy hook decides what may land.
    repo.run(["config", "receive.denyNonFastForwards", "false"])?;
    repo.run(["config", "core.logAllRefUpdates", "true"])?;
    // `git push -o dry-run` reaches the hook only if push options are on.
    repo.run(["config", "receive.advertisePushOptions", "true"])?;
    chown_tree(&path, gid)?;
    trust_for_members(node, &path)?;
    // Members push, but must not change the configuration (core.hooksPath
    // would skip the deploy) or the hooks (`push_hook::install`).
    set_owner(&path.join("config"), gid)?;
    set_mode(&path.join("config"), 0o640)
}

/// Git refuses to work in a repository another user owns (safe.directory)
/// unless the system configuration trusts it: members push into root's
/// repository. Only for the real node (`--root /`): a relocated node is for
/// trying things out and must not touch the system's git configuration.
fn trust_for_members(node: &Node, path: &Path) -> Result<()> {
    if node.root() != Path::new("/") {
        return Ok(());
    }
    let mut get = Command::new("git");
    get.args(["config", "--system", "--get-all", "safe.directory"]);
    let current = get.output().context("cannot run git config")?;
    let wanted = path.to_string_lossy();
    if String::from_utf8_lossy(&current.stdout)
        .lines()
        .any(|l| l == wanted)
    {
        return Ok(());
    }
    let mut add = Command::new("git");
    add.args(["config", "--system", "--add", "safe.directory"])
        .arg(path);
    git::output(&mut add).context("cannot mark the node's repository safe for its members")?;
    Ok(())
}

fn chown_tree(dir: &Path, gid: Gid) -> Result<()> {
    set_owner(dir, gid)?;
    for entry in fs::read_dir(dir).with_context(|| format!("cannot read `{}`", dir.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            chown_tree(&entry.path(), gid)?;
        } else {
            set_owner(&entry.path(), gid)?;
        }
    }
    Ok(())
}

/// The node's ed25519 key pair, made once; the private half stays root's.
fn ensure_key(node: &Node) -> Result<()> {
    let key = node.ssh_key();
    let public = key.with_extension("pub");
    if key.exists() && public.exists() {
        return Ok(());
    }
    let dir = key.parent().unwrap_or(Path::new("."));
    let tmp = tempfile::tempdir_in(dir)
        .with_context(|| format!("cannot create a directory in `{}`", dir.display()))?;
    let tmp_key = tmp.path().join("id_ed25519");
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".to_owned());
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-t", "ed25519", "-N", "", "-C"])
        .arg(format!("troops@{host}"))
        .arg("-f")
        .arg(&tmp_key);
    git::output(&mut cmd).map_err(|e| {
        e.context(
            UserError::new("cannot create the node's SSH key")
                .hint("install openssh-client (`apt install openssh-client`)"),
        )
    })?;
    // The public half lands first, so a present private key implies both.
    rename(&tmp_key.with_extension("pub"), &public)?;
    rename(&tmp_key, &key)
}

fn rename(from: &Path, to: &PathBuf) -> Result<()> {
    fs::rename(from, to).with_context(|| format!("cannot create `{}`", to.display()))
}
