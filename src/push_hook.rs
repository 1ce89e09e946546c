//! Push to deploy: the members' repository's pre-receive hook.
//!
//! `git push` to `repo/main.git` runs `hooks/pre-receive` as the pusher,
//! which runs `troops hook pre-receive` (still as the pusher). That side
//! packs the pushed commit's objects from the push (git's quarantine) and
//! hands them, with the ref update, to `troops hook receive` through `sudo`
//! (a sudoers rule allows exactly that command line to group `troops`).
//!
//! Root believes none of it: the objects go through `git index-pack
//! --strict` into root's own repository, the commit must arrive whole, and
//! the signature (where required) is checked there, on the commit that is
//! then exported. Under the deploy lock, a push whose starting point is no
//! longer root's branch is refused before it deploys; a successful deploy
//! moves root's branch by compare-and-swap before the lock is released, so
//! what runs is always what root's branch names. The members' branch is
//! theirs (receive-pack moves it after the hook); other branches and tags
//! are stored there without a deploy, and deleting the deploy branch is
//! refused.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::config::Config;
use crate::engine::{Request, deploy_commit, invoking_user, leave_callers_directory};
use crate::error::UserError;
use crate::git::{self, Repo, is_object_id, short};
use crate::history::{self, Trigger};
use crate::lock::{DeployLock, Wait};
use crate::paths::Node;
use crate::transfer;

/// How much of the hook input (ref lines) is read at most.
const MAX_REFS: u64 = 1 << 20;
/// How long the header before the pack may be.
const MAX_HEADER: usize = 4096;

/// Internal commands run by the repository's hooks
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: HookCommand,
}

#[derive(Debug, clap::Subcommand)]
enum HookCommand {
    /// Hand a push to the deploy branch to root (run by hooks/pre-receive, as the pusher)
    PreReceive,
    /// Verify and deploy a pushed commit (run through sudo, as root)
    Receive,
}

pub fn run(node: &Node, args: Args) -> Result<()> {
    match args.command {
        HookCommand::PreReceive => pre_receive(node),
        HookCommand::Receive => receive(node),
    }
}

/// One ref update: `OLD NEW REFNAME`.
#[derive(Debug, PartialEq, Eq)]
struct Update {
    old: String,
    new: String,
    refname: String,
}

/// What the pusher's side tells root before the pack.
#[derive(Debug, PartialEq, Eq)]
struct Header {
    update: Update,
    /// `git push -o dry-run`: report what would change, then refuse the push.
    dry_run: bool,
}

/// The pusher's side: pick the deploy branch's update and send it to root.
fn pre_receive(node: &Node) -> Result<()> {
    let mut input = String::new();
    std::io::stdin()
        .lock()
        .take(MAX_REFS)
        .read_to_string(&mut input)
        .context("cannot read the pushed refs")?;
    let mut updates: Vec<Update> = input.lines().map(parse_update).collect::<Result<_>>()?;
    let dry_run = push_options()?;
    let config = Config::load(node)?;
    let branch_ref = format!("refs/heads/{}", config.branch());
    let Some(index) = updates.iter().position(|u| u.refname == branch_ref) else {
        for u in &updates {
            eprintln!(
                "troops: {} stored, not deployed (the deploy branch is {})",
                u.refname,
                config.branch()
            );
        }
        return Ok(());
    };
    let update = updates.swap_remove(index);
    if is_zero(&update.new) {
        return Err(UserError::new(format!(
            "refusing to delete the deploy branch `{}`",
            config.branch()
        ))
        .hint("push another commit to it instead; a forced push of an older commit rolls back")
        .into());
    }
    let members = pushed_objects(node);
    // Root's repository is root's alone; the commit it last deployed tells
    // which objects it has, so the pack can leave them out. Only a hint: a
    // wrong one makes the push fail to verify, never deploy.
    let have: Vec<String> = history::deployed_commit(node)
        .ok()
        .flatten()
        .filter(|b| members.resolve_commit(b).ok().flatten().is_some())
        .into_iter()
        .collect();
    let header = Header { update, dry_run };
    let mut pack = transfer::pack_objects(&members, &header.update.new, &have)?;
    let status = hand_to_root(node, &header, &mut pack)?;
    if !status.success() {
        // Root has said why on stderr, which reaches the pusher.
        std::process::exit(1);
    }
    Ok(())
}

/// The members' repository as receive-pack sees it, quarantine included.
fn pushed_objects(node: &Node) -> Repo {
    let repo = Repo::bare(&node.push_repo());
    match std::env::var_os("GIT_QUARANTINE_PATH") {
        Some(quarantine) => {
            repo.with_objects(Path::new(&quarantine), &node.push_repo().join("objects"))
        }
        None => repo,
    }
}

