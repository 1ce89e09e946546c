//! `troops publish`: the deployment repository as a static mirror.
//!
//! A static mirror is a bare repository served as plain files, which git
//! fetches over its "dumb" HTTP protocol: `info/refs` lists the refs,
//! `objects/info/packs` the packs. Any web server, object store or CDN can
//! serve it, and a pull costs the server a few file requests instead of an
//! SSH handshake and an upload-pack. Nodes need not trust the mirror when
//! they require signed commits: what it serves is verified like any remote.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::engine::source_repo;
use crate::error::UserError;
use crate::git::Repo;
use crate::paths::{Node, write_atomically_mode};

/// Publish the deployment repository as a static mirror in DEST
///
/// DEST becomes a bare repository that a web server, object store or CDN
/// serves as plain files (git's dumb HTTP protocol): nodes add
/// https://HOST/PATH as a remote and pull from it with no git service on the
/// server. Several mirrors are several remotes. Branches and tags are
/// published and deleted ones removed; the objects and pack list are in
/// place before the ref list that names them, so a node pulling meanwhile
/// sees the old state or the new one. Keep it current by running this after
/// each push, from an admin's clone or in the post-receive hook of the
/// repository the admins push to:
///
///     exec troops publish --repository . /srv/www/deploy.git
///
/// With `signatures = ssh|gpg` on the nodes, the mirror need not be
/// trusted: a commit it tampers with is refused by name, and a mirror that
/// lags behind never makes a node go back.
///
/// Example: `troops publish /srv/www/deploy.git`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The deployment repository to publish (a clone or the bare one)
    #[arg(long, value_name = "DIR", default_value = ".")]
    repository: PathBuf,
    /// The mirror's directory: new, empty, or published here before
    #[arg(value_name = "DEST")]
    dest: PathBuf,
}

/// What marks a directory as a mirror `troops publish` made.
const MARK: &str = "troops.mirror";

pub fn run(node: &Node, args: Args) -> Result<()> {
    let source = source_repo(node, Some(&args.repository))?;
    let source_dir = source.run(["rev-parse", "--absolute-git-dir"])?;
    let source_dir = source_dir.trim_end_matches('\n');
    let mirror = prepare(&args.dest)?;
    // Packs, not loose objects: over dumb HTTP each loose object is a
    // request of its own.
    let mut fetch = mirror.command();
    fetch
        .args(["-c", "fetch.unpackLimit=1", "fetch", "--quiet", "--prune"])
        .args(["--no-tags", "--no-write-fetch-head", "--"])
        .arg(source_dir)
        .args(["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"]);
    crate::git::output(&mut fetch).map_err(|e| {
        e.context(UserError::new(format!(
            "cannot copy `{}` into the mirror `{}`",
            args.repository.display(),
            args.dest.display()
        )))
    })?;
    follow_head(&source, &mirror)?;
    write_pack_list(&args.dest)?;
    mirror.run(["update-server-info"])?;
    // Keeps the number of packs (each an index download for a new node)
    // bounded; repack updates the server info again.
    mirror.run(["gc", "--auto", "--quiet"])?;
    let branches = mirror.run(["for-each-ref", "--format=%(refname:short)", "refs/heads"])?;
    let branches: Vec<&str> = branches.lines().collect();
    eprintln!(
        "troops: published {} to `{}`; serve that directory as static files",
        if branches.is_empty() {
            "no branch".to_owned()
        } else {
            format!("branch {}", branches.join(", "))
        },
        args.dest.display()
    );
    Ok(())
}

/// The mirror at `dest`, made if new; anything else there is refused.
fn prepare(dest: &Path) -> Result<Repo> {
    let mirror = Repo::untrusted_bare(dest);
    let empty = match fs::read_dir(dest) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read `{}`", dest.display()));
        }
    };
    if !empty {
        let marked = mirror
            .run(["config", "--bool", MARK])
            .is_ok_and(|v| v.trim() == "true");
        if !marked {
            return Err(UserError::new(format!(
                "`{}` is not empty and not a mirror `troops publish` made",
                dest.display()
            ))
            .hint("give a new or empty directory")
            .into());
        }
        return Ok(mirror);
    }
    // Readable by all whatever the umask: a web server serves it.
    let mut init = crate::git::pinned(None);
    init.args(["init", "--quiet", "--bare", "--shared=0644", "--"])
        .arg(dest);
    crate::git::output(&mut init).map_err(|e| {
        e.context(UserError::new(format!(
            "cannot create `{}`",
            dest.display()
        )))
    })?;
    mirror.run(["config", MARK, "true"])?;
    Ok(mirror)
}

/// Points the mirror's HEAD at the branch the source's HEAD names, so a
/// clone of the mirror checks out what the admins work on.
fn follow_head(source: &Repo, mirror: &Repo) -> Result<()> {
    let head = source
        .run(["symbolic-ref", "--quiet", "HEAD"])
        .unwrap_or_default();
    let head = head.trim();
    if head.starts_with("refs/heads/") && mirror.resolve_commit(head)?.is_some() {
        mirror.run(["symbolic-ref", "HEAD", head])?;
    }
    Ok(())
}

/// Writes `objects/info/packs` before `update-server-info` writes the ref
/// list: git writes the refs first, and a node reading new refs with the
/// old pack list would miss the objects.
fn write_pack_list(dest: &Path) -> Result<()> {
    let dir = dest.join("objects/pack");
    let mut packs: Vec<String> = fs::read_dir(&dir)
        .with_context(|| format!("cannot read `{}`", dir.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".pack"))
        .collect();
    packs.sort();
    let mut list: String = packs.iter().map(|p| format!("P {p}\n")).collect();
    list.push('\n');
    write_atomically_mode(&dest.join("objects/info/packs"), list.as_bytes(), 0o644)
}
