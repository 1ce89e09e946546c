//! A signed apt repository for tests: an operator's GnuPG key, a
//! repository made with debian/publish-apt-repo, and nginx serving it on a
//! loopback address.

use std::fs;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// nginx serving `root` on `address`, one process (no master and workers),
/// stopped when dropped.
pub struct Nginx {
    child: Child,
    pub port: u16,
    _work: tempfile::TempDir,
}

impl Nginx {
    pub fn serve(root: &Path, address: Ipv4Addr) -> Nginx {
        let port = TcpListener::bind(SocketAddrV4::new(address, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let work = tempfile::tempdir().unwrap();
        let conf = work.path().join("nginx.conf");
        let w = work.path().display();
        fs::write(
            &conf,
            format!(
                "daemon off;\nmaster_process off;\npid {w}/nginx.pid;\n\
                 error_log {w}/error.log;\nevents {{}}\n\
                 http {{\n  access_log off;\n  default_type application/octet-stream;\n\
                 client_body_temp_path {w}/body;\n  proxy_temp_path {w}/proxy;\n\
                 fastcgi_temp_path {w}/fastcgi;\n  uwsgi_temp_path {w}/uwsgi;\n  scgi_temp_path {w}/scgi;\n\
                 server {{\n    listen {address}:{port};\n    root {};\n  }}\n}}\n",
                root.display()
            ),
        )
        .unwrap();
        let child = Command::new("nginx")
            .arg("-e")
            .arg(work.path().join("error.log"))
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(SocketAddrV4::new(address, port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx did not start: {}",
                fs::read_to_string(work.path().join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Nginx {
            child,
            port,
            _work: work,
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
