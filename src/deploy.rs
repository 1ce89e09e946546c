//! `troops deploy`: run a deployment commit on this node, now.
//!
//! Every way in (manual, push hook, pull, seed) ends in `deploy_commit`, which
//! must be called with the deploy lock held. A deploy runs a commit, never a
//! working tree: it is exported into `work/SHA`, gets a virtualenv, and
//! deploy.py runs there. Only a successful deploy updates the node's deployed
//! commit; every attempt leaves a history record and a log.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::config::Config;
use crate::error::UserError;
use crate::git::{Repo, short};
use crate::history::{self, Entry, Trigger};
use crate::lock::{DeployLock, Wait};
use crate::paths::Node;
use crate::python::{self, DeployEnv};
use crate::stream::{self, Sink};
use crate::{init, signatures, venv};

/// Run a deployment on this node now
///
/// Without --repository, deploys the node's own repository at its deploy
/// branch (`master` unless /etc/troops/troops.toml sets `branch`), which
/// re-runs the current deployment. With --repository, deploys a commit of that
/// git work tree (HEAD unless --rev says otherwise); uncommitted changes are
/// not deployed, and Troops says so.
///
/// Output streams to stderr and into a per-deploy log; `troops status` shows
/// the history. Only one deploy runs at a time: a second one waits.
///
/// Example: `troops deploy --repository=.`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Deploy a commit of this git repository instead of the node's own
    #[arg(long, value_name = "DIR")]
    pub repository: Option<PathBuf>,
    /// The commit, branch or tag to deploy [default: HEAD, or the deploy branch]
    #[arg(long, value_name = "REV")]
    pub rev: Option<String>,
    /// Fail at once if another deploy is running, instead of waiting for it
    #[arg(long)]
    pub no_wait: bool,
    /// Show what the deployment would change, and change nothing
    ///
    /// Runs deploy.py with PYDEBIANADMIN_DRY_RUN=1, so pydebianadmin's helpers
    /// report what they would do. Records no deploy and moves nothing. Code
    /// that changes the system without pydebianadmin should check the same
    /// variable.
    #[arg(long)]
    pub dry_run: bool,
}

/// What a deploy is for: who asked, how, and whether it may change anything.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub trigger: Trigger,
    pub user: &'a str,
    pub dry_run: bool,
}

pub fn run(node: &Node, args: Args) -> Result<()> {
    let plain = args.repository.is_none() && args.rev.is_none() && !args.no_wait && !args.dry_run;
    if plain && needs_root(node) {
        return redeploy_through_sudo(node);
    }
    let config = Config::load(node)?;
    init::ensure_state(node)?;
    let repo = source_repo(node, args.repository.as_deref())?;
    let wait = if args.no_wait {
        Wait::Fail
    } else {
        Wait::Block
    };
    let user = invoking_user();
    let _lock = DeployLock::acquire(node, wait, &format!("manual deploy by {user}"))?;
    let commit = resolve(&repo, &config, args.rev.as_deref())?;
    if args.repository.is_some() && args.rev.is_none() {
        warn_uncommitted(&repo, &commit)?;
    }
    let request = Request {
        trigger: Trigger::Manual,
        user: &user,
        dry_run: args.dry_run,
    };
    deploy_commit(node, &config, &repo, &commit, &request)
}

/// A group member re-deploying a node it cannot write (`ssh node troops deploy`).
fn needs_root(node: &Node) -> bool {
    use nix::unistd::{AccessFlags, Uid, access};
    !Uid::effective().is_root()
        && node.state().is_dir()
        && access(&node.state(), AccessFlags::W_OK).is_err()
}

/// Runs exactly the command line the sudoers drop-in allows group members.
fn redeploy_through_sudo(node: &Node) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("cannot find the troops executable")?;
    let err = std::process::Command::new("sudo")
        .args(["-n", "--"])
        .arg(exe)
        .arg("--root")
        .arg(node.root())
        .arg("deploy")
        .exec();
    Err(UserError::new(format!("cannot run sudo: {err}"))
        .hint("deploys run as root: install sudo and add yourself to the group troops")
        .into())
}

/// The repository to deploy from: a work tree, or the node's own.
pub fn source_repo(node: &Node, repository: Option<&Path>) -> Result<Repo> {
    let Some(dir) = repository else {
        let path = node.repo();
        if !path.join("HEAD").exists() {
            return Err(UserError::new(format!(
                "this node has no repository at `{}`",
                path.display()
            ))
            .hint("run `troops init` first, or pass --repository DIR")
            .into());
        }
        return Ok(Repo::bare(&path));
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

fn warn_uncommitted(repo: &Repo, commit: &str) -> Result<()> {
    let dirty = repo.uncommitted()?;
    if dirty.is_empty() {
        return Ok(());
    }
    let mut listed = dirty.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if dirty.len() > 5 {
        listed.push_str(", ...");
    }
    eprintln!(
        "troops: warning: the working tree has uncommitted changes ({listed}); \
         deploying commit {} without them",
        short(commit)
    );
    Ok(())
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
    let mut sink = Sink::new(Some(entry.log.try_clone()?));
    sink.note(&format!(
        "troops: deploying {} ({} by {})",
        short(commit),
        request.trigger.as_str(),
        request.user
    ))?;
    let outcome = attempt(node, config, repo, commit, request, &mut sink);
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
    let mut sink = Sink::new(None);
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
    };
    signatures::check(node, config, repo, commit)?;
    let checkout = checkout(node, repo, commit)?;
    require_deploy_py(&checkout, commit)?;
    python::install_module(node)?;
    let venv = venv::ensure(node, &config.python(), &checkout, sink)?;
    let mut cmd = python::command(&venv, &checkout, &env, ["run", "deploy.py"]);
    let status = stream::run_status(&mut cmd, sink)?;
    if !status.success() {
        return Err(user_error!("deploy.py {}", stream::explain(status)));
    }
    venv::prune(node, &venv)?;
    prune_work(node, &checkout)
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
    repo.export(commit, tmp.path())?;
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
