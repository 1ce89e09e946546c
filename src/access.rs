//! What gives members of the group `troops` access: the members'
//! repository's pre-receive hook and the sudoers drop-in.
//!
//! The hook runs as the pusher and execs `troops hook pre-receive`; the
//! drop-in lets the group run exactly root's side of it and a re-deploy.
//! The hooks directory belongs to the members' repository, so the hook is
//! written through a descriptor, never through a link planted there.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::paths::{self, Node};

/// The hook `troops init` installs: it runs as the pusher and execs troops,
/// which hands the push to root through sudo.
const HOOK: &str = "#!/bin/sh\n\
# Installed by `troops init`: deploys pushes to the deploy branch.\n\
# It runs as the pusher; root verifies everything it is handed.\n\
exec @TROOPS@ hook pre-receive\n";

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
         %troops ALL=(root) NOPASSWD: {troops} hook receive, {troops} deploy\n",
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
/// The hooks directory is the members': opened without following links, and
/// the hook written through that descriptor.
pub fn install(node: &Node) -> Result<()> {
    let gid = nix::unistd::Gid::from_raw(0);
    let exe = std::env::current_exe().context("cannot find the troops executable")?;
    let repo = paths::open_dir_nofollow(&node.push_repo())?;
    let hooks = match paths::open_subdir(&repo, "hooks", &node.push_repo()) {
        Ok(fd) => fd,
        Err(_) => {
            // Missing, or something else planted in its place: start afresh.
            let _ = nix::unistd::unlinkat(&repo, "hooks", nix::unistd::UnlinkatFlags::NoRemoveDir);
            nix::sys::stat::mkdirat(
                &repo,
                "hooks",
                nix::sys::stat::Mode::from_bits_truncate(0o755),
            )
            .context("cannot create the hooks directory")?;
            paths::open_subdir(&repo, "hooks", &node.push_repo())?
        }
    };
    // Root's, so that a member does not change it by accident; the
    // repository is theirs, so this is no boundary (root verifies pushes).
    paths::set_owner_fd(&hooks, &node.push_repo(), gid)?;
    nix::sys::stat::fchmod(&hooks, nix::sys::stat::Mode::from_bits_truncate(0o755))?;
    let script = hook_script(&exe, node.root());
    paths::write_at(&hooks, "pre-receive", script.as_bytes(), 0o755, gid)?;
    if paths::troops_group().is_some() {
        install_sudoers(node, &exe)?;
    }
    Ok(())
}

fn install_sudoers(node: &Node, exe: &Path) -> Result<()> {
    let dir = node.root().join("etc/sudoers.d");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    let path = dir.join("troops");
    let tmp = dir.join(".troops.new");
    paths::write_atomically_mode(&tmp, sudoers(exe, node.root()).as_bytes(), 0o440)?;
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

    #[test]
    fn scripts_quote_paths() {
        let script = hook_script(Path::new("/opt/it's/troops"), Path::new("/"));
        assert!(
            script.contains("exec '/opt/it'\\''s/troops' --root '/' hook pre-receive"),
            "{script}"
        );
        let rule = sudoers(Path::new("/usr/bin/troops"), Path::new("/"));
        assert!(
            rule.contains(
                "NOPASSWD: /usr/bin/troops --root / hook receive, /usr/bin/troops --root / deploy\n"
            ),
            "{rule}"
        );
        assert_eq!(sudo_escape(Path::new("/a b,c")), "/a\\ b\\,c");
    }
}
