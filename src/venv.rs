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
    let pip_wheel = system_pip_wheel();
    let link = node
        .venvs()
        .join(key(python, pip_wheel.as_deref(), &content, owner)?);
    if link.join("bin/python").exists() {
        touch(&link);
        return Ok(link);
    }
    sink.note("troops: building a virtualenv for requirements.txt")?;
    let dir = build(node, python, pip_wheel.as_deref(), checkout, &content, sink)?;
    publish(&dir, &link)?;
    Ok(link)
}

/// The cache key: a hash of everything that decides the virtualenv's
/// contents, the commit included when the requirements point into it. The
/// pip wheel is in it because the environment names that file.
fn key(
    python: &Path,
    pip_wheel: Option<&Path>,
    requirements: &[u8],
    commit: Option<&str>,
) -> Result<String> {
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
    if let Some(wheel) = pip_wheel {
        hash.update(wheel.as_os_str().as_encoded_bytes());
        hash.update([0]);
    }
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
    pip_wheel: Option<&Path>,
    checkout: &Path,
    reqs: &[u8],
    sink: &mut Sink,
) -> Result<PathBuf> {
    let dir = tempfile::Builder::new()
        .prefix(".build-")
        .tempdir_in(node.venvs())
        .with_context(|| format!("cannot create a directory in `{}`", node.venvs().display()))?;
    let uv = find_uv();
    let plan = Plan::for_requirements(reqs, uv.is_some() || pip_wheel.is_some());
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
            // ensurepip costs seconds per environment; the system's pip
            // wheel serves instead (see `link_modules`).
            if plan != Plan::Ensurepip {
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
    link_modules(node, dir.path(), pip_wheel)?;
    crate::failpoint::hit("venv");
    match plan {
        Plan::Nothing => {}
        Plan::Bundled(wheel) => unpack_wheel(dir.path(), &wheel, sink)?,
        Plan::Pip | Plan::Ensurepip => {
            install_requirements(uv.as_deref(), dir.path(), checkout, reqs, sink)?;
        }
    }
    Ok(dir.keep())
}

/// How a virtualenv gets what requirements.txt lists.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    /// No requirements.
    Nothing,
    /// Only the bundled library, in a version its wheel satisfies: unpacked
    /// from the wheel, no pip run at all.
    Bundled(PathBuf),
    /// pip (the system's wheel) or uv installs into the environment.
    Pip,
    /// No installer on the system: the environment bootstraps its own pip.
    Ensurepip,
}

impl Plan {
    fn for_requirements(reqs: &[u8], has_installer: bool) -> Plan {
        if !has_requirements(reqs) {
            return Plan::Nothing;
        }
        if let Some((wheel, version)) = bundled_wheel()
            && only_bundled(reqs, &version)
        {
            return Plan::Bundled(wheel);
        }
        if has_installer {
            Plan::Pip
        } else {
            Plan::Ensurepip
        }
    }
}

/// Makes `import troops` work in the virtualenv without listing it, and
/// `python -m pip` through the system's pip wheel (which python3-venv
/// brings), so no environment pays for a pip of its own up front.
fn link_modules(node: &Node, venv: &Path, pip_wheel: Option<&Path>) -> Result<()> {
    let lib = venv.join("lib");
    let site = fs::read_dir(&lib)
        .with_context(|| format!("cannot read `{}`", lib.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages"))
        .find(|p| p.is_dir())
        .with_context(|| format!("no site-packages below `{}`", lib.display()))?;
    let mut lines = node.python_lib().into_os_string().into_encoded_bytes();
    lines.push(b'\n');
    if let Some(wheel) = pip_wheel {
        lines.extend(wheel.as_os_str().as_encoded_bytes());
        lines.push(b'\n');
    }
    fs::write(site.join("troops.pth"), lines).context("cannot write troops.pth")
}

/// The pip wheel Debian ships for ensurepip (python3-pip-whl), newest first.
fn system_pip_wheel() -> Option<PathBuf> {
    newest_wheel(Path::new(PIP_WHEELS), "pip").map(|(path, _)| path)
}

const PIP_WHEELS: &str = "/usr/share/python-wheels";

/// The newest `NAME-VERSION-*.whl` in `dir`, with its version.
fn newest_wheel(dir: &Path, name: &str) -> Option<(PathBuf, Vec<u64>)> {
    fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let file = e.file_name().into_string().ok()?;
            let rest = file.strip_suffix(".whl")?.split_once('-')?;
            if !rest.0.eq_ignore_ascii_case(name) {
                return None;
            }
            let version = release(rest.1.split('-').next()?)?;
            Some((e.path(), version))
        })
        .max_by(|a, b| a.1.cmp(&b.1))
}

/// A release version's numbers (`0.10.1` -> [0, 10, 1]); None for anything
/// else (pre-releases, local versions, wildcards).
fn release(version: &str) -> Option<Vec<u64>> {
    version.split('.').map(|n| n.parse().ok()).collect()
}

