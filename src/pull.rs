//! `troops pull`: fetch every remote and deploy what fast-forwards.
//!
//! All remotes are equal (no central server). Each is fetched in parallel
//! with a timeout; the remote deploy branches that fast-forward from the local
//! branch are candidates, and the one that contains all the others is
//! deployed. The local branch moves only after that deploy succeeded, by a
//! compare-and-swap on the value the deploy started from, so a push that
//! landed meanwhile is never overwritten and a failed deploy is retried by
//! the next pull. With nothing new, no lock is taken and no Python runs.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::deploy::{Request, deploy_commit, invoking_user, source_repo};
use crate::error::UserError;
use crate::git::{Repo, describe, short};
use crate::history::{Trigger, write_atomically};
use crate::lock::{DeployLock, Wait};
use crate::paths::Node;
use crate::{init, rollout};

/// Fetch every remote and deploy what fast-forwards the deploy branch
///
/// Fetches the deploy branch of every remote of the node's repository
/// (`git --git-dir=/var/lib/troops/repo/main.git remote add NAME URL`), in
/// parallel, each with a timeout. A remote whose branch fast-forwards from
/// the node's is deployed, and the node's branch moves only once that deploy
/// succeeded; a failed deploy is retried by the next pull. A diverged or
/// unreachable remote is skipped with a warning; the others still count.
///
/// SSH remotes are fetched with the node's key
/// (/var/lib/troops/ssh/id_ed25519) unless GIT_SSH_COMMAND says otherwise;
/// the system's SSH configuration and known hosts apply.
///
/// Exits 0 when it deployed or had nothing to do, 1 when a deploy failed or
/// no remote could be fetched. With --json, prints {"result", "commit",
/// "remotes": [{"name", "url", "outcome" (deployed, nothing, held-back,
/// failed), "commit", "reason"}]}.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the outcome as JSON on stdout
    #[arg(long)]
    pub json: bool,
    /// Fail at once if a deploy is running, instead of waiting for it
    #[arg(long)]
    pub no_wait: bool,
    /// Seconds each remote's fetch may take
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub timeout: u64,
}

/// What became of one remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Deployed,
    Nothing,
    HeldBack,
    Failed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoteReport {
    pub name: String,
    pub url: String,
    pub outcome: Outcome,
    /// The remote's deploy branch after the fetch, if it has one.
    pub commit: Option<String>,
    pub reason: String,
}

/// The whole pull, as `--json` prints it and `troops status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// `deployed`, `nothing`, `held-back` or `failed`.
    pub result: Outcome,
    /// The commit the deploy branch names after the pull.
    pub commit: Option<String>,
    pub finished_at: String,
    pub remotes: Vec<RemoteReport>,
}

pub fn run(node: &Node, args: Args) -> Result<()> {
    run_as(node, &args, Trigger::Pull)
}

/// A pull whose deploy is recorded with `trigger` (seeding's first pull).
pub fn run_as(node: &Node, args: &Args, trigger: Trigger) -> Result<()> {
    let config = Config::load(node)?;
    init::ensure_state(node)?;
    let repo = source_repo(node, None)?;
    let report = pull(node, &config, &repo, args, trigger)?;
    save(node, &report)?;
    if args.json {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    }
    finish(node, &report)
}

fn pull(
    node: &Node,
    config: &Config,
    repo: &Repo,
    args: &Args,
    trigger: Trigger,
) -> Result<Report> {
    let branch = config.branch();
    let mut remotes = fetch_all(node, repo, branch, Duration::from_secs(args.timeout))?;
    let local = repo.resolve_commit(&format!("refs/heads/{branch}"))?;
    classify(repo, local.as_deref(), &mut remotes)?;
    let chosen = choose(repo, &mut remotes)?;
    let mut result = if remotes.iter().all(|r| r.outcome == Outcome::Failed) && !remotes.is_empty()
    {
        Outcome::Failed
    } else {
        Outcome::Nothing
    };
    if let Some(index) = chosen {
        result = deploy_chosen(node, config, repo, args, trigger, &mut remotes[index])?;
    }
    Ok(Report {
        result,
        commit: repo.resolve_commit(&format!("refs/heads/{branch}"))?,
        finished_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        remotes,
    })
}

