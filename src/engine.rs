//! The deploy engine: every way in (manual, push, pull, seed) ends in
//! `deploy_commit`, which must be called with the deploy lock held.
//!
//! A deploy runs a commit of root's repository (or, for `troops deploy
//! --repository`, of the caller's), never a working tree: the signature is
//! checked on that commit in that repository, then the same commit is
//! exported into `work/SHA`, gets a virtualenv, and deploy.py runs there.
//! Only a successful deploy updates the node's deployed commit; every attempt
//! leaves a history record and a log.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::config::Config;
use crate::error::UserError;
use crate::git::{Repo, short};
use crate::history::{self, Entry, Trigger};
use crate::paths::Node;
use crate::python::{self, DeployEnv};
use crate::stream::{self, Sink};
use crate::{failpoint, signatures, venv};

/// What a deploy is for: who asked, how, and whether it may change anything.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub trigger: Trigger,
    pub user: &'a str,
    pub dry_run: bool,
    /// In a dry run, where pydebianadmin lists what would change (`check`).
    pub drift_file: Option<&'a Path>,
}

/// The repository to deploy from: a work tree, or the node's own.
pub fn source_repo(node: &Node, repository: Option<&Path>) -> Result<Repo> {
    let Some(dir) = repository else {
        let path = node.deploy_repo();
        if path.is_dir() && nix::unistd::access(&path, nix::unistd::AccessFlags::R_OK).is_err() {
            return Err(UserError::new(format!(
                "root's repository `{}` is root's alone",
                path.display()
            ))
            .hint("run this as root, or pass --repository with a clone of the deployment")
            .into());
        }
        if !path.join("HEAD").exists() {
            return Err(UserError::new(format!(
                "this node has no repository at `{}`",
                path.display()
            ))
            .hint("run `troops init` first, or pass --repository DIR")
            .into());
        }
        return Ok(Repo::deploy(node));
    };
    let repo = Repo::work_tree(dir);
    if repo.run(["rev-parse", "--git-dir"]).is_err() {
        return Err(
            UserError::new(format!("`{}` is not a git repository", dir.display()))
                .hint("run `git init` there and commit deploy.py and requirements.txt")
                .into(),
        );
    }
    Ok(repo)
}

/// The commit to deploy: `rev`, or HEAD of a work tree, or the deploy branch.
pub fn resolve(repo: &Repo, config: &Config, rev: Option<&str>) -> Result<String> {
    let (rev, what) = match rev {
        Some(rev) if rev.starts_with('-') => {
            return Err(user_error!(
                "`{rev}` is not a revision (it looks like an option)"
            ));
        }
        Some(rev) => (rev.to_owned(), format!("revision `{rev}`")),
        None if repo.is_bare() => (
            format!("refs/heads/{}", config.branch()),
            format!("branch `{}`", config.branch()),
        ),
        None => ("HEAD".to_owned(), "HEAD".to_owned()),
    };
    repo.resolve_commit(&rev)?.ok_or_else(|| {
        UserError::new(format!("`{}` has no {what}", repo.path().display()))
            .hint("commit deploy.py and requirements.txt, or push a deployment to the node")
            .into()
    })
}

/// Moves to `/`, so that no program root runs finds the caller's files in
/// its working directory (Python's `-m` puts it first on the import path).
pub fn leave_callers_directory() -> Result<()> {
    std::env::set_current_dir("/").context("cannot change to the directory `/`")
}

/// Who asked for the deploy: the sudo caller if any, else the current user.
pub fn invoking_user() -> String {
    let uid = nix::unistd::Uid::current();
    if uid.is_root()
        && let Ok(name) = std::env::var("SUDO_USER")
        && !name.is_empty()
    {
        return name;
    }
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name)
}

/// Deploys `commit` of `repo`, recording it. Call with the deploy lock held.
pub fn deploy_commit(
    node: &Node,
    config: &Config,
    repo: &Repo,
    commit: &str,
    request: &Request,
) -> Result<()> {
    if request.dry_run {
        return dry_run(node, config, repo, commit, request);
    }
    let mut entry = Entry::start(node, request.trigger, request.user)?;
    entry.set_commit(commit)?;
    let mut sink = Sink::within(Some(entry.log.try_clone()?), config.deploy_timeout());
    sink.note(&format!(
        "troops: deploying {} ({} by {})",
        short(commit),
        request.trigger.as_str(),
        request.user
    ))?;
    let outcome = attempt(node, config, repo, commit, request, &mut sink)
        .map_err(|e| explain_full_disk(node, e));
    failpoint::hit("history");
    let reason = outcome.as_ref().map(drop).map_err(one_line);
    let elapsed = entry.finish(node, &reason)?;
    match outcome {
        Ok(()) => {
            history::set_deployed_commit(node, commit)?;
            sink.note(&format!(
                "troops: deployed {} in {:.2}s",
                short(commit),
                elapsed.as_secs_f64()
            ))?;
            Ok(())
        }
        Err(e) => Err(e.context(format!("deploy of {} failed", short(commit)))),
    }
}

