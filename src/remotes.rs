//! The remotes a pull fetches, from two places.
//!
//! Root's: `/etc/troops/gitconfig` (root's alone; seeding writes remotes
//! there since their URLs may carry credentials). The members': the
//! configuration of the members' repository (`git --git-dir=... remote add`),
//! which is hostile data: read without following a link, bounded in size,
//! parsed by git without includes from a copy root owns, and every name and
//! URL checked. A member's remote may not be a local path (root would read
//! a repository a member chose) and no remote may use a remote helper
//! (`ext::`). On a name both define, root's wins; at most
//! `MAX_REMOTES` are fetched.

use std::fs;
use std::io::{Read, Seek, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::git;
use crate::paths::{self, Node};

/// The largest members' configuration read.
const MAX_CONFIG: u64 = 64 * 1024;
/// The most remotes one pull fetches (they are fetched all at once).
const MAX_REMOTES: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `/etc/troops/gitconfig`: root's own.
    Root,
    /// The members' repository's configuration: hostile data.
    Members,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub name: String,
    pub url: String,
    pub source: Source,
}

impl Remote {
    /// The URL with any password replaced, for output and records.
    pub fn shown_url(&self) -> String {
        redact(&self.url)
    }

    pub fn is_http(&self) -> bool {
        self.url.starts_with("https://") || self.url.starts_with("http://")
    }
}

/// ssh with the node's key, never asking anyone anything, trusting the host
/// keys the seed pinned as well as the system's.
pub fn ssh_command(node: &Node) -> String {
    let quote = |p: &Path| format!("'{}'", p.to_string_lossy().replace('\'', "'\\''"));
    let mut command = format!("ssh -i {} -o BatchMode=yes", quote(&node.ssh_key()));
    if node.known_hosts().is_file() {
        command.push_str(&format!(
            " -o UserKnownHostsFile={}",
            quote(&node.known_hosts())
        ));
    }
    command
}

/// Points `cmd` (a git command that reaches a remote) at the node's SSH key,
/// unless the admin's environment chose how git runs ssh.
pub fn use_node_key(node: &Node, cmd: &mut Command) {
    if std::env::var_os("GIT_SSH_COMMAND").is_none() && std::env::var_os("GIT_SSH").is_none() {
        cmd.env("GIT_SSH_COMMAND", ssh_command(node));
    }
}

/// A git command talking to a remote, run in the background with a deadline
/// (a fetch, a report's push).
pub struct Transfer {
    what: &'static str,
    child: Child,
    /// Where its stderr goes, a file so that it cannot block.
    stderr: fs::File,
}

impl Transfer {
    /// Starts `cmd` (`what` names it in messages) in its own process group,
    /// so that a timeout ends ssh and the transport helpers with it.
    pub fn start(what: &'static str, mut cmd: Command) -> Result<Transfer> {
        let stderr = tempfile::tempfile().context("cannot create a temporary file")?;
        cmd.stdout(Stdio::null()).stderr(stderr.try_clone()?);
        git::log_command(&cmd);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().with_context(|| format!("cannot run {what}"))?;
        Ok(Transfer {
            what,
            child,
            stderr,
        })
    }

