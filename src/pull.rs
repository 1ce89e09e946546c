//! `troops pull`: fetch every remote and deploy what fast-forwards.
//!
//! All remotes are equal (no central server): root's own (`/etc/troops/
//! gitconfig`) and the members' (their repository's configuration, read as
//! data). Each is fetched by URL, in parallel and with a timeout, into root's
//! repository, with fsck on everything that arrives (HTTP remotes go through
//! a scratch repository and a strict re-index, since git's dumb HTTP walker
//! does not fsck). A remote's deploy branch that fast-forwards the node's is
//! a candidate; candidates are verified (signatures, where required) before
//! one is chosen, so a rogue remote is skipped by name and the others still
//! count; the verified candidate that contains all the others is deployed.
//! Root's branch moves only after that deploy succeeded, by compare-and-swap
//! on the value the deploy started from, so a push that landed meanwhile is
//! never overwritten and a failed deploy is retried by the next pull. With
//! nothing new, no lock is taken and no Python runs.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::{Config, Policy};
use crate::engine::{Request, deploy_commit, invoking_user, one_line, source_repo};
use crate::error::UserError;
use crate::git::{Repo, short};
use crate::history::{Entry, Trigger};
use crate::lock::{DeployLock, Wait};
use crate::paths::{self, Node, write_atomically};
use crate::remotes::{self, Remote};
use crate::rollout::{self, Rollout};
use crate::{failpoint, signatures, transfer};

/// Fetch every remote and deploy what fast-forwards the deploy branch
///
/// Fetches the deploy branch of every remote, in parallel, each with a
/// timeout: those in /etc/troops/gitconfig (root's; `troops seed` writes
/// them) and those of the members' repository (`git
/// --git-dir=/var/lib/troops/repo/main.git remote add NAME URL`). A remote
/// whose branch fast-forwards from the node's is deployed, and the node's
/// branch moves only once that deploy succeeded; a failed deploy is retried
/// by the next pull. A diverged, unreachable or refused (unsigned) remote is
/// skipped with a warning naming it; the others still count.
///
/// SSH remotes are fetched with the node's key
/// (/var/lib/troops/ssh/id_ed25519) unless GIT_SSH_COMMAND says otherwise;
/// the system's SSH configuration and known hosts apply, and so do the host
/// keys in /etc/troops/known_hosts.
///
/// Exits 0 when it deployed or had nothing to do, 1 when a deploy failed or
/// no remote could be used. With --json, prints {"result", "commit",
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
    /// Stop the deploy and fail it if it runs longer than SPAN (e.g. 30min)
    ///
    /// Default: the node's `deploy_timeout` in /etc/troops/troops.toml, else
    /// 1h. The next pull tries the commit again.
    #[arg(long, value_name = "SPAN")]
    pub deploy_timeout: Option<String>,
    /// The first pull after seeding, which troops-first-pull.service runs:
    /// its deploy is recorded with the trigger `seed`
    #[arg(long, hide = true)]
    pub first: bool,
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

/// What the pull decided about one remote.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    Unreachable(String),
    NoBranch,
    UpToDate,
    Behind,
    Diverged,
    /// Fast-forwards the node's branch; not yet verified.
    Candidate,
    /// Failed verification (unsigned, untrusted, incomplete).
    Refused(String),
    SameAs(String),
    ContainedIn(String),
    Disagree,
    HeldBack(String),
    BranchMoved,
    DeployFailed(String),
    Deployed,
}

impl Decision {
    fn outcome(&self) -> Outcome {
        match self {
            Decision::Unreachable(_) | Decision::Refused(_) | Decision::DeployFailed(_) => {
                Outcome::Failed
            }
            Decision::HeldBack(_) => Outcome::HeldBack,
            Decision::Deployed => Outcome::Deployed,
            _ => Outcome::Nothing,
        }
    }

