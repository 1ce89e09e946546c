//! Push to deploy: the repository's pre-receive hook, run as root.
//!
//! `git push` to `repo/main.git` runs `hooks/pre-receive` as the pusher, which
//! hands the ref updates to `troops hook pre-receive` through `sudo` (a
//! sudoers rule allows exactly that command line to group `troops`). Nothing
//! the pusher controls is trusted: sudo resets the environment, and what the
//! hook passes on stdin (the quarantine directory, the receive-pack pid and
//! the ref lines) is validated here.
//!
//! A push that moves the deploy branch deploys the pushed commit before the
//! branch moves. Under the deploy lock, a push whose old value is no longer
//! the branch's is refused before it deploys; after a successful deploy a
//! detached keeper keeps holding the lock until git has moved the ref (or
//! receive-pack is gone), so the deployed commit is always what the branch
//! names once the push ends. Other branches and tags are stored without a
//! deploy; deleting the deploy branch is refused.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::config::Config;
use crate::deploy::{Request, deploy_commit, invoking_user};
use crate::error::UserError;
use crate::git::{Repo, short};
use crate::history::Trigger;
use crate::init;
use crate::lock::{DeployLock, Wait};
use crate::paths::Node;

/// How long the keeper waits for git to move the ref after a deploy.
const KEEP_LOCK_AT_MOST: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(5);
const ZERO_LENGTHS: [usize; 2] = [40, 64];

/// Internal commands run by the repository's hooks
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: HookCommand,
}

#[derive(Debug, clap::Subcommand)]
enum HookCommand {
    /// Deploy a push to the deploy branch (run by hooks/pre-receive, as root)
    PreReceive,
    /// Hold the deploy lock on FD until REF is NEW or PID has exited
    #[command(hide = true)]
    HoldLock {
        #[arg(long)]
        fd: i32,
        #[arg(long = "ref")]
        refname: String,
        #[arg(long)]
        new: String,
        #[arg(long)]
        pid: i32,
    },
}

pub fn run(node: &Node, args: Args) -> Result<()> {
    match args.command {
        HookCommand::PreReceive => pre_receive(node),
        HookCommand::HoldLock {
            fd,
            refname,
            new,
            pid,
        } => hold_lock(node, fd, &refname, &new, pid),
    }
}

/// One line of pre-receive input: `OLD NEW REFNAME`.
#[derive(Debug, PartialEq, Eq)]
struct Update {
    old: String,
    new: String,
    refname: String,
}

/// What the hook script passes before git's ref lines.
#[derive(Debug, Default, PartialEq, Eq)]
struct Header {
    quarantine: Option<PathBuf>,
    receive_pack: Option<i32>,
    /// `git push -o dry-run`: report what would change, then refuse the push.
    dry_run: bool,
}