    /// Waits until `deadline`, then kills the process group; an error says
    /// what git (or ssh) said, with any password in a URL hidden.
    pub fn wait(mut self, deadline: Instant) -> std::result::Result<(), String> {
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                if status.success() {
                    return Ok(());
                }
                let mut text = String::new();
                let _ = self.stderr.rewind();
                let _ = (&mut self.stderr).take(64 * 1024).read_to_string(&mut text);
                return Err(format!(
                    "{} {}: {}",
                    self.what,
                    crate::stream::explain(status),
                    redact(&failure(&text))
                ));
            }
            if Instant::now() >= deadline {
                let group = nix::unistd::Pid::from_raw(-(self.child.id() as i32));
                let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
                let _ = self.child.wait();
                return Err("timed out".to_owned());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// What git said went wrong, without the advice git appends to every
/// failed SSH transfer ("Please make sure you have the correct access
/// rights..."), which would hide ssh's own reason.
pub fn failure(stderr: &str) -> String {
    const BOILERPLATE: &[&str] = &[
        "fatal: Could not read from remote repository.",
        "Please make sure you have the correct access rights",
        "and the repository exists.",
    ];
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !BOILERPLATE.contains(l))
        .collect();
    match lines.as_slice() {
        [] => stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_owned(),
        lines => lines[lines.len().saturating_sub(2)..].join(" / "),
    }
}

/// Every remote, root's first; what cannot be used is warned about and left out.
pub fn list(node: &Node) -> Result<Vec<Remote>> {
    let mut remotes = Vec::new();
    let root = node.git_config();
    if root.is_file() {
        let entries =
            root_entries(&root).with_context(|| format!("cannot read `{}`", root.display()))?;
        collect(entries, Source::Root, &mut remotes);
    }
    match members_entries(node) {
        Ok(entries) => collect(entries, Source::Members, &mut remotes),
        Err(e) => eprintln!("troops: warning: the members' remotes are ignored: {e:#}"),
    }
    Ok(remotes)
}

fn collect(entries: Vec<(String, String)>, source: Source, into: &mut Vec<Remote>) {
    for (name, url) in entries {
        if into.iter().any(|r| r.name == name) {
            if source == Source::Members {
                eprintln!(
                    "troops: warning: remote `{name}` of the members' repository is ignored: \
                     /etc/troops/gitconfig defines it"
                );
            }
            continue;
        }
        if into.len() >= MAX_REMOTES {
            eprintln!(
                "troops: warning: remote `{}` is ignored: a pull fetches at most {MAX_REMOTES} remotes",
                name.escape_debug()
            );
            continue;
        }
        match check(&name, &url, source) {
            Ok(()) => into.push(Remote { name, url, source }),
            Err(why) => eprintln!(
                "troops: warning: remote `{}` ({}) is ignored: {why}",
                name.escape_debug(),
                redact(&url).escape_debug()
            ),
        }
    }
}

/// The members' configuration, copied (bounded, not through a link) to a
/// file of root's, then read by git without includes.
fn members_entries(node: &Node) -> Result<Vec<(String, String)>> {
    let path = node.push_repo().join("config");
    let Some(data) = paths::read_untrusted(&path, MAX_CONFIG)? else {
        return Ok(Vec::new());
    };
    // Section names are case-insensitive; without the word there is no
    // remote, and a pull need not start git to learn it.
    if !data.to_ascii_lowercase().windows(6).any(|w| w == b"remote") {
        return Ok(Vec::new());
    }
    let mut copy = tempfile::NamedTempFile::new().context("cannot create a temporary file")?;
    copy.write_all(&data)?;
    url_entries(copy.path())
}

/// `(name, url)` for each `remote.NAME.url` in root's own configuration,
/// read in-process (libgit2): every pull reads it, and a git process would
/// cost a no-change pull a sixth of its fetch.
fn root_entries(file: &Path) -> Result<Vec<(String, String)>> {
    let config = git2::Config::open(file)?;
    let mut entries: Vec<(String, String)> = Vec::new();
    let mut found = config.entries(Some(r"^remote\..*\.url$"))?;
    while let Some(entry) = found.next() {
        let entry = entry?;
        let (Ok(key), Ok(url)) = (entry.name(), entry.value()) else {
            continue;
        };
        push_entry(&mut entries, key, url);
    }
    Ok(entries)
}

/// Adds `remote.NAME.url`'s value unless NAME has one already (the first
/// counts, as git's `remote.NAME.url` does when fetching).
fn push_entry(entries: &mut Vec<(String, String)>, key: &str, url: &str) {
    let Some(name) = key
        .strip_prefix("remote.")
        .and_then(|k| k.strip_suffix(".url"))
    else {
        return;
    };
    if !entries.iter().any(|(n, _)| n == name) {
        entries.push((name.to_owned(), url.to_owned()));
    }
}

/// `(name, url)` for each `remote.NAME.url` in `file`, a copy of what
/// members wrote: parsed by git itself, without includes.
fn url_entries(file: &Path) -> Result<Vec<(String, String)>> {
    let mut cmd = git::pinned(None);
    cmd.args(["config", "--no-includes", "-z", "--file"])
        .arg(file)
        .args(["--get-regexp", r"^remote\..*\.url$"]);
    let out = cmd.output().context("cannot run git config")?;
    // 1: no remote at all.
    if out.status.code() == Some(1) {
        return Ok(Vec::new());
    }
    if !out.status.success() {
        anyhow::bail!(
            "git cannot parse it: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut entries: Vec<(String, String)> = Vec::new();
    for entry in String::from_utf8_lossy(&out.stdout).split('\0') {
        if let Some((key, url)) = entry.split_once('\n') {
            push_entry(&mut entries, key, url);
        }
    }
    Ok(entries)
}

/// Whether root may fetch `url` under `name` when `source` defined it.
pub fn check(name: &str, url: &str, source: Source) -> Result<(), String> {
    check_name(name)?;
    if url.starts_with('-') {
        return Err("the URL looks like an option".to_owned());
    }
    if url.is_empty() || url.chars().any(|c| c.is_control() || c == ' ') {
        return Err("the URL is empty or has spaces or control characters".to_owned());
    }
    match kind(url) {
        Kind::Network => Ok(()),
        Kind::Helper => Err("remote helpers (`transport::address`) are not fetched".to_owned()),
        Kind::Local if source == Source::Root => Ok(()),
        Kind::Local => Err(
            "a local path is fetched only when root added it to /etc/troops/gitconfig \
             (`git config --file /etc/troops/gitconfig remote.NAME.url PATH`)"
                .to_owned(),
        ),
    }
}

/// Remote names become ref names: a conservative alphabet, as git allows.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with(['-', '.'])
        && !name.ends_with(['.', '/'])
        && !name.ends_with(".lock")
        && !name.contains("..")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a usable remote name (letters, digits, `.`, `_` and `-`; \
             not starting with `-` or `.`, not ending in `.lock`)",
            name.escape_debug()
        ))
    }
}