/// Fetches each remote's deploy branch into `refs/remotes/NAME/BRANCH`, all
/// at once; a remote that fails or times out is reported, not fatal.
fn fetch_all(
    node: &Node,
    repo: &Repo,
    branch: &str,
    timeout: Duration,
) -> Result<Vec<RemoteReport>> {
    let names: Vec<String> = repo.run(["remote"])?.lines().map(str::to_owned).collect();
    let mut fetches = Vec::new();
    for name in names {
        let url = repo
            .run(["remote", "get-url", "--", &name])
            .map(|u| u.trim().to_owned())
            .unwrap_or_default();
        let started = start_fetch(node, repo, &name, &url, branch);
        fetches.push((name, url, started));
    }
    let deadline = Instant::now() + timeout;
    let mut reports = Vec::new();
    for (name, url, started) in fetches {
        let failure = match started {
            Ok(child) => wait_fetch(child, deadline).err(),
            Err(e) => Some(format!("{e:#}")),
        };
        let commit = repo.resolve_commit(&format!("refs/remotes/{name}/{branch}"))?;
        let (outcome, reason) = match failure {
            Some(why) => {
                eprintln!("troops: warning: cannot fetch `{name}` ({url}): {why}");
                (Outcome::Failed, format!("unreachable: {why}"))
            }
            None => (Outcome::Nothing, String::new()),
        };
        reports.push(RemoteReport {
            name,
            url,
            outcome,
            commit,
            reason,
        });
    }
    Ok(reports)
}

fn start_fetch(node: &Node, repo: &Repo, name: &str, url: &str, branch: &str) -> Result<Child> {
    if name.starts_with('-') || url.starts_with('-') {
        return Err(user_error!(
            "refusing remote `{name}` ({url}): it looks like an option"
        ));
    }
    let mut cmd = repo.command();
    cmd.args([
        "fetch",
        "--quiet",
        "--no-tags",
        "--no-write-fetch-head",
        "--",
        name,
    ])
    .arg(format!("+refs/heads/{branch}:refs/remotes/{name}/{branch}"))
    .env("GIT_TERMINAL_PROMPT", "0")
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    if std::env::var_os("GIT_SSH_COMMAND").is_none() && std::env::var_os("GIT_SSH").is_none() {
        cmd.env("GIT_SSH_COMMAND", ssh_command(&node.ssh_key()));
    }
    if std::env::var_os("TROOPS_DEBUG").is_some() {
        eprintln!("troops: running {}", describe(&cmd));
    }
    cmd.spawn().context("cannot run git fetch")
}

/// ssh with the node's key, never asking anyone anything.
fn ssh_command(key: &Path) -> String {
    let key = key.to_string_lossy().replace('\'', "'\\''");
    format!("ssh -i '{key}' -o BatchMode=yes")
}

/// Waits for a fetch until `deadline`, then kills it.
fn wait_fetch(mut child: Child, deadline: Instant) -> std::result::Result<(), String> {
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            if status.success() {
                return Ok(());
            }
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
            }
            let last = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            return Err(format!(
                "git fetch {}: {}",
                crate::stream::explain(status),
                last.trim()
            ));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("timed out".to_owned());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sorts fetched remotes into candidates (fast-forwards) and the rest.
fn classify(repo: &Repo, local: Option<&str>, remotes: &mut [RemoteReport]) -> Result<()> {
    for remote in remotes.iter_mut().filter(|r| r.outcome != Outcome::Failed) {
        let Some(commit) = remote.commit.clone() else {
            remote.reason = "the remote has no deploy branch".to_owned();
            continue;
        };
        remote.reason = match local {
            Some(local) if local == commit => "up to date".to_owned(),
            Some(local) if is_ancestor(repo, &commit, local)? => "behind the node".to_owned(),
            Some(local) if !is_ancestor(repo, local, &commit)? => {
                eprintln!(
                    "troops: warning: `{}` ({}) has diverged from the node's branch: skipped",
                    remote.name, remote.url
                );
                "diverged".to_owned()
            }
            _ => CANDIDATE.to_owned(),
        };
    }
    Ok(())
}

const CANDIDATE: &str = "fast-forward";

pub fn is_ancestor(repo: &Repo, ancestor: &str, descendant: &str) -> Result<bool> {
    let mut cmd = repo.command();
    cmd.args(["merge-base", "--is-ancestor", "--", ancestor, descendant]);
    let status = cmd.status().context("cannot run git merge-base")?;
    match status.code() {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        _ => anyhow::bail!("`{}` {}", describe(&cmd), crate::stream::explain(status)),
    }
}

/// Picks the candidate that contains every other one, and says why the
/// others are skipped.
fn choose(repo: &Repo, remotes: &mut [RemoteReport]) -> Result<Option<usize>> {
    let candidates: Vec<usize> = (0..remotes.len())
        .filter(|&i| remotes[i].reason == CANDIDATE)
        .collect();
    let mut best: Option<usize> = None;
    for &i in &candidates {
        let commit = remotes[i].commit.clone().unwrap_or_default();
        let mut contains_all = true;
        for &j in &candidates {
            let other = remotes[j].commit.as_deref().unwrap_or_default();
            if !is_ancestor(repo, other, &commit)? {
                contains_all = false;
                break;
            }
        }
        if contains_all {
            best = Some(i);
            break;
        }
    }
    for &j in &candidates {
        if Some(j) == best {
            continue;
        }
        remotes[j].reason = match best {
            Some(i) if remotes[i].commit == remotes[j].commit => {
                format!("same commit as `{}`", remotes[i].name)
            }
            Some(i) => format!("`{}` has a newer commit that contains it", remotes[i].name),
            None => "the remotes disagree (no one commit contains the others)".to_owned(),
        };
        eprintln!(
            "troops: skipping `{}`: {}",
            remotes[j].name, remotes[j].reason
        );
    }
    Ok(best)
}

