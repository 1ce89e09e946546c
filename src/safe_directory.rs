//! The members' repository's entry in the system git configuration.
//!
//! Git refuses a repository owned by another user unless `safe.directory`
//! (read only from system, global or command-line configuration) names it,
//! and members push into a directory root owns. Root's own repository needs
//! no entry. The entry is a block between marker comments, so that the
//! package's postrm can remove exactly it with sed (git may already be gone
//! at purge), and `/etc/troops/.gitconfig-created` records that Troops
//! created the file, so purge removes only a file that was not there before.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::paths::{self, Node};

pub const BEGIN: &str = "# troops: members push to this repository (removed on purge)";
pub const END: &str = "# troops: end";
const PUSH_REPO: &str = "/var/lib/troops/repo/main.git";

/// Adds the block for the real node (`--root /`); a relocated node is for
/// trying things out and must not touch the system's git configuration.
pub fn trust_push_repo(node: &Node) -> Result<()> {
    if node.root() != Path::new("/") {
        return Ok(());
    }
    let path = system_config();
    let existing = match fs::read_to_string(&path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read `{}`", path.display())),
    };
    let old = existing.clone().unwrap_or_default();
    if old.lines().any(|l| l == BEGIN) {
        return Ok(());
    }
    let kept = without_unmarked_entry(&old);
    // An empty remainder is a file an earlier Troops created with `git config`.
    if existing.is_none() || kept.trim().is_empty() {
        paths::write_atomically_mode(&node.etc().join(".gitconfig-created"), b"", 0o600)?;
    }
    let mut text = kept;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&block());
    paths::write_atomically_mode(&path, text.as_bytes(), 0o644)
}

fn block() -> String {
    format!("{BEGIN}\n[safe]\n\tdirectory = {PUSH_REPO}\n{END}\n")
}

/// Where git reads its system configuration (`GIT_CONFIG_SYSTEM` as git does).
fn system_config() -> PathBuf {
    std::env::var_os("GIT_CONFIG_SYSTEM")
        .map_or_else(|| PathBuf::from("/etc/gitconfig"), PathBuf::from)
}

/// Drops the entry the one-repository layout added with `git config --system
/// --add` (no markers), and its section header when nothing else is in it.
fn without_unmarked_entry(text: &str) -> String {
    let entry = format!("\tdirectory = {PUSH_REPO}");
    let lines: Vec<&str> = text.lines().filter(|l| *l != entry).collect();
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        let next = lines.get(i + 1).map(|l| l.trim_start());
        let empty_section = line.trim() == "[safe]" && next.is_none_or(|n| n.starts_with('['));
        if !empty_section {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_package_removes_exactly_this_block() {
        let postrm = include_str!("../debian/postrm");
        assert!(
            postrm.contains(&format!("/^{BEGIN}$/,/^{END}$/d")),
            "{postrm}"
        );
    }

    #[test]
    fn the_old_entry_goes_and_others_stay() {
        let old = format!("[user]\n\tname = x\n[safe]\n\tdirectory = {PUSH_REPO}\n");
        assert_eq!(without_unmarked_entry(&old), "[user]\n\tname = x\n");
        let shared = format!("[safe]\n\tdirectory = /srv/a\n\tdirectory = {PUSH_REPO}\n");
        assert_eq!(
            without_unmarked_entry(&shared),
            "[safe]\n\tdirectory = /srv/a\n"
        );
        assert_eq!(without_unmarked_entry(""), "");
    }
}
