//! Where Troops keeps things on a node, relative to a relocatable root, and
//! the helpers that create and change those files.
//!
//! Every path Troops touches is derived from one `Node` so that tests (and
//! admins trying things out) can run many nodes side by side with `--root`.
//! Two repositories live below it: `repo/main.git`, where members of the
//! group `troops` push (theirs to write, so root treats it as hostile data),
//! and `deploy.git`, root's own, the only one root deploys from. Helpers that
//! change a file members can write (`open_dir_nofollow`, `write_at`) work
//! through descriptors and never follow a symlink.

use std::fs;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::fcntl::{AtFlags, OFlag, RenameFlags, openat, renameat2};
use nix::sys::stat::{Mode, fchmod};
use nix::unistd::{Gid, Group, Uid, fchown, fchownat};

/// The paths of one node, all below `root` (`/` on a real node).
#[derive(Debug, Clone)]
pub struct Node {
    root: PathBuf,
}

impl Node {
    pub fn new(root: &Path) -> Node {
        Node {
            root: root.to_path_buf(),
        }
    }

    /// The relocation root itself, handed to deploys as `TROOPS_ROOT`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `/var/lib/troops`: everything Troops owns.
    pub fn lib(&self) -> PathBuf {
        self.root.join("var/lib/troops")
    }

    /// The members' repository: pushes land here (group `troops` writes it).
    pub fn push_repo(&self) -> PathBuf {
        self.lib().join("repo/main.git")
    }

    /// Root's repository: what the node deploys from; only root writes it.
    pub fn deploy_repo(&self) -> PathBuf {
        self.lib().join("deploy.git")
    }

    /// The node's SSH identity used when fetching.
    pub fn ssh_key(&self) -> PathBuf {
        self.lib().join("ssh/id_ed25519")
    }

    /// Deploy lock, history records and logs.
    pub fn state(&self) -> PathBuf {
        self.lib().join("state")
    }

    pub fn lock_file(&self) -> PathBuf {
        self.state().join("lock")
    }

    pub fn history_dir(&self) -> PathBuf {
        self.state().join("history")
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.state().join("logs")
    }

    /// Holds the SHA of the commit whose deploy last succeeded.
    pub fn deployed_file(&self) -> PathBuf {
        self.state().join("deployed")
    }

    /// Commits a pull refused (unsigned, untrusted), one file each, so that
    /// each is recorded once and not at every pull.
    pub fn refused_dir(&self) -> PathBuf {
        self.state().join("refused")
    }

    /// Virtualenvs keyed by requirements, Python and Troops version.
    pub fn venvs(&self) -> PathBuf {
        self.lib().join("cache/venvs")
    }

    /// Checked-out commits that deploys run in.
    pub fn work(&self) -> PathBuf {
        self.lib().join("work")
    }

    /// Where the embedded `troops` Python module is written for virtualenvs.
    pub fn python_lib(&self) -> PathBuf {
        self.lib().join("lib/python")
    }

    /// `/etc/troops`: node configuration, written by seeding or by hand.
    pub fn etc(&self) -> PathBuf {
        self.root.join("etc/troops")
    }

    pub fn config_file(&self) -> PathBuf {
        self.etc().join("troops.toml")
    }

    /// Root's git configuration for pulls: seeded remotes (their URLs may
    /// carry credentials) and transport settings such as `http.sslCAInfo`.
    pub fn git_config(&self) -> PathBuf {
        self.etc().join("gitconfig")
    }

    /// The seed a preseed `late_command` or cloud-init's `write_files`
    /// leaves for `troops seed`.
    pub fn seed_file(&self) -> PathBuf {
        self.etc().join("seed.yaml")
    }

    /// Git servers' host keys the seed pinned, for root's SSH fetches.
    pub fn known_hosts(&self) -> PathBuf {
        self.etc().join("known_hosts")
    }
}

/// The group `troops` if it exists, else root's group.
pub fn troops_gid() -> Gid {
    troops_group().unwrap_or(Gid::from_raw(0))
}

/// The group `troops`, whose members may push.
pub fn troops_group() -> Option<Gid> {
    // /etc/group first, where the package's addgroup puts it: asking NSS
    // loads its modules (systemd's), which cost a no-change pull more than
    // all of its own work.
    group_in_file(Path::new("/etc/group"), "troops")
        .or_else(|| Group::from_name("troops").ok().flatten().map(|g| g.gid))
}

/// `name`'s gid in a group(5) file, if the file lists it.
fn group_in_file(path: &Path, name: &str) -> Option<Gid> {
    fs::read_to_string(path).ok()?.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        fields.nth(1)?.parse().ok().map(Gid::from_raw)
    })
}