/// Whether every requirement is the bundled library with specifiers its
/// wheel's `version` meets. Anything this does not understand (extras,
/// markers, options, pre-releases) is left to pip.
fn only_bundled(reqs: &[u8], version: &[u64]) -> bool {
    let Ok(text) = std::str::from_utf8(reqs) else {
        return false;
    };
    // pip also ends lines at these (str.splitlines) and joins a line ending
    // in a backslash with the next: read such a file as pip does, not here.
    let odd_break = |c: char| {
        matches!(
            c,
            '\r' | '\x0b' | '\x0c' | '\x1c'..='\x1e' | '\u{85}' | '\u{2028}' | '\u{2029}'
        )
    };
    if text.contains(odd_break) || text.lines().any(|l| l.trim_end().ends_with('\\')) {
        return false;
    }
    text.lines()
        .map(|line| match line.find('#') {
            // A comment starts a line or follows whitespace; pip refuses
            // `name#x`, and so it is left to pip.
            Some(0) => "",
            Some(i) if line[..i].ends_with(char::is_whitespace) => line[..i].trim(),
            Some(_) => "#",
            None => line.trim(),
        })
        .filter(|line| !line.is_empty())
        .all(|line| {
            let name_end = line
                .find(|c: char| !(c.is_ascii_alphanumeric() || "-_.".contains(c)))
                .unwrap_or(line.len());
            let (name, specs) = line.split_at(name_end);
            name.eq_ignore_ascii_case(BUNDLED)
                && (specs.trim().is_empty()
                    || specs.split(',').all(|spec| satisfies(version, spec.trim())))
        })
}

/// Whether `version` meets one specifier (`>=0.1`); false if not understood.
fn satisfies(version: &[u64], spec: &str) -> bool {
    let Some(op_end) = spec.find(|c: char| c.is_ascii_digit()) else {
        return false;
    };
    let (op, wanted) = spec.split_at(op_end);
    let Some(wanted) = release(wanted.trim()) else {
        return false;
    };
    let padded = |v: &[u64]| {
        let mut v = v.to_vec();
        v.resize(version.len().max(wanted.len()), 0);
        v
    };
    let (have, want) = (padded(version), padded(&wanted));
    match op.trim() {
        "==" => have == want,
        "!=" => have != want,
        ">=" => have >= want,
        "<=" => have <= want,
        ">" => have > want,
        "<" => have < want,
        // ~=X.Y means >=X.Y and ==X.*
        "~=" if wanted.len() >= 2 => {
            have >= want && version.get(..wanted.len() - 1) == Some(&wanted[..wanted.len() - 1])
        }
        _ => false,
    }
}

/// Installs a pure-Python wheel (the bundled library, which has no
/// dependencies) by unpacking it into site-packages, as pip would, with
/// the installer recorded so pip can upgrade or remove it later.
fn unpack_wheel(venv: &Path, wheel: &Path, sink: &mut Sink) -> Result<()> {
    let mut cmd = Command::new(venv.join("bin/python"));
    cmd.args(["-I", "-c", UNPACK_WHEEL])
        .arg(wheel)
        .current_dir("/");
    stream::run(&mut cmd, sink).map_err(|e| {
        e.context(UserError::new(format!(
            "cannot install the bundled {BUNDLED} from `{}`",
            wheel.display()
        )))
    })
}

/// Unpacks sys.argv[1] into the environment's purelib.
const UNPACK_WHEEL: &str = r#"
import sys, sysconfig, zipfile
site = sysconfig.get_paths()["purelib"]
with zipfile.ZipFile(sys.argv[1]) as wheel:
    names = wheel.namelist()
    if any(n.startswith("/") or ".." in n.split("/") for n in names):
        sys.exit("the wheel names a path outside site-packages")
    wheel.extractall(site)
info = next(n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info"))
with open(f"{site}/{info}/INSTALLER", "w") as f:
    f.write("troops\n")
with open(f"{site}/{info}/RECORD", "a") as f:
    f.write(f"{info}/INSTALLER,,\n")
"#;

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

/// The bundled library's wheel and its version, if the package ships one.
fn bundled_wheel() -> Option<(PathBuf, Vec<u64>)> {
    newest_wheel(&bundled_wheels()?, BUNDLED)
}

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
    fn only_the_bundled_library_in_a_version_its_wheel_has() {
        let v = release("0.2.1").unwrap();
        for only in [
            "PyDebianAdmin",
            "pydebianadmin>=0.1\n# comment\n",
            "PyDebianAdmin >= 0.1, < 1  # bundled",
            "pydebianadmin==0.2.1",
            "pydebianadmin==0.2.1.0",
            "pydebianadmin~=0.2",
            "pydebianadmin!=0.3",
        ] {
            assert!(only_bundled(only.as_bytes(), &v), "{only}");
        }
        for not in [
            "PyDebianAdmin\nrequests",
            "pydebianadmin>=0.3",
            "pydebianadmin==0.2.*",
            "pydebianadmin~=0.1.5",
            "pydebianadmin>=0.1rc1",
            "pydebianadmin[extra]",
            "pydebianadmin ; python_version > '3'",
            "-e ./pydebianadmin",
            "pydebianadmin # bundled\rrequests",
            "pydebianadmin \\\nrequests",
            "pydebianadmin#x",
        ] {
            assert!(!only_bundled(not.as_bytes(), &v), "{not}");
        }
    }

    #[test]
    fn comments_and_blank_lines_are_no_requirements() {
        assert!(!has_requirements(b"# nothing\n\n   \n"));
        assert!(has_requirements(b"# x\nrequests==2.31\n"));
    }
}