fn pre_receive(node: &Node) -> Result<()> {
    let mut input = String::new();
    std::io::stdin()
        .lock()
        .take(1 << 20)
        .read_to_string(&mut input)
        .context("cannot read the pushed refs")?;
    let (header, updates) = parse_input(&input)?;
    check_run_by_receive_pack(header.receive_pack)?;
    let config = Config::load(node)?;
    let branch_ref = format!("refs/heads/{}", config.branch());
    let Some(update) = updates.iter().find(|u| u.refname == branch_ref) else {
        for u in &updates {
            eprintln!(
                "troops: {} stored, not deployed (the deploy branch is {})",
                u.refname,
                config.branch()
            );
        }
        return Ok(());
    };
    if is_zero(&update.new) {
        return Err(UserError::new(format!(
            "refusing to delete the deploy branch `{}`",
            config.branch()
        ))
        .hint("push another commit to it instead; a forced push of an older commit rolls back")
        .into());
    }
    let repo = quarantined_repo(node, header.quarantine.as_deref())?;
    let user = invoking_user();
    let lock = DeployLock::acquire(
        node,
        Wait::Block,
        &format!("push of {} by {user}", short(&update.new)),
    )?;
    check_branch_unmoved(&Repo::bare(&node.repo()), update, config.branch())?;
    let request = Request {
        trigger: Trigger::Push,
        user: &user,
        dry_run: header.dry_run,
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
    if let Some(pid) = header.receive_pack {
        spawn_keeper(node, lock, update, pid)?;
    }
    Ok(())
}

fn parse_input(input: &str) -> Result<(Header, Vec<Update>)> {
    let mut header = Header::default();
    let mut lines = input.lines();
    for line in lines.by_ref() {
        if line.is_empty() {
            break;
        }
        match line.split_once(' ') {
            Some(("quarantine", "")) => {}
            Some(("quarantine", path)) => header.quarantine = Some(PathBuf::from(path)),
            Some(("pid", pid)) => header.receive_pack = Some(pid.parse().context("invalid pid")?),
            Some(("option", "dry-run")) => header.dry_run = true,
            Some(("option", other)) => {
                return Err(UserError::new(format!("unknown push option `{other}`"))
                    .hint("troops knows the push option `dry-run`")
                    .into());
            }
            _ => bail!("unexpected hook input `{line}`"),
        }
    }
    let updates = lines.map(parse_update).collect::<Result<_>>()?;
    Ok((header, updates))
}

/// The hook input is only believed when it comes from a push: the pid it
/// names must be a `git receive-pack` among our ancestors. A member running
/// the sudo-allowed command by hand (to deploy an arbitrary commit without
/// moving the branch, or to hold the lock) is refused.
fn check_run_by_receive_pack(claimed: Option<i32>) -> Result<()> {
    let refuse = || {
        UserError::new("`troops hook pre-receive` only runs for a push")
            .hint("push to the node's repository instead, or run `troops deploy`")
    };
    let claimed = claimed.ok_or_else(refuse)?;
    let mut pid = nix::unistd::getppid().as_raw();
    for _ in 0..8 {
        if pid == claimed {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            return match cmdline.contains("receive-pack") {
                true => Ok(()),
                false => Err(refuse().into()),
            };
        }
        pid = match parent_of(pid) {
            Some(parent) if parent > 1 => parent,
            _ => break,
        };
    }
    Err(refuse().into())
}

/// The parent pid from /proc/PID/stat (the field after the `(comm)`).
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn parse_update(line: &str) -> Result<Update> {
    let mut fields = line.split(' ');
    let (Some(old), Some(new), Some(refname), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        bail!("malformed ref update `{line}`");
    };
    for id in [old, new] {
        if !ZERO_LENGTHS.contains(&id.len()) || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
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

/// The node's repository, seeing the push's quarantined objects.
///
/// The quarantine must be git's own incoming directory inside the node's
/// object store, so a pusher cannot point root's git at other files.
fn quarantined_repo(node: &Node, quarantine: Option<&Path>) -> Result<Repo> {
    let repo = Repo::bare(&node.repo());
    let Some(dir) = quarantine else {
        return Ok(repo);
    };
    let objects = std::fs::canonicalize(node.repo().join("objects"))?;
    let dir =
        std::fs::canonicalize(dir).with_context(|| format!("no quarantine `{}`", dir.display()))?;
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let inside = dir.parent() == Some(objects.as_path());
    if !inside || !(name.starts_with("tmp_objdir-incoming-") || name.starts_with("incoming-")) {
        bail!("refusing quarantine directory `{}`", dir.display());
    }
    Ok(repo.with_objects(&dir, &objects))
}

/// Under the lock: the branch must still be where this push found it.
fn check_branch_unmoved(repo: &Repo, update: &Update, branch: &str) -> Result<()> {
    let current = repo.resolve_commit(&update.refname)?;
    let expected = (!is_zero(&update.old)).then(|| update.old.clone());
    if current == expected {
        return Ok(());
    }
    let now = current.as_deref().map_or("nothing", short);
    Err(UserError::new(format!(
        "the branch `{branch}` moved to {now} while this push waited; nothing was deployed"
    ))
    .hint("fetch, merge or rebase, and push again")
    .into())
}

/// Hands the lock to a detached `troops hook hold-lock` that outlives this hook.
fn spawn_keeper(node: &Node, lock: DeployLock, update: &Update, pid: i32) -> Result<()> {
    let fd = lock.as_raw_fd();
    lock.set_inheritable(true)?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("--root")
        .arg(node.root())
        .args([
            "hook",
            "hold-lock",
            "--fd",
            &fd.to_string(),
            "--ref",
            &update.refname,
        ])
        .args(["--new", &update.new, "--pid", &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        // git reads the hook's stderr until it closes: the keeper must not hold it.
        .stderr(Stdio::null());
    unsafe_setsid(&mut cmd);
    cmd.spawn().context("cannot start the lock keeper")?;
    // Dropping the lock would unlock it for the keeper too (flock locks belong
    // to the shared open file); closing our descriptor at exit does not.
    std::mem::forget(lock);
    Ok(())
}

fn unsafe_setsid(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
}

/// Keeps the inherited lock until git has moved `refname` to `new`.
fn hold_lock(node: &Node, fd: i32, refname: &str, new: &str, pid: i32) -> Result<()> {
    use std::os::fd::FromRawFd;
    // The lock lives in the inherited descriptor; closing it releases it.
    let open = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok();
    let expected = std::fs::canonicalize(node.lock_file()).ok();
    if open.is_none() || open != expected {
        bail!("descriptor {fd} is not the node's deploy lock");
    }
    // SAFETY: the descriptor is open on the lock file (checked above), and
    // nothing else in this process owns it.
    let lock = unsafe { std::fs::File::from_raw_fd(fd) };
    let repo = node.repo();
    let started = Instant::now();
    while started.elapsed() < KEEP_LOCK_AT_MOST
        && ref_value(&repo, refname).as_deref() != Some(new)
        && alive(pid)
    {
        std::thread::sleep(POLL);
    }
    drop(lock);
    Ok(())
}

/// The loose ref's value: git writes a loose ref whenever it updates one.
fn ref_value(repo: &Path, refname: &str) -> Option<String> {
    let text = std::fs::read_to_string(repo.join(refname)).ok()?;
    Some(text.trim().to_owned())
}

fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

/// The hook `troops init` installs. It runs troops through sudo unless the
/// pusher is root, and passes on stdin what sudo's clean environment drops:
/// git's quarantine directory, receive-pack's pid and the push options.
const HOOK: &str = r#"#!/bin/sh
# Installed by `troops init`: deploys pushes to the deploy branch.
# Changes here are overwritten.
header() {
	printf 'quarantine %s\npid %s\n' "${GIT_QUARANTINE_PATH:-}" "$PPID"
	i=0
	while [ "$i" -lt "${GIT_PUSH_OPTION_COUNT:-0}" ]; do
		# Only the variable's name is built here; its value is not evaluated.
		eval "printf 'option %s\n' \"\$GIT_PUSH_OPTION_$i\""
		i=$((i + 1))
	done
	printf '\n'
	cat
}
if [ "$(id -u)" = 0 ]; then
	header | @TROOPS@ hook pre-receive
else
	header | sudo -n -- @TROOPS@ hook pre-receive
fi
"#;

pub fn hook_script(exe: &Path, root: &Path) -> String {
    HOOK.replace(
        "@TROOPS@",
        &format!("{} --root {}", quote(exe), quote(root)),
    )
}

/// The sudoers drop-in: group members may run exactly these command lines.
pub fn sudoers(exe: &Path, root: &Path) -> String {
    let troops = format!("{} --root {}", sudo_escape(exe), sudo_escape(root));
    format!(
        "# Installed by `troops init`: members of group troops may deploy\n\
         # (a push, or a re-deploy of the node's branch) and nothing else.\n\
         Defaults!{exe} env_reset\n\
         %troops ALL=(root) NOPASSWD: {troops} hook pre-receive, {troops} deploy\n",
        exe = sudo_escape(exe)
    )
}

fn quote(path: &Path) -> String {
    format!("'{}'", path.to_string_lossy().replace('\'', "'\\''"))
}

/// sudoers needs `\` before its special characters in command arguments.
fn sudo_escape(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        if ",:=\\ ".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Installs the hook and, where the group exists, the sudoers drop-in.
pub fn install(node: &Node) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find the troops executable")?;
    let hooks = node.repo().join("hooks");
    init::ensure_dir(&hooks, 0o755, nix::unistd::Gid::from_raw(0))?;
    let hook = hooks.join("pre-receive");
    crate::history::write_atomically(&hook, hook_script(&exe, node.root()).as_bytes())?;
    init::set_mode(&hook, 0o755)?;
    if init::troops_group().is_some() {
        install_sudoers(node, &exe)?;
    }
    Ok(())
}

fn install_sudoers(node: &Node, exe: &Path) -> Result<()> {
    let dir = node.root().join("etc/sudoers.d");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    let path = dir.join("troops");
    let tmp = dir.join(".troops.new");
    std::fs::write(&tmp, sudoers(exe, node.root()))?;
    init::set_mode(&tmp, 0o440)?;
    let mut check = Command::new("visudo");
    check.args(["-c", "-q", "-f"]).arg(&tmp);
    match check.output() {
        Ok(out) if !out.status.success() => {
            let _ = std::fs::remove_file(&tmp);
            bail!(
                "visudo rejects the sudoers drop-in: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(_) => {}
        Err(_) => eprintln!("troops: warning: visudo not found; sudoers drop-in not checked"),
    }
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write `{}`", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1111111111111111111111111111111111111111";
    const Z: &str = "0000000000000000000000000000000000000000";

    #[test]
    fn input_is_parsed_and_validated() {
        let input = format!(
            "quarantine /r/objects/tmp_objdir-incoming-x\npid 42\n\n{Z} {A} refs/heads/master\n"
        );
        let (header, updates) = parse_input(&input).unwrap();
        assert_eq!(header.receive_pack, Some(42));
        assert_eq!(
            header.quarantine.as_deref(),
            Some(Path::new("/r/objects/tmp_objdir-incoming-x"))
        );
        assert_eq!(updates[0].new, A);
        for bad in [
            format!("\n{Z} {A}\n"),
            format!("\n{Z} xyz refs/heads/master\n"),
            format!("\n{Z} {A} refs/heads/a b\n"),
            format!("\n{Z} {A} master\n"),
            "env GIT_DIR=/etc\n\n".to_owned(),
        ] {
            assert!(parse_input(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn scripts_quote_paths() {
        let script = hook_script(Path::new("/opt/it's/troops"), Path::new("/"));
        assert!(
            script.contains("'/opt/it'\\''s/troops' --root '/'"),
            "{script}"
        );
        let rule = sudoers(Path::new("/usr/bin/troops"), Path::new("/"));
        assert!(rule.contains("NOPASSWD: /usr/bin/troops --root / hook pre-receive, /usr/bin/troops --root / deploy\n"), "{rule}");
        assert_eq!(sudo_escape(Path::new("/a b,c")), "/a\\ b\\,c");
    }
}
