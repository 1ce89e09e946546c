//! Shared by the package tests (tests/package.rs) and the tutorial tests
//! (tests/tutorial.rs): the Debian package built once per source tree, and a
//! throwaway Debian root with it installed, in its own mount, UTS and pid
//! namespaces (tests/package/root-init), optionally serving sshd on loopback.
//!
//! Included with `#[path = "common/package.rs"] mod package;` by the test
//! crates that use it (each also has `mod common;`).
#![allow(dead_code)]

use std::fs;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::Run;
use crate::common::cluster::Client;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

pub const TOP: &str = env!("CARGO_MANIFEST_DIR");

/// Whether this machine can run the tests of `what` (named in the message),
/// which need root and `tools`; under CI it must.
pub fn can_run(what: &str, tools: &[&str]) -> bool {
    let mut missing: Vec<&str> = Vec::new();
    if !nix::unistd::Uid::effective().is_root() {
        missing.push("root");
    }
    for tool in tools {
        if !on_path(tool) {
            missing.push(tool);
        }
    }
    if missing.is_empty() {
        return true;
    }
    let why = format!(
        "{what} need {}; hint: run them as root after .ci/run's apt-get install",
        missing.join(", ")
    );
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
    eprintln!("skipped: {why}");
    false
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------
// Building the package

/// The built package: the .deb and the .changes of one source tree.
pub struct Package {
    pub dir: PathBuf,
}

impl Package {
    pub fn file(&self, suffix: &str) -> PathBuf {
        let found = fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                let name = p.file_name().unwrap().to_string_lossy();
                name.starts_with("troops_") && name.ends_with(suffix)
            });
        found.unwrap_or_else(|| panic!("no troops_*{suffix} in {}", self.dir.display()))
    }

    pub fn deb(&self) -> PathBuf {
        self.file(".deb")
    }

    pub fn changes(&self) -> PathBuf {
        self.file(".changes")
    }
}

/// Builds the package once per test run, and once per source tree across
/// runs: the output is kept under a hash of the files that go into it.
pub fn package() -> &'static Package {
    static PACKAGE: OnceLock<Package> = OnceLock::new();
    PACKAGE.get_or_init(build_package)
}

fn build_package() -> Package {
    let top = Path::new(TOP);
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("package");
    fs::create_dir_all(&base).unwrap();
    let lock = fs::File::create(base.join(".lock")).unwrap();
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .unwrap();

    let files = source_files(top);
    // The integration tests do not go into the package.
    let packaged: Vec<PathBuf> = files
        .iter()
        .filter(|path| !path.starts_with("tests"))
        .cloned()
        .collect();
    let out = base.join(format!("deb-{}", tree_hash(top, &packaged)));
    if out.join("complete").exists() {
        return Package { dir: out };
    }
    let started = Instant::now();
    // A fresh copy (same path, same mtimes, so cargo rebuilds only what changed).
    let src = base.join("troops");
    if src.exists() {
        fs::remove_dir_all(&src).unwrap();
    }
    for file in &files {
        copy_preserving(&top.join(file), &src.join(file));
    }
    for entry in fs::read_dir(&base).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("deb-") {
            fs::remove_dir_all(&path).unwrap();
        } else if name.starts_with("troops_") || name.starts_with("troops-") {
            fs::remove_file(&path).unwrap();
        }
    }

    build_in(&src, &base, &base, &out, started)
}

/// Runs dpkg-buildpackage in `src` (its outputs land in `src`'s parent,
/// `base`) and moves them to `out`; cargo builds in `cargo_base/cargo`.
fn build_in(src: &Path, base: &Path, cargo_base: &Path, out: &Path, started: Instant) -> Package {
    let log_path = base.join("build.log");
    let log = fs::File::create(&log_path).unwrap();
    let status = Command::new("dpkg-buildpackage")
        .args(["-us", "-uc", "-b"])
        .current_dir(src)
        .env_clear()
        .envs(build_env(cargo_base))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .status()
        .unwrap();
    let text = fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        status.success(),
        "dpkg-buildpackage failed ({status}); the end of {}:\n{}",
        log_path.display(),
        tail(&text, 60)
    );

    let tmp = base.join("deb.tmp");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir(&tmp).unwrap();
    for entry in fs::read_dir(base).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_file() && (name.starts_with("troops_") || name.starts_with("troops-")) {
            fs::rename(&path, tmp.join(&name)).unwrap();
        }
    }
    fs::write(tmp.join("complete"), "").unwrap();
    fs::rename(&tmp, out).unwrap();
    eprintln!(
        "built the package in {:.0?} ({})",
        started.elapsed(),
        out.display()
    );
    Package {
        dir: out.to_path_buf(),
    }
}

