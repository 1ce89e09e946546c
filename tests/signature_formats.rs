//! Signed deploys verify only the policy's own signature format: a commit
//! signed with a self-made X.509 certificate (gpgsm reports it good but of
//! unknown trust) is refused by a GnuPG node even when the certificate is in
//! its keyring, and an OpenPGP-signed commit is refused by an SSH node even
//! when the key is fully trusted in `$HOME/.gnupg` of the process running
//! troops.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::signer::Signer;
use common::{DeployRepo, Node, Run};

/// The payload: it leaves a mark in the node's root if it ever runs.
const PAYLOAD: &str = "import os, pathlib\n\
    pathlib.Path(os.environ['TROOPS_ROOT'], 'payload-ran').write_text('ran')\n";

/// Stops the gpg-agents (and gpgsm's) started in these homes when dropped:
/// declare it after what owns the directories, so it runs before they go.
struct Agents(Vec<PathBuf>);

impl Drop for Agents {
    fn drop(&mut self) {
        for home in &self.0 {
            let _ = Command::new("gpgconf")
                .arg("--homedir")
                .arg(home)
                .args(["--kill", "all"])
                .output();
        }
    }
}

/// A GnuPG home directory, private as gpg and gpgsm want it.
fn gnupg_home(path: &Path) -> PathBuf {
    fs::create_dir_all(path).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o700)).unwrap();
    path.to_owned()
}

/// The first fingerprint in a `--with-colons` key listing.
fn fingerprint(listing: &str) -> String {
    listing
        .lines()
        .find_map(|line| line.strip_prefix("fpr:"))
        .and_then(|rest| rest.split(':').nth(8))
        .unwrap_or_else(|| panic!("no fingerprint in:\n{listing}"))
        .to_owned()
}

/// A self-signed X.509 signing certificate made with gpgsm, its key without
/// a passphrase.
struct X509 {
    home: PathBuf,
    cert: PathBuf,
    fingerprint: String,
}

impl X509 {
    fn new(dir: &Path) -> X509 {
        let home = gnupg_home(&dir.join("gpgsm-rogue"));
        let params = home.join("params");
        fs::write(
            &params,
            "Key-Type: RSA\n\
             Key-Length: 2048\n\
             Key-Usage: sign\n\
             Serial: random\n\
             Name-DN: CN=Rogue Signer,O=Example\n\
             Name-Email: rogue@example.com\n\
             %commit\n",
        )
        .unwrap();
        let cert = home.join("cert.pem");
        // gpgsm 2.2 has no %no-protection: an empty passphrase by loopback.
        let made = X509::gpgsm(&home)
            .args(["--pinentry-mode", "loopback", "--passphrase-fd", "0"])
            .args(["--armor", "--output"])
            .arg(&cert)
            .arg("--gen-key")
            .arg(&params)
            .output()
            .unwrap();
        Run::from(made).success();
        X509::import(&home, &cert);
        let listing = X509::gpgsm(&home)
            .args(["--with-colons", "--list-secret-keys"])
            .output()
            .unwrap();
        let fingerprint = fingerprint(&Run::from(listing).success().stdout);
        // The signer's own gpgsm signs only under a trusted root, and there is
        // no CRL to check: trust it here, in the attacker's home only.
        fs::write(
            home.join("trustlist.txt"),
            format!("{fingerprint} S relax\n"),
        )
        .unwrap();
        fs::write(home.join("gpgsm.conf"), "disable-crl-checks\n").unwrap();
        // The agent reads the trust list when it starts.
        let stop = Command::new("gpgconf")
            .arg("--homedir")
            .arg(&home)
            .args(["--kill", "gpg-agent"])
            .output()
            .unwrap();
        Run::from(stop).success();
        X509 {
            home,
            cert,
            fingerprint,
        }
    }

    fn gpgsm(home: &Path) -> Command {
        let mut cmd = Command::new("gpgsm");
        cmd.arg("--homedir")
            .arg(home)
            .arg("--batch")
            .stdin(Stdio::null());
        cmd
    }

    /// Imports the certificate into the gpgsm keybox of `home`.
    fn import(home: &Path, cert: &Path) {
        let out = X509::gpgsm(home)
            .arg("--import")
            .arg(cert)
            .output()
            .unwrap();
        Run::from(out).success();
    }

    /// Commits `files` signed with the certificate (`gpg.format=x509`).
    fn commit(&self, repo: &DeployRepo, files: &[(&str, &str)]) -> String {
        for (name, content) in files {
            repo.write(name, content);
        }
        repo.git(&["add", "--all"]);
        let out = common::clean_command("git", repo.path())
            .env("GNUPGHOME", &self.home)
            .arg("-C")
            .arg(repo.path())
            .args(["-c", "gpg.format=x509", "-c"])
            .arg(format!("user.signingkey={}", self.fingerprint))
            .args(["commit", "--quiet", "-S", "-m", "signed with X.509"])
            .output()
            .unwrap();
        Run::from(out).success();
        repo.head()
    }
}

