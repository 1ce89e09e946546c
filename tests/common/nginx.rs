//! nginx from Debian serving a directory as static files on a loopback
//! address, over HTTP or HTTPS, and the certificates for it.

use std::fs;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Run;

/// nginx serving `root` on `address`, one process (no master and workers),
/// stopped when dropped.
pub struct Nginx {
    child: Child,
    pub port: u16,
    work: tempfile::TempDir,
}

/// A self-signed certificate for one IP address (its own CA), in `dir`.
pub struct Certificate {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Certificate {
    /// A self-signed certificate for `ip` (its own CA), in `dir`.
    pub fn self_signed(dir: &Path, ip: Ipv4Addr) -> Certificate {
        let san = format!("subjectAltName=IP:{ip}");
        let cert = dir.join("cert.pem");
        let key = new_key(dir, ip, &["-x509", "-days", "1", "-addext", &san], &cert);
        Certificate { cert, key }
    }

    /// A certificate for `ip` signed by `ca` (a self-signed one), in `dir`.
    pub fn signed_by(ca: &Certificate, dir: &Path, ip: Ipv4Addr) -> Certificate {
        let (cert, csr) = (dir.join("cert.pem"), dir.join("req.pem"));
        let key = new_key(dir, ip, &["-new"], &csr);
        let ext = dir.join("ext.cnf");
        fs::write(&ext, format!("subjectAltName=IP:{ip}\n")).unwrap();
        let out = Command::new("openssl")
            .args(["x509", "-req", "-days", "1", "-CAcreateserial", "-in"])
            .arg(&csr)
            .arg("-CA")
            .arg(&ca.cert)
            .arg("-CAkey")
            .arg(&ca.key)
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(&cert)
            .output()
            .unwrap();
        Run::from(out).success();
        Certificate { cert, key }
    }
}

/// `openssl req KIND...` with a new P-256 key for `ip` in `dir`, writing
/// the certificate or request to `out`; returns the key's path.
fn new_key(dir: &Path, ip: Ipv4Addr, kind: &[&str], out: &Path) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    let key = dir.join("key.pem");
    let run = Command::new("openssl")
        .arg("req")
        .args(kind)
        .args([
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ])
        .args(["-subj", &format!("/CN={ip}")])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(out)
        .output()
        .unwrap();
    Run::from(run).success();
    key
}

impl Nginx {
    pub fn serve(root: &Path, address: Ipv4Addr) -> Nginx {
        Nginx::start(root, address, None)
    }

    pub fn serve_https(root: &Path, address: Ipv4Addr, tls: &Certificate) -> Nginx {
        Nginx::start(root, address, Some(tls))
    }

    fn start(root: &Path, address: Ipv4Addr, tls: Option<&Certificate>) -> Nginx {
        let port = TcpListener::bind(SocketAddrV4::new(address, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let work = tempfile::tempdir().unwrap();
        let conf = work.path().join("nginx.conf");
        let w = work.path().display();
        let listen = match tls {
            None => format!("listen {address}:{port};"),
            Some(tls) => format!(
                "listen {address}:{port} ssl;\n    ssl_certificate {};\n    ssl_certificate_key {};",
                tls.cert.display(),
                tls.key.display()
            ),
        };
        fs::write(
            &conf,
            format!(
                "daemon off;\nmaster_process off;\npid {w}/nginx.pid;\n\
                 error_log {w}/error.log;\nevents {{}}\n\
                 http {{\n  access_log {w}/access.log;\n  default_type application/octet-stream;\n\
                 client_body_temp_path {w}/body;\n  proxy_temp_path {w}/proxy;\n\
                 fastcgi_temp_path {w}/fastcgi;\n  uwsgi_temp_path {w}/uwsgi;\n  scgi_temp_path {w}/scgi;\n\
                 server {{\n    {listen}\n    root {};\n  }}\n}}\n",
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
        wait_until_listening(SocketAddrV4::new(address, port), || {
            format!(
                "nginx did not start: {}",
                fs::read_to_string(work.path().join("error.log")).unwrap_or_default()
            )
        });
        Nginx { child, port, work }
    }

    /// nginx's one process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The requests served so far, one access-log line each.
    pub fn requests(&self) -> Vec<String> {
        fs::read_to_string(self.work.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// Waits up to 20 s for a server to accept connections on `address`; past
/// that, fails with `why()`.
pub fn wait_until_listening(address: SocketAddrV4, why: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(address).is_err() {
        assert!(Instant::now() < deadline, "{}", why());
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