    fn reason(&self) -> String {
        match self {
            Decision::Unreachable(why) => format!("unreachable: {why}"),
            Decision::NoBranch => "the remote has no deploy branch".to_owned(),
            Decision::UpToDate => "up to date".to_owned(),
            Decision::Behind => "behind the node".to_owned(),
            Decision::Diverged => "diverged".to_owned(),
            Decision::Candidate => "fast-forward".to_owned(),
            Decision::Refused(why) => format!("refused: {why}"),
            Decision::SameAs(other) => format!("same commit as `{other}`"),
            Decision::ContainedIn(other) => {
                format!("`{other}` has a newer commit that contains it")
            }
            Decision::Disagree => {
                "the remotes disagree (no one commit contains the others)".to_owned()
            }
            Decision::HeldBack(why) => why.clone(),
            Decision::BranchMoved => {
                "the node's branch moved meanwhile and this is no fast-forward".to_owned()
            }
            Decision::DeployFailed(why) => format!("deploy failed: {why}"),
            Decision::Deployed => "deployed".to_owned(),
        }
    }
}

/// One remote as the pull goes along.
struct Fetched {
    remote: Remote,
    commit: Option<String>,
    decision: Decision,
}

pub fn run(node: &Node, args: Args) -> Result<()> {
    let trigger = if args.first {
        Trigger::Seed
    } else {
        Trigger::Pull
    };
    let mut config = Config::load(node)?;
    if let Some(span) = &args.deploy_timeout {
        config.set_deploy_timeout(span)?;
    }
    // Owners and modes are set again before each deploy; a pull with nothing
    // to deploy only needs the directories it writes to exist.
    if !(node.state().is_dir() && node.lib().join("cache").is_dir()) {
        paths::ensure_state(node)?;
    }
    let repo = source_repo(node, None)?;
    let report = pull(node, &config, &repo, &args, trigger)?;
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
    let branch_ref = format!("refs/heads/{branch}");
    let (mut remotes, refs) = fetch_all(node, repo, branch, Duration::from_secs(args.timeout))?;
    failpoint::hit("fetch");
    let local = refs.get(&branch_ref).cloned();
    classify(repo, local.as_deref(), &mut remotes)?;
    verify(node, config, repo, args, &mut remotes)?;
    let commit = match choose(repo, &mut remotes)? {
        Some(index) => {
            deploy_chosen(node, config, repo, args, trigger, &mut remotes[index])?;
            repo.resolve_commit(&branch_ref)?
        }
        None => local,
    };
    Ok(Report {
        result: overall(&remotes),
        commit,
        finished_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        remotes: remotes
            .into_iter()
            .map(|f| RemoteReport {
                url: f.remote.shown_url(),
                name: f.remote.name,
                outcome: f.decision.outcome(),
                commit: f.commit,
                reason: f.decision.reason(),
            })
            .collect(),
    })
}

/// Deployed beats failed beats held back; a pull fails when no remote
/// could be used at all.
fn overall(remotes: &[Fetched]) -> Outcome {
    let has = |o: Outcome| remotes.iter().any(|f| f.decision.outcome() == o);
    if has(Outcome::Deployed) {
        Outcome::Deployed
    } else if remotes
        .iter()
        .any(|f| matches!(f.decision, Decision::DeployFailed(_)))
    {
        Outcome::Failed
    } else if has(Outcome::HeldBack) {
        Outcome::HeldBack
    } else if !remotes.is_empty()
        && remotes
            .iter()
            .all(|f| f.decision.outcome() == Outcome::Failed)
    {
        Outcome::Failed
    } else {
        Outcome::Nothing
    }
}

