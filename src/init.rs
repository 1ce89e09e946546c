//! `troops init`: create the node layout of SPEC "Layout on a node".
//!
//! Idempotent: what exists is kept (repositories, key, history) and only
//! owners and modes root alone controls are put right. Two repositories:
//! `repo/main.git` is shared with the group `troops` (members push there, so
//! its contents are theirs and root never follows a link in it), and
//! `deploy.git` is root's, the only one deploys read. An upgrade from the
//! layout with one repository carries the deployed commit over from root's
//! record of it (`state/deployed`), copied and verified like any push.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use nix::unistd::Gid;

use crate::config::Config;
use crate::error::UserError;
use crate::git::{self, Repo, short};
use crate::paths::{self, Node, ensure_state, troops_gid};
use crate::{access, history, instance, transfer};

/// Create the node layout: repositories, SSH key, state and caches
///
/// Safe to run again: existing data is kept and owners and modes are
/// repaired. With `--root DIR` everything is created below DIR.
///
/// Example: `troops --root /tmp/node1 init`
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(node: &Node, _args: Args) -> Result<()> {
    let config = Config::load(node)?;
    ensure_state(node)?;
    let gid = troops_gid();
    init_push_repo(node, config.branch(), gid)?;
    init_deploy_repo(node, config.branch())?;
    access::install(node)?;
    ensure_key(node)?;
    crate::safe_directory::trust_push_repo(node)?;
    eprintln!("troops: node ready at `{}`", node.lib().display());
    Ok(())
}

/// The members' repository: bare, shared with the group (files 0660,
/// directories setgid). Created in a directory members cannot write
/// (`repo/` is root's), so it holds nothing of theirs until it is in place.
fn init_push_repo(node: &Node, branch: &str, gid: Gid) -> Result<()> {
    let path = node.push_repo();
    if fs::symlink_metadata(&path).is_ok() {
        // Existing: its contents are the members'. Only the directory itself
        // (in root's `repo/`) is put right, through a descriptor.
        let fd = paths::open_dir_nofollow(&path)?;
        return paths::set_owner_fd(&fd, &path, gid);
    }
    let parent = path.parent().unwrap_or(Path::new("/"));
    let tmp = tempfile::Builder::new()
        .prefix(".new-")
        .tempdir_in(parent)
        .with_context(|| format!("cannot create a directory in `{}`", parent.display()))?;
    let mut cmd = git::pinned(None);
    cmd.args(["init", "--quiet", "--bare", "--shared=0660", "--template="])
        .arg(format!("--initial-branch={branch}"))
        .arg("--")
        .arg(tmp.path());
    git::output(&mut cmd).context("cannot create the members' repository")?;
    let repo = Repo::bare(tmp.path());
    // `--shared` refuses non-fast-forward pushes; a forced push is how an admin
    // rolls back, and the deploy hook decides what may land.
    repo.run(["config", "receive.denyNonFastForwards", "false"])?;
    // `git push -o dry-run` reaches the hook only if push options are on.
    repo.run(["config", "receive.advertisePushOptions", "true"])?;
    fs::create_dir_all(tmp.path().join("hooks"))?;
    paths::set_mode(&tmp.path().join("config"), 0o640)?;
    let fd = paths::open_dir_nofollow(tmp.path())?;
    paths::chown_tree_at(&fd, &path, gid)?;
    fs::rename(tmp.keep(), &path).with_context(|| format!("cannot create `{}`", path.display()))
}

