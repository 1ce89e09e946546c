//! `troops fleet`: every node's last status report, from any clone that can
//! read the report remote. Nothing central runs: the reports are refs.

use std::io::Write;
use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::error::UserError;
use crate::git::{self, Repo, short};
use crate::remotes;
use crate::report::{self, KEYS_FILE, Received};

/// Show every node's last status report
///
/// Nodes with a report remote (`[report] url` in /etc/troops/troops.toml, or
/// the seed's `report`) push their status to refs/troops/status/HOSTNAME
/// there, signed with their SSH key. Given REMOTE (a remote's name or a
/// URL), fleet fetches those refs into the repository first; without it,
/// it reads the ones the repository has (on the git server itself, say).
///
/// One line per node: the commit it runs, its last deploy's result, how
/// its last pull went (ok, held-back or failed), what it holds back, its last check, when it
/// reported, STATE (`current`, `stale` after three missed heartbeats, or
/// `no report`) and SIGNATURE (`verified` when the node's own key, as the
/// deployment's nodes.allowed_signers lists it, signed the report; a report
/// that is not counts for nothing in canary waves). Then how many nodes run
/// each commit, counting verified reports only.
///
/// With --json, prints {"nodes": [{"hostname", "state", "verified",
/// "problem", "report"}], "commits": [{"commit", "nodes"}]}, where "report"
/// is what the node pushed ({"hostname", "deployed": {"commit", "at"},
/// "last_deploy": {"commit", "result", "trigger", "finished_at", "reason"},
/// "pull", "held_back": {"commit", "reason"}, "check": {"result", "commit",
/// "changes"}, "reported_at", "heartbeat_seconds"}) or null.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Fetch the reports from REMOTE (a remote name or a URL) first
    #[arg(value_name = "REMOTE")]
    pub remote: Option<String>,
    /// The deployment repository [default: the current directory]
    #[arg(long, value_name = "DIR")]
    pub repository: Option<PathBuf>,
    /// The commit whose nodes.allowed_signers lists the nodes and their keys
    #[arg(long, default_value = "HEAD", value_name = "REV")]
    pub rev: String,
    /// Print JSON for scripts instead of a table
    #[arg(long)]
    pub json: bool,
}

/// One node, as the table and --json show it.
#[derive(Debug, Serialize)]
struct Row {
    hostname: String,
    /// `current`, `stale` or `no report`.
    state: &'static str,
    verified: bool,
    /// Why the report is unverified or unreadable, if it is.
    problem: Option<String>,
    report: Option<report::Report>,
}

#[derive(Debug, Serialize)]
struct Count {
    commit: String,
    nodes: usize,
}

#[derive(Debug, Serialize)]
struct Fleet {
    nodes: Vec<Row>,
    commits: Vec<Count>,
}

pub fn run(args: Args) -> Result<()> {
    let dir = args
        .repository
        .clone()
        .unwrap_or_else(|| PathBuf::from("."));
    let repo = Repo::work_tree(&dir);
    if let Err(e) = repo.run(["rev-parse", "--git-dir"]) {
        // git's own reason: not a repository, or one of another user's.
        let why = format!("{e:#}");
        let why = why.lines().rfind(|l| l.starts_with("fatal:")).unwrap_or("");
        return Err(UserError::new(format!(
            "cannot read `{}` as a git repository: {why}",
            dir.display()
        ))
        .hint(
            "run `troops fleet` in a clone of the deployment, or give --repository DIR; \
             on the git server, run it as the repository's owner",
        )
        .into());
    }
    let rev = match repo.resolve_commit(&args.rev)? {
        Some(commit) if !args.rev.starts_with('-') => commit,
        _ => {
            return Err(UserError::new(format!(
                "--rev `{}` names no commit in `{}`",
                args.rev,
                dir.display()
            ))
            .into());
        }
    };
    if let Some(remote) = &args.remote {
        fetch(&repo, remote)?;
    }
    let keys = report::node_keys(&repo, &rev)?;
    if keys.is_none() {
        eprintln!(
            "troops: warning: {} (`{}`) has no {KEYS_FILE}: no report can be verified \
             (list each node as `HOSTNAME KEY`, the key being the node's \
             /var/lib/troops/ssh/id_ed25519.pub)",
            short(&rev),
            args.rev
        );
    }
    let received = report::read_all(&repo, keys.as_ref().map(|k| k.path()), None)?;
    let known = keys.map_or_else(Vec::new, |k| k.hostnames);
    let fleet = tabulate(received, known, SystemTime::now());
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &fleet)?;
        writeln!(out)?;
    } else {
        print_table(&mut out, &fleet)?;
    }
    Ok(())
}