/// Fetches each remote's deploy branch into root's `refs/remotes/NAME/BRANCH`,
/// all at once; a remote that fails or times out is reported, not fatal.
/// Also returns root's refs afterwards (one read for the whole pull: each
/// git process costs a no-change pull about as much as its own work).
fn fetch_all(
    node: &Node,
    repo: &Repo,
    branch: &str,
    timeout: Duration,
) -> Result<(Vec<Fetched>, Refs)> {
    let remotes = remotes::list(node)?;
    prune_scratch_repos(node, &remotes)?;
    let started: Vec<_> = remotes
        .iter()
        .map(|remote| start_fetch(node, repo, remote, branch))
        .collect();
    let deadline = Instant::now() + timeout;
    // A scratch repository's lock is held until what it fetched is taken in.
    let mut locks = Vec::new();
    let failures: Vec<Option<String>> = started
        .into_iter()
        .map(|started| match started {
            Ok(started) => {
                locks.push(started.scratch_lock);
                started.fetch.wait(deadline).err()
            }
            Err(e) => Some(format!("{e:#}")),
        })
        .collect();
    let mut refs = repo.commit_refs(&["refs/heads/*", "refs/remotes/*"])?;
    forget_removed_remotes(repo, &remotes, &mut refs)?;
    let mut fetched = Vec::new();
    for (remote, failure) in remotes.into_iter().zip(failures) {
        let tracking = tracking_ref(&remote, branch);
        let failure = failure.or_else(|| {
            remote
                .is_http()
                .then(|| take_in_http(node, repo, &remote, &tracking, &mut refs).err())
                .flatten()
                .map(|e| format!("{e:#}"))
        });
        let decision = match failure {
            Some(why) => {
                eprintln!(
                    "troops: warning: cannot fetch `{}` ({}): {why}",
                    remote.name,
                    remote.shown_url()
                );
                Decision::Unreachable(why)
            }
            None => Decision::Candidate,
        };
        fetched.push(Fetched {
            commit: refs.get(&tracking).cloned(),
            remote,
            decision,
        });
    }
    drop(locks);
    Ok((fetched, refs))
}

/// Deletes the tracking refs of remotes that are gone, so that root's
/// repository does not keep (or offer to the next fetch as known) what a
/// former remote served. A remote left out for a while only costs its next
/// fetch a full download.
fn forget_removed_remotes(repo: &Repo, remotes: &[Remote], refs: &mut Refs) -> Result<()> {
    let gone: Vec<String> = refs
        .keys()
        .filter(|name| {
            name.strip_prefix("refs/remotes/")
                .and_then(|rest| rest.split('/').next())
                .is_some_and(|remote| !remotes.iter().any(|r| r.name == remote))
        })
        .cloned()
        .collect();
    if gone.is_empty() {
        return Ok(());
    }
    let input: String = gone.iter().map(|name| format!("delete {name}\n")).collect();
    repo.run_with_input(["update-ref", "--stdin"], input.into_bytes())
        .context("cannot delete the tracking refs of removed remotes")?;
    for name in gone {
        refs.remove(&name);
    }
    Ok(())
}

/// The commits root's branches and tracking refs name, read at once.
type Refs = std::collections::HashMap<String, String>;

/// Where root's repository keeps what `remote`'s deploy branch names.
fn tracking_ref(remote: &Remote, branch: &str) -> String {
    format!("refs/remotes/{}/{branch}", remote.name)
}

/// A fetch under way.
struct Started {
    fetch: remotes::Transfer,
    /// An HTTP remote's scratch repository is one pull's at a time: two
    /// fetches into it (the first-pull unit and the timer's) collide.
    scratch_lock: Option<nix::fcntl::Flock<std::fs::File>>,
}

/// Starts `git fetch URL`.
fn start_fetch(node: &Node, repo: &Repo, remote: &Remote, branch: &str) -> Result<Started> {
    let (target, dest, scratch_lock) = if remote.is_http() {
        // Into the scratch repository; `take_in_http` verifies and copies.
        let lock = scratch_dir(node).join(format!("{}.lock", remote.name));
        let lock = crate::lock::exclusive(&lock)?;
        (
            scratch_repo(node, remote)?,
            format!("refs/heads/{}", remote.name),
            Some(lock),
        )
    } else {
        (repo.clone(), tracking_ref(remote, branch), None)
    };
    let mut cmd = target.command();
    if remote.source == remotes::Source::Members {
        cmd.args(["-c", "protocol.file.allow=never"]);
    }
    cmd.args([
        "fetch",
        "--quiet",
        "--no-tags",
        "--no-write-fetch-head",
        "--no-recurse-submodules",
        "--",
        &remote.url,
    ])
    .arg(format!("+refs/heads/{branch}:{dest}"));
    remotes::use_node_key(node, &mut cmd);
    Ok(Started {
        fetch: remotes::Transfer::start("git fetch", cmd)?,
        scratch_lock,
    })
}

