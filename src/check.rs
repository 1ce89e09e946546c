//! `troops check`: what the deployed commit would change on this node now
//! (drift), found by running it in dry-run mode. A check is not a deploy:
//! it records no history and moves nothing; its own result is kept apart.

use std::io::Write;
use std::time::SystemTime;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::engine::{Request, deploy_commit, invoking_user, one_line, source_repo};
use crate::error::{Exit, UserError};
use crate::git::short;
use crate::history::Trigger;
use crate::lock::{DeployLock, Wait};
use crate::paths::{self, Node};

/// Report what the deployed commit would change on this node (drift)
///
/// Runs the commit root's deploy branch names as `troops deploy --dry-run`
/// does: pydebianadmin's helpers say what they would change and change
/// nothing, and every change they would make is drift. deploy.py's own code
/// runs as in any dry run (code that changes the system without
/// pydebianadmin should check PYDEBIANADMIN_DRY_RUN). A check records no
/// deploy and moves nothing; its result is in `troops status`
/// (/var/lib/troops/state/last-check.json) and the metrics (troops_drift).
///
/// Exits 0 without drift, 1 with drift (as diff does), and 2 when the check
/// itself failed (nothing deployed yet, deploy.py failed in the dry run).
/// With --json, prints {"result" (clean, drift, failed), "commit",
/// "changes": ["files: /etc/motd content would change", ...], "reason",
/// "finished_at"}.
///
/// Example, hourly: `systemd-run --on-calendar=hourly troops check`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the result as JSON on stdout
    #[arg(long)]
    json: bool,
    /// Fail at once if a deploy is running, instead of waiting for it
    #[arg(long)]
    no_wait: bool,
}

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Clean,
    Drift,
    Failed,
}

/// The last check, as `--json` prints it and `troops status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub result: Outcome,
    /// The commit checked (root's deploy branch), if there was one.
    pub commit: Option<String>,
    /// One line per change the deployment would make.
    pub changes: Vec<String>,
    /// Why the check failed.
    pub reason: Option<String>,
    pub finished_at: String,
}

pub fn run(node: &Node, args: Args) -> Result<()> {
    let mut commit = None;
    let report = match check(node, &args, &mut commit) {
        Ok(changes) => Report {
            result: if changes.is_empty() {
                Outcome::Clean
            } else {
                Outcome::Drift
            },
            commit,
            changes,
            reason: None,
            finished_at: now(),
        },
        Err(e) => {
            crate::error::report(&e);
            Report {
                result: Outcome::Failed,
                commit,
                changes: Vec::new(),
                reason: Some(one_line(&e)),
                finished_at: now(),
            }
        }
    };
    if node.state().is_dir() {
        save(node, &report)?;
    }
    if args.json {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    }
    let shown = report.commit.as_deref().map_or("-", short);
    match report.result {
        Outcome::Clean => {
            eprintln!("troops: check: no drift: the node is as {shown} makes it");
            Ok(())
        }
        Outcome::Drift => {
            eprintln!(
                "troops: check: drift: {} change(s) would bring the node back to {shown}; \
                 `troops deploy` makes them",
                report.changes.len()
            );
            Err(Exit(1).into())
        }
        Outcome::Failed => Err(Exit(2).into()),
    }
}

/// Runs the dry run; returns what would change.
fn check(node: &Node, args: &Args, commit: &mut Option<String>) -> Result<Vec<String>> {
    let config = Config::load(node)?;
    paths::ensure_state(node)?;
    let repo = source_repo(node, None)?;
    let user = invoking_user();
    // Not during a deploy: a half-made change is no drift.
    let _lock = DeployLock::acquire(
        node,
        Wait::unless(args.no_wait),
        &format!("check by {user}"),
    )?;
    let branch = format!("refs/heads/{}", config.branch());
    let deployed = repo.resolve_commit(&branch)?.ok_or_else(|| {
        UserError::new("nothing is deployed on this node yet: there is nothing to check")
            .hint("deploy first (`troops pull`, a push, or `troops deploy`)")
    })?;
    *commit = Some(deployed.clone());
    let drift = tempfile::NamedTempFile::new_in(node.state())
        .context("cannot create a file for the check's findings")?;
    let request = Request {
        trigger: Trigger::Check,
        user: &user,
        dry_run: true,
        drift_file: Some(drift.path()),
    };
    deploy_commit(node, &config, &repo, &deployed, &request)?;
    let found =
        std::fs::read_to_string(drift.path()).context("cannot read the check's findings")?;
    Ok(found.lines().map(str::to_owned).collect())
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

fn report_path(node: &Node) -> std::path::PathBuf {
    node.state().join("last-check.json")
}

fn save(node: &Node, report: &Report) -> Result<()> {
    paths::save_report(&report_path(node), report)
}

/// The last check's result, if any.
pub fn last(node: &Node) -> Option<Report> {
    paths::load_report(&report_path(node))
}