/// Deploys the chosen remote's commit and moves the branch on success.
fn deploy_chosen(
    node: &Node,
    config: &Config,
    repo: &Repo,
    args: &Args,
    trigger: Trigger,
    remote: &mut RemoteReport,
) -> Result<Outcome> {
    let commit = remote.commit.clone().unwrap_or_default();
    let branch_ref = format!("refs/heads/{}", config.branch());
    if let Some(percent) = rollout::fraction(repo, &commit)? {
        let hostname = rollout::hostname();
        if !rollout::takes(&hostname, percent) {
            remote.outcome = Outcome::HeldBack;
            remote.reason = format!("rollout {percent}%: this node ({hostname}) is not in it");
            eprintln!(
                "troops: held back {} from `{}`: {}",
                short(&commit),
                remote.name,
                remote.reason
            );
            return Ok(Outcome::HeldBack);
        }
    }
    let wait = if args.no_wait {
        Wait::Fail
    } else {
        Wait::Block
    };
    let _lock = DeployLock::acquire(
        node,
        wait,
        &format!("pull of {} from {}", short(&commit), remote.name),
    )?;
    // A push may have landed while we fetched or waited: re-check under the lock.
    let local = repo.resolve_commit(&branch_ref)?;
    if let Some(local) = &local
        && !is_ancestor(repo, local, &commit)?
    {
        remote.reason = "the node's branch moved meanwhile and this is no fast-forward".to_owned();
        return Ok(Outcome::Nothing);
    }
    if local.as_deref() == Some(commit.as_str()) {
        remote.reason = "up to date".to_owned();
        return Ok(Outcome::Nothing);
    }
    let user = invoking_user();
    let request = Request {
        trigger,
        user: &user,
        dry_run: false,
    };
    if let Err(e) = deploy_commit(node, config, repo, &commit, &request) {
        crate::error::report(&e);
        remote.outcome = Outcome::Failed;
        remote.reason = format!("deploy failed: {}", crate::deploy::one_line(&e));
        return Ok(Outcome::Failed);
    }
    let old = local.unwrap_or_else(|| "0".repeat(commit.len()));
    repo.run([
        "update-ref",
        "-m",
        &format!("troops pull from {}", remote.name),
        "--",
        &branch_ref,
        &commit,
        &old,
    ])
    .with_context(|| format!("deployed {} but cannot move `{branch_ref}`", short(&commit)))?;
    remote.outcome = Outcome::Deployed;
    remote.reason = "deployed".to_owned();
    Ok(Outcome::Deployed)
}

/// Where the last pull's report is kept for `troops status`.
pub fn report_path(node: &Node) -> std::path::PathBuf {
    node.state().join("last-pull.json")
}

fn save(node: &Node, report: &Report) -> Result<()> {
    write_atomically(&report_path(node), &serde_json::to_vec_pretty(report)?)
}

pub fn last(node: &Node) -> Option<Report> {
    serde_json::from_slice(&std::fs::read(report_path(node)).ok()?).ok()
}

/// The last line says what happened; the exit status follows it.
fn finish(node: &Node, report: &Report) -> Result<()> {
    let fetched = report
        .remotes
        .iter()
        .any(|r| !r.reason.starts_with("unreachable"));
    match report.result {
        _ if report.remotes.is_empty() => {
            eprintln!("troops: pull: nothing to do: the node's repository has no remotes");
            Ok(())
        }
        Outcome::Deployed => {
            let remote = report.remotes.iter().find(|r| r.outcome == Outcome::Deployed);
            eprintln!(
                "troops: pull: deployed {} from `{}`",
                report.commit.as_deref().map_or("", short),
                remote.map_or("", |r| r.name.as_str())
            );
            Ok(())
        }
        Outcome::HeldBack => {
            eprintln!("troops: pull: held back by the commit's rollout fraction; nothing deployed");
            Ok(())
        }
        Outcome::Failed if !fetched => Err(UserError::new("pull: no remote could be fetched")
            .hint(format!(
                "check the remotes' URLs and the network; an SSH git server must accept the node's key \
                 `{}.pub`, and an HTTPS one's certificate must be trusted (git's http.sslCAInfo)",
                node.ssh_key().display()
            ))
            .into()),
        Outcome::Failed => Err(UserError::new("pull: the deploy failed; the branch stays, and the next pull retries").into()),
        Outcome::Nothing => {
            eprintln!("troops: pull: nothing new");
            Ok(())
        }
    }
}