/// Fetches the reports, dropping those the remote no longer has.
fn fetch(repo: &Repo, remote: &str) -> Result<()> {
    if remote.starts_with('-') {
        return Err(UserError::new(format!(
            "`{remote}` is not a remote: names and URLs may not start with `-`"
        ))
        .into());
    }
    let mut cmd = report::fetch_command(repo, remote);
    git::log_command(&cmd);
    let out = cmd.output().context("cannot run git fetch")?;
    if out.status.success() {
        return Ok(());
    }
    Err(UserError::new(format!(
        "cannot fetch the status reports from `{}`: {}",
        remotes::redact(remote),
        remotes::failure(&String::from_utf8_lossy(&out.stderr))
    ))
    .hint("check the remote's name or URL, and that you may read it")
    .into())
}

/// A row per node (reported or listed), sorted, and the commit counts.
fn tabulate(received: Vec<Received>, known: Vec<String>, now: SystemTime) -> Fleet {
    let mut nodes: Vec<Row> = received
        .into_iter()
        .map(|r| {
            let problem = match (&r.report, &r.verified) {
                (Err(e), _) | (Ok(_), Err(e)) => Some(e.clone()),
                _ => None,
            };
            let report = r.report.ok();
            Row {
                state: match &report {
                    None => "no report",
                    Some(report) if report::is_stale(report, now) => "stale",
                    Some(_) => "current",
                },
                verified: problem.is_none(),
                hostname: r.hostname,
                problem,
                report,
            }
        })
        .collect();
    for hostname in known {
        if !nodes.iter().any(|n| n.hostname == hostname) {
            nodes.push(Row {
                hostname,
                state: "no report",
                verified: false,
                problem: None,
                report: None,
            });
        }
    }
    nodes.sort_by(|a, b| a.hostname.cmp(&b.hostname));
    let mut commits: Vec<Count> = Vec::new();
    for node in nodes.iter().filter(|n| n.verified) {
        let Some(deployed) = node.report.as_ref().and_then(|r| r.facts.deployed.as_ref()) else {
            continue;
        };
        match commits.iter_mut().find(|c| c.commit == deployed.commit) {
            Some(count) => count.nodes += 1,
            None => commits.push(Count {
                commit: deployed.commit.clone(),
                nodes: 1,
            }),
        }
    }
    commits.sort_by(|a, b| b.nodes.cmp(&a.nodes).then(a.commit.cmp(&b.commit)));
    Fleet { nodes, commits }
}

fn print_table(out: &mut impl Write, fleet: &Fleet) -> std::io::Result<()> {
    if fleet.nodes.is_empty() {
        writeln!(out, "no node has reported yet")?;
        return Ok(());
    }
    let width = fleet
        .nodes
        .iter()
        .map(|n| n.hostname.len())
        .max()
        .unwrap_or(4)
        .max(4);
    writeln!(
        out,
        "{:<width$}  {:<12}  {:<11}  {:<9}  {:<12}  {:<6}  {:<20}  {:<9}  SIGNATURE",
        "NODE", "COMMIT", "LAST DEPLOY", "PULL", "HELD BACK", "CHECK", "REPORTED", "STATE"
    )?;
    for node in &fleet.nodes {
        let facts = node.report.as_ref().map(|r| &r.facts);
        let word = |value: Option<serde_json::Value>| {
            value
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| "-".to_owned())
        };
        let signature = match (&node.report, &node.problem) {
            (None, None) => "-".to_owned(),
            (_, None) => "verified".to_owned(),
            (_, Some(why)) => format!("unverified: {why}"),
        };
        writeln!(
            out,
            "{:<width$}  {:<12}  {:<11}  {:<9}  {:<12}  {:<6}  {:<20}  {:<9}  {}",
            node.hostname,
            facts
                .and_then(|f| f.deployed.as_ref())
                .map_or("-", |d| short(&d.commit)),
            facts
                .and_then(|f| f.last_deploy.as_ref())
                .map_or("-", |d| d.result.as_str()),
            word(facts.and_then(|f| f.pull.and_then(|p| serde_json::to_value(p).ok()))),
            facts
                .and_then(|f| f.held_back.as_ref())
                .map_or("-", |h| h.commit.as_deref().map_or("?", short)),
            word(facts.and_then(|f| {
                f.check
                    .as_ref()
                    .and_then(|c| serde_json::to_value(c.result).ok())
            })),
            node.report.as_ref().map_or("-", |r| r.reported_at.as_str()),
            node.state,
            signature,
        )?;
    }
    writeln!(out)?;
    for count in &fleet.commits {
        writeln!(out, "{}  {} node(s)", short(&count.commit), count.nodes)?;
    }
    let unverified = fleet
        .nodes
        .iter()
        .filter(|n| n.report.is_some() && !n.verified)
        .count();
    if unverified > 0 {
        writeln!(out, "{unverified} report(s) unverified, not counted")?;
    }
    Ok(())
}
