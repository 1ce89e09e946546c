//! `troops push`: roll a commit out to many nodes over SSH, canary first.
//!
//! Each node gets a plain `git push` of the commit to its deploy branch, so
//! its pre-receive hook deploys it and the user's SSH configuration, agents
//! and multiplexing apply. Nodes are pushed in waves: the canary set, then
//! waves that double in size, at most `--parallel` at a time. Once failures
//! pass `--max-failures`, no new node starts. Ctrl-C starts no new node and
//! lets running pushes finish (a second Ctrl-C interrupts them); the summary
//! is printed whatever happened.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::config::Config;
use crate::engine::{resolve, source_repo};
use crate::error::UserError;
use crate::git::short;
use crate::paths::Node;
use crate::roles;

/// The repository path on every node (SPEC "Interfaces").
const NODE_REPO: &str = "/var/lib/troops/repo/main.git";

/// Roll a commit out to many nodes, canary first, then in waves
///
/// Pushes the commit (HEAD of the current repository unless --rev says
/// otherwise) to the deploy branch of each TARGET, `[user@]host` or an SSH
/// alias, at `/var/lib/troops/repo/main.git`; each node deploys it as it
/// would any push. The canary set goes first; if it passes, the rest follow
/// in waves that double in size, at most --parallel at a time. When failures
/// pass --max-failures, no further node is started.
///
/// A live display shows each node's state and its last line of output (plain
/// lines when stderr is not a terminal); full output goes to a log per node.
/// The summary table, or --json, says how each node ended. Exits 0 only when
/// every node succeeded.
///
/// Example: `troops push --canary 1 --parallel 8 web-1 web-2 root@10.0.0.7`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Nodes to push to: `[user@]host` or SSH aliases
    #[arg(value_name = "TARGET")]
    targets: Vec<String>,
    /// Read more targets from FILE, one a line (`#` starts a comment)
    #[arg(long, value_name = "FILE")]
    hosts_file: Option<PathBuf>,
    /// Push to the hosts deploy.py defines for ROLE (define_role)
    #[arg(long, value_name = "ROLE")]
    role: Option<String>,
    /// The user to log in as on hosts that name none
    #[arg(long, value_name = "USER")]
    user: Option<String>,
    /// The deployment repository
    #[arg(long, value_name = "DIR", default_value = ".")]
    repository: PathBuf,
    /// The commit to roll out [default: HEAD]
    #[arg(long, value_name = "REV")]
    rev: Option<String>,
    /// How many nodes go first, as a count or a percentage (`10%`)
    #[arg(long, value_name = "N|P%", default_value = "1")]
    canary: Amount,
    /// How many pushes run at once
    #[arg(long, value_name = "N", default_value_t = 10)]
    parallel: usize,
    /// How many failures are tolerated before no new node starts (count or `P%`)
    #[arg(long, value_name = "N|P%", default_value = "0")]
    max_failures: Amount,
    /// The nodes' deploy branch
    #[arg(long, value_name = "BRANCH", default_value = "master")]
    branch: String,
    /// Replace the nodes' branch even when the commit is not a fast-forward (rollback)
    #[arg(long)]
    force: bool,
    /// Seconds to wait for an SSH connection
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    connect_timeout: u64,
    /// Where the per-node logs go [default: ~/.cache/troops/push/TIME]
    #[arg(long, value_name = "DIR")]
    log_dir: Option<PathBuf>,
    /// Print the summary as JSON on stdout
    #[arg(long)]
    json: bool,
}

/// A count, or a percentage of the nodes.
#[derive(Debug, Clone, Copy)]
pub enum Amount {
    Count(usize),
    Percent(f64),
}

impl std::str::FromStr for Amount {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Amount, String> {
        let bad = || format!("`{text}` is neither a count nor a percentage like `10%`");
        match text.strip_suffix('%') {
            Some(p) => {
                let p: f64 = p.trim().parse().map_err(|_| bad())?;
                if !(0.0..=100.0).contains(&p) {
                    return Err(bad());
                }
                Ok(Amount::Percent(p))
            }
            None => text.trim().parse().map(Amount::Count).map_err(|_| bad()),
        }
    }
}