/// The directories every deploy needs, with their owners and modes.
pub fn ensure_state(node: &Node) -> Result<()> {
    let gid = troops_gid();
    let shared = [
        node.lib(),
        node.lib().join("repo"),
        node.state(),
        node.history_dir(),
        node.logs_dir(),
        node.lib().join("cache"),
        node.venvs(),
        node.work(),
    ];
    for dir in &shared {
        ensure_dir(dir, 0o750, gid)?;
    }
    ensure_dir(&node.refused_dir(), 0o700, Gid::from_raw(0))?;
    ensure_dir(&node.lib().join("lib"), 0o755, Gid::from_raw(0))?;
    ensure_dir(&node.python_lib(), 0o755, Gid::from_raw(0))?;
    ensure_dir(&node.lib().join("ssh"), 0o700, Gid::from_raw(0))?;
    ensure_dir(&node.etc(), 0o755, Gid::from_raw(0))
}

/// Creates `dir` (and its parents) and gives it to root, `gid` and `mode`.
/// Only for paths whose parents members cannot write.
pub fn ensure_dir(dir: &Path, mode: u32, gid: Gid) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    let fd = open_dir_nofollow(dir)?;
    set_owner_fd(&fd, dir, gid)?;
    fchmod(&fd, Mode::from_bits_truncate(mode))
        .with_context(|| format!("cannot set the mode of `{}`", dir.display()))
}

pub fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of `{}`", path.display()))
}

/// A directory, not a link to one.
const DIR_NOFOLLOW: OFlag = OFlag::O_DIRECTORY
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC)
    .union(OFlag::O_RDONLY);

/// Opens a directory, refusing a symlink in its last component.
pub fn open_dir_nofollow(dir: &Path) -> Result<OwnedFd> {
    nix::fcntl::open(dir, DIR_NOFOLLOW, Mode::empty())
        .with_context(|| format!("cannot open `{}` (a directory, not a link)", dir.display()))
}

/// Opens `name` below the open directory `dir` as a directory, not a link.
pub fn open_subdir(dir: &impl AsFd, name: &str, shown: &Path) -> Result<OwnedFd> {
    openat(dir, name, DIR_NOFOLLOW, Mode::empty()).with_context(|| {
        format!(
            "cannot open `{}` (a directory, not a link)",
            shown.join(name).display()
        )
    })
}

/// Gives an open file to root and `gid`; only root can, and only root needs to.
pub fn set_owner_fd(fd: &impl AsFd, shown: &Path, gid: Gid) -> Result<()> {
    if Uid::effective().is_root() {
        fchown(fd, Some(Uid::from_raw(0)), Some(gid))
            .with_context(|| format!("cannot change the owner of `{}`", shown.display()))?;
    }
    Ok(())
}

/// Gives every entry below the open directory `dir` to root and `gid`,
/// without following a symlink (links are changed themselves).
pub fn chown_tree_at(dir: &OwnedFd, shown: &Path, gid: Gid) -> Result<()> {
    set_owner_fd(dir, shown, gid)?;
    if !Uid::effective().is_root() {
        return Ok(());
    }
    let mut entries = nix::dir::Dir::from_fd(dir.try_clone()?)
        .with_context(|| format!("cannot read `{}`", shown.display()))?;
    let names: Vec<(String, bool)> = entries
        .iter()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_str().ok()?.to_owned();
            let is_dir = e.file_type() == Some(nix::dir::Type::Directory);
            (name != "." && name != "..").then_some((name, is_dir))
        })
        .collect();
    for (name, is_dir) in names {
        if is_dir {
            let sub = open_subdir(dir, &name, shown)?;
            chown_tree_at(&sub, &shown.join(&name), gid)?;
        } else {
            fchownat(
                dir,
                name.as_str(),
                Some(Uid::from_raw(0)),
                Some(gid),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .with_context(|| {
                format!(
                    "cannot change the owner of `{}`",
                    shown.join(&name).display()
                )
            })?;
        }
    }
    Ok(())
}

