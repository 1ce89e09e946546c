//! The `troops` Python module and running deploy.py with it.
//!
//! The module's source is compiled into the binary and written below the
//! node's `lib/python` when it differs, so the module a deploy imports always
//! matches the binary that runs it. Virtualenvs find it through a `.pth` file.

use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::paths::Node;

const MODULE: &[(&str, &str)] = &[
    (
        "troops/__init__.py",
        include_str!("../python/troops/troops/__init__.py"),
    ),
    (
        "troops/__main__.py",
        include_str!("../python/troops/troops/__main__.py"),
    ),
    ("troops/py.typed", ""),
];

/// Writes the embedded module below `lib/python` where it differs.
pub fn install_module(node: &Node) -> Result<()> {
    let lib = node.python_lib();
    for (name, source) in MODULE {
        let path = lib.join(name);
        if fs::read(&path).is_ok_and(|old| old == source.as_bytes()) {
            continue;
        }
        let dir = path.parent().unwrap_or(&lib);
        fs::create_dir_all(dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
        crate::paths::write_atomically_mode(&path, source.as_bytes(), 0o644)?;
    }
    Ok(())
}

/// What the deploy sees of who started it and what it runs.
pub struct DeployEnv<'a> {
    pub node: &'a Node,
    pub commit: &'a str,
    pub trigger: &'a str,
    /// The roles troops.toml gives the node, checked already; passed on as
    /// TROOPS_NODE_ROLES so the module need not parse the file again.
    pub roles: &'a [String],
    /// Sets PYDEBIANADMIN_DRY_RUN=1: helpers report and change nothing.
    pub dry_run: bool,
    /// Sets PYDEBIANADMIN_DRIFT_FILE: in a dry run, helpers append there
    /// each change they would make.
    pub drift_file: Option<&'a Path>,
}

/// `python -m troops ARGS...`, without the cost of `-m` (runpy).
const RUNNER: &str = "import sys, troops.__main__; sys.exit(troops.__main__.main(sys.argv[1:]))";

/// `VENV/bin/python -u -c RUNNER ARGS...` (what `python -m troops ARGS...`
/// does) in `checkout`, with a clean environment.
///
/// The caller's `GIT_*` variables (a hook's quarantine among them) and
/// `PYTHON*` settings never reach deploy.py.
pub fn command<I, S>(venv: &Path, checkout: &Path, env: &DeployEnv, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(venv.join("bin/python"));
    cmd.args(["-u", "-c", RUNNER])
        .args(args)
        .current_dir(checkout);
    for (name, _) in std::env::vars_os() {
        let name_str = name.to_string_lossy();
        if name_str.starts_with("GIT_")
            || name_str.starts_with("PYTHON")
            || name_str == "VIRTUAL_ENV"
        {
            cmd.env_remove(&name);
        }
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    let mut paths = vec![venv.join("bin")];
    paths.extend(std::env::split_paths(&path));
    cmd.env("PATH", std::env::join_paths(paths).unwrap_or(path))
        .env("VIRTUAL_ENV", venv)
        .env("PYTHONUNBUFFERED", "1")
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .env("TROOPS_ROOT", env.node.root())
        .env("TROOPS_COMMIT", env.commit)
        .env("TROOPS_TRIGGER", env.trigger)
        .env("TROOPS_NODE_ROLES", env.roles.join(" "));
    if env.dry_run {
        cmd.env("PYDEBIANADMIN_DRY_RUN", "1");
    }
    if let Some(file) = env.drift_file {
        cmd.env("PYDEBIANADMIN_DRIFT_FILE", file);
    }
    cmd
}