/// Where HTTP remotes are fetched first: one repository each, since two
/// dumb-HTTP fetches of the same pack into one repository (mirrors of one
/// deployment) collide.
fn scratch_dir(node: &Node) -> PathBuf {
    node.lib().join("cache/http-fetch")
}

/// The root-only repository `remote` (an HTTP one) is fetched into first.
/// Remote names are checked to be plain file names (remotes::check_name).
fn scratch_repo(node: &Node, remote: &Remote) -> Result<Repo> {
    Repo::scratch(
        node,
        &scratch_dir(node).join(format!("{}.git", remote.name)),
    )
}

/// Removes the scratch repositories (and locks) of remotes that are gone or
/// no longer HTTP, and makes their directory, root's alone, if missing. A
/// removal that fails is a warning: the next pull tries again.
fn prune_scratch_repos(node: &Node, remotes: &[Remote]) -> Result<()> {
    let dir = scratch_dir(node);
    paths::ensure_dir(&dir, 0o700, nix::unistd::Gid::from_raw(0))?;
    for entry in std::fs::read_dir(&dir)?.filter_map(|e| e.ok()) {
        let name = entry.file_name();
        let kept = remotes.iter().filter(|r| r.is_http()).any(|r| {
            [".git", ".lock"]
                .iter()
                .any(|ext| name.to_str() == Some(&format!("{}{ext}", r.name)))
        });
        let path = entry.path();
        let removed = match (kept, entry.file_type()) {
            (true, _) => Ok(()),
            (false, Ok(t)) if t.is_dir() => std::fs::remove_dir_all(&path),
            (false, _) => std::fs::remove_file(&path),
        };
        if let Err(e) = removed {
            eprintln!("troops: warning: cannot remove `{}`: {e}", path.display());
        }
    }
    Ok(())
}

/// Copies what an HTTP remote served from the scratch repository into root's,
/// re-indexed strictly, then sets root's tracking ref (in `refs` too).
fn take_in_http(
    node: &Node,
    repo: &Repo,
    remote: &Remote,
    tracking: &str,
    refs: &mut Refs,
) -> Result<()> {
    let scratch = scratch_repo(node, remote)?;
    let Some(commit) = scratch.ref_target(&format!("refs/heads/{}", remote.name))? else {
        return Ok(());
    };
    if refs.get(tracking) == Some(&commit) {
        return Ok(());
    }
    let have: Vec<String> = refs
        .values()
        .filter(|id| scratch.resolve_commit(id).ok().flatten().is_some())
        .cloned()
        .collect();
    let mut pack = transfer::pack_objects(&scratch, &commit, &have)?;
    transfer::copy(&mut pack, repo).context("what the remote served does not verify")?;
    transfer::require_complete(repo, &commit)?;
    repo.run(["update-ref", "--", tracking, &commit])?;
    refs.insert(tracking.to_owned(), commit);
    // The scratch copy grows with every new commit; git packs it when due.
    scratch.run(["gc", "--auto", "--quiet"])?;
    Ok(())
}

/// Sorts fetched remotes into candidates (fast-forwards) and the rest.
fn classify(repo: &Repo, local: Option<&str>, remotes: &mut [Fetched]) -> Result<()> {
    for fetched in remotes
        .iter_mut()
        .filter(|f| f.decision == Decision::Candidate)
    {
        let Some(commit) = fetched.commit.as_deref() else {
            fetched.decision = Decision::NoBranch;
            continue;
        };
        fetched.decision = match local {
            Some(local) if local == commit => Decision::UpToDate,
            Some(local) if repo.is_ancestor(commit, local)? => Decision::Behind,
            Some(local) if !repo.is_ancestor(local, commit)? => {
                eprintln!(
                    "troops: warning: `{}` ({}) has diverged from the node's branch: skipped",
                    fetched.remote.name,
                    fetched.remote.shown_url()
                );
                Decision::Diverged
            }
            _ => Decision::Candidate,
        };
    }
    Ok(())
}