/// Replaces `name` in the open directory `dir` with `data`, owned by root and
/// `gid` with `mode`, set before the file gets its name: a link planted at
/// `name` is replaced, never followed.
pub fn write_at(dir: &OwnedFd, name: &str, data: &[u8], mode: u32, gid: Gid) -> Result<()> {
    // The pid alone may repeat across PID namespaces sharing the directory.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let tmp = format!(".{name}.troops-{}-{nanos:x}", std::process::id());
    let _ = nix::unistd::unlinkat(dir, tmp.as_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
    let fd = openat(
        dir,
        tmp.as_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .with_context(|| format!("cannot create `{tmp}`"))?;
    let mut file = fs::File::from(fd);
    file.write_all(data)?;
    set_owner_fd(&file, Path::new(name), gid)?;
    fchmod(&file, Mode::from_bits_truncate(mode))?;
    file.sync_all()?;
    renameat2(dir, tmp.as_str(), dir, name, RenameFlags::empty())
        .with_context(|| format!("cannot write `{name}`"))?;
    Ok(())
}

/// Replaces `path` with `data` so readers see the old or the new file, whole.
/// The file gets `mode` before its name; a link at `path` is replaced.
pub fn write_atomically_mode(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    replace(path, data, mode, true)
}

/// `write_atomically_mode` without syncing, for files made anew by every
/// run (metrics): after a power loss they may be old, never torn.
pub fn replace_file(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    replace(path, data, mode, false)
}

fn replace(path: &Path, data: &[u8], mode: u32, durable: bool) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .permissions(fs::Permissions::from_mode(mode))
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a file in `{}`", dir.display()))?;
    tmp.write_all(data)?;
    // The umask may have narrowed the mode asked for.
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))?;
    if durable {
        tmp.as_file().sync_all()?;
    }
    tmp.persist(path)
        .with_context(|| format!("cannot write `{}`", path.display()))?;
    if !durable {
        return Ok(());
    }
    // The new name is durable only once the directory is: after a power
    // loss the file is the old one or the new one, never missing.
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync `{}`", dir.display()))
}

/// Saves a run's report (the last pull, the last check) as JSON, replaced
/// whole; every run writes it anew, so it is not synced.
pub fn save_report(path: &Path, report: &impl serde::Serialize) -> Result<()> {
    replace_file(path, &serde_json::to_vec_pretty(report)?, 0o640)
}

/// The report saved at `path`, if there is a readable one.
pub fn load_report<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    serde_json::from_slice(&fs::read(path).ok()?).ok()
}

/// `write_atomically_mode` with 0640: root writes, the group reads.
pub fn write_atomically(path: &Path, data: &[u8]) -> Result<()> {
    write_atomically_mode(path, data, 0o640)
}

/// Reads a file members may have written as data: not through a link, only
/// a regular file, and at most `limit` bytes (a larger one is refused).
pub fn read_untrusted(path: &Path, limit: u64) -> Result<Option<Vec<u8>>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = match fs::OpenOptions::new()
        .read(true)
        // No link, and a FIFO cannot block the open.
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits())
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot open `{}` (not a link)", path.display()));
        }
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        anyhow::bail!("`{}` is not a regular file", path.display());
    }
    if meta.len() > limit {
        anyhow::bail!("`{}` is larger than {limit} bytes", path.display());
    }
    let mut data = Vec::new();
    file.take(limit + 1).read_to_end(&mut data)?;
    if data.len() as u64 > limit {
        anyhow::bail!("`{}` is larger than {limit} bytes", path.display());
    }
    Ok(Some(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_is_found_by_its_exact_name() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("group");
        fs::write(
            &file,
            "root:x:0:\ntroops-old:x:998:\ntroops:x:999:alice,bob\nbroken\n",
        )
        .unwrap();
        assert_eq!(group_in_file(&file, "troops"), Some(Gid::from_raw(999)));
        assert_eq!(group_in_file(&file, "nobody"), None);
    }

    #[test]
    fn every_path_is_below_the_root() {
        let node = Node::new(Path::new("/tmp/n1"));
        for p in [
            node.push_repo(),
            node.deploy_repo(),
            node.ssh_key(),
            node.lock_file(),
            node.venvs(),
            node.work(),
            node.python_lib(),
            node.config_file(),
            node.git_config(),
        ] {
            assert!(p.starts_with("/tmp/n1"), "{} escapes the root", p.display());
        }
        assert_eq!(
            node.push_repo(),
            Path::new("/tmp/n1/var/lib/troops/repo/main.git")
        );
    }

    #[test]
    fn writes_replace_a_planted_link_instead_of_following_it() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("hook")).unwrap();
        let fd = open_dir_nofollow(dir.path()).unwrap();
        write_at(&fd, "hook", b"new", 0o755, Gid::from_raw(0)).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
        let hook = dir.path().join("hook");
        assert!(!fs::symlink_metadata(&hook).unwrap().is_symlink());
        assert_eq!(fs::read_to_string(&hook).unwrap(), "new");
        let mode = fs::metadata(&hook).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o755);
    }

    #[test]
    fn untrusted_reads_refuse_links_and_large_files() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        fs::write(&big, vec![b'x'; 100]).unwrap();
        std::os::unix::fs::symlink(&big, dir.path().join("link")).unwrap();
        assert!(read_untrusted(&dir.path().join("link"), 1000).is_err());
        assert!(read_untrusted(&big, 10).is_err());
        assert_eq!(read_untrusted(&big, 100).unwrap().unwrap().len(), 100);
        assert!(
            read_untrusted(&dir.path().join("none"), 10)
                .unwrap()
                .is_none()
        );
    }
}