/// The package as built from `commit` of this repository (for upgrade
/// tests from an earlier release), built once and kept.
pub fn package_at(commit: &str) -> Package {
    let shared = Path::new(env!("CARGO_TARGET_TMPDIR")).join("package");
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("package-{commit}"));
    let out = base.join("deb");
    if out.join("complete").exists() {
        return Package { dir: out };
    }
    fs::create_dir_all(&base).unwrap();
    let lock = fs::File::create(base.join(".lock")).unwrap();
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .unwrap();
    if out.join("complete").exists() {
        return Package { dir: out };
    }
    let started = Instant::now();
    let src = base.join("troops");
    let _ = fs::remove_dir_all(&src);
    fs::create_dir_all(&src).unwrap();
    let archive = Command::new("git")
        .args(["-c", "safe.directory=*", "archive", "--format=tar", commit])
        .current_dir(TOP)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(
        archive.status.success(),
        "git archive {commit} (a full clone is needed): {}",
        String::from_utf8_lossy(&archive.stderr)
    );
    let tar = base.join("source.tar");
    fs::write(&tar, &archive.stdout).unwrap();
    run_ok(Command::new("tar").arg("-xf").arg(&tar).arg("-C").arg(&src));
    build_in(&src, &base, &shared, &out, started)
}

/// The source tree: the tracked and untracked, not ignored files.
fn source_files(top: &Path) -> Vec<PathBuf> {
    let out = Command::new("git")
        .args(["-c", "safe.directory=*", "ls-files", "-z"])
        .args(["--cached", "--others", "--exclude-standard"])
        .current_dir(top)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git ls-files: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut files: Vec<PathBuf> = out
        .stdout
        .split(|&b| b == 0)
        .filter(|name| !name.is_empty())
        .map(|name| PathBuf::from(String::from_utf8_lossy(name).into_owned()))
        .filter(|path| top.join(path).is_file())
        .collect();
    files.sort();
    files.dedup();
    files
}

