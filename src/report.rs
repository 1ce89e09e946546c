//! Status reports through git: each node pushes what it runs and how its
//! last deploy, pull and check went to `refs/troops/status/HOSTNAME` on its
//! report remote, as a one-file commit signed with the node's SSH key.
//!
//! A report is pushed when what it says changed, or once a heartbeat has
//! passed; otherwise nothing is sent. Each report is a commit without
//! parents, force-pushed: the remote keeps the latest report of each node,
//! a few hundred bytes. Readers (`troops fleet`, a node deciding a canary
//! wave) trust a report only when its commit is signed by the key that the
//! deployment's `nodes.allowed_signers` gives the ref's hostname, and the
//! report names that hostname too: anyone who may push to the remote can
//! write a ref, but not sign as a node.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::config::{Config, ReportRemote};
use crate::git::{self, Repo};
use crate::history::Record;
use crate::paths::{self, Node};
use crate::pull::Outcome;
use crate::status::Snapshot;
use crate::{check, remotes, rollout};

/// Where each node's latest report lives on the report remote.
pub const REF_PREFIX: &str = "refs/troops/status/";
/// The one file of a report commit.
const FILE: &str = "status.json";
/// The file of the deployment repository that names the nodes and their keys.
pub const KEYS_FILE: &str = "nodes.allowed_signers";
/// Reports larger than this are not read.
const MAX_REPORT: u64 = 64 * 1024;
/// Reasons are cut to this many characters, to keep reports small.
const MAX_REASON: usize = 300;
/// How long a report's push may take.
const PUSH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long reading the reports may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest heartbeat a report may claim.
const MAX_HEARTBEAT: Duration = Duration::from_secs(366 * 24 * 3600);
/// A node that missed this many heartbeats is stale.
pub const STALE_HEARTBEATS: u32 = 3;

/// What a node says about itself; a report is sent when this changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    pub hostname: String,
    /// What root's deploy branch runs, and since when.
    pub deployed: Option<Deployed>,
    /// The last deploy, successful or not.
    pub last_deploy: Option<LastDeploy>,
    /// How the last pull went.
    pub pull: Option<PullState>,
    /// The commit the last pull held back, and why.
    pub held_back: Option<HeldBack>,
    /// The last `troops check`.
    pub check: Option<CheckSummary>,
}

/// A pull's outcome as far as the fleet cares: whether it deployed or had
/// nothing to do is no news (the deployed commit says it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PullState {
    Ok,
    HeldBack,
    Failed,
}