/// `-o dry-run` is the one push option Troops knows.
fn push_options() -> Result<bool> {
    let count: usize = std::env::var("GIT_PUSH_OPTION_COUNT")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut dry_run = false;
    for i in 0..count {
        match std::env::var(format!("GIT_PUSH_OPTION_{i}"))
            .unwrap_or_default()
            .as_str()
        {
            "dry-run" => dry_run = true,
            other => {
                return Err(UserError::new(format!("unknown push option `{other}`"))
                    .hint("troops knows the push option `dry-run`")
                    .into());
            }
        }
    }
    Ok(dry_run)
}

/// A push must contain what root's branch names, unless it starts from it:
/// after another push or a pull moved root's branch, a push built on the
/// members' older branch would silently undo that commit.
fn check_contains_base(
    repo: &Repo,
    update: &Update,
    base: Option<&str>,
    branch: &str,
) -> Result<()> {
    let Some(base) = base else { return Ok(()) };
    if base == update.old || repo.is_ancestor(base, &update.new)? {
        return Ok(());
    }
    Err(UserError::new(format!(
        "the node's branch `{branch}` is at {} (another push or a pull moved it), \
         which this push does not contain; nothing was deployed",
        short(base)
    ))
    .hint("fetch and merge that commit (from the node, or the remote it pulls), then push again")
    .into())
}

/// Runs root's side with the header and the pack on its stdin; its output
/// goes straight to the pusher.
fn hand_to_root(
    node: &Node,
    header: &Header,
    pack: &mut Command,
) -> Result<std::process::ExitStatus> {
    let exe = std::env::current_exe().context("cannot find the troops executable")?;
    let mut root = if nix::unistd::Uid::effective().is_root() {
        Command::new(&exe)
    } else {
        let mut sudo = Command::new("sudo");
        sudo.args(["-n", "--"]).arg(&exe);
        sudo
    };
    root.arg("--root")
        .arg(node.root())
        .args(["hook", "receive"])
        .stdin(Stdio::piped());
    let mut child = root.spawn().context("cannot run sudo")?;
    let mut stdin = child.stdin.take().context("no stdin")?;
    let sent = send(&mut stdin, header, pack);
    drop(stdin);
    let status = child.wait()?;
    // Root may have refused before reading the pack; its status says why.
    if status.success() {
        sent?;
    }
    Ok(status)
}

fn send(to: &mut impl Write, header: &Header, pack: &mut Command) -> Result<()> {
    to.write_all(header.render().as_bytes())?;
    pack.stdout(Stdio::piped());
    git::log_command(pack);
    let mut child = pack.spawn().context("cannot run git pack-objects")?;
    let mut out = child.stdout.take().context("no pack output")?;
    std::io::copy(&mut out, to).context("cannot hand the pack to root")?;
    let status = child.wait()?;
    if !status.success() {
        bail!("git pack-objects {}", crate::stream::explain(status));
    }
    Ok(())
}

impl Header {
    fn render(&self) -> String {
        let u = &self.update;
        let mut text = format!("update {} {} {}\n", u.old, u.new, u.refname);
        if self.dry_run {
            text.push_str("option dry-run\n");
        }
        text.push('\n');
        text
    }

    fn parse(text: &str) -> Result<Header> {
        let mut update = None;
        let mut dry_run = false;
        for line in text.lines().filter(|l| !l.is_empty()) {
            match line.split_once(' ') {
                Some(("update", rest)) => update = Some(parse_update(rest)?),
                Some(("option", "dry-run")) => dry_run = true,
                _ => bail!("unexpected hook input `{line}`"),
            }
        }
        let Some(update) = update else {
            bail!("the hook input names no update");
        };
        Ok(Header { update, dry_run })
    }
}