impl Amount {
    /// The amount out of `total` nodes; a percentage rounds up.
    fn of(self, total: usize) -> usize {
        match self {
            Amount::Count(n) => n,
            Amount::Percent(p) => (p / 100.0 * total as f64).ceil() as usize,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Outcome {
    Success,
    Failure,
    Skipped,
    Interrupted,
}

#[derive(Debug, Clone, Serialize)]
struct HostReport {
    host: String,
    result: Outcome,
    duration_ms: u64,
    commit: String,
    reason: Option<String>,
    log: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Summary {
    commit: String,
    /// `success` only when every host succeeded.
    result: Outcome,
    hosts: Vec<HostReport>,
}

pub fn run(node: &Node, args: Args) -> Result<()> {
    let repo = source_repo(node, Some(&args.repository))?;
    let config = Config::load(node)?;
    let commit = resolve(&repo, &config, args.rev.as_deref())?;
    crate::config::validate_branch(&args.branch).map_err(UserError::new)?;
    let targets = targets(node, &args)?;
    let log_dir = log_dir(args.log_dir.as_deref())?;
    let interrupts = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&interrupts);
    ctrlc::set_handler(move || {
        counter.fetch_add(1, Ordering::SeqCst);
    })
    .context("cannot handle Ctrl-C")?;
    let rollout = Rollout {
        args: &args,
        commit: &commit,
        log_dir: &log_dir,
        interrupts,
        display: Display::new(),
    };
    let hosts = rollout.run(&targets);
    let failed = hosts.iter().any(|h| h.result != Outcome::Success);
    let summary = Summary {
        commit: commit.clone(),
        result: if failed {
            Outcome::Failure
        } else {
            Outcome::Success
        },
        hosts,
    };
    print_summary(&summary, args.json)?;
    if failed {
        return Err(UserError::new(format!(
            "the rollout of {} did not succeed everywhere; logs are in `{}`",
            short(&commit),
            log_dir.display()
        ))
        .into());
    }
    Ok(())
}

/// The targets from the command line, the hosts file and the role.
fn targets(node: &Node, args: &Args) -> Result<Vec<String>> {
    let mut targets = args.targets.clone();
    if let Some(file) = &args.hosts_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the hosts file `{}`", file.display()))?;
        targets.extend(
            text.lines()
                .map(|l| l.split('#').next().unwrap_or("").trim())
                .filter(|l| !l.is_empty())
                .map(str::to_owned),
        );
    }
    if let Some(role) = &args.role {
        let hosts = roles::hosts_of(node, &args.repository, args.rev.as_deref(), role)?;
        if hosts.is_empty() {
            return Err(user_error!(
                "deploy.py defines no hosts for the role `{role}`"
            ));
        }
        targets.extend(hosts);
    }
    if let Some(user) = &args.user {
        for target in targets.iter_mut().filter(|t| !t.contains('@')) {
            *target = format!("{user}@{target}");
        }
    }
    let mut seen = std::collections::HashSet::new();
    targets.retain(|t| seen.insert(t.clone()));
    for target in &targets {
        if target.starts_with('-') || target.contains(':') || target.contains(char::is_whitespace) {
            return Err(user_error!(
                "`{target}` is not a target: give `[user@]host` or an SSH alias"
            ));
        }
    }
    if targets.is_empty() {
        return Err(UserError::new("no targets to push to")
            .hint("name hosts, or use --hosts-file FILE or --role ROLE")
            .into());
    }
    Ok(targets)
}

fn log_dir(given: Option<&Path>) -> Result<PathBuf> {
    let dir = match given {
        Some(dir) => dir.to_path_buf(),
        None => {
            let base = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .context("cannot find a cache directory: set HOME, or pass --log-dir")?;
            let stamp = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis();
            base.join("troops/push").join(stamp.to_string())
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    Ok(dir)
}

struct Rollout<'a> {
    args: &'a Args,
    commit: &'a str,
    log_dir: &'a Path,
    interrupts: Arc<AtomicUsize>,
    display: Display,
}

impl Rollout<'_> {
    /// Pushes wave after wave until done, halted or interrupted.
    fn run(&self, targets: &[String]) -> Vec<HostReport> {
        let total = targets.len();
        let threshold = self.args.max_failures.of(total);
        let mut reports: Vec<HostReport> = Vec::new();
        let mut next = 0;
        let mut wave = self.args.canary.of(total).clamp(1, total);
        let mut halted: Option<String> = None;
        while next < total && halted.is_none() {
            let end = (next + wave).min(total);
            self.display.event(&format!(
                "wave of {} node(s){}",
                end - next,
                if next == 0 { " (canary)" } else { "" }
            ));
            reports.extend(self.push_wave(&targets[next..end], threshold, failures(&reports)));
            next = end;
            wave *= 2;
            halted = self.halt_reason(failures(&reports), threshold);
        }
        let reason = halted.unwrap_or_else(|| "not started".to_owned());
        for host in &targets[next..] {
            reports.push(self.skipped(host, &reason));
        }
        // Hosts a halted wave never started come back as skipped already.
        self.display.finish();
        reports
    }

    fn halt_reason(&self, failures: usize, threshold: usize) -> Option<String> {
        if self.interrupts.load(Ordering::SeqCst) > 0 {
            Some("interrupted before it started".to_owned())
        } else if failures > threshold {
            Some(format!(
                "halted: {failures} failure(s), more than the {threshold} allowed"
            ))
        } else {
            None
        }
    }

    /// Pushes to `hosts`, `--parallel` at a time, starting none once halted.
    fn push_wave(
        &self,
        hosts: &[String],
        threshold: usize,
        failed_before: usize,
    ) -> Vec<HostReport> {
        let queue = Mutex::new(hosts.iter());
        let results = Mutex::new(Vec::new());
        let failed = AtomicUsize::new(failed_before);
        std::thread::scope(|scope| {
            for _ in 0..self.args.parallel.max(1).min(hosts.len()) {
                scope.spawn(|| {
                    loop {
                        let Some(host) = queue.lock().unwrap().next() else {
                            break;
                        };
                        let report =
                            match self.halt_reason(failed.load(Ordering::SeqCst), threshold) {
                                Some(reason) => self.skipped(host, &reason),
                                None => self.push_one(host),
                            };
                        if report.result != Outcome::Success {
                            failed.fetch_add(
                                usize::from(report.result != Outcome::Skipped),
                                Ordering::SeqCst,
                            );
                        }
                        results.lock().unwrap().push(report);
                    }
                });
            }
        });
        let mut results = results.into_inner().unwrap();
        results.sort_by_key(|r| hosts.iter().position(|h| *h == r.host));
        results
    }

    fn skipped(&self, host: &str, reason: &str) -> HostReport {
        HostReport {
            host: host.to_owned(),
            result: Outcome::Skipped,
            duration_ms: 0,
            commit: self.commit.to_owned(),
            reason: Some(reason.to_owned()),
            log: None,
        }
    }

    /// One `git push` of the commit to `host`'s deploy branch.
    fn push_one(&self, host: &str) -> HostReport {
        let started = Instant::now();
        let log = self.log_dir.join(format!("{}.log", host.replace('/', "_")));
        let bar = self.display.host(host);
        let outcome = self.run_push(host, &log, &bar);
        let duration_ms = started.elapsed().as_millis() as u64;
        let (result, reason) = match outcome {
            Ok(()) => (Outcome::Success, None),
            Err(e) if self.interrupts.load(Ordering::SeqCst) > 1 => {
                (Outcome::Interrupted, Some(format!("{e:#}")))
            }
            Err(e) => (Outcome::Failure, Some(format!("{e:#}"))),
        };
        self.display
            .done(&bar, host, result, duration_ms, reason.as_deref());
        HostReport {
            host: host.to_owned(),
            result,
            duration_ms,
            commit: self.commit.to_owned(),
            reason,
            log: Some(log),
        }
    }

    fn run_push(&self, host: &str, log_path: &Path, bar: &ProgressBar) -> Result<()> {
        let mut log = std::fs::File::create(log_path)
            .with_context(|| format!("cannot create `{}`", log_path.display()))?;
        let mut cmd = Command::new("git");
        cmd.arg("-C")
            .arg(&self.args.repository)
            .args(["push", "--porcelain"])
            .args(self.args.force.then_some("--force"))
            .arg("--")
            .arg(format!("{host}:{NODE_REPO}"))
            .arg(format!("{}:refs/heads/{}", self.commit, self.args.branch))
            .env("GIT_SSH_COMMAND", ssh_command(self.args.connect_timeout))
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        own_process_group(&mut cmd);
        let mut child = cmd.spawn().context("cannot run git push")?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take().context("no stderr")?;
        let mut why = Why::default();
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap_or_default();
            let _ = writeln!(log, "{line}");
            why.read(&line);
            let shown = line.trim_start_matches("remote:").trim();
            if !shown.is_empty() {
                bar.set_message(shown.to_owned());
            }
            if self.interrupts.load(Ordering::SeqCst) > 1 {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(child.id() as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        if let Some(out) = stdout {
            for line in BufReader::new(out).lines() {
                let _ = writeln!(log, "{}", line.unwrap_or_default());
            }
        }
        let status = child.wait().context("cannot wait for git push")?;
        if self.interrupts.load(Ordering::SeqCst) > 1 && !status.success() {
            bail!("interrupted");
        }
        if !status.success() {
            bail!(
                why.reason()
                    .unwrap_or_else(|| format!("git push {}", crate::stream::explain(status)))
            );
        }
        Ok(())
    }
}

/// Picks the line that explains a failed push out of git's and ssh's output:
/// the node's own error (`troops`' error and its last cause), else the first
/// line of ssh or git that is not boilerplate.
#[derive(Default)]
struct Why {
    remote_error: Option<String>,
    remote_cause: Option<String>,
    local: Option<String>,
}

impl Why {
    fn read(&mut self, line: &str) {
        if let Some(remote) = line.strip_prefix("remote:") {
            let remote = remote.trim();
            if let Some(error) = remote.strip_prefix("error:") {
                self.remote_error
                    .get_or_insert_with(|| error.trim().to_owned());
            } else if let Some(cause) = remote.strip_prefix("Caused by:") {
                self.remote_cause = Some(cause.trim().to_owned());
            }
            return;
        }
        const BOILERPLATE: &[&str] = &[
            "fatal: Could not read",
            "Please make sure",
            "and the repository",
            "error: failed to push",
            "To ",
            " ! ",
            "hint:",
        ];
        let line = line.trim_end();
        if !line.trim().is_empty() && !BOILERPLATE.iter().any(|b| line.starts_with(b)) {
            self.local.get_or_insert_with(|| line.trim().to_owned());
        }
    }

    fn reason(self) -> Option<String> {
        match (self.remote_error, self.remote_cause) {
            (Some(error), Some(cause)) => Some(format!("{error}: {cause}")),
            (Some(error), None) => Some(error),
            (None, _) => self.local,
        }
    }
}

fn failures(reports: &[HostReport]) -> usize {
    reports
        .iter()
        .filter(|r| matches!(r.result, Outcome::Failure | Outcome::Interrupted))
        .count()
}

/// The user's ssh command (GIT_SSH_COMMAND or `ssh`) with a connect timeout.
fn ssh_command(timeout: u64) -> String {
    let base = std::env::var("GIT_SSH_COMMAND").unwrap_or_else(|_| "ssh".to_owned());
    format!("{base} -o ConnectTimeout={timeout} -o BatchMode=yes")
}

/// A terminal's Ctrl-C must not reach running pushes: we decide their fate.
fn own_process_group(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
}

/// Live per-host progress on a terminal, plain event lines otherwise.
struct Display {
    bars: Option<MultiProgress>,
}

impl Display {
    fn new() -> Display {
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
        Display {
            bars: terminal.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
        }
    }

    fn event(&self, line: &str) {
        match &self.bars {
            Some(bars) => {
                let _ = bars.println(format!("troops: {line}"));
            }
            None => eprintln!("troops: {line}"),
        }
    }

    fn host(&self, host: &str) -> ProgressBar {
        let Some(bars) = &self.bars else {
            eprintln!("troops: {host}: pushing");
            return ProgressBar::hidden();
        };
        let style =
            ProgressStyle::with_template("{spinner} {prefix:.bold} {elapsed:>4} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let bar = bars.add(
            ProgressBar::new_spinner()
                .with_style(style)
                .with_prefix(host.to_owned()),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    }

    fn done(&self, bar: &ProgressBar, host: &str, result: Outcome, ms: u64, reason: Option<&str>) {
        let word = serde_json::to_value(result)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let line = match reason {
            Some(reason) => format!("{host}: {word} after {:.1}s: {reason}", ms as f64 / 1000.0),
            None => format!("{host}: {word} in {:.1}s", ms as f64 / 1000.0),
        };
        bar.finish_and_clear();
        self.event(&line);
    }

    fn finish(&self) {
        if let Some(bars) = &self.bars {
            let _ = bars.clear();
        }
    }
}

fn print_summary(summary: &Summary, json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, summary)?;
        writeln!(out)?;
        return Ok(());
    }
    let width = summary
        .hosts
        .iter()
        .map(|h| h.host.len())
        .max()
        .unwrap_or(4)
        .max(4);
    writeln!(
        out,
        "{:<width$}  {:<11}  {:>8}  {:<12}  REASON",
        "HOST", "RESULT", "TIME", "COMMIT"
    )?;
    for h in &summary.hosts {
        let word = serde_json::to_value(h.result)?;
        writeln!(
            out,
            "{:<width$}  {:<11}  {:>7.1}s  {:<12}  {}",
            h.host,
            word.as_str().unwrap_or(""),
            h.duration_ms as f64 / 1000.0,
            short(&h.commit),
            h.reason.as_deref().unwrap_or("")
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts() {
        assert_eq!("3".parse::<Amount>().unwrap().of(10), 3);
        assert_eq!("25%".parse::<Amount>().unwrap().of(10), 3);
        assert_eq!("0%".parse::<Amount>().unwrap().of(10), 0);
        assert!("150%".parse::<Amount>().is_err());
        assert!("x".parse::<Amount>().is_err());
    }
}
