//! A signed apt repository for tests: an operator's GnuPG key, a
//! repository made with debian/publish-apt-repo, and nginx serving it on a
//! loopback address (`super::nginx`).

use std::path::Path;
use std::process::Command;

use super::Run;

/// A GnuPG home with one signing key, as an operator would have.
pub struct Signer {
    pub home: tempfile::TempDir,
    pub fingerprint: String,
}

impl Signer {
    pub fn new(name: &str) -> Signer {
        let home = tempfile::tempdir().unwrap();
        let gpg = |args: &[&str]| {
            let out = Command::new("gpg")
                .env("GNUPGHOME", home.path())
                .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
                .args(args)
                .output()
                .unwrap();
            Run::from(out).success().stdout
        };
        gpg(&[
            "--quick-gen-key",
            &format!("{name} <{name}@example.com>"),
            "ed25519",
            "sign",
            "never",
        ]);
        let fingerprint = gpg(&["--with-colons", "--list-secret-keys"])
            .lines()
            .find_map(|l| l.strip_prefix("fpr:::::::::"))
            .unwrap()
            .trim_end_matches(':')
            .to_owned();
        Signer { home, fingerprint }
    }
}

impl Drop for Signer {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.home.path())
            .args(["--kill", "all"])
            .output();
    }
}

/// A repository made by debian/publish-apt-repo, with its served files.
pub struct Repository {
    pub state: tempfile::TempDir,
    pub out: tempfile::TempDir,
}

impl Repository {
    pub fn new() -> Repository {
        let out = tempfile::tempdir().unwrap();
        Repository {
            state: tempfile::tempdir().unwrap(),
            out,
        }
    }

    /// Publishes (or adds) `deb` to both suites, signed by `signer`.
    pub fn publish(&self, signer: &Signer, deb: &Path) {
        let out =
            Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("debian/publish-apt-repo"))
                .env("GNUPGHOME", signer.home.path())
                .args(["--key", &signer.fingerprint, "--state"])
                .arg(self.state.path())
                .arg("--out")
                .arg(self.out.path())
                .arg(deb)
                .output()
                .unwrap();
        Run::from(out).success();
    }
}

impl Signer {
    /// The public key, ASCII-armoured, as `signed-by` takes it.
    pub fn public_key(&self) -> String {
        let out = Command::new("gpg")
            .env("GNUPGHOME", self.home.path())
            .args(["--armor", "--export", &self.fingerprint])
            .output()
            .unwrap();
        Run::from(out).success().stdout
    }
}
