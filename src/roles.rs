//! `troops roles` and `troops hosts`: what deploy.py says about roles.
//!
//! Both read deploy.py through `python -m troops inspect`, which runs the
//! file's top level but no deployable, with pydebianadmin in dry-run mode,
//! and records no deploy. Since the top level is code, a node that requires
//! signatures checks the commit first, as a deploy would. They hold the deploy lock only while they find or
//! build a virtualenv. A caller who cannot write the node's caches (an admin's
//! own machine) gets a per-user cache instead.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::config::Config;
use crate::engine::{require_deploy_py, resolve, source_repo};
use crate::lock::{DeployLock, Wait};
use crate::paths::{self, Node};
use crate::python::{self, DeployEnv};
use crate::stream::{self, Sink};
use crate::{signatures, venv};

/// List the roles this node has
///
/// Evaluates deploy.py's role definitions (activate_role, define_role) and
/// the node's configured roles, without running any deployable. Prints one
/// role a line, sorted: what `troops.roles()` returns during a deploy.
///
/// Example: `troops roles --repository=.`
#[derive(Debug, clap::Args)]
pub struct RolesArgs {
    #[command(flatten)]
    source: Source,
}

/// List the hosts deploy.py defines for a role
///
/// Prints the hosts `define_role(ROLE, hosts=[...])` lists, one a line,
/// sorted, without running any deployable.
///
/// Example: `troops hosts interactive --repository=.`
#[derive(Debug, clap::Args)]
pub struct HostsArgs {
    /// The role whose hosts to list
    role: String,
    #[command(flatten)]
    source: Source,
}

#[derive(Debug, clap::Args)]
struct Source {
    /// Read deploy.py from this git repository instead of the node's own
    #[arg(long, value_name = "DIR")]
    repository: Option<PathBuf>,
    /// The commit to read [default: HEAD, or the node's deploy branch]
    #[arg(long, value_name = "REV")]
    rev: Option<String>,
}

#[derive(Deserialize)]
struct Report {
    roles: Vec<String>,
    hosts: std::collections::BTreeMap<String, Vec<String>>,
}

pub fn roles(node: &Node, args: RolesArgs) -> Result<()> {
    let report = inspect(node, &args.source)?;
    print_lines(&report.roles)
}

pub fn hosts(node: &Node, args: HostsArgs) -> Result<()> {
    let report = inspect(node, &args.source)?;
    print_lines(report.hosts.get(&args.role).map_or(&[][..], Vec::as_slice))
}

fn print_lines(lines: &[String]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    for line in lines {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// The hosts deploy.py defines for `role`, for `troops push --role`.
pub fn hosts_of(
    node: &Node,
    repository: &Path,
    rev: Option<&str>,
    role: &str,
) -> Result<Vec<String>> {
    let source = Source {
        repository: Some(repository.to_path_buf()),
        rev: rev.map(str::to_owned),
    };
    let mut report = inspect(node, &source)?;
    Ok(report.hosts.remove(role).unwrap_or_default())
}

fn inspect(node: &Node, source: &Source) -> Result<Report> {
    let config = Config::load(node)?;
    let repo = source_repo(node, source.repository.as_deref())?;
    let commit = resolve(&repo, &config, source.rev.as_deref())?;
    // deploy.py's top level runs here: only what a deploy would run.
    signatures::check(node, &config, &repo, &commit)?;
    let cache = cache_node(node)?;
    let checkout = tempfile::Builder::new()
        .prefix("troops-inspect-")
        .tempdir()
        .context("cannot create a directory for the checkout")?;
    repo.export(&commit, checkout.path())?;
    require_deploy_py(checkout.path(), &commit)?;
    python::install_module(&cache)?;
    let mut sink = Sink::within(None, config.deploy_timeout());
    let venv = {
        let _lock = DeployLock::acquire(&cache, Wait::Block, "troops roles building a virtualenv")?;
        venv::ensure(
            &cache,
            &config.python(),
            checkout.path(),
            &commit,
            &mut sink,
        )?
    };
    let report = checkout.path().join(".troops-report.json");
    let env = DeployEnv {
        node,
        commit: &commit,
        trigger: "inspect",
        roles: &config.roles,
        dry_run: true,
        drift_file: None,
    };
    let mut cmd = python::command(
        &venv,
        checkout.path(),
        &env,
        ["inspect".as_ref(), report.as_os_str()],
    );
    cmd.arg("deploy.py");
    let status = stream::run_status(&mut cmd, &mut sink)?;
    if !status.success() {
        return Err(user_error!(
            "deploy.py {} while its roles were being read",
            stream::explain(status)
        ));
    }
    let text = std::fs::read(&report).context("deploy.py's role report is missing")?;
    serde_json::from_slice(&text).context("cannot parse deploy.py's role report")
}

/// The node itself when its caches are writable, else a per-user cache.
fn cache_node(node: &Node) -> Result<Node> {
    if paths::ensure_state(node).is_ok() && writable(&node.venvs()) {
        return Ok(node.clone());
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .context("cannot find a cache directory: set HOME or XDG_CACHE_HOME")?;
    let cache = Node::new(&base.join("troops"));
    paths::ensure_state(&cache)?;
    Ok(cache)
}

fn writable(dir: &Path) -> bool {
    nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).is_ok()
}
