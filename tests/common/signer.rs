//! Signing identities for commits, and making a node trust them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{DeployRepo, Run};

/// A signing identity for commits: an SSH key or a GnuPG key.
pub enum Signer {
    Ssh(PathBuf),
    Gpg(PathBuf, String),
}

impl Signer {
    pub fn ssh(dir: &Path, name: &str) -> Signer {
        let key = dir.join(name);
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(&key)
            .output()
            .unwrap();
        assert!(out.status.success());
        Signer::Ssh(key)
    }

    pub fn gpg(dir: &Path, name: &str) -> Signer {
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
    pub fn commit(&self, repo: &DeployRepo, files: &[(&str, &str)]) -> String {
        for (name, content) in files {
            repo.write(name, content);
        }
        repo.git(&["add", "--all"]);
        let mut cmd = super::clean_command("git", repo.path());
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
        Run::from(out).success();
        repo.head()
    }

    /// Makes the node whose /etc/troops is `etc` trust this identity.
    pub fn trust(&self, etc: &Path) {
        fs::create_dir_all(etc).unwrap();
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