impl From<Outcome> for PullState {
    fn from(outcome: Outcome) -> PullState {
        match outcome {
            Outcome::Deployed | Outcome::Nothing => PullState::Ok,
            Outcome::HeldBack => PullState::HeldBack,
            Outcome::Failed => PullState::Failed,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployed {
    pub commit: String,
    /// When the deploy of that commit finished (RFC 3339).
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastDeploy {
    pub commit: Option<String>,
    /// `success` or `failure`.
    pub result: String,
    pub trigger: String,
    pub finished_at: String,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldBack {
    pub commit: Option<String>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckSummary {
    /// `clean`, `drift` or `failed`.
    pub result: check::Outcome,
    pub commit: Option<String>,
    pub changes: usize,
}

/// A report as pushed: the facts, when, and how often to expect the next.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub version: u32,
    #[serde(flatten)]
    pub facts: Facts,
    pub reported_at: String,
    pub heartbeat_seconds: u64,
}

/// What was last pushed, in `state/report-sent.json`.
#[derive(Debug, Serialize, Deserialize)]
struct Sent {
    url: String,
    facts: Facts,
    /// Seconds since the epoch.
    at: u64,
}

/// Pushes the node's report if it is due; a failure is a warning, and the
/// next run tries again.
pub fn update(node: &Node, state: &Snapshot) {
    // A configuration that does not load was reported by the command itself.
    let Ok(Config {
        report: Some(remote),
        ..
    }) = Config::load(node)
    else {
        return;
    };
    if let Err(e) = send_if_due(node, &remote, state) {
        eprintln!(
            "troops: warning: cannot push the status report to `{}`: {e:#}",
            remotes::redact(&remote.url)
        );
    }
}

/// The last report this node pushed: where and when (`troops status`).
#[derive(Debug, Serialize)]
pub struct LastSent {
    pub url: String,
    pub sent_at: String,
}

pub fn last_sent(node: &Node) -> Option<LastSent> {
    let sent: Sent = paths::load_report(&sent_path(node))?;
    Some(LastSent {
        url: remotes::redact(&sent.url),
        sent_at: humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(sent.at))
            .to_string(),
    })
}

fn sent_path(node: &Node) -> std::path::PathBuf {
    node.state().join("report-sent.json")
}

fn send_if_due(node: &Node, remote: &ReportRemote, state: &Snapshot) -> Result<()> {
    let facts = gather(node, state);
    let sent_path = sent_path(node);
    let now = SystemTime::now();
    let seconds = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let heartbeat = remote.heartbeat();
    if let Some(sent) = paths::load_report::<Sent>(&sent_path) {
        let beat_due = seconds.saturating_sub(sent.at) >= heartbeat.as_secs();
        if sent.url == remote.url && sent.facts == facts && !beat_due {
            return Ok(());
        }
    }
    check_hostname(&facts.hostname)?;
    let report = Report {
        version: 1,
        facts: facts.clone(),
        reported_at: humantime::format_rfc3339_seconds(now).to_string(),
        heartbeat_seconds: heartbeat.as_secs(),
    };
    push(node, &remote.url, &report)?;
    let sent = Sent {
        url: remote.url.clone(),
        facts,
        at: seconds,
    };
    paths::save_report(&sent_path, &sent)
}

/// The node's facts, from its history, last pull and last check.
fn gather(node: &Node, state: &Snapshot) -> Facts {
    let deployed = state.deployed.as_ref().map(|commit| Deployed {
        commit: commit.clone(),
        at: std::fs::metadata(node.deployed_file())
            .and_then(|m| m.modified())
            .map(|t| humantime::format_rfc3339_seconds(t).to_string())
            .unwrap_or_default(),
    });
    let last_deploy = state
        .latest
        .as_ref()
        .filter(|r| r.result != "running")
        .map(last_deploy);
    let held_back = state
        .pull
        .as_ref()
        .filter(|p| p.result == Outcome::HeldBack)
        .and_then(|p| p.remotes.iter().find(|r| r.outcome == Outcome::HeldBack))
        .map(|r| HeldBack {
            commit: r.commit.clone(),
            reason: cut(&r.reason),
        });
    let check = state.check.as_ref().map(|c| CheckSummary {
        result: c.result,
        commit: c.commit.clone(),
        changes: c.changes.len(),
    });
    Facts {
        hostname: rollout::hostname(),
        deployed,
        last_deploy,
        pull: state.pull.as_ref().map(|p| p.result.into()),
        held_back,
        check,
    }
}

fn last_deploy(record: &Record) -> LastDeploy {
    let finished = humantime::parse_rfc3339(&record.started_at)
        .map(|t| t + Duration::from_millis(record.duration_ms))
        .map(|t| humantime::format_rfc3339_seconds(t).to_string())
        .unwrap_or_default();
    LastDeploy {
        commit: record.commit.clone(),
        result: record.result.clone(),
        trigger: record.trigger.as_str().to_owned(),
        finished_at: finished,
        reason: record.reason.as_deref().map(cut),
    }
}

/// A reason as reports carry it: short, and without control characters,
/// which readers refuse.
fn cut(text: &str) -> String {
    text.chars()
        .take(MAX_REASON)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// A hostname that can be a ref's last component and a principal in an
/// allowed-signers file: letters, digits, `-`, `_` and inner dots.
pub fn check_hostname(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && !name.starts_with(['.', '-'])
        && !name.ends_with('.')
        && !name.contains("..")
        && !name.ends_with(".lock")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        bail!(
            "the hostname `{}` cannot name a report (letters, digits, `-`, `_` and dots only)",
            name.escape_debug()
        );
    }
    Ok(())
}

/// Commits the report, signed with the node's key, and force-pushes it.
fn push(node: &Node, url: &str, report: &Report) -> Result<()> {
    let repo = outbox(node)?;
    let json = serde_json::to_vec_pretty(report)?;
    let blob = repo.run_with_input(["hash-object", "-w", "--stdin"], json)?;
    let blob = String::from_utf8_lossy(&blob).trim().to_owned();
    let tree = repo.run_with_input(
        ["mktree"],
        format!("100644 blob {blob}\t{FILE}\n").into_bytes(),
    )?;
    let tree = String::from_utf8_lossy(&tree).trim().to_owned();
    let hostname = &report.facts.hostname;
    let mut cmd = repo.command();
    let who = format!("troops on {hostname}");
    let email = format!("troops@{hostname}");
    cmd.args(["-c", "gpg.format=ssh", "-c", "gpg.ssh.program=ssh-keygen"])
        .arg("-c")
        .arg(format!("user.signingKey={}", node.ssh_key().display()))
        .env("GIT_AUTHOR_NAME", &who)
        .env("GIT_AUTHOR_EMAIL", &email)
        .env("GIT_COMMITTER_NAME", &who)
        .env("GIT_COMMITTER_EMAIL", &email)
        .args(["commit-tree", "-S", "-m"])
        .arg(format!("status of {hostname}"))
        .arg(&tree);
    let out = git::output(&mut cmd).context("cannot sign the report with the node's key")?;
    let commit = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    // Kept by a ref until the next report, so that gc leaves it alone.
    repo.run(["update-ref", "refs/report", &commit])?;
    let mut cmd = repo.command();
    cmd.args(["push", "--force", "--quiet", "--", url])
        .arg(format!("{commit}:{REF_PREFIX}{hostname}"));
    remotes::use_node_key(node, &mut cmd);
    remotes::Transfer::start("git push", cmd)?
        .wait(Instant::now() + PUSH_TIMEOUT)
        .map_err(anyhow::Error::msg)?;
    repo.run(["gc", "--auto", "--quiet"])?;
    Ok(())
}

/// Root's repository where reports are made before they are pushed.
fn outbox(node: &Node) -> Result<Repo> {
    scratch(node, "report.git")
}

/// A root-only bare repository under the node's cache, made if missing.
fn scratch(node: &Node, name: &str) -> Result<Repo> {
    Repo::scratch(node, &node.lib().join("cache").join(name))
}

/// Fetches every report from the node's report remote into a root-only
/// repository (the objects are verified like any remote's), removing the
/// reports the remote no longer has, and reads them against `keys`. Under a
/// lock, so that two pulls do not fetch into it at once.
pub fn fetch_and_read(
    node: &Node,
    url: &str,
    keys: &Path,
    hostnames: &[String],
) -> Result<Vec<Received>> {
    let _lock = crate::lock::exclusive(&node.lib().join("cache/reports.lock"))?;
    let repo = scratch(node, "reports.git")?;
    let mut cmd = fetch_command(&repo, url);
    remotes::use_node_key(node, &mut cmd);
    remotes::Transfer::start("git fetch", cmd)?
        .wait(Instant::now() + FETCH_TIMEOUT)
        .map_err(anyhow::Error::msg)?;
    // Only the reports asked for are checked: a remote may serve any number.
    let mut received = read_all(&repo, Some(keys), Some(hostnames))?;
    drop_replays(node, &mut received)?;
    Ok(received)
}

/// Makes a report older than one this node has already seen from the same
/// node count for nothing: whoever may push to the report remote can put an
/// old signed report back. The newest `reported_at` seen of each node is
/// kept in `cache/reports-seen.json`.
fn drop_replays(node: &Node, received: &mut [Received]) -> Result<()> {
    let path = node.lib().join("cache/reports-seen.json");
    let mut seen: std::collections::BTreeMap<String, String> =
        paths::load_report(&path).unwrap_or_default();
    for r in received.iter_mut() {
        let Some(at) = r.trusted().map(|report| report.reported_at.clone()) else {
            continue;
        };
        // A time that does not parse is stale for the readers anyway.
        let Ok(this) = humantime::parse_rfc3339(&at) else {
            continue;
        };
        let newest = seen
            .get(&r.hostname)
            .and_then(|t| humantime::parse_rfc3339(t).ok());
        match newest {
            Some(newest) if this < newest => {
                r.verified = Err(format!(
                    "older than the report of {} this node has seen: replayed",
                    humantime::format_rfc3339_seconds(newest)
                ));
            }
            _ => {
                seen.insert(r.hostname.clone(), at);
            }
        }
    }
    paths::save_report(&path, &seen)
}

/// `git fetch` of every report `url` has into `repo`, dropping the ones it
/// no longer has.
pub fn fetch_command(repo: &Repo, url: &str) -> Command {
    let mut cmd = repo.command();
    cmd.args([
        "fetch",
        "--quiet",
        "--prune",
        "--no-tags",
        "--no-write-fetch-head",
        "--no-recurse-submodules",
        "--",
        url,
    ])
    .arg(format!("+{REF_PREFIX}*:{REF_PREFIX}*"));
    cmd
}

/// One node's report as a reader found it.
#[derive(Debug)]
pub struct Received {
    /// The hostname the ref names.
    pub hostname: String,
    /// The report, if it could be read.
    pub report: std::result::Result<Report, String>,
    /// Whether the node's key signed it, or why it counts for nothing.
    pub verified: std::result::Result<(), String>,
}

impl Received {
    /// The report, if it is verified.
    pub fn trusted(&self) -> Option<&Report> {
        match (&self.report, &self.verified) {
            (Ok(report), Ok(())) => Some(report),
            _ => None,
        }
    }
}

/// Every report under `refs/troops/status/` in `repo` (or those of `only`),
/// checked against `keys` (an allowed-signers file naming each node by
/// hostname; without one, nothing verifies).
pub fn read_all(
    repo: &Repo,
    keys: Option<&Path>,
    only: Option<&[String]>,
) -> Result<Vec<Received>> {
    let listing = repo.run([
        "for-each-ref",
        "--format=%(refname) %(objectname) %(objecttype)",
        REF_PREFIX,
    ])?;
    let mut found = Vec::new();
    for line in listing.lines() {
        let mut fields = line.split(' ');
        let (Some(name), Some(id), Some(kind)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let hostname = name.trim_start_matches(REF_PREFIX).to_owned();
        if only.is_some_and(|wanted| !wanted.contains(&hostname)) {
            continue;
        }
        found.push((hostname, id.to_owned(), kind == "commit"));
    }
    let commits: Vec<&str> = found
        .iter()
        .filter(|(hostname, _, commit)| *commit && check_hostname(hostname).is_ok())
        .map(|(_, id, _)| id.as_str())
        .collect();
    let signers = match keys {
        Some(keys) => signers(repo, keys, &commits)?,
        None => Default::default(),
    };
    let mut contents = contents(repo, &commits)?;
    Ok(found
        .into_iter()
        .map(|(hostname, id, is_commit)| {
            let report = if !is_commit {
                Err("the ref does not name a commit".to_owned())
            } else if let Err(e) = check_hostname(&hostname) {
                Err(e.to_string())
            } else {
                parse(contents.remove(&id), &hostname)
            };
            let verified = match (keys, signers.get(&id)) {
                _ if !is_commit => Err("not a commit".to_owned()),
                (None, _) => Err(format!("no {KEYS_FILE} to check it against")),
                (Some(_), Some(Signer::Good(who))) if who.eq_ignore_ascii_case(&hostname) => Ok(()),
                (Some(_), Some(Signer::Good(who))) => Err(format!("signed by {who}'s key")),
                (Some(_), Some(Signer::Not(why))) => Err(why.clone()),
                (Some(_), None) => Err("not checked".to_owned()),
            };
            Received {
                hostname,
                report,
                verified,
            }
        })
        .collect())
}

/// What `git log` said of a commit's signature.
#[derive(Debug)]
enum Signer {
    /// A good signature by a key whose principal is this.
    Good(String),
    Not(String),
}

/// Checks every commit's signature in one git process. Only SSH signatures
/// count: the other formats' programs are pinned to `false`.
fn signers(
    repo: &Repo,
    keys: &Path,
    commits: &[&str],
) -> Result<std::collections::HashMap<String, Signer>> {
    let mut verdicts = std::collections::HashMap::new();
    if commits.is_empty() {
        return Ok(verdicts);
    }
    let mut args: Vec<String> = [
        "-c",
        "gpg.program=/bin/false",
        "-c",
        "gpg.x509.program=/bin/false",
        "-c",
        "gpg.ssh.program=ssh-keygen",
        "-c",
    ]
    .map(String::from)
    .to_vec();
    args.push(format!("gpg.ssh.allowedSignersFile={}", keys.display()));
    args.extend(
        [
            "log",
            "-z",
            "--no-walk=unsorted",
            "--stdin",
            "--format=%H %G? %GS",
        ]
        .map(String::from),
    );
    let input: String = commits.iter().map(|c| format!("{c}\n")).collect();
    let out = repo.run_with_input(&args, input.into_bytes())?;
    for record in String::from_utf8_lossy(&out).split('\0') {
        let mut fields = record.trim().splitn(3, ' ');
        let (Some(id), Some(status)) = (fields.next(), fields.next()) else {
            continue;
        };
        let principal = fields.next().unwrap_or_default().to_owned();
        let verdict = match status {
            "G" => Signer::Good(principal),
            "N" => Signer::Not("not signed".to_owned()),
            "B" => Signer::Not("bad signature".to_owned()),
            _ => Signer::Not("signed by a key the deployment does not list".to_owned()),
        };
        verdicts.insert(id.to_owned(), verdict);
    }
    Ok(verdicts)
}

/// Each commit's report file, when it is a blob no larger than `MAX_REPORT`.
fn contents(repo: &Repo, commits: &[&str]) -> Result<std::collections::HashMap<String, Vec<u8>>> {
    let mut found = std::collections::HashMap::new();
    if commits.is_empty() {
        return Ok(found);
    }
    let input: String = commits.iter().map(|c| format!("{c}:{FILE}\n")).collect();
    let sizes = repo.run_with_input(
        [
            "cat-file",
            "--batch-check=%(objectname) %(objecttype) %(objectsize)",
        ],
        input.into_bytes(),
    )?;
    let mut wanted = Vec::new();
    for (commit, line) in commits.iter().zip(String::from_utf8_lossy(&sizes).lines()) {
        let fields: Vec<&str> = line.split(' ').collect();
        if let [blob, "blob", size] = fields[..]
            && size.parse::<u64>().is_ok_and(|s| s <= MAX_REPORT)
        {
            wanted.push((commit.to_string(), blob.to_owned()));
        }
    }
    if wanted.is_empty() {
        return Ok(found);
    }
    let input: String = wanted.iter().map(|(_, blob)| format!("{blob}\n")).collect();
    let out = repo.run_with_input(["cat-file", "--batch"], input.into_bytes())?;
    let mut rest = &out[..];
    for (commit, blob) in wanted {
        // Each answer is `ID blob SIZE`, the content and a newline; anything
        // else (an object gone meanwhile) ends the reading.
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            break;
        };
        let header = String::from_utf8_lossy(&rest[..end]).into_owned();
        let size = match header.split(' ').collect::<Vec<_>>()[..] {
            [id, "blob", size] if id == blob => size.parse::<usize>().ok(),
            _ => None,
        };
        let Some(size) = size.filter(|&s| rest.len() >= end + 2 + s) else {
            break;
        };
        found.insert(commit, rest[end + 1..end + 1 + size].to_vec());
        rest = &rest[end + 2 + size..];
    }
    Ok(found)
}

/// A report's JSON, which must name the host its ref names.
fn parse(data: Option<Vec<u8>>, hostname: &str) -> std::result::Result<Report, String> {
    let data = data.ok_or_else(|| format!("no {FILE} of at most {MAX_REPORT} bytes"))?;
    let value: serde_json::Value =
        serde_json::from_slice(&data).map_err(|e| format!("unreadable {FILE}: {e}"))?;
    // Reports are shown on terminals: no escape sequences.
    if has_control_characters(&value) {
        return Err(format!("{FILE} holds control characters"));
    }
    let report: Report =
        serde_json::from_value(value).map_err(|e| format!("unreadable {FILE}: {e}"))?;
    let commits = [
        report.facts.deployed.as_ref().map(|d| d.commit.as_str()),
        report
            .facts
            .last_deploy
            .as_ref()
            .and_then(|d| d.commit.as_deref()),
        report
            .facts
            .held_back
            .as_ref()
            .and_then(|h| h.commit.as_deref()),
        report
            .facts
            .check
            .as_ref()
            .and_then(|c| c.commit.as_deref()),
    ];
    if commits.into_iter().flatten().any(|c| !git::is_object_id(c)) {
        return Err(format!("{FILE} names a commit that is no object id"));
    }
    if report.heartbeat_seconds > MAX_HEARTBEAT.as_secs() {
        return Err(format!("{FILE} has a heartbeat longer than a year"));
    }
    if report.facts.hostname != hostname {
        return Err(format!(
            "the report names another host, `{}`",
            report.facts.hostname.escape_debug()
        ));
    }
    Ok(report)
}

fn has_control_characters(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(text) => text.chars().any(char::is_control),
        serde_json::Value::Array(items) => items.iter().any(has_control_characters),
        serde_json::Value::Object(map) => map
            .iter()
            .any(|(k, v)| k.chars().any(char::is_control) || has_control_characters(v)),
        _ => false,
    }
}

/// The nodes a deployment lists: its allowed-signers file, copied to a
/// temporary file for ssh-keygen, and the hostnames it names.
pub struct NodeKeys {
    file: tempfile::NamedTempFile,
    /// The principals, one a line, lower-case and sorted.
    pub hostnames: Vec<String>,
}

impl NodeKeys {
    pub fn path(&self) -> &Path {
        self.file.path()
    }
}

/// The node keys at the top of `commit`, if it has a keys file.
pub fn node_keys(repo: &Repo, commit: &str) -> Result<Option<NodeKeys>> {
    let Some(text) = repo.file_at(commit, KEYS_FILE)? else {
        return Ok(None);
    };
    let mut file = tempfile::NamedTempFile::new().context("cannot create a temporary file")?;
    std::io::Write::write_all(&mut file, text.as_bytes())?;
    Ok(Some(NodeKeys {
        file,
        hostnames: principals(&text),
    }))
}

/// The hostnames an allowed-signers file names (its principals), sorted.
fn principals(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next())
        // git verifies a line's first principal only.
        .filter_map(|principals| principals.split(',').next())
        .filter(|name| check_hostname(name).is_ok())
        .map(str::to_ascii_lowercase)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Whether a report sent at `reported_at` with this heartbeat is overdue.
pub fn is_stale(report: &Report, now: SystemTime) -> bool {
    let Ok(at) = humantime::parse_rfc3339(&report.reported_at) else {
        return true;
    };
    let heartbeat = report.heartbeat_seconds.clamp(1, MAX_HEARTBEAT.as_secs());
    let allowed = Duration::from_secs(heartbeat) * STALE_HEARTBEATS;
    now.duration_since(at).is_ok_and(|late| late > allowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_that_cannot_name_a_ref_are_refused() {
        for ok in ["web-1", "web-1.example.com", "db_2"] {
            assert!(check_hostname(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "-x", ".x", "x.", "a..b", "a/b", "a b", "x.lock", "a*", "a,b", "é",
        ] {
            assert!(check_hostname(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_fleet_is_the_principals_of_the_keys_file() {
        let keys = "# nodes\nweb-1 ssh-ed25519 AAAA\nDB-1,db-1.example.com ssh-ed25519 BBBB\n\n*.bad ssh-ed25519 CCCC\n";
        assert_eq!(principals(keys), ["db-1", "web-1"]);
    }

    #[test]
    fn reports_that_could_mislead_a_reader_are_refused() {
        let report = |extra: serde_json::Value| {
            let mut json = serde_json::json!({"version": 1, "hostname": "web-1",
                "reported_at": "2026-01-01T00:00:00Z", "heartbeat_seconds": 60});
            json.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            Some(json.to_string().into_bytes())
        };
        let id = "a".repeat(40);
        let good = serde_json::json!({"deployed": {"commit": id, "at": "x"}});
        assert!(parse(report(good), "web-1").is_ok());
        for (bad, says) in [
            (
                serde_json::json!({"deployed": {"commit": "aaaaaaaaaaaébbbb", "at": "x"}}),
                "object id",
            ),
            (
                serde_json::json!({"heartbeat_seconds": u64::MAX}),
                "heartbeat",
            ),
            (
                serde_json::json!({"pull": "ok", "reported_at": "now\u{1b}[8m"}),
                "control",
            ),
            (serde_json::json!({"hostname": "web-2"}), "another host"),
        ] {
            let e = parse(report(bad.clone()), "web-1").unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn an_older_report_than_one_seen_before_is_a_replay() {
        let root = tempfile::tempdir().unwrap();
        let node = Node::new(root.path());
        std::fs::create_dir_all(node.lib().join("cache")).unwrap();
        let at = |when: &str| Received {
            hostname: "web-1".to_owned(),
            report: Ok(Report {
                version: 1,
                facts: Facts::default(),
                reported_at: when.to_owned(),
                heartbeat_seconds: 3600,
            }),
            verified: Ok(()),
        };
        let mut newer = [at("2026-01-01T12:00:00Z")];
        drop_replays(&node, &mut newer).unwrap();
        assert!(newer[0].trusted().is_some());
        let mut older = [at("2026-01-01T11:00:00Z")];
        drop_replays(&node, &mut older).unwrap();
        let why = older[0].verified.as_ref().unwrap_err();
        assert!(why.contains("replayed"), "{why}");
        let mut same = [at("2026-01-01T12:00:00Z")];
        drop_replays(&node, &mut same).unwrap();
        assert!(same[0].trusted().is_some());
    }

    #[test]
    fn a_report_is_stale_after_three_missed_heartbeats() {
        let at = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let report = Report {
            version: 1,
            facts: Facts::default(),
            reported_at: humantime::format_rfc3339_seconds(at).to_string(),
            heartbeat_seconds: 60,
        };
        assert!(!is_stale(&report, at + Duration::from_secs(180)));
        assert!(is_stale(&report, at + Duration::from_secs(181)));
    }
}
