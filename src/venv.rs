//! Virtualenvs for deployments, keyed by what decides their contents.
//!
//! The key hashes requirements.txt, the interpreter (its resolved path, size
//! and mtime, which change when Debian upgrades it) and the Troops version.
//! A virtualenv is built in a directory of its own and then published by
//! atomically renaming a symlink `KEY -> KEY.RANDOM` into place: a killed
//! build leaves no `KEY` link, and the real directory never moves, so the
//! absolute paths pip writes into scripts stay valid. Unused ones are pruned.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::error::UserError;
use crate::paths::Node;
use crate::stream::{self, Sink};

/// How many published virtualenvs are kept, most recently used first.
const KEEP: usize = 3;

/// Returns a virtualenv for the checkout of `commit`, building it if needed.
/// Call with the deploy lock held: `prune` removes unpublished builds.
pub fn ensure(
    node: &Node,
    python: &Path,
    checkout: &Path,
    commit: &str,
    sink: &mut Sink,
) -> Result<PathBuf> {
    let requirements = checkout.join("requirements.txt");
    let content = match fs::read(&requirements) {
        Ok(content) => content,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read `{}`", requirements.display()));
        }
    };
    // Requirements that point into the commit (a local path, `-e`, `-r`, a
    // `file:` URL) install what the commit holds: its environment is its own.
    let owner = points_into_commit(&content).then_some(commit);
    let link = node.venvs().join(key(python, &content, owner)?);
    if link.join("bin/python").exists() {
        touch(&link);
        return Ok(link);
    }
    sink.note("troops: building a virtualenv for requirements.txt")?;
    let dir = build(node, python, checkout, &content, sink)?;
    publish(&dir, &link)?;
    Ok(link)
}

/// The cache key: a hash of everything that decides the virtualenv's
/// contents, the commit included when the requirements point into it.
fn key(python: &Path, requirements: &[u8], commit: Option<&str>) -> Result<String> {
    let resolved = fs::canonicalize(python).map_err(|e| {
        UserError::new(format!(
            "cannot find the Python interpreter `{}`: {e}",
            python.display()
        ))
        .hint("install python3 and python3-venv, or set `python` in /etc/troops/troops.toml")
    })?;
    let meta = fs::metadata(&resolved)?;
    let mut hash = Sha256::new();
    hash.update(env!("CARGO_PKG_VERSION"));
    hash.update([0]);
    hash.update(resolved.as_os_str().as_encoded_bytes());
    hash.update(format!("\0{}\0{}\0", meta.len(), meta.mtime()));
    hash.update(requirements);
    if let Some(commit) = commit {
        hash.update(b"\0commit ");
        hash.update(commit);
    }
    Ok(hex(&hash.finalize()[..12]))
}