/// Runs the deployment with pydebianadmin's dry-run switch; records nothing.
fn dry_run(
    node: &Node,
    config: &Config,
    repo: &Repo,
    commit: &str,
    request: &Request,
) -> Result<()> {
    let mut sink = Sink::within(None, config.deploy_timeout());
    sink.note(&format!(
        "troops: dry run of {}: reporting what would change",
        short(commit)
    ))?;
    attempt(node, config, repo, commit, request, &mut sink)
        .with_context(|| format!("dry run of {} failed", short(commit)))?;
    sink.note(&format!(
        "troops: dry run of {} done; nothing was deployed",
        short(commit)
    ))
}

/// The part of a deploy that can fail because of the deployment.
fn attempt(
    node: &Node,
    config: &Config,
    repo: &Repo,
    commit: &str,
    request: &Request,
    sink: &mut Sink,
) -> Result<()> {
    let env = DeployEnv {
        node,
        commit,
        trigger: request.trigger.as_str(),
        roles: &config.roles,
        dry_run: request.dry_run,
        drift_file: request.drift_file,
    };
    signatures::check(node, config, repo, commit)?;
    let checkout = checkout(node, repo, commit)?;
    require_deploy_py(&checkout, commit)?;
    python::install_module(node)?;
    let venv = venv::ensure(node, &config.python(), &checkout, commit, sink)?;
    let mut cmd = python::command(&venv, &checkout, &env, ["run", "deploy.py"]);
    let status = stream::run_status(&mut cmd, sink)?;
    if !status.success() {
        return Err(user_error!("deploy.py {}", stream::explain(status)));
    }
    venv::prune(node, &venv)?;
    prune_work(node, &checkout)
}

/// A deploy that ran out of space says which filesystem is full: the first
/// of the node's directories with no space left. Called where the error
/// happens, before half-written files are cleaned up (which frees the space
/// again), and once more for the whole attempt.
fn explain_full_disk(node: &Node, err: anyhow::Error) -> anyhow::Error {
    const SAID: &str = "no space left on the filesystem holding";
    if err.chain().any(|cause| cause.to_string().starts_with(SAID)) {
        return err;
    }
    let full = [node.work(), node.venvs(), node.state(), node.lib()]
        .into_iter()
        .find(|dir| {
            nix::sys::statvfs::statvfs(dir.as_path())
                .is_ok_and(|fs| fs.blocks_available() * fs.fragment_size() < 64 * 1024)
        })
        // Full a moment ago (the error says so), freed by the cleanup since.
        .or_else(|| {
            let says = |cause: &(dyn std::error::Error + 'static)| {
                cause.to_string().contains("No space left on device")
                    || cause
                        .downcast_ref::<std::io::Error>()
                        .is_some_and(|e| e.raw_os_error() == Some(nix::libc::ENOSPC))
            };
            err.chain().any(says).then(|| node.lib())
        });
    match full {
        Some(dir) => err.context(
            UserError::new(format!("{SAID} `{}`", dir.display()))
            .hint(format!(
                "free space there (`df -h {}`), then deploy again; the node keeps running its last commit",
                dir.display()
            )),
        ),
        None => err,
    }
}

pub fn require_deploy_py(checkout: &Path, commit: &str) -> Result<()> {
    if checkout.join("deploy.py").is_file() {
        return Ok(());
    }
    Err(UserError::new(format!(
        "commit {} has no deploy.py at its top",
        short(commit)
    ))
    .hint("add deploy.py to the top directory of the deployment repository and commit it")
    .into())
}

/// A fresh export of `commit` at `work/SHA`, replacing any earlier one.
fn checkout(node: &Node, repo: &Repo, commit: &str) -> Result<PathBuf> {
    let dest = node.work().join(commit);
    let tmp = tempfile::Builder::new()
        .prefix(".new-")
        .tempdir_in(node.work())
        .with_context(|| format!("cannot create a directory in `{}`", node.work().display()))?;
    repo.export(commit, tmp.path())
        .map_err(|e| explain_full_disk(node, e))?;
    failpoint::hit("export");
    if dest.exists() {
        fs::remove_dir_all(&dest).with_context(|| format!("cannot remove `{}`", dest.display()))?;
    }
    fs::rename(tmp.keep(), &dest).with_context(|| format!("cannot create `{}`", dest.display()))?;
    Ok(dest)
}

/// Removes work trees of earlier deploys and exports a killed deploy left.
fn prune_work(node: &Node, keep: &Path) -> Result<()> {
    for entry in fs::read_dir(node.work())?.filter_map(|e| e.ok()) {
        let path = entry.path();
        let name = entry.file_name();
        let stale_export = name.to_string_lossy().starts_with(".new-");
        let old_tree = !name.to_string_lossy().starts_with('.') && path != keep;
        if stale_export || old_tree {
            fs::remove_dir_all(&path)
                .with_context(|| format!("cannot remove `{}`", path.display()))?;
        }
    }
    Ok(())
}

/// The first line of the innermost user-facing message, for history records.
pub fn one_line(err: &anyhow::Error) -> String {
    let message = err
        .downcast_ref::<UserError>()
        .map_or_else(|| format!("{err:#}"), ToString::to_string);
    message.lines().next().unwrap_or_default().to_owned()
}
