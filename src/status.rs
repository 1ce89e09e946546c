//! `troops status`: the deployed commit and the recent deploy history.
//!
//! Read-only: it never takes the deploy lock. A record still marked running
//! while nobody holds the lock belongs to a killed deploy and is shown as the
//! failure it was. The `--json` shape is SPEC "Interfaces": fields are added,
//! never renamed or removed.

use std::io::Write;

use anyhow::Result;
use serde::Serialize;

use crate::git::short;
use crate::history::{self, Record};
use crate::lock::DeployLock;
use crate::paths::Node;
use crate::{check, pull, report};

/// Show the deployed commit and recent deploys
///
/// The table lists the newest deploys first: when each started, what
/// triggered it (push, pull, manual, seed), who, the result and the reason of
/// a failure. The log of each deploy is under /var/lib/troops/state/logs.
///
/// With --json, prints one object: {"commit": SHA or null, "history":
/// [{"commit", "trigger", "user", "started_at", "duration_ms", "result",
/// "reason", "log"}, ...], "last_pull": the last `troops pull --json` or
/// null, "last_check": the last `troops check --json` or null,
/// "last_report": {"url", "sent_at"} of the last status report pushed, or
/// null}, history newest first.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON for scripts instead of a table
    #[arg(long)]
    pub json: bool,
    /// How many deploys the table shows
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub limit: usize,
}

#[derive(Serialize)]
struct Status {
    commit: Option<String>,
    history: Vec<Record>,
    /// What the last `troops pull` did (added field; null before the first).
    last_pull: Option<pull::Report>,
    /// What the last `troops check` found (added field; null before the first).
    last_check: Option<check::Report>,
    /// Where and when the node last pushed its status report (added field;
    /// null without a report remote).
    last_report: Option<report::LastSent>,
}

/// What the node knows of itself after a run, read once for its metrics
/// and its status report.
pub struct Snapshot {
    /// The commit whose deploy last succeeded.
    pub deployed: Option<String>,
    /// The newest deploy record.
    pub latest: Option<Record>,
    pub pull: Option<pull::Report>,
    pub check: Option<check::Report>,
}

impl Snapshot {
    pub fn read(node: &Node) -> Result<Snapshot> {
        Ok(Snapshot {
            deployed: history::deployed_commit(node)?,
            latest: history::latest(node)?,
            pull: pull::last(node),
            check: check::last(node),
        })
    }
}

pub fn run(node: &Node, args: Args) -> Result<()> {
    let mut records = history::list(node)?;
    if !DeployLock::is_held(node) {
        records.iter_mut().for_each(history::mark_interrupted);
    }
    let status = Status {
        commit: history::deployed_commit(node)?,
        history: records,
        last_pull: pull::last(node),
        last_check: check::last(node),
        last_report: report::last_sent(node),
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &status)?;
        writeln!(out)?;
    } else {
        print_table(&mut out, &status, args.limit)?;
    }
    Ok(())
}

fn print_table(out: &mut impl Write, status: &Status, limit: usize) -> std::io::Result<()> {
    match &status.commit {
        Some(commit) => writeln!(out, "deployed: {commit}")?,
        None => writeln!(out, "deployed: nothing yet")?,
    }
    if let Some(pull) = &status.last_pull {
        let outcome = serde_json::to_value(pull.result).unwrap_or_default();
        writeln!(
            out,
            "last pull: {} {}",
            pull.finished_at,
            outcome.as_str().unwrap_or("")
        )?;
    }
    if let Some(check) = &status.last_check {
        let outcome = serde_json::to_value(check.result).unwrap_or_default();
        writeln!(
            out,
            "last check: {} {}{}",
            check.finished_at,
            outcome.as_str().unwrap_or(""),
            match check.result {
                check::Outcome::Drift => format!(" ({} change(s))", check.changes.len()),
                _ => String::new(),
            }
        )?;
    }
    if let Some(report) = &status.last_report {
        writeln!(out, "last report: {} to {}", report.sent_at, report.url)?;
    }
    if status.history.is_empty() {
        return Ok(());
    }
    writeln!(out)?;
    writeln!(
        out,
        "{:<20}  {:<7}  {:<12}  {:<7}  {:>8}  {:<12}  REASON",
        "STARTED", "TRIGGER", "USER", "RESULT", "TIME", "COMMIT"
    )?;
    for r in status.history.iter().take(limit) {
        writeln!(
            out,
            "{:<20}  {:<7}  {:<12}  {:<7}  {:>7.1}s  {:<12}  {}",
            r.started_at,
            r.trigger.as_str(),
            r.user,
            r.result,
            r.duration_ms as f64 / 1000.0,
            r.commit.as_deref().map_or("-", short),
            r.reason.as_deref().unwrap_or(""),
        )?;
    }
    Ok(())
}