/// Whether requirements.txt installs anything from the commit itself: a
/// path, an editable (`-e`), an include (`-r`, `-c`), a `file:` URL, or any
/// other option but the index ones (which name no file). When in doubt, yes.
fn points_into_commit(requirements: &[u8]) -> bool {
    const INDEX_OPTIONS: &[&str] = &[
        "-i",
        "--index-url",
        "--extra-index-url",
        "--no-index",
        "--trusted-host",
        "--pre",
        "--prefer-binary",
        "--only-binary",
        "--no-binary",
    ];
    String::from_utf8_lossy(requirements).lines().any(|line| {
        let line = line.split(" #").next().unwrap_or_default().trim();
        if line.is_empty() || line.starts_with('#') {
            return false;
        }
        if line.starts_with('-') {
            let option = line.split([' ', '=']).next().unwrap_or_default();
            return !INDEX_OPTIONS.contains(&option);
        }
        line.starts_with('.') || line.starts_with('/') || line.contains("file:")
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn build(
    node: &Node,
    python: &Path,
    checkout: &Path,
    reqs: &[u8],
    sink: &mut Sink,
) -> Result<PathBuf> {
    let dir = tempfile::Builder::new()
        .prefix(".build-")
        .tempdir_in(node.venvs())
        .with_context(|| format!("cannot create a directory in `{}`", node.venvs().display()))?;
    let uv = find_uv();
    let mut create = match &uv {
        Some(uv) => {
            let mut cmd = Command::new(uv);
            cmd.args(["venv", "--quiet", "--no-config", "--python"])
                .arg(python)
                .arg("--")
                .arg(dir.path());
            cmd
        }
        None => {
            let mut cmd = Command::new(python);
            // Isolated (-I): nothing from the caller's directory or PYTHON*
            // variables is imported by root's interpreter.
            cmd.args(["-I", "-m", "venv"]);
            // pip only installs requirements; without any, leaving it out
            // makes the virtualenv in a tenth of a second instead of seconds.
            if !has_requirements(reqs) {
                cmd.arg("--without-pip");
            }
            cmd.arg("--").arg(dir.path());
            cmd
        }
    };
    // A process sudo started keeps its caller's directory: never run there.
    create.current_dir("/");
    stream::run(&mut create, sink).map_err(|e| {
        e.context(UserError::new("cannot create a virtualenv").hint(
            "install python3-venv (`apt install python3-venv`) or set `python` in /etc/troops/troops.toml",
        ))
    })?;
    link_troops_module(node, dir.path())?;
    crate::failpoint::hit("venv");
    if has_requirements(reqs) {
        install_requirements(uv.as_deref(), dir.path(), checkout, reqs, sink)?;
    }
    Ok(dir.keep())
}

/// Makes `import troops` work in the virtualenv without listing it.
fn link_troops_module(node: &Node, venv: &Path) -> Result<()> {
    let lib = venv.join("lib");
    let site = fs::read_dir(&lib)
        .with_context(|| format!("cannot read `{}`", lib.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages"))
        .find(|p| p.is_dir())
        .with_context(|| format!("no site-packages below `{}`", lib.display()))?;
    let mut line = node.python_lib().into_os_string().into_encoded_bytes();
    line.push(b'\n');
    fs::write(site.join("troops.pth"), line).context("cannot write troops.pth")
}

fn has_requirements(content: &[u8]) -> bool {
    String::from_utf8_lossy(content)
        .lines()
        .map(str::trim)
        .any(|l| !l.is_empty() && !l.starts_with('#'))
}

fn install_requirements(
    uv: Option<&Path>,
    venv: &Path,
    checkout: &Path,
    reqs: &[u8],
    sink: &mut Sink,
) -> Result<()> {
    let wheels = bundled_wheels();
    if let Some(wheels) = &wheels
        && names_bundled_library(reqs)
    {
        // Installed first from the package's own wheels, the library is
        // already satisfied when pip reads requirements.txt: no index is asked.
        let mut cmd = pip(uv, venv);
        cmd.args(["--no-index", "--find-links"])
            .arg(wheels)
            .arg(BUNDLED)
            .current_dir("/");
        stream::run(&mut cmd, sink).map_err(|e| {
            e.context(UserError::new(format!(
                "cannot install the bundled {BUNDLED}"
            )))
        })?;
    }
    let mut cmd = pip(uv, venv);
    if let Some(wheels) = &wheels {
        cmd.arg("--find-links").arg(wheels);
    }
    // Relative paths in requirements.txt (`-e ./lib`) are relative to the checkout.
    cmd.args(["-r", "requirements.txt"]).current_dir(checkout);
    let output = stream::run(&mut cmd, sink);
    output.map_err(|e| {
        let reason = match sink.find_line(&["No matching distribution found for", "ERROR:"]) {
            Some(line) => format!("requirements.txt could not be installed: {line}"),
            None => "requirements.txt could not be installed".to_owned(),
        };
        e.context(UserError::new(reason))
    })
}

/// `pip install` (or `uv pip install`) for the virtualenv at `venv`.
fn pip(uv: Option<&Path>, venv: &Path) -> Command {
    let python = venv.join("bin/python");
    match uv {
        Some(uv) => {
            let mut cmd = Command::new(uv);
            cmd.args(["pip", "install", "--no-config", "--python"])
                .arg(&python);
            cmd
        }
        None => {
            let mut cmd = Command::new(&python);
            cmd.args([
                "-I",
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
            ]);
            cmd
        }
    }
}

/// The library the package ships as a wheel, so nodes need no PyPI for it.
const BUNDLED: &str = "PyDebianAdmin";
const WHEELS: &str = "/usr/share/troops/wheels";

/// The directory of bundled wheels (`TROOPS_WHEELS` overrides it), if present.
fn bundled_wheels() -> Option<PathBuf> {
    let dir =
        std::env::var_os("TROOPS_WHEELS").map_or_else(|| PathBuf::from(WHEELS), PathBuf::from);
    dir.is_dir().then_some(dir)
}

/// Whether a requirement line names the bundled library (PEP 503 names).
fn names_bundled_library(reqs: &[u8]) -> bool {
    String::from_utf8_lossy(reqs).lines().any(|line| {
        let name = line
            .trim()
            .split(|c: char| !(c.is_ascii_alphanumeric() || "-_.".contains(c)))
            .next()
            .unwrap_or_default();
        name.eq_ignore_ascii_case(BUNDLED)
    })
}

fn find_uv() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("uv"))
        .find(|p| p.is_file())
}

/// Atomically points `link` at the built directory.
fn publish(dir: &Path, link: &Path) -> Result<()> {
    let target = link.with_extension(
        dir.file_name()
            .and_then(|n| n.to_str())
            .map(|n| n.trim_start_matches(".build-"))
            .unwrap_or("built"),
    );
    fs::rename(dir, &target).with_context(|| format!("cannot move `{}`", dir.display()))?;
    let tmp_link = link.with_extension("new-link");
    let _ = fs::remove_file(&tmp_link);
    std::os::unix::fs::symlink(target.file_name().unwrap_or_default(), &tmp_link)?;
    fs::rename(&tmp_link, link).with_context(|| format!("cannot publish `{}`", link.display()))
}

/// Records a use, for pruning by least recent use.
fn touch(link: &Path) {
    let _ = fs::File::options()
        .append(true)
        .open(link.join("pyvenv.cfg"))
        .and_then(|f| f.set_modified(SystemTime::now()));
}

/// Removes all but the most recently used virtualenvs, and abandoned builds.
/// Call with the deploy lock held.
pub fn prune(node: &Node, in_use: &Path) -> Result<()> {
    let dir = node.venvs();
    let mut links = Vec::new();
    let mut targets = Vec::new();
    for entry in fs::read_dir(&dir)?.filter_map(|e| e.ok()) {
        let path = entry.path();
        match fs::read_link(&path) {
            Ok(target) => links.push((last_used(&path), path, dir.join(target))),
            Err(_) => targets.push(path),
        }
    }
    links.sort_by_key(|l| std::cmp::Reverse(l.0));
    let mut kept: Vec<PathBuf> = Vec::new();
    for (i, (_, link, target)) in links.into_iter().enumerate() {
        if i < KEEP || link == in_use {
            kept.push(target);
        } else {
            fs::remove_file(&link)?;
        }
    }
    // Unlinked directories are builds a killed deploy left, or virtualenvs
    // whose link was pruned: nothing uses them.
    for target in targets.into_iter().filter(|t| !kept.contains(t)) {
        fs::remove_dir_all(&target)
            .with_context(|| format!("cannot remove `{}`", target.display()))?;
    }
    Ok(())
}

fn last_used(link: &Path) -> SystemTime {
    fs::metadata(link.join("pyvenv.cfg"))
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_library_is_recognised_by_its_normalised_name() {
        assert!(names_bundled_library(b"requests\nPyDebianAdmin>=0.1\n"));
        assert!(names_bundled_library(
            b"pydebianadmin==0.1.0 ; python_version>'3'"
        ));
        assert!(!names_bundled_library(b"py-debian-admin"));
        assert!(!names_bundled_library(b"# PyDebianAdmin\npydebianadmin2\n"));
    }

    #[test]
    fn requirements_that_point_into_the_commit() {
        for inside in [
            "-e ./libsrc",
            "./lib/mylib-1.0-py3-none-any.whl",
            "-r more.txt",
            "--constraint=c.txt",
            "mylib @ file:///srv/mylib",
            "-f ./wheels\nmylib",
        ] {
            assert!(points_into_commit(inside.as_bytes()), "{inside}");
        }
        for outside in [
            "requests==2.31",
            "PyDebianAdmin\n# ./not-this",
            "--index-url https://pypi.example.com/simple\nrequests",
            "lxml ; python_version > '3' # ./comment",
        ] {
            assert!(!points_into_commit(outside.as_bytes()), "{outside}");
        }
    }

    #[test]
    fn comments_and_blank_lines_are_no_requirements() {
        assert!(!has_requirements(b"# nothing\n\n   \n"));
        assert!(has_requirements(b"# x\nrequests==2.31\n"));
    }
}
