//! Signed deploys: a node can require that every commit it deploys is signed
//! by a trusted key, with SSH signatures (an allowed-signers file) or GnuPG
//! (a keyring: any key in it is trusted).
//!
//! Checked for every deploy whatever its trigger, inside the deploy so that
//! a refused commit is recorded like any failed deploy: a push is rejected
//! and a pull retries only once a new commit arrives.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::config::{Config, Policy};
use crate::error::UserError;
use crate::git::{Repo, short};
use crate::paths::Node;

/// The allowed-signers file: `allowed_signers` or /etc/troops/allowed_signers.
pub fn allowed_signers(node: &Node, config: &Config) -> PathBuf {
    config
        .allowed_signers
        .clone()
        .unwrap_or_else(|| node.etc().join("allowed_signers"))
}

/// The GnuPG home whose keyring holds the trusted keys.
pub fn gpg_home(node: &Node, config: &Config) -> PathBuf {
    config
        .gpg_home
        .clone()
        .unwrap_or_else(|| node.etc().join("gnupg"))
}

/// The verifier of formats the policy does not use: it fails every check.
const NEVER: &str = "/bin/false";

/// Refuses `commit` unless it carries a signature the node trusts.
///
/// Only the policy's own format is verified: git picks the verifier from the
/// signature's armour, so the other formats' programs are pinned to `false`
/// (an X.509 signature would otherwise reach gpgsm, which reports any
/// self-made certificate as a good signature of unknown trust, and an
/// OpenPGP one would reach root's own keyring under an SSH policy).
pub fn check(node: &Node, config: &Config, repo: &Repo, commit: &str) -> Result<()> {
    let mut cmd = repo.command();
    let (trusted, others) = match config.signatures {
        Policy::None => return Ok(()),
        Policy::Ssh => {
            let file = allowed_signers(node, config);
            if !file.is_file() {
                return Err(UserError::new(format!(
                    "this node requires SSH signatures but has no allowed-signers file `{}`",
                    file.display()
                ))
                .hint("write the trusted keys there in ssh-keygen's allowed-signers format")
                .into());
            }
            cmd.arg("-c")
                .arg(format!("gpg.ssh.allowedSignersFile={}", file.display()));
            // Only a key the allowed-signers file names makes `G`.
            (&["G"][..], ["gpg.program", "gpg.x509.program"])
        }
        Policy::Gpg => {
            cmd.env("GNUPGHOME", gpg_home(node, config));
            // The keyring is the trust list: a good signature by a key in it
            // is `G`, or `U` when no owner trust was set.
            (&["G", "U"][..], ["gpg.ssh.program", "gpg.x509.program"])
        }
    };
    for key in others {
        cmd.arg("-c").arg(format!("{key}={NEVER}"));
    }
    cmd.args(["log", "-1", "--format=%G?%x00%GK%x00%GS", commit, "--"]);
    let out = crate::git::output(&mut cmd).context("cannot check the commit's signature")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut fields = text.trim_end_matches('\n').split('\0');
    let status = fields.next().unwrap_or_default();
    let key = fields.next().unwrap_or_default();
    let signer = fields.next().unwrap_or_default();
    if trusted.contains(&status) {
        return Ok(());
    }
    Err(refusal(commit, status, key, signer, config.signatures).into())
}

fn refusal(commit: &str, status: &str, key: &str, signer: &str, policy: Policy) -> UserError {
    let kind = if policy == Policy::Ssh {
        "SSH"
    } else {
        "GnuPG"
    };
    let by = match (key, signer) {
        ("", _) => "an unknown key".to_owned(),
        (key, "") => format!("key {key}"),
        (key, signer) => format!("key {key} ({signer})"),
    };
    let what = match status {
        "N" => format!("commit {} is not signed", short(commit)),
        "B" => format!("commit {} has a bad signature by {by}", short(commit)),
        "X" | "Y" => format!(
            "commit {} is signed by {by}, which has expired",
            short(commit)
        ),
        "R" => format!(
            "commit {} is signed by {by}, which is revoked",
            short(commit)
        ),
        _ => format!(
            "commit {} is signed by {by}, which this node does not trust",
            short(commit)
        ),
    };
    UserError::new(format!("{what}; this node requires {kind} signatures")).hint(
        "sign the commit with a trusted key (`git commit -S`), or trust the key in /etc/troops",
    )
}
