//! The Debian package (SPEC "Who uses it" 1 and 2), built with
//! `dpkg-buildpackage -us -uc -b` once per source tree (cached in cargo's
//! target directory) and used as an admin would: installed with apt into a
//! throwaway copy of the cached Debian root (tests/debroot/make-root), pushed
//! to by a group member over real sshd on loopback, reinstalled, upgraded,
//! removed and purged; lintian checks the build.
//!
//! The root is an overlay in its own mount, UTS and pid namespaces
//! (tests/package/root-init): its mounts and processes go when it is
//! dropped, or when this process dies. Needs root, debootstrap, unshare,
//! nsenter, and dpkg-dev, debhelper and lintian (see .ci/run); only the
//! Debian mirror is reached, for the package's dependencies, whose .debs are
//! kept beside the cached root. Without root the tests say so and pass,
//! except with CI=true, where they fail.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::cluster::Client;
use common::{DeployRepo, Run};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

const TOP: &str = env!("CARGO_MANIFEST_DIR");
/// The version the upgrade test repacks the package as.
const HIGHER: &str = "+upgrade.test";
const ADDRESS: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 60);

/// Whether this machine can run these tests; under CI it must.
fn can_run() -> bool {
    let mut missing: Vec<&str> = Vec::new();
    if !nix::unistd::Uid::effective().is_root() {
        missing.push("root");
    }
    for tool in [
        "dpkg-buildpackage",
        "dh",
        "lintian",
        "debootstrap",
        "unshare",
        "nsenter",
    ] {
        if !on_path(tool) {
            missing.push(tool);
        }
    }
    if missing.is_empty() {
        return true;
    }
    let why = format!(
        "the package tests need {}; hint: run them as root after .ci/run's apt-get install",
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
struct Package {
    dir: PathBuf,
}

impl Package {
    fn file(&self, suffix: &str) -> PathBuf {
        let found = fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                let name = p.file_name().unwrap().to_string_lossy();
                name.starts_with("troops_") && name.ends_with(suffix)
            });
        found.unwrap_or_else(|| panic!("no troops_*{suffix} in {}", self.dir.display()))
    }

    fn deb(&self) -> PathBuf {
        self.file(".deb")
    }

    fn changes(&self) -> PathBuf {
        self.file(".changes")
    }
}

/// Builds the package once per test run, and once per source tree across
/// runs: the output is kept under a hash of the files that go into it.
fn package() -> &'static Package {
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

    let log_path = base.join("build.log");
    let log = fs::File::create(&log_path).unwrap();
    let status = Command::new("dpkg-buildpackage")
        .args(["-us", "-uc", "-b"])
        .current_dir(&src)
        .env_clear()
        .envs(build_env(&base))
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
    for entry in fs::read_dir(&base).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_file() && (name.starts_with("troops_") || name.starts_with("troops-")) {
            fs::rename(&path, tmp.join(&name)).unwrap();
        }
    }
    fs::write(tmp.join("complete"), "").unwrap();
    fs::rename(&tmp, &out).unwrap();
    eprintln!(
        "built the package in {:.0?} ({})",
        started.elapsed(),
        out.display()
    );
    Package { dir: out }
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

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The package repacked under a higher version, for a real upgrade.
fn repack_higher(deb: &Path, dir: &Path) -> PathBuf {
    let tree = dir.join("repack");
    run_ok(Command::new("dpkg-deb").arg("-R").arg(deb).arg(&tree));
    let control = tree.join("DEBIAN/control");
    let text = fs::read_to_string(&control).unwrap();
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .unwrap()
        .to_owned();
    fs::write(
        &control,
        text.replace(
            &format!("Version: {version}\n"),
            &format!("Version: {version}{HIGHER}\n"),
        ),
    )
    .unwrap();
    let out = dir.join(format!("troops_{version}{HIGHER}.deb"));
    run_ok(
        Command::new("dpkg-deb")
            .args(["--build", "--root-owner-group"])
            .arg(&tree)
            .arg(&out),
    );
    out
}