/// Checks each candidate as a deploy would before any is chosen; a refused
/// one is skipped by name and recorded once.
fn verify(
    node: &Node,
    config: &Config,
    repo: &Repo,
    args: &Args,
    remotes: &mut [Fetched],
) -> Result<()> {
    if config.signatures == Policy::None {
        return Ok(());
    }
    for fetched in remotes
        .iter_mut()
        .filter(|f| f.decision == Decision::Candidate)
    {
        let commit = fetched.commit.clone().unwrap_or_default();
        let Err(e) = signatures::check(node, config, repo, &commit) else {
            continue;
        };
        let why = one_line(&e);
        eprintln!(
            "troops: warning: skipping `{}` ({}): {why}",
            fetched.remote.name,
            fetched.remote.shown_url()
        );
        record_refusal(node, args, &commit, &fetched.remote.name, &why)?;
        fetched.decision = Decision::Refused(why);
    }
    Ok(())
}

/// A history record for a refused commit, the first time it is refused.
fn record_refusal(node: &Node, args: &Args, commit: &str, remote: &str, why: &str) -> Result<()> {
    let marker = node.refused_dir().join(commit);
    if marker.exists() {
        return Ok(());
    }
    let _lock = DeployLock::acquire(
        node,
        Wait::unless(args.no_wait),
        &format!("pull refusing {}", short(commit)),
    )?;
    let mut entry = Entry::start(node, Trigger::Pull, &invoking_user())?;
    entry.set_commit(commit)?;
    writeln!(
        entry.log,
        "troops: refused {} from `{remote}`: {why}",
        short(commit)
    )?;
    entry.finish(node, &Err(format!("refused from `{remote}`: {why}")))?;
    write_atomically(&marker, format!("{remote}\n").as_bytes())?;
    prune_refusals(node)
}

/// Keeps the markers of the most recent refusals only.
fn prune_refusals(node: &Node) -> Result<()> {
    const KEEP: usize = 100;
    let mut markers: Vec<(std::time::SystemTime, std::path::PathBuf)> =
        std::fs::read_dir(node.refused_dir())?
            .filter_map(|e| e.ok())
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
    markers.sort();
    for (_, path) in markers.iter().rev().skip(KEEP) {
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove `{}`", path.display()))?;
    }
    Ok(())
}

