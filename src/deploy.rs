//! `troops deploy`: run a deployment commit on this node, now.
//!
//! Without `--repository` it re-deploys root's repository at the deploy
//! branch; a group member gets there through the one sudo rule that allows
//! exactly that command line. The work itself is the deploy engine's.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::config::Config;
use crate::engine::{
    Request, deploy_commit, invoking_user, leave_callers_directory, resolve, source_repo,
};
use crate::error::UserError;
use crate::git::{Repo, short};
use crate::history::Trigger;
use crate::lock::{DeployLock, Wait};
use crate::paths::{self, Node};

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
    /// Stop the deploy and fail it if it runs longer than SPAN (e.g. 30min)
    ///
    /// Everything deploy.py started is stopped with it. Default: the node's
    /// `deploy_timeout` in /etc/troops/troops.toml, else 1h.
    #[arg(long, value_name = "SPAN")]
    pub deploy_timeout: Option<String>,
}

pub fn run(node: &Node, args: Args) -> Result<()> {
    if args.repository.is_none() {
        // What sudo runs for a member keeps the member's directory; nothing
        // of it is needed here.
        leave_callers_directory()?;
    }
    let plain = args.repository.is_none()
        && args.rev.is_none()
        && !args.no_wait
        && !args.dry_run
        && args.deploy_timeout.is_none();
    if plain && needs_root(node) {
        return redeploy_through_sudo(node);
    }
    let mut config = Config::load(node)?;
    if let Some(span) = &args.deploy_timeout {
        config.set_deploy_timeout(span)?;
    }
    paths::ensure_state(node)?;
    let repo = source_repo(node, args.repository.as_deref())?;
    let wait = Wait::unless(args.no_wait);
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
        drift_file: None,
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