/// Root's repository: root's alone (0700), since what its fetches bring in
/// with the node's key and credentials is nobody else's to read; no hooks,
/// no configuration of anyone else's.
fn init_deploy_repo(node: &Node, branch: &str) -> Result<()> {
    let path = node.deploy_repo();
    if path.join("HEAD").exists() {
        paths::ensure_dir(&path, 0o700, Gid::from_raw(0))?;
        let repo = Repo::deploy(node);
        // A carry-over that failed (an upgrade) is tried again while the
        // branch is still missing.
        if repo
            .resolve_commit(&format!("refs/heads/{branch}"))?
            .is_none()
        {
            carry_over_deployed(node, &repo, branch)?;
        }
        return Ok(());
    }
    let tmp = tempfile::Builder::new()
        .prefix(".deploy-")
        .tempdir_in(node.lib())
        .with_context(|| format!("cannot create a directory in `{}`", node.lib().display()))?;
    let mut cmd = git::pinned(None);
    cmd.args(["init", "--quiet", "--bare", "--template="])
        .arg(format!("--initial-branch={branch}"))
        .arg("--")
        .arg(tmp.path());
    git::output(&mut cmd).context("cannot create root's repository")?;
    fs::rename(tmp.keep(), &path).with_context(|| format!("cannot create `{}`", path.display()))?;
    paths::ensure_dir(&path, 0o700, Gid::from_raw(0))?;
    let repo = Repo::deploy(node);
    repo.run(["config", "core.logAllRefUpdates", "true"])?;
    carry_over_deployed(node, &repo, branch)
}

/// An upgrade from the one-repository layout: root's record names the
/// deployed commit; its objects are copied from the members' repository by
/// an unprivileged reader and verified, and root's branch is set to it.
fn carry_over_deployed(node: &Node, repo: &Repo, branch: &str) -> Result<()> {
    let Some(commit) = history::deployed_commit(node)? else {
        return Ok(());
    };
    if !git::is_object_id(&commit) || !node.push_repo().join("objects").is_dir() {
        return Ok(());
    }
    let copied = transfer::copy_from_push_repo(node, &commit, repo)
        .and_then(|()| transfer::require_complete(repo, &commit));
    if let Err(e) = copied {
        eprintln!(
            "troops: warning: cannot carry the deployed commit {} into root's repository: {e:#}\n\
             troops: the next push or pull deploys afresh",
            short(&commit)
        );
        return Ok(());
    }
    repo.run([
        "update-ref",
        "-m",
        "troops init: the deployed commit",
        "--",
        &format!("refs/heads/{branch}"),
        &commit,
    ])?;
    eprintln!(
        "troops: root's repository starts at the deployed commit {}",
        short(&commit)
    );
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
    let mut cmd = std::process::Command::new("ssh-keygen");
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
    rename(&tmp_key, &key)?;
    // Which instance made it: an image's key is replaced on a new instance.
    record_key_instance(node, &instance::id(node).unwrap_or_default())
}

/// Where the instance the node's key was made on is recorded.
fn key_instance_file(node: &Node) -> std::path::PathBuf {
    node.ssh_key().with_extension("instance")
}

fn record_key_instance(node: &Node, id: &str) -> Result<()> {
    paths::write_atomically_mode(
        &key_instance_file(node),
        format!("{id}\n").as_bytes(),
        0o600,
    )
}

/// Replaces the node's key when it was made on another instance (an image
/// of a node carries its key to every machine made from it). Returns the
/// new public key when it did.
pub fn renew_key_for_this_instance(node: &Node) -> Result<Option<String>> {
    let Some(here) = instance::id(node) else {
        return Ok(None);
    };
    let key = node.ssh_key();
    if !key.exists() {
        return Ok(None);
    }
    let made_on = fs::read_to_string(key_instance_file(node)).unwrap_or_default();
    if made_on.trim().is_empty() {
        // Made before keys recorded their instance (0.1), or where none was
        // known: it is this one's.
        record_key_instance(node, &here)?;
        return Ok(None);
    }
    if made_on.trim() == here {
        return Ok(None);
    }
    fs::remove_file(&key).with_context(|| format!("cannot remove `{}`", key.display()))?;
    let _ = fs::remove_file(key.with_extension("pub"));
    ensure_key(node)?;
    let public = fs::read_to_string(key.with_extension("pub"))?;
    Ok(Some(public.trim().to_owned()))
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).with_context(|| format!("cannot create `{}`", to.display()))
}