enum Kind {
    Network,
    Local,
    Helper,
}

/// Classifies a URL the way git's transport code does.
fn kind(url: &str) -> Kind {
    if let Some((scheme, _)) = url.split_once("://") {
        return match scheme {
            "ssh" | "git+ssh" | "ssh+git" | "git" | "http" | "https" => Kind::Network,
            "file" => Kind::Local,
            _ => Kind::Helper,
        };
    }
    if url.contains("::") {
        return Kind::Helper;
    }
    // scp-like `[user@]host:path`: a colon before any slash.
    match (url.find(':'), url.find('/')) {
        (Some(colon), Some(slash)) if colon < slash => Kind::Network,
        (Some(_), None) => Kind::Network,
        _ => Kind::Local,
    }
}

/// `scheme://user:password@host/...` shown as `scheme://user:***@host/...`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
    let hidden = if userinfo.contains(':') {
        format!("{user}:***")
    } else {
        "***".to_owned()
    };
    let hidden = if scheme.starts_with("http") || userinfo.contains(':') {
        hidden
    } else {
        userinfo.to_owned()
    };
    format!("{scheme}://{hidden}{}", &rest[at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_ssh_fetch_says_what_ssh_said() {
        let stderr = "kex_exchange_identification: read: Connection reset by peer\n\
                      Connection reset by 127.0.0.10 port 22\n\
                      fatal: Could not read from remote repository.\n\n\
                      Please make sure you have the correct access rights\n\
                      and the repository exists.\n";
        assert_eq!(
            failure(stderr),
            "kex_exchange_identification: read: Connection reset by peer / \
             Connection reset by 127.0.0.10 port 22"
        );
        assert_eq!(
            failure("fatal: unable to access 'https://h/': SSL certificate problem\n"),
            "fatal: unable to access 'https://h/': SSL certificate problem"
        );
    }

    #[test]
    fn urls_by_source() {
        use Source::*;
        for ok in [
            "git@repos.example.com:deploy",
            "ssh://git@host:22/srv/deploy.git",
            "https://mirror.example.com/deploy.git",
            "host:deploy",
        ] {
            assert_eq!(check("origin", ok, Members), Ok(()), "{ok}");
        }
        for bad in [
            "/srv/deploy.git",
            "file:///srv/deploy.git",
            "./deploy",
            "ext::sh -c touch% /tmp/pwned",
            "fd::3",
            "-uhelp",
            "--upload-pack=touch /tmp/x",
            "",
        ] {
            assert!(check("origin", bad, Members).is_err(), "{bad}");
        }
        assert_eq!(check("origin", "/srv/deploy.git", Root), Ok(()));
        assert!(check("origin", "ext::sh", Root).is_err());
    }

    #[test]
    fn names() {
        for ok in ["origin", "mirror-2", "a.b_c"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-x",
            ".x",
            "origin.lock",
            "a..b",
            "a/b",
            "a b",
            "a:b",
            "x.",
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            redact("https://bot:s3cret@git.example.com/d.git"),
            "https://bot:***@git.example.com/d.git"
        );
        assert_eq!(
            redact("https://TOKEN@git.example.com/d.git"),
            "https://***@git.example.com/d.git"
        );
        assert_eq!(redact("ssh://git@host/d.git"), "ssh://git@host/d.git");
        assert_eq!(redact("git@host:d"), "git@host:d");
    }
}