/// Picks the candidate that contains every other one, and says why the
/// others are skipped.
fn choose(repo: &Repo, remotes: &mut [Fetched]) -> Result<Option<usize>> {
    let candidates: Vec<usize> = (0..remotes.len())
        .filter(|&i| remotes[i].decision == Decision::Candidate)
        .collect();
    let mut best: Option<usize> = None;
    for &i in &candidates {
        let commit = remotes[i].commit.clone().unwrap_or_default();
        let mut contains_all = true;
        for &j in &candidates {
            let other = remotes[j].commit.as_deref().unwrap_or_default();
            if !repo.is_ancestor(other, &commit)? {
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
        remotes[j].decision = match best {
            Some(i) if remotes[i].commit == remotes[j].commit => {
                Decision::SameAs(remotes[i].remote.name.clone())
            }
            Some(i) => Decision::ContainedIn(remotes[i].remote.name.clone()),
            None => Decision::Disagree,
        };
        eprintln!(
            "troops: skipping `{}`: {}",
            remotes[j].remote.name,
            remotes[j].decision.reason()
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
    fetched: &mut Fetched,
) -> Result<()> {
    let commit = fetched.commit.clone().unwrap_or_default();
    let name = fetched.remote.name.clone();
    let branch_ref = format!("refs/heads/{}", config.branch());
    if let Some(why) = held_by_rollout(node, config, repo, &commit)? {
        fetched.decision = Decision::HeldBack(why);
        eprintln!(
            "troops: held back {} from `{name}`: {}",
            short(&commit),
            fetched.decision.reason()
        );
        return Ok(());
    }
    paths::ensure_state(node)?;
    let _lock = DeployLock::acquire(
        node,
        Wait::unless(args.no_wait),
        &format!("pull of {} from {name}", short(&commit)),
    )?;
    // A push may have landed while we fetched or waited: re-check under the lock.
    let local = repo.resolve_commit(&branch_ref)?;
    if let Some(local) = &local {
        if local == &commit {
            fetched.decision = Decision::UpToDate;
            return Ok(());
        }
        if !repo.is_ancestor(local, &commit)? {
            fetched.decision = Decision::BranchMoved;
            return Ok(());
        }
    }
    let user = invoking_user();
    let request = Request {
        trigger,
        user: &user,
        dry_run: false,
        drift_file: None,
    };
    if let Err(e) = deploy_commit(node, config, repo, &commit, &request) {
        crate::error::report(&e);
        fetched.decision = Decision::DeployFailed(one_line(&e));
        return Ok(());
    }
    failpoint::hit("ref");
    let old = local.unwrap_or_else(|| "0".repeat(commit.len()));
    repo.run([
        "update-ref",
        "-m",
        &format!("troops pull from {name}"),
        "--",
        &branch_ref,
        &commit,
        &old,
    ])
    .with_context(|| format!("deployed {} but cannot move `{branch_ref}`", short(&commit)))?;
    fetched.decision = Decision::Deployed;
    Ok(())
}

/// Why the commit's rollout (troops.yaml) keeps it from this node for now.
fn held_by_rollout(
    node: &Node,
    config: &Config,
    repo: &Repo,
    commit: &str,
) -> Result<Option<String>> {
    Ok(match rollout::read(repo, commit)? {
        None => None,
        Some(Rollout::Fraction(percent)) => {
            let hostname = rollout::hostname();
            (!rollout::takes(&hostname, percent))
                .then(|| format!("rollout {percent}%: this node ({hostname}) is not in it"))
        }
        Some(Rollout::Waves(waves)) => rollout::held_by_waves(node, config, repo, commit, &waves)?,
    })
}

/// Where the last pull's report is kept for `troops status`.
fn report_path(node: &Node) -> std::path::PathBuf {
    node.state().join("last-pull.json")
}

/// After a power loss it may describe the pull before, which is harmless.
fn save(node: &Node, report: &Report) -> Result<()> {
    paths::save_report(&report_path(node), report)
}

pub fn last(node: &Node) -> Option<Report> {
    paths::load_report(&report_path(node))
}

/// The last line says what happened; the exit status follows it.
fn finish(node: &Node, report: &Report) -> Result<()> {
    let fetched = report
        .remotes
        .iter()
        .any(|r| !r.reason.starts_with("unreachable"));
    match report.result {
        _ if report.remotes.is_empty() => {
            eprintln!("troops: pull: nothing to do: the node has no remotes");
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
            eprintln!("troops: pull: held back by the commit's rollout (see above); nothing deployed");
            Ok(())
        }
        Outcome::Failed if !fetched => Err(UserError::new("pull: no remote could be fetched")
            .hint(format!(
                "check the remotes' URLs and the network; an SSH git server must accept the node's key \
                 `{}.pub` and its host key must be known (/etc/troops/known_hosts), and an HTTPS \
                 one's certificate must be trusted (http.sslCAInfo in /etc/troops/gitconfig)",
                node.ssh_key().display()
            ))
            .into()),
        Outcome::Failed if report.remotes.iter().all(|r| r.outcome == Outcome::Failed && r.reason.starts_with("refused")
            || r.reason.starts_with("unreachable")) => Err(UserError::new(
            "pull: no remote serves a commit this node accepts; nothing deployed",
        )
        .hint("sign the commit with a key in /etc/troops (see the warnings above)")
        .into()),
        Outcome::Failed => Err(UserError::new(
            "pull: the deploy failed; the branch stays, and the next pull retries",
        )
        .into()),
        Outcome::Nothing => {
            eprintln!("troops: pull: nothing new");
            Ok(())
        }
    }
}