/// Root's side: verify the pushed commit in root's repository, deploy it,
/// and move root's branch.
fn receive(node: &Node) -> Result<()> {
    leave_callers_directory()?;
    let header = Header::parse(&read_header()?)?;
    let config = Config::load(node)?;
    let branch_ref = format!("refs/heads/{}", config.branch());
    let update = &header.update;
    if update.refname != branch_ref || is_zero(&update.new) {
        bail!("`troops hook receive` only deploys a commit to `{branch_ref}`");
    }
    let root = Repo::deploy(node);
    // Where root's branch was when this push began; it must not move until
    // the push deploys (checked again under the lock).
    let base = root.resolve_commit(&branch_ref)?;
    // Until the deploy succeeds, the objects stay in a quarantine of their
    // own; one push is received at a time, so there is one quarantine.
    let _receiving = DeployLock::receiving(node)?;
    let quarantine = transfer::Quarantine::new(root.path())?;
    let repo = quarantine.view(&root);
    // The rest of stdin is the pack: index-pack reads it from our descriptor.
    transfer::index_pack(&repo, Stdio::inherit()).map_err(|e| {
        e.context(
            UserError::new("the pushed objects do not verify; nothing was deployed").hint(
                "the members' repository may be damaged: run `git fsck` there, or push from another clone",
            ),
        )
    })?;
    if repo.resolve_commit(&update.new)?.as_deref() != Some(update.new.as_str()) {
        bail!("the push did not carry commit {}", short(&update.new));
    }
    transfer::require_complete(&repo, &update.new)?;
    check_contains_base(&repo, update, base.as_deref(), config.branch())?;
    let user = invoking_user();
    let _lock = DeployLock::acquire(
        node,
        Wait::Block,
        &format!("push of {} by {user}", short(&update.new)),
    )?;
    check_branch_unmoved(&root, &branch_ref, base.as_deref(), config.branch())?;
    let request = Request {
        trigger: Trigger::Push,
        user: &user,
        dry_run: header.dry_run,
        drift_file: None,
    };
    deploy_commit(node, &config, &repo, &update.new, &request)?;
    if header.dry_run {
        return Err(UserError::new(format!(
            "dry run: nothing was deployed, and the branch `{}` stays where it was",
            config.branch()
        ))
        .hint("push again without `-o dry-run` to deploy")
        .into());
    }
    quarantine.accept()?;
    let old = base.unwrap_or_else(|| "0".repeat(update.new.len()));
    root.run([
        "update-ref",
        "-m",
        &format!("troops: push by {user}"),
        "--",
        &branch_ref,
        &update.new,
        &old,
    ])
    .with_context(|| {
        format!(
            "deployed {} but cannot move `{branch_ref}`",
            short(&update.new)
        )
    })?;
    Ok(())
}

/// Reads the header up to its blank line, a byte at a time, so that not one
/// byte of the pack after it is consumed here.
fn read_header() -> Result<String> {
    let mut header = Vec::new();
    let mut byte = [0u8; 1];
    while !header.ends_with(b"\n\n") {
        if header.len() >= MAX_HEADER {
            bail!("the hook input has no end of header");
        }
        match nix::unistd::read(std::io::stdin(), &mut byte) {
            Ok(1) => header.push(byte[0]),
            Ok(_) => bail!("the hook input ended early"),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).context("cannot read the hook input"),
        }
    }
    String::from_utf8(header).context("the hook input is not text")
}

fn parse_update(line: &str) -> Result<Update> {
    let mut fields = line.split(' ');
    let (Some(old), Some(new), Some(refname), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        bail!("malformed ref update `{line}`");
    };
    for id in [old, new] {
        if !is_object_id(id) {
            bail!("malformed object id `{id}`");
        }
    }
    if !refname.starts_with("refs/") || refname.contains("..") || refname.bytes().any(|b| b <= b' ')
    {
        bail!("malformed ref name `{refname}`");
    }
    Ok(Update {
        old: old.to_owned(),
        new: new.to_owned(),
        refname: refname.to_owned(),
    })
}

fn is_zero(id: &str) -> bool {
    id.bytes().all(|b| b == b'0')
}

/// Under the lock: root's branch must still be where this push found it.
fn check_branch_unmoved(
    repo: &Repo,
    branch_ref: &str,
    base: Option<&str>,
    branch: &str,
) -> Result<()> {
    let current = repo.resolve_commit(branch_ref)?;
    if current.as_deref() == base {
        return Ok(());
    }
    let now = current.as_deref().map_or("nothing", short);
    Err(UserError::new(format!(
        "the branch `{branch}` moved to {now} while this push waited; nothing was deployed"
    ))
    .hint("fetch, merge or rebase, and push again")
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1111111111111111111111111111111111111111";
    const Z: &str = "0000000000000000000000000000000000000000";

    #[test]
    fn header_round_trips_and_hostile_input_is_refused() {
        let header = Header {
            update: parse_update(&format!("{Z} {A} refs/heads/master")).unwrap(),
            dry_run: true,
        };
        let text = header.render();
        assert!(text.ends_with("\n\n"));
        assert_eq!(Header::parse(&text).unwrap(), header);
        for bad in [
            format!("update {Z} {A}\n"),
            format!("update {Z} xyz refs/heads/master\n"),
            format!("update {Z} {A} refs/heads/a b\n"),
            format!("update {Z} {A} master\n"),
            format!("update {Z} {A} refs/heads/master\nbase {A}\n"),
            "option dry-run\n".to_owned(),
            "env GIT_DIR=/etc\n".to_owned(),
        ] {
            assert!(Header::parse(&bad).is_err(), "{bad:?}");
        }
    }
}