/// `%G?` of `repo`'s HEAD as plain git sees it, with `GNUPGHOME` if given,
/// HOME at `home` and the extra `-c` settings.
fn signature_status(
    repo: &DeployRepo,
    home: &Path,
    gnupg: Option<&Path>,
    config: &[&str],
) -> String {
    let mut cmd = common::clean_command("git", home);
    if let Some(gnupg) = gnupg {
        cmd.env("GNUPGHOME", gnupg);
    }
    cmd.arg("-C").arg(repo.path());
    for setting in config {
        cmd.args(["-c", setting]);
    }
    let out = cmd.args(["log", "-1", "--format=%G?"]).output().unwrap();
    Run::from(out).success().stdout.trim().to_owned()
}

fn node_with_policy(policy: &str) -> Node {
    let node = Node::new();
    node.write_config(&format!("signatures = \"{policy}\"\n"));
    node.troops(["init"]).success();
    node
}

#[track_caller]
fn assert_refused(node: &Node, run: Run, commit: &str, kind: &str) {
    let run = run.failure();
    let what = format!("commit {} ", &commit[..12]);
    let policy = format!("this node requires {kind} signatures");
    assert!(
        run.stderr.contains(&what) && run.stderr.contains(&policy),
        "expected a refusal of {commit} under the {kind} policy:\n{}",
        run.stderr
    );
    assert!(
        !node.root().join("payload-ran").exists(),
        "the refused commit's deploy.py ran"
    );
    assert!(node.status_json()["commit"].is_null());
}

#[test]
fn gpg_policy_refuses_a_self_made_x509_certificate_in_its_keyring() {
    let keys = tempfile::tempdir().unwrap();
    let node = node_with_policy("gpg");
    let etc = node.root().join("etc/troops");
    let keyring = etc.join("gnupg");
    let _agents = Agents(vec![keys.path().join("gpgsm-rogue"), keyring.clone()]);
    let rogue = X509::new(keys.path());

    let repo = DeployRepo::new();
    let commit = rogue.commit(&repo, &[("deploy.py", PAYLOAD), ("requirements.txt", "")]);
    let raw = repo.git(&["cat-file", "commit", &commit]);
    assert!(raw.contains("BEGIN SIGNED MESSAGE"), "not X.509:\n{raw}");

    // The attack payload is a good signature for gpgsm.
    let status = signature_status(
        &repo,
        repo.path(),
        Some(&rogue.home),
        &["gpg.x509.program=gpgsm"],
    );
    assert!(matches!(status.as_str(), "G" | "U"), "%G? = {status}");

    // The node trusts an unrelated OpenPGP key; the worst case: the rogue
    // certificate sits in the same keyring, where gpgsm finds it (and, with
    // git left to pick the verifier, reports `U`, which GnuPG mode accepts).
    let trusted = Signer::gpg(keys.path(), "trusted");
    trusted.trust(&etc);
    X509::import(&keyring, &rogue.cert);
    let status = signature_status(&repo, repo.path(), Some(&keyring), &[]);
    assert_eq!(status, "U", "unpinned git in the node's keyring");

    let run = node.deploy(&repo);
    assert_refused(&node, run, &commit, "GnuPG");
}

#[test]
fn ssh_policy_refuses_an_openpgp_key_trusted_in_roots_home() {
    let keys = tempfile::tempdir().unwrap();
    let node = node_with_policy("ssh");
    let gnupg = gnupg_home(&node.home().join(".gnupg"));
    let _agents = Agents(vec![gnupg.clone()]);
    Signer::ssh(keys.path(), "trusted").trust(&node.root().join("etc/troops"));

    let openpgp = Signer::gpg(keys.path(), "openpgp");
    let repo = DeployRepo::new();
    let commit = openpgp.commit(&repo, &[("deploy.py", PAYLOAD), ("requirements.txt", "")]);
    let raw = repo.git(&["cat-file", "commit", &commit]);
    assert!(raw.contains("BEGIN PGP SIGNATURE"), "not OpenPGP:\n{raw}");

    // The signing key, ultimately trusted, in $HOME/.gnupg of troops' process.
    let Signer::Gpg(signer_home, _) = &openpgp else {
        unreachable!()
    };
    let gpg = |home: &Path| {
        let mut cmd = Command::new("gpg");
        cmd.arg("--homedir").arg(home).arg("--batch");
        cmd
    };
    let export = gpg(signer_home)
        .args(["--export", "--armor"])
        .output()
        .unwrap();
    let export = Run::from(export).success().stdout;
    let listing = gpg(signer_home)
        .args(["--with-colons", "--list-keys"])
        .output()
        .unwrap();
    let fpr = fingerprint(&Run::from(listing).success().stdout);
    for (args, input) in [
        (&["--import"][..], export),
        (&["--import-ownertrust"][..], format!("{fpr}:6:\n")),
    ] {
        let mut child = gpg(&gnupg)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.as_bytes()).unwrap();
        Run::from(child.wait_with_output().unwrap()).success();
    }
    // Plain git with that HOME calls the signature good and trusted.
    assert_eq!(signature_status(&repo, &node.home(), None, &[]), "G");

    let run = node.deploy(&repo);
    assert_refused(&node, run, &commit, "SSH");
}
