//! Carrying objects into root's repository, verified on the way in.
//!
//! Root never reads objects where a member or a remote could have written
//! them. Objects arrive as a pack stream (from a push's hook, from the
//! members' repository read by an unprivileged process, or from a scratch
//! repository an HTTP fetch filled) and `git index-pack --strict` writes them
//! into root's repository: it hashes every object itself and fscks it, so a
//! tampered object cannot pass as the one its name promises. A commit is
//! used only once everything it reaches is present (`require_complete`).

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use nix::unistd::{Gid, Uid, User};

use crate::git::{self, Repo, describe, log_command};
use crate::paths::Node;

/// The largest pack root accepts in one transfer.
const MAX_PACK: u64 = 1 << 30;
/// How long a pack may take to arrive before the transfer is abandoned.
pub const DEADLINE: Duration = Duration::from_secs(600);

/// Indexes the pack on `input` into `repo` with full verification.
pub fn index_pack(repo: &Repo, input: Stdio) -> Result<()> {
    let mut cmd = repo.command();
    cmd.args(["index-pack", "--strict", "--stdin", "--fix-thin"])
        .arg(format!("--max-input-size={MAX_PACK}"))
        .stdin(input)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    log_command(&cmd);
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot run `{}`", describe(&cmd)))?;
    wait_within(child, &describe(&cmd), DEADLINE)
}

/// Runs `source` (a `git pack-objects --stdout`) into `index_pack`.
pub fn copy(source: &mut Command, into: &Repo) -> Result<()> {
    source.stdout(Stdio::piped()).stderr(Stdio::piped());
    log_command(source);
    let mut child = source
        .spawn()
        .with_context(|| format!("cannot run `{}`", describe(source)))?;
    let pack = child.stdout.take().context("no pack output")?;
    let indexed = index_pack(into, Stdio::from(pack));
    let packed = wait_within(child, &describe(source), DEADLINE);
    packed.and(indexed)
}

/// `git pack-objects` of what `want` reaches and `have` does not, for `repo`.
pub fn pack_objects(repo: &Repo, want: &str, have: &[String]) -> Result<Command> {
    let mut cmd = repo.command();
    cmd.args(["pack-objects", "--stdout", "--revs", "--thin", "--quiet"])
        .stdin(revs_file(want, have)?);
    Ok(cmd)
}

/// pack-objects' `--revs` input in a file, so that writing it cannot block.
fn revs_file(want: &str, have: &[String]) -> Result<Stdio> {
    let mut revs = format!("{want}\n--not\n");
    for id in have {
        revs.push_str(id);
        revs.push('\n');
    }
    let mut file = tempfile::tempfile().context("cannot create a temporary file")?;
    file.write_all(revs.as_bytes())?;
    std::io::Seek::rewind(&mut file)?;
    Ok(Stdio::from(file))
}

/// Fails unless `commit` and everything it reaches are in `repo`.
pub fn require_complete(repo: &Repo, commit: &str) -> Result<()> {
    let mut cmd = repo.command();
    cmd.args(["rev-list", "--objects", "--quiet", commit, "--not", "--all"])
        .stdout(Stdio::null());
    crate::git::output(&mut cmd)
        .map(drop)
        .with_context(|| format!("commit {commit} did not arrive whole"))
}

/// Waits for `child` until `limit` has passed, then kills it; a failure
/// carries its stderr.
fn wait_within(mut child: Child, what: &str, limit: Duration) -> Result<()> {
    let started = Instant::now();
    // stderr is read on a thread so that a chatty child cannot block on it.
    let stderr = child.stderr.take().map(|mut pipe| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut pipe, &mut text);
            text
        })
    });
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "`{what}` took longer than {} s and was stopped",
                limit.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stderr = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
    if !status.success() {
        bail!("`{what}` failed ({status}):\n{}", stderr.trim_end());
    }
    Ok(())
}

/// Copies what `commit` reaches from the members' repository into `into`.
/// The reading side runs as `nobody` with the repository's group, so that
/// nothing a member wrote there (configuration, alternates, packs) is
/// interpreted with root's privileges.
pub fn copy_from_push_repo(node: &Node, commit: &str, into: &Repo) -> Result<()> {
    let members = node.push_repo();
    let mut cmd = git::pinned(None);
    cmd.args(["-c", "safe.directory=*", "--git-dir"])
        .arg(&members)
        .args(["pack-objects", "--stdout", "--revs", "--quiet"])
        .stdin(revs_file(commit, &[])?);
    unprivileged(&mut cmd, &members)?;
    copy(&mut cmd, into)
}

/// Drops `cmd` to `nobody` and the group that owns `dir`, with no other
/// groups, before it runs. Without root there is nothing to drop.
fn unprivileged(cmd: &mut Command, dir: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;
    if !Uid::effective().is_root() {
        return Ok(());
    }
    let gid = Gid::from_raw(std::fs::metadata(dir)?.gid());
    let uid = User::from_name("nobody")
        .ok()
        .flatten()
        .map_or(Uid::from_raw(65534), |u| u.uid);
    cmd.env("HOME", "/nonexistent").current_dir("/");
    // SAFETY: only async-signal-safe system calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setgroups(&[gid])?;
            nix::unistd::setgid(gid)?;
            nix::unistd::setuid(uid)?;
            Ok(())
        });
    }
    Ok(())
}

/// Objects received but not yet accepted: a directory of their own inside
/// root's object store, read through `view`. Only `accept` moves them into
/// the store; otherwise they go with the quarantine, so a refused push
/// leaves nothing behind.
pub struct Quarantine {
    dir: tempfile::TempDir,
    objects: std::path::PathBuf,
}

impl Quarantine {
    pub fn new(repo: &Path) -> Result<Quarantine> {
        let objects = repo.join("objects");
        let dir = tempfile::Builder::new()
            .prefix("incoming-")
            .tempdir_in(&objects)
            .with_context(|| format!("cannot create a directory in `{}`", objects.display()))?;
        std::fs::create_dir(dir.path().join("pack"))?;
        Ok(Quarantine { dir, objects })
    }

    /// `repo` reading the quarantined objects first, then its own.
    pub fn view(&self, repo: &Repo) -> Repo {
        repo.clone().with_objects(self.dir.path(), &self.objects)
    }

    /// Moves the received packs into the object store, each index after
    /// its pack so that git never sees an index without its pack.
    pub fn accept(self) -> Result<()> {
        let incoming = self.dir.path().join("pack");
        let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&incoming)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        files.sort_by_key(|p| p.extension().is_some_and(|x| x == "idx"));
        let pack = self.objects.join("pack");
        for file in files {
            let dest = pack.join(file.file_name().unwrap_or_default());
            std::fs::rename(&file, &dest).with_context(|| {
                format!("cannot move `{}` into `{}`", file.display(), pack.display())
            })?;
        }
        Ok(())
    }
}
