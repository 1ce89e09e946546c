//! Signed deploys: required SSH or GnuPG signatures, present, missing and by
//! an untrusted key, refused by pull and by push alike.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{DeployRepo, Node, Run};

const DEPLOY: &str = "print('signed deploy ran')\n";

/// A signing identity for commits: an SSH key or a GnuPG key.
enum Signer {
    Ssh(PathBuf),
    Gpg(PathBuf, String),
}

impl Signer {
    fn ssh(dir: &Path, name: &str) -> Signer {
        let key = dir.join(name);
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(&key)
            .output()
            .unwrap();
        assert!(out.status.success());
        Signer::Ssh(key)
    }

    fn gpg(dir: &Path, name: &str) -> Signer {
        let home = dir.join(format!("gnupg-{name}"));
        fs::create_dir_all(&home).unwrap();
        fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        let out = Command::new("gpg")
            .arg("--homedir")
            .arg(&home)
            .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args([
                "--quick-gen-key",
                &format!("{name} <{name}@example.com>"),
                "ed25519",
                "sign",
                "never",
            ])
            .output()
            .unwrap();
        Run::from(out).success();
        Signer::Gpg(home, format!("{name}@example.com"))
    }

    /// Commits `files` signed with this identity.
    fn commit(&self, repo: &DeployRepo, files: &[(&str, &str)]) -> String {
        for (name, content) in files {
            repo.write(name, content);
        }
        repo.git(&["add", "--all"]);
        let mut cmd = common::clean_command("git", repo.path());
        cmd.arg("-C").arg(repo.path());
        match self {
            Signer::Ssh(key) => {
                cmd.args(["-c", "gpg.format=ssh", "-c"])
                    .arg(format!("user.signingkey={}", key.display()));
            }
            Signer::Gpg(home, email) => {
                cmd.env("GNUPGHOME", home)
                    .arg("-c")
                    .arg(format!("user.signingkey={email}"));
            }
        }
        let out = cmd
            .args(["commit", "--quiet", "-S", "-m", "signed"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        repo.head()
    }

    /// Makes `node` trust this identity.
    fn trust(&self, node: &Node) {
        let etc = node.root().join("etc/troops");
        fs::create_dir_all(&etc).unwrap();
        match self {
            Signer::Ssh(key) => {
                let public = fs::read_to_string(key.with_extension("pub")).unwrap();
                let mut lines = fs::read_to_string(etc.join("allowed_signers")).unwrap_or_default();
                lines.push_str(&format!("test@example.com {public}"));
                fs::write(etc.join("allowed_signers"), lines).unwrap();
            }
            Signer::Gpg(home, _) => {
                let export = Command::new("gpg")
                    .arg("--homedir")
                    .arg(home)
                    .args(["--export", "--armor"])
                    .output()
                    .unwrap();
                let keyring = etc.join("gnupg");
                fs::create_dir_all(&keyring).unwrap();
                fs::set_permissions(
                    &keyring,
                    std::os::unix::fs::PermissionsExt::from_mode(0o700),
                )
                .unwrap();
                let mut import = Command::new("gpg")
                    .arg("--homedir")
                    .arg(&keyring)
                    .args(["--batch", "--import"])
                    .stdin(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                std::io::Write::write_all(&mut import.stdin.take().unwrap(), &export.stdout)
                    .unwrap();
                assert!(import.wait().unwrap().success());
            }
        }
    }
}

impl Drop for Signer {
    /// Key generation and signing start a gpg-agent: stop it with the test.
    fn drop(&mut self) {
        if let Signer::Gpg(home, _) = self {
            let _ = Command::new("gpgconf")
                .arg("--homedir")
                .arg(home)
                .args(["--kill", "all"])
                .output();
        }
    }
}

fn node_with_policy(policy: &str) -> Node {
    let node = Node::new();
    node.write_config(&format!("signatures = \"{policy}\"\n"));
    node.troops(["init"]).success();
    node
}

/// A local `git push` into the node's repository: its hook runs as root.
fn push(node: &Node, repo: &DeployRepo) -> Run {
    let out = common::clean_command("git", &node.home())
        .arg("-C")
        .arg(repo.path())
        .args([
            "push",
            node.lib().join("repo/main.git").to_str().unwrap(),
            "master",
        ])
        .output()
        .unwrap();
    Run::from(out)
}

/// `troops pull` from `repo` as the node's only remote.
fn pull(node: &Node, repo: &DeployRepo) -> Run {
    let git = |args: &[&str]| {
        common::clean_command("git", &node.home())
            .arg("--git-dir")
            .arg(node.lib().join("repo/main.git"))
            .args(args)
            .output()
            .unwrap()
    };
    git(&["remote", "remove", "origin"]);
    assert!(
        git(&["remote", "add", "origin", &repo.path_str()])
            .status
            .success()
    );
    node.troops(["pull"])
}

fn check_policy(policy: &str, make: fn(&Path, &str) -> Signer) {
    let keys = tempfile::tempdir().unwrap();
    let trusted = make(keys.path(), "trusted");
    let stranger = make(keys.path(), "stranger");

    for via_push in [true, false] {
        let node = node_with_policy(policy);
        trusted.trust(&node);
        let deliver = |repo: &DeployRepo| {
            if via_push {
                push(&node, repo)
            } else {
                pull(&node, repo)
            }
        };

        let unsigned = DeployRepo::with(DEPLOY);
        let run = deliver(&unsigned);
        assert_ne!(run.code, Some(0));
        let expected = format!("commit {} is not signed", &unsigned.head()[..12]);
        assert!(
            run.stderr.contains(&expected),
            "{policy} push={via_push}: {}",
            run.stderr
        );
        assert!(node.status_json()["commit"].is_null());

        let untrusted = DeployRepo::new();
        let commit = stranger.commit(&untrusted, &[("deploy.py", DEPLOY)]);
        let node = node_with_policy(policy);
        trusted.trust(&node);
        let run = if via_push {
            push(&node, &untrusted)
        } else {
            pull(&node, &untrusted)
        };
        assert_ne!(run.code, Some(0));
        let expected = format!("commit {} is signed by key", &commit[..12]);
        assert!(
            run.stderr.contains(&expected),
            "{policy} push={via_push}: {}",
            run.stderr
        );
        assert!(
            run.stderr.contains("which this node does not trust"),
            "{}",
            run.stderr
        );
        assert!(node.status_json()["commit"].is_null());

        let signed = DeployRepo::new();
        let commit = trusted.commit(&signed, &[("deploy.py", DEPLOY)]);
        let run = if via_push {
            push(&node, &signed)
        } else {
            pull(&node, &signed)
        };
        let run = run.success();
        assert!(run.stderr.contains("signed deploy ran"), "{}", run.stderr);
        assert_eq!(node.status_json()["commit"], commit.as_str());
    }
}

#[test]
fn ssh_signatures_are_required_by_push_and_pull() {
    check_policy("ssh", Signer::ssh);
}

#[test]
fn gpg_signatures_are_required_by_push_and_pull() {
    check_policy("gpg", Signer::gpg);
}

#[test]
fn ssh_policy_without_allowed_signers_is_explained() {
    let node = node_with_policy("ssh");
    let repo = DeployRepo::with(DEPLOY);
    let run = node.deploy(&repo).failure();
    assert!(
        run.stderr.contains("has no allowed-signers file"),
        "{}",
        run.stderr
    );
}