fn tree_hash(top: &Path, files: &[PathBuf]) -> String {
    let mut hash = Sha256::new();
    for file in files {
        let path = top.join(file);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o111;
        hash.update(file.to_string_lossy().as_bytes());
        hash.update(format!("\0{mode:o}\0").as_bytes());
        let content = fs::read(&path).unwrap();
        hash.update((content.len() as u64).to_le_bytes());
        hash.update(&content);
    }
    hash.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn copy_preserving(from: &Path, to: &Path) {
    fs::create_dir_all(to.parent().unwrap()).unwrap();
    fs::copy(from, to).unwrap();
    let modified = fs::metadata(from).unwrap().modified().unwrap();
    fs::File::options()
        .write(true)
        .open(to)
        .unwrap()
        .set_modified(modified)
        .unwrap();
}

/// A clean build environment: cargo and rustup's settings, nothing else.
fn build_env(base: &Path) -> Vec<(String, String)> {
    let mut path = std::env::var("PATH").unwrap_or_default();
    if let Some(dir) = std::env::var_os("CARGO")
        .map(PathBuf::from)
        .and_then(|cargo| cargo.parent().map(Path::to_path_buf))
    {
        path = format!("{}:{path}", dir.display());
    }
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut env = vec![
        ("PATH".to_owned(), path),
        ("LC_ALL".to_owned(), "C.UTF-8".to_owned()),
        (
            "DEB_BUILD_OPTIONS".to_owned(),
            format!("nocheck parallel={jobs}"),
        ),
        (
            "CARGO_TARGET_DIR".to_owned(),
            base.join("cargo").to_string_lossy().into_owned(),
        ),
    ];
    for name in [
        "HOME",
        "CARGO_HOME",
        "RUSTUP_HOME",
        "RUSTUP_TOOLCHAIN",
        "TMPDIR",
    ] {
        if let Ok(value) = std::env::var(name) {
            env.push((name.to_owned(), value));
        }
    }
    env
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[track_caller]
pub fn run_ok(cmd: &mut Command) -> Run {
    let run = Run::from(cmd.output().unwrap());
    assert_eq!(
        run.code,
        Some(0),
        "{cmd:?} failed:\n{}\n{}",
        run.stdout,
        run.stderr
    );
    run
}

// ---------------------------------------------------------------------------
// A throwaway Debian root

pub struct DebRoot {
    pub work: TempDir,
    /// The cached root (tests/debroot/make-root) this one is an overlay of.
    pub lower: PathBuf,
    /// apt's archive of .debs, beside the cached root, shared by every run.
    pub archives: PathBuf,
    /// `unshare`, whose child is the namespaces' pid 1.
    child: Child,
    /// That pid 1, as this process sees it.
    pub init: u32,
}

impl DebRoot {
    /// Starts a root. It dies with the thread that started it (its init
    /// gets SIGKILL as that thread's parent-death signal), so start roots on
    /// the thread that keeps them.
    pub fn start() -> DebRoot {
        DebRoot::start_suite("bookworm")
    }

    /// Starts a root of a Debian `suite` (bookworm or trixie), as `start`.
    pub fn start_suite(suite: &str) -> DebRoot {
        let make_root = Path::new(TOP).join("tests/debroot/make-root");
        let made = Command::new(&make_root)
            .arg(suite)
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(made.status.success(), "tests/debroot/make-root failed");
        let lower = PathBuf::from(String::from_utf8(made.stdout).unwrap().trim());
        // Beside the cached root (never inside it), shared by every run.
        let archives = lower.parent().unwrap().join(format!(
            "{}-package-debs",
            lower.file_name().unwrap().to_string_lossy()
        ));
        fs::create_dir_all(archives.join("partial")).unwrap();

        let work = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--uts", "--pid", "--fork", "--kill-child"])
            .arg("--")
            .arg(Path::new(TOP).join("tests/package/root-init"))
            .arg(&lower)
            .arg(work.path())
            .arg(&archives)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(work.path().join("init.log")).unwrap());
        // If this test process dies, unshare dies, and with it (--kill-child)
        // the namespaces' pid 1 and so every process and mount in them.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
        let mut child = cmd.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !work.path().join("ready").exists() {
            let log = fs::read_to_string(work.path().join("init.log")).unwrap_or_default();
            assert!(
                child.try_wait().unwrap().is_none() && Instant::now() < deadline,
                "the Debian root did not start:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let children = format!("/proc/{0}/task/{0}/children", child.id());
        let init = fs::read_to_string(children)
            .unwrap()
            .split_whitespace()
            .next()
            .expect("unshare has no child")
            .parse()
            .unwrap();
        DebRoot {
            work,
            lower,
            archives,
            child,
            init,
        }
    }

    /// The root's directory inside its mount namespace.
    pub fn inner(&self) -> PathBuf {
        self.work.path().join("root")
    }

    /// A path in the root, as this process can reach it.
    pub fn path(&self, path: &str) -> PathBuf {
        let inner = self.inner();
        PathBuf::from(format!("/proc/{}/root", self.init))
            .join(inner.strip_prefix("/").unwrap())
            .join(path.trim_start_matches('/'))
    }

    /// `ARGS` run as root in the root, with a clean environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["--target", &self.init.to_string()])
            .args(["--mount", "--uts", "--pid", "--"])
            .arg("chroot")
            .arg(self.inner())
            .args([
                "/usr/bin/env",
                "-i",
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME=/root",
                "LC_ALL=C.UTF-8",
                "DEBIAN_FRONTEND=noninteractive",
            ])
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().unwrap())
    }

    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> Run {
        let run = self.run(args);
        assert_eq!(
            run.code,
            Some(0),
            "in the root, {args:?} failed:\n{}\n{}",
            run.stdout,
            run.stderr
        );
        run
    }

    #[track_caller]
    pub fn sh_ok(&self, script: &str) -> Run {
        self.ok(&["/bin/sh", "-c", script])
    }

    pub fn read(&self, path: &str) -> String {
        fs::read_to_string(self.path(path))
            .unwrap_or_else(|e| panic!("cannot read {path} in the root: {e}"))
    }

    pub fn exists(&self, path: &str) -> bool {
        fs::symlink_metadata(self.path(path)).is_ok()
    }

    /// Puts a file from this machine into the root's /tmp; returns its path there.
    pub fn put(&self, file: &Path) -> String {
        let inside = format!("/tmp/{}", file.file_name().unwrap().to_string_lossy());
        fs::copy(file, self.path(&inside)).unwrap();
        inside
    }

    /// `apt-get ARGS`; when the root's package lists have gone stale (the
    /// mirror no longer has a version they name), updates them and retries.
    #[track_caller]
    pub fn apt_get(&self, args: &[&str]) -> Run {
        // A throwaway root needs no fsync after every file.
        let mut argv = vec![
            "apt-get",
            "-q",
            "-y",
            "-o",
            "Dpkg::Use-Pty=0",
            "-o",
            "Dpkg::Options::=--force-unsafe-io",
        ];
        argv.extend_from_slice(args);
        let run = self.run(&argv);
        if run.code == Some(0) {
            return run;
        }
        if !(run.stderr.contains("Failed to fetch") || run.stderr.contains("Unable to fetch")) {
            panic!(
                "in the root, {argv:?} failed:\n{}\n{}",
                run.stdout, run.stderr
            );
        }
        self.ok(&["apt-get", "-q", "update"]);
        let run = self.ok(&argv);
        self.ok(&["apt-get", "-q", "autoclean"]);
        run
    }

    /// The commit `refs/heads/master` names in the repository `git_dir` of
    /// the root (root's `deploy.git`, or the members' `repo/main.git`).
    pub fn master_of(&self, git_dir: &str) -> String {
        let git_dir = format!("--git-dir=/var/lib/troops/{git_dir}");
        self.ok(&["git", &git_dir, "rev-parse", "refs/heads/master"])
            .stdout
            .trim()
            .to_owned()
    }

    pub fn group_id(&self, name: &str) -> Option<u32> {
        let run = self.run(&["getent", "group", name]);
        (run.code == Some(0)).then(|| run.stdout.split(':').nth(2).unwrap().parse().unwrap())
    }

    /// Mode (with the file type bits dropped), owner and group names.
    pub fn stat(&self, path: &str) -> (u32, String, String) {
        let out = self.ok(&["stat", "-c", "%a %U %G", path]).stdout;
        let mut fields = out.split_whitespace();
        let mode = u32::from_str_radix(fields.next().unwrap(), 8).unwrap();
        (
            mode,
            fields.next().unwrap().to_owned(),
            fields.next().unwrap().to_owned(),
        )
    }

    /// `ARGS` run as root in the root's namespaces but not chrooted: with
    /// this machine's files, and the root at `inner()`.
    pub fn enter(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["--target", &self.init.to_string()])
            .args(["--mount", "--uts", "--pid", "--"])
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// Names the root `name` (its kernel hostname, in its UTS namespace) and
    /// resolves that name to `address` in its /etc/hosts, with `extra` lines.
    pub fn set_hostname(&self, name: &str, address: Ipv4Addr, extra: &str) {
        let short = name.split('.').next().unwrap();
        fs::write(
            self.path("/etc/hosts"),
            format!("127.0.0.1 localhost\n{address} {name} {short}\n{extra}"),
        )
        .unwrap();
        fs::write(self.path("/etc/hostname"), format!("{name}\n")).unwrap();
        self.ok(&["hostname", name]);
    }

    /// Gives the root its own view of the shared .deb archive: an overlay
    /// whose upper layer is private, so that apt in several roots at once
    /// never contends for the archive's lock. `save_archives` keeps what
    /// apt downloaded meanwhile.
    pub fn private_archives(&self) {
        let upper = self.work.path().join("archives-upper");
        let work = self.work.path().join("archives-work");
        fs::create_dir_all(&upper).unwrap();
        fs::create_dir_all(&work).unwrap();
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            self.archives.display(),
            upper.display(),
            work.display()
        );
        let target = self.inner().join("var/cache/apt/archives");
        run_ok(&mut self.enter(&[
            "mount",
            "-t",
            "overlay",
            "overlay",
            "-o",
            &options,
            &target.to_string_lossy(),
        ]));
    }

    /// Copies the .debs apt downloaded into the private archive
    /// (`private_archives`) to the shared one, for later runs.
    pub fn save_archives(&self) {
        let upper = self.work.path().join("archives-upper");
        let Ok(entries) = fs::read_dir(&upper) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let kept = self.archives.join(&name);
            if name.ends_with(".deb") && path.is_file() && !kept.exists() {
                let tmp = self.archives.join(format!(".{name}.tmp"));
                fs::copy(&path, &tmp).unwrap();
                fs::rename(&tmp, &kept).unwrap();
            }
        }
    }

    /// Copies into the shared archive the .debs the cached root was built
    /// with in its own apt cache (make-root's test packages, such as tmux),
    /// which the archive mounted over that cache hides.
    pub fn seed_archives(&self) {
        let cached = self.lower.join("var/cache/apt/archives");
        for entry in fs::read_dir(&cached).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let kept = self.archives.join(&name);
            if name.ends_with(".deb") && !kept.exists() {
                let tmp = self.archives.join(format!(".{name}.tmp"));
                fs::copy(&path, &tmp).unwrap();
                fs::rename(&tmp, &kept).unwrap();
            }
        }
    }

    /// Adds `user` (home directory, shell /bin/sh) who logs in with
    /// `client`'s key for that user; `member` also adds it to group troops.
    pub fn add_user(&self, client: &Client, user: &str, member: bool) {
        self.ok(&["useradd", "--create-home", "--shell", "/bin/sh", user]);
        // `*`, not useradd's `!`: sshd without PAM refuses a locked account.
        self.ok(&["usermod", "--password", "*", user]);
        if member {
            self.ok(&["gpasswd", "--add", user, "troops"]);
        }
        let key = fs::read_to_string(client.key(user).with_extension("pub")).unwrap();
        self.authorize(user, &key);
    }

    /// Lets `user` log in with `public_key` (appended to its authorized_keys).
    pub fn authorize(&self, user: &str, public_key: &str) {
        let home = self
            .ok(&["getent", "passwd", user])
            .stdout
            .split(':')
            .nth(5)
            .unwrap()
            .to_owned();
        let keys = self.path(&format!("{home}/.ssh/authorized_keys"));
        fs::create_dir_all(keys.parent().unwrap()).unwrap();
        let mut text = fs::read_to_string(&keys).unwrap_or_default();
        text.push_str(public_key);
        if !text.ends_with('\n') {
            text.push('\n');
        }
        fs::write(&keys, text).unwrap();
        self.ok(&["chown", "-R", &format!("{user}:"), &format!("{home}/.ssh")]);
    }

    /// Starts the root's own sshd (openssh-server must be installed) on
    /// `address` and a free port, with `extra` configuration lines; adds its
    /// host key to `client`'s known hosts and returns the port.
    pub fn start_sshd(&self, client: &Client, address: Ipv4Addr, extra: &str) -> u16 {
        let port = TcpListener::bind(SocketAddrV4::new(address, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        fs::write(
            self.path("/etc/ssh/sshd_test_config"),
            format!(
                "ListenAddress {address}:{port}\n\
                 HostKey /etc/ssh/ssh_host_ed25519_key\n\
                 PidFile none\n\
                 UsePAM no\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 PermitRootLogin no\n\
                 AuthorizedKeysFile .ssh/authorized_keys\n\
                 LogLevel ERROR\n{extra}"
            ),
        )
        .unwrap();
        self.ok(&["mkdir", "-p", "/run/sshd"]);
        // Forks into the background, inside the root's pid namespace.
        self.ok(&[
            "/usr/sbin/sshd",
            "-f",
            "/etc/ssh/sshd_test_config",
            "-E",
            "/var/log/sshd_test.log",
        ]);
        let host_key = self.read("/etc/ssh/ssh_host_ed25519_key.pub");
        let mut known = fs::read_to_string(client.dir.path().join("known_hosts")).unwrap();
        known.push_str(&format!("[{address}]:{port} {host_key}"));
        fs::write(client.dir.path().join("known_hosts"), known).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(SocketAddrV4::new(address, port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd in the root did not start: {}",
                fs::read_to_string(self.path("/var/log/sshd_test.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        port
    }
}

impl Drop for DebRoot {
    fn drop(&mut self) {
        // Killing pid 1 kills every process in the namespace; once unshare
        // has reaped it, the namespace and its mounts are gone.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.init as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{}", self.init)).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

// ---------------------------------------------------------------------------
// An SSH server in the root