#[track_caller]
fn run_ok(cmd: &mut Command) -> Run {
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

struct DebRoot {
    work: TempDir,
    /// `unshare`, whose child is the namespaces' pid 1.
    child: Child,
    /// That pid 1, as this process sees it.
    init: u32,
}

impl DebRoot {
    fn start() -> DebRoot {
        let make_root = Path::new(TOP).join("tests/debroot/make-root");
        let made = Command::new(&make_root)
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
        DebRoot { work, child, init }
    }

    /// The root's directory inside its mount namespace.
    fn inner(&self) -> PathBuf {
        self.work.path().join("root")
    }

    /// A path in the root, as this process can reach it.
    fn path(&self, path: &str) -> PathBuf {
        let inner = self.inner();
        PathBuf::from(format!("/proc/{}/root", self.init))
            .join(inner.strip_prefix("/").unwrap())
            .join(path.trim_start_matches('/'))
    }

    /// `ARGS` run as root in the root, with a clean environment.
    fn command(&self, args: &[&str]) -> Command {
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

    fn run(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().unwrap())
    }

    #[track_caller]
    fn ok(&self, args: &[&str]) -> Run {
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
    fn sh_ok(&self, script: &str) -> Run {
        self.ok(&["/bin/sh", "-c", script])
    }

    fn read(&self, path: &str) -> String {
        fs::read_to_string(self.path(path))
            .unwrap_or_else(|e| panic!("cannot read {path} in the root: {e}"))
    }

    fn exists(&self, path: &str) -> bool {
        fs::symlink_metadata(self.path(path)).is_ok()
    }

    /// Puts a file from this machine into the root's /tmp; returns its path there.
    fn put(&self, file: &Path) -> String {
        let inside = format!("/tmp/{}", file.file_name().unwrap().to_string_lossy());
        fs::copy(file, self.path(&inside)).unwrap();
        inside
    }

    /// `apt-get ARGS`; when the root's package lists have gone stale (the
    /// mirror no longer has a version they name), updates them and retries.
    #[track_caller]
    fn apt_get(&self, args: &[&str]) -> Run {
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

    fn group_id(&self, name: &str) -> Option<u32> {
        let run = self.run(&["getent", "group", name]);
        (run.code == Some(0)).then(|| run.stdout.split(':').nth(2).unwrap().parse().unwrap())
    }

    /// Mode (with the file type bits dropped), owner and group names.
    fn stat(&self, path: &str) -> (u32, String, String) {
        let out = self.ok(&["stat", "-c", "%a %U %G", path]).stdout;
        let mut fields = out.split_whitespace();
        let mode = u32::from_str_radix(fields.next().unwrap(), 8).unwrap();
        (
            mode,
            fields.next().unwrap().to_owned(),
            fields.next().unwrap().to_owned(),
        )
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

/// sshd of the root on 127.0.0.x, with alice (in group troops) and mallory
/// (not) logging in with `client`'s keys.
fn start_sshd(root: &DebRoot, client: &Client) -> u16 {
    for (user, _, member) in common::cluster::USERS {
        root.ok(&["useradd", "--create-home", "--shell", "/bin/sh", user]);
        // `*`, not useradd's `!`: sshd without PAM refuses a locked account.
        root.ok(&["usermod", "--password", "*", user]);
        if *member {
            root.ok(&["gpasswd", "--add", user, "troops"]);
        }
        let key = fs::read_to_string(client.key(user).with_extension("pub")).unwrap();
        let home = format!("/home/{user}");
        fs::create_dir_all(root.path(&format!("{home}/.ssh"))).unwrap();
        fs::write(root.path(&format!("{home}/.ssh/authorized_keys")), key).unwrap();
        root.ok(&[
            "chown",
            "-R",
            &format!("{user}:{user}"),
            &format!("{home}/.ssh"),
        ]);
    }
    let port = TcpListener::bind(SocketAddrV4::new(ADDRESS, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    fs::write(
        root.path("/etc/ssh/sshd_test_config"),
        format!(
            "ListenAddress {ADDRESS}:{port}\n\
             HostKey /etc/ssh/ssh_host_ed25519_key\n\
             PidFile none\n\
             UsePAM no\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             PermitRootLogin no\n\
             AuthorizedKeysFile .ssh/authorized_keys\n\
             LogLevel ERROR\n"
        ),
    )
    .unwrap();
    root.ok(&["mkdir", "-p", "/run/sshd"]);
    // Forks into the background, inside the root's pid namespace.
    root.ok(&[
        "/usr/sbin/sshd",
        "-f",
        "/etc/ssh/sshd_test_config",
        "-E",
        "/var/log/sshd_test.log",
    ]);
    let host_key = root.read("/etc/ssh/ssh_host_ed25519_key.pub");
    let mut known = fs::read_to_string(client.dir.path().join("known_hosts")).unwrap();
    known.push_str(&format!("[{ADDRESS}]:{port} {host_key}"));
    fs::write(client.dir.path().join("known_hosts"), known).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(SocketAddrV4::new(ADDRESS, port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "sshd in the root did not start: {}",
            fs::read_to_string(root.path("/var/log/sshd_test.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    port
}

fn url(user: &str, port: u16) -> String {
    format!("ssh://{user}@{ADDRESS}:{port}/var/lib/troops/repo/main.git")
}

fn push(client: &Client, user: &str, port: u16, repo: &DeployRepo) -> Run {
    Run::from(
        client
            .command("git", user)
            .arg("-C")
            .arg(repo.path())
            .args(["push", &url(user, port), "master"])
            .output()
            .unwrap(),
    )
}

fn ssh(client: &Client, user: &str, port: u16, command: &[&str]) -> Run {
    let mut cmd = common::clean_command("ssh", client.dir.path());
    cmd.args(client.ssh_command(user).split(' ').skip(1))
        .args(["-p", &port.to_string(), &format!("{user}@{ADDRESS}")])
        .args(command);
    Run::from(cmd.output().unwrap())
}

fn deploy_py(version: u32) -> String {
    format!(
        "import troops\n\n\
         @troops.deployable()\n\
         def hello():\n\
         \x20   with open('/srv/hello-deployed', 'w') as f:\n\
         \x20       f.write('version {version}\\n')\n\
         \x20   print('deployed version {version} on', troops.hostname())\n"
    )
}

/// What the node keeps across upgrade and remove.
#[derive(Debug, PartialEq)]
struct Kept {
    branch: String,
    key: String,
    public_key: String,
    history: BTreeSet<String>,
    config: String,
}

fn kept(root: &DebRoot) -> Kept {
    let branch = root
        .ok(&[
            "git",
            "--git-dir=/var/lib/troops/repo/main.git",
            "rev-parse",
            "refs/heads/master",
        ])
        .stdout
        .trim()
        .to_owned();
    let history = fs::read_dir(root.path("/var/lib/troops/state/history"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    Kept {
        branch,
        key: root.read("/var/lib/troops/ssh/id_ed25519"),
        public_key: root.read("/var/lib/troops/ssh/id_ed25519.pub"),
        history,
        config: root.read("/etc/troops/troops.toml"),
    }
}

// ---------------------------------------------------------------------------
// The tests

#[test]
fn package_installs_deploys_upgrades_removes_and_purges() {
    if !can_run() {
        return;
    }
    let timer = Instant::now();
    let package = package();
    let root = DebRoot::start();
    eprintln!("package and root ready in {:.0?}", timer.elapsed());

    // Install with apt, which brings the dependencies (and the sshd this
    // test pushes through, which the package recommends).
    let deb = root.put(&package.deb());
    root.apt_get(&["install", "--no-install-recommends", &deb, "openssh-server"]);
    eprintln!("installed in {:.0?}", timer.elapsed());
    check_installed(&root);

    // A member of the group pushes, and the push deploys; others cannot.
    let client = Client::new();
    let port = start_sshd(&root, &client);
    let repo = DeployRepo::with(&deploy_py(1));
    let run = push(&client, "alice", port, &repo);
    assert_eq!(run.code, Some(0), "alice's push failed:\n{}", run.stderr);
    assert!(
        run.stderr
            .contains("remote: deployed version 1 on troops-node"),
        "{}",
        run.stderr
    );
    assert_eq!(root.read("/srv/hello-deployed"), "version 1\n");
    let status: serde_json::Value =
        serde_json::from_str(&root.ok(&["troops", "status", "--json"]).stdout).unwrap();
    assert_eq!(status["commit"], repo.head());
    assert_eq!(status["history"][0]["user"], "alice");
    assert_eq!(status["history"][0]["trigger"], "push");

    repo.commit(&[("deploy.py", &deploy_py(2))]);
    let run = push(&client, "mallory", port, &repo);
    assert_ne!(run.code, Some(0), "mallory could push:\n{}", run.stderr);
    assert!(
        run.stderr
            .contains("does not appear to be a git repository"),
        "{}",
        run.stderr
    );
    assert_eq!(root.read("/srv/hello-deployed"), "version 1\n");

    // A member re-deploys the node's commit through sudo.
    let run = ssh(&client, "alice", port, &["troops", "deploy"]);
    assert_eq!(
        run.code,
        Some(0),
        "ssh alice troops deploy:\n{}",
        run.stderr
    );
    assert!(
        run.stdout.contains("deployed version 1 on troops-node")
            || run.stderr.contains("deployed version 1 on troops-node"),
        "{run:?}"
    );

    // Configuration by hand, which no upgrade may touch.
    fs::write(
        root.path("/etc/troops/troops.toml"),
        "# written by hand\nroles = [\"web\"]\n",
    )
    .unwrap();
    let before = kept(&root);
    assert_eq!(before.history.len(), 2, "{before:?}");

    // Reinstalling the same version, then upgrading, keeps it all.
    root.ok(&["dpkg", "--force-unsafe-io", "-i", &deb]);
    assert_eq!(kept(&root), before, "reinstalling changed the node's data");
    let higher = repack_higher(&package.deb(), root.work.path());
    let higher = root.put(&higher);
    root.apt_get(&["install", &higher]);
    let version = root
        .ok(&["dpkg-query", "-W", "-f", "${Version}", "troops"])
        .stdout;
    assert!(version.ends_with(HIGHER), "{version}");
    assert_eq!(kept(&root), before, "the upgrade changed the node's data");
    check_installed(&root);
    // Pushing still deploys after the upgrade.
    let run = push(&client, "alice", port, &repo);
    assert_eq!(run.code, Some(0), "push after upgrade:\n{}", run.stderr);
    assert_eq!(root.read("/srv/hello-deployed"), "version 2\n");
    let before = kept(&root);

    // `remove` keeps the data, and the group.
    root.apt_get(&["remove", "troops"]);
    assert!(!root.exists("/usr/bin/troops"));
    assert_eq!(kept(&root), before, "remove changed the node's data");
    assert!(
        root.group_id("troops").is_some(),
        "remove deleted the group"
    );

    // `purge` removes everything the package, `troops init` and `troops seed`
    // made: here the pull interval that seeding sets.
    let dropins = root.path("/etc/systemd/system/troops-pull.timer.d");
    fs::create_dir_all(&dropins).unwrap();
    fs::write(
        dropins.join("troops-seed.conf"),
        "[Timer]\nOnUnitActiveSec=\nOnUnitActiveSec=1h\n",
    )
    .unwrap();
    let gid = root.group_id("troops").unwrap();
    let run = root.apt_get(&["purge", "troops"]);
    assert!(!run.stderr.contains("troops:"), "{}", run.stderr);
    check_purged(&root, gid);
    eprintln!("whole lifecycle in {:.0?}", timer.elapsed());
}

fn check_installed(root: &DebRoot) {
    check_layout(root);
    check_push_access(root);
    check_units(root);
    check_shipped_files(root);
}

/// The group, the layout with its owners and modes, and the node's key.
fn check_layout(root: &DebRoot) {
    // A system group; the admin adds its members.
    let gid = root.group_id("troops").expect("no group troops");
    assert!(gid < 1000, "troops is not a system group: {gid}");

    // Layout, owners and modes.
    let lib = "/var/lib/troops";
    assert_eq!(root.stat(lib), (0o750, "root".into(), "troops".into()));
    for dir in [
        "state",
        "state/history",
        "state/logs",
        "cache/venvs",
        "work",
    ] {
        let (mode, owner, group) = root.stat(&format!("{lib}/{dir}"));
        assert_eq!((mode, &*owner, &*group), (0o750, "root", "troops"), "{dir}");
    }
    let repo = format!("{lib}/repo/main.git");
    let (mode, owner, group) = root.stat(&repo);
    assert_eq!((&*owner, &*group), ("root", "troops"), "{repo}");
    assert!(mode & 0o2000 != 0, "{repo} is not setgid: {mode:o}");
    assert_eq!(
        root.ok(&["git", "--git-dir", &repo, "config", "core.sharedRepository"])
            .stdout
            .trim(),
        "0660"
    );
    assert_eq!(
        root.stat(&format!("{repo}/config")),
        (0o640, "root".into(), "troops".into())
    );
    assert!(
        root.ok(&["git", "config", "--system", "--get-all", "safe.directory"])
            .stdout
            .lines()
            .any(|l| l == repo),
        "the repository is not a safe.directory"
    );

    // The node's key.
    assert_eq!(
        root.stat(&format!("{lib}/ssh")),
        (0o700, "root".into(), "root".into())
    );
    assert_eq!(root.stat(&format!("{lib}/ssh/id_ed25519")).0, 0o600);
    let fingerprint = root
        .ok(&[
            "ssh-keygen",
            "-l",
            "-f",
            &format!("{lib}/ssh/id_ed25519.pub"),
        ])
        .stdout;
    assert!(fingerprint.contains("(ED25519)"), "{fingerprint}");
}

/// The hook runs the packaged troops through sudo, which allows exactly that.
fn check_push_access(root: &DebRoot) {
    let hook = "/var/lib/troops/repo/main.git/hooks/pre-receive";
    assert_eq!(root.stat(hook), (0o755, "root".into(), "root".into()));
    assert!(
        root.read(hook)
            .contains("sudo -n -- '/usr/bin/troops' --root '/' hook pre-receive"),
        "{}",
        root.read(hook)
    );
    let sudoers = "/etc/sudoers.d/troops";
    assert_eq!(root.stat(sudoers), (0o440, "root".into(), "root".into()));
    assert!(
        root.read(sudoers).contains(
            "%troops ALL=(root) NOPASSWD: /usr/bin/troops --root / hook pre-receive, \
             /usr/bin/troops --root / deploy\n"
        ),
        "{}",
        root.read(sudoers)
    );
    root.ok(&["visudo", "-c"]);
}

/// Units: valid, the timer and first-boot seeding enabled, the pull service
/// started by its timer alone, and none started by dpkg.
fn check_units(root: &DebRoot) {
    let units = [
        "troops-pull.service",
        "troops-pull.timer",
        "troops-seed.service",
    ];
    let paths: Vec<String> = units
        .iter()
        .map(|u| format!("/lib/systemd/system/{u}"))
        .collect();
    let mut verify = vec!["systemd-analyze", "verify", "--man=no"];
    verify.extend(paths.iter().map(String::as_str));
    let run = root.run(&verify);
    let complaints: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("troops"))
        .collect();
    assert!(
        run.code == Some(0) && complaints.is_empty(),
        "systemd-analyze verify:\n{}",
        run.stderr
    );
    for (link, unit) in [
        ("timers.target.wants", "troops-pull.timer"),
        ("multi-user.target.wants", "troops-seed.service"),
    ] {
        let target = fs::read_link(root.path(&format!("/etc/systemd/system/{link}/{unit}")))
            .unwrap_or_else(|e| panic!("{unit} is not enabled: {e}"));
        assert_eq!(target, Path::new("/lib/systemd/system").join(unit));
    }
    assert_eq!(
        root.run(&["systemctl", "is-enabled", "troops-pull.service"])
            .stdout
            .trim(),
        "static"
    );
    for unit in &units[1..] {
        assert_eq!(
            root.run(&["systemctl", "is-enabled", unit]).stdout.trim(),
            "enabled",
            "{unit}"
        );
    }
    let pull = root.read("/lib/systemd/system/troops-pull.service");
    assert!(
        pull.contains("Type=oneshot") && !pull.lines().any(|l| l == "[Install]"),
        "{pull}"
    );
    let timer = root.read("/lib/systemd/system/troops-pull.timer");
    for setting in ["OnBootSec=", "OnUnitActiveSec=", "RandomizedDelaySec="] {
        assert!(timer.contains(setting), "{timer}");
    }
    let seed = root.read("/lib/systemd/system/troops-seed.service");
    assert!(
        seed.contains("ConditionPathExists=!/var/lib/troops/state/seeded"),
        "{seed}"
    );
    // A pull started during an apt run would deploy under dpkg's lock, and
    // stopping one on upgrade would kill a deploy.
    for script in ["preinst", "postinst"] {
        let path = format!("/var/lib/dpkg/info/troops.{script}");
        if root.exists(&path) {
            assert!(
                !root.read(&path).contains("deb-systemd-invoke"),
                "{script} starts or stops units:\n{}",
                root.read(&path)
            );
        }
    }
}

/// Man pages, completions, the wheel.
fn check_shipped_files(root: &DebRoot) {
    for page in ["troops.1.gz", "troops-deploy.1.gz", "troops-init.1.gz"] {
        assert!(
            root.exists(&format!("/usr/share/man/man1/{page}")),
            "{page}"
        );
    }
    root.ok(&[
        "bash",
        "-n",
        "/usr/share/bash-completion/completions/troops",
    ]);
    assert!(root.exists("/usr/share/zsh/vendor-completions/_troops"));
    let wheels: Vec<_> = fs::read_dir(root.path("/usr/share/troops/wheels"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(wheels, ["PyDebianAdmin-0.1.0-py3-none-any.whl"]);
}

fn check_purged(root: &DebRoot, gid: u32) {
    for path in [
        "/var/lib/troops",
        "/etc/troops",
        "/etc/sudoers.d/troops",
        "/etc/systemd/system/timers.target.wants/troops-pull.timer",
        "/etc/systemd/system/multi-user.target.wants/troops-seed.service",
    ] {
        assert!(!root.exists(path), "purge left {path}");
    }
    assert_eq!(root.group_id("troops"), None, "purge left the group");
    let gitconfig = root.run(&["git", "config", "--system", "--list"]).stdout;
    assert!(!gitconfig.contains("troops"), "{gitconfig}");
    let state = root.run(&["dpkg-query", "-W", "-f", "${db:Status-Status}", "troops"]);
    assert!(
        state.code != Some(0) || state.stdout == "not-installed",
        "{state:?}"
    );
    // Nothing named after troops or owned by its group is left anywhere.
    let left = root
        .sh_ok(&format!(
            "find / -xdev \\( -path /proc -o -path /tmp -o -path /home \\) -prune \
             -o \\( -name '*troops*' -o -gid {gid} \\) -print"
        ))
        .stdout;
    assert_eq!(left, "", "purge left files behind");
}

#[test]
fn shipped_wheel_installs_without_pypi() {
    if !can_run() {
        return;
    }
    let package = package();
    let root = DebRoot::start();
    // The wheel alone, unpacked: this needs no dependency of the package.
    let tree = root.work.path().join("unpacked");
    run_ok(
        Command::new("dpkg-deb")
            .arg("-x")
            .arg(package.deb())
            .arg(&tree),
    );
    let wheels = tree.join("usr/share/troops/wheels");
    let wheel = fs::read_dir(&wheels)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    root.ok(&["mkdir", "-p", "/usr/share/troops/wheels"]);
    fs::copy(
        &wheel,
        root.path(&format!(
            "/usr/share/troops/wheels/{}",
            wheel.file_name().unwrap().to_string_lossy()
        )),
    )
    .unwrap();
    root.ok(&["python3", "-m", "venv", "/tmp/venv"]);
    root.ok(&[
        "/tmp/venv/bin/pip",
        "install",
        "--no-index",
        "--find-links",
        "/usr/share/troops/wheels",
        "PyDebianAdmin",
    ]);
    let run = root.ok(&[
        "/tmp/venv/bin/python",
        "-c",
        "import pydebianadmin.apt, pydebianadmin.files; print('ok')",
    ]);
    assert_eq!(run.stdout, "ok\n");
}

#[test]
fn lintian_finds_no_errors_and_only_documented_warnings() {
    if !can_run() {
        return;
    }
    let package = package();
    // lintian leaves temporary files behind: keep them out of /tmp.
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new("lintian")
        .env("TMPDIR", tmp.path())
        .args(["--fail-on", "error", "--tag-display-limit", "0"])
        .arg(package.changes())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && !report.lines().any(|l| l.starts_with("E: ")),
        "lintian:\n{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every warning has its reason in debian/PACKAGING.md.
    let doc = fs::read_to_string(Path::new(TOP).join("debian/PACKAGING.md")).unwrap();
    for line in report.lines().filter(|l| l.starts_with("W: ")) {
        let tag = line.split_whitespace().nth(2).unwrap();
        assert!(
            doc.contains(&format!("`{tag}`")),
            "debian/PACKAGING.md does not explain lintian's warning:\n{line}"
        );
    }
    eprintln!("lintian:\n{report}");
}
