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
#[path = "common/package.rs"]
mod package;

use std::collections::BTreeSet;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::cluster::Client;
use common::{DeployRepo, Run};
use package::{DebRoot, TOP, package, run_ok};

/// The version the upgrade test repacks the package as.
const HIGHER: &str = "+upgrade.test";
const ADDRESS: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 60);
/// The last commit with the one-repository layout, whose package the
/// upgrade test starts from.
const BEFORE_PRIVSEP: &str = "d01a44d378d36c6b39ec98d1541395b98abe8d42";
const UPGRADE_ADDRESS: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 63);

/// Whether this machine can run these tests; under CI it must.
fn can_run() -> bool {
    package::can_run(
        "the package tests",
        &[
            "dpkg-buildpackage",
            "dh",
            "lintian",
            "debootstrap",
            "unshare",
            "nsenter",
        ],
    )
}

// ---------------------------------------------------------------------------
// Building the package

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

// ---------------------------------------------------------------------------
// An SSH server in the root

/// sshd of the root on 127.0.0.x, with alice (in group troops) and mallory
/// (not) logging in with `client`'s keys.
fn start_sshd(root: &DebRoot, client: &Client) -> u16 {
    for (user, _, member) in common::cluster::USERS {
        root.add_user(client, user, *member);
    }
    root.start_sshd(client, ADDRESS, "")
}

fn url(user: &str, port: u16) -> String {
    format!("ssh://{user}@{ADDRESS}:{port}/var/lib/troops/repo/main.git")
}

fn push(client: &Client, user: &str, port: u16, repo: &DeployRepo) -> Run {
    push_url(client, user, &url(user, port), repo)
}

fn push_url(client: &Client, user: &str, url: &str, repo: &DeployRepo) -> Run {
    Run::from(
        client
            .command("git", user)
            .arg("-C")
            .arg(repo.path())
            .args(["push", url, "master"])
            .output()
            .unwrap(),
    )
}

fn ssh(client: &Client, user: &str, port: u16, command: &[&str]) -> Run {
    ssh_to(client, user, ADDRESS, port, command)
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
    let branch = root.master_of("deploy.git");
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

    // The dependencies first (and the sshd this test pushes through, which
    // the package recommends), so that what purge must restore is known.
    let deb = root.put(&package.deb());
    let depends = root.ok(&["dpkg-deb", "--field", &deb, "Depends"]).stdout;
    root.apt_get(&[
        "satisfy",
        "--no-install-recommends",
        &format!("{}, openssh-server", depends.trim()),
    ]);
    let before_install = snapshot(&root);
    root.apt_get(&["install", "--no-install-recommends", &deb]);
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
    assert_restored(&before_install, &snapshot(&root));
    eprintln!("whole lifecycle in {:.0?}", timer.elapsed());
}

#[test]
fn upgrade_from_the_one_repository_layout_keeps_the_node_and_closes_the_attacks() {
    if !can_run() {
        return;
    }
    let old = package::package_at(BEFORE_PRIVSEP);
    let new = package();
    let root = DebRoot::start();
    // The lifecycle test runs apt at the same time: an archive of its own.
    root.private_archives();
    let old_deb = root.put(&old.deb());
    root.apt_get(&[
        "install",
        "--no-install-recommends",
        &old_deb,
        "openssh-server",
    ]);
    let client = Client::new();
    for (user, _, member) in common::cluster::USERS {
        root.add_user(&client, user, *member);
    }
    let port = root.start_sshd(&client, UPGRADE_ADDRESS, "");
    let url = format!("ssh://alice@{UPGRADE_ADDRESS}:{port}/var/lib/troops/repo/main.git");
    let repo = DeployRepo::with(&deploy_py(1));
    push_url(&client, "alice", &url, &repo).success();
    let deployed = repo.head();
    // A remote as the old tutorial added it: in the members' repository.
    root.ok(&[
        "git",
        "--git-dir=/var/lib/troops/repo/main.git",
        "remote",
        "add",
        "origin",
        "ssh://git@127.0.0.1:9/deploy.git",
    ]);
    let history = |root: &DebRoot| -> BTreeSet<String> {
        fs::read_dir(root.path("/var/lib/troops/state/history"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    let history_before = history(&root);
    let key = root.read("/var/lib/troops/ssh/id_ed25519");
    assert!(
        root.read("/etc/gitconfig")
            .contains("directory = /var/lib/troops/repo/main.git")
    );

    let new_deb = root.put(&new.deb());
    root.apt_get(&["install", &new_deb]);
    check_installed(&root);
    // Root's repository starts at root's record of the deployed commit.
    assert_eq!(root.master_of("deploy.git"), deployed);
    let status: serde_json::Value =
        serde_json::from_str(&root.ok(&["troops", "status", "--json"]).stdout).unwrap();
    assert_eq!(status["commit"], deployed.as_str());
    assert_eq!(history(&root), history_before);
    assert_eq!(root.read("/var/lib/troops/ssh/id_ed25519"), key);
    // The seed unit now runs at every boot: on this upgraded node (seeded or
    // not, its key made by 0.1) it keeps the key.
    fs::write(
        root.path("/etc/machine-id"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    root.ok(&["troops", "seed"]);
    assert_eq!(
        root.read("/var/lib/troops/ssh/id_ed25519"),
        key,
        "the upgrade replaced the node's key"
    );
    // The members' remote is still fetched (unreachable here, but named).
    let pull = root.run(&["troops", "pull", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&pull.stdout).unwrap();
    assert_eq!(report["remotes"][0]["name"], "origin", "{}", pull.stderr);
    // One entry in the system git configuration, between markers.
    let gitconfig = root.read("/etc/gitconfig");
    assert_eq!(
        gitconfig.matches("/var/lib/troops/repo/main.git").count(),
        1,
        "{gitconfig}"
    );
    assert!(
        gitconfig.starts_with("# troops: members push"),
        "{gitconfig}"
    );
    // A member re-deploys, and pushes, as before.
    let run = ssh_to(
        &client,
        "alice",
        UPGRADE_ADDRESS,
        port,
        &["troops", "deploy"],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    repo.commit(&[("deploy.py", &deploy_py(2))]);
    push_url(&client, "alice", &url, &repo).success();
    assert_eq!(root.read("/srv/hello-deployed"), "version 2\n");

    // With signatures required, the attacks of the old layout fail.
    let keys = tempfile::tempdir().unwrap();
    let signer = common::signer::Signer::ssh(keys.path(), "trusted");
    signer.trust(&root.path("/etc/troops"));
    fs::write(
        root.path("/etc/troops/troops.toml"),
        "signatures = \"ssh\"\n",
    )
    .unwrap();
    let unsigned = repo.commit(&[("deploy.py", "open('/etc/troops/pwned', 'w')\n")]);
    let run = push_url(&client, "alice", &url, &repo);
    assert!(run.stderr.contains("is not signed"), "{}", run.stderr);
    let side = client
        .command("git", "alice")
        .arg("-C")
        .arg(repo.path())
        .args(["push", "--quiet", &url, "HEAD:side"])
        .output()
        .unwrap();
    Run::from(side).success();
    let signed = signer.commit(&repo, &[("deploy.py", &deploy_py(3))]);
    push_url(&client, "alice", &url, &repo).success();
    assert_eq!(root.read("/srv/hello-deployed"), "version 3\n");
    // The members' repository now substitutes the unsigned commit for the
    // signed one, and its branch names the unsigned one.
    let attack = format!(
        "cd /var/lib/troops/repo/main.git && git replace {signed} {unsigned} \
         && git update-ref refs/heads/master {unsigned} && troops deploy"
    );
    let run = ssh_to(&client, "alice", UPGRADE_ADDRESS, port, &[&attack]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(!root.exists("/etc/troops/pwned"), "root ran unsigned code");
    assert_eq!(root.read("/srv/hello-deployed"), "version 3\n");

    root.apt_get(&["purge", "troops"]);
    assert!(!root.exists("/etc/gitconfig"), "purge left /etc/gitconfig");
    root.save_archives();
}

fn ssh_to(client: &Client, user: &str, address: Ipv4Addr, port: u16, command: &[&str]) -> Run {
    let mut cmd = common::clean_command("ssh", client.dir.path());
    cmd.args(client.ssh_command(user).split(' ').skip(1))
        .args(["-p", &port.to_string(), &format!("{user}@{address}")])
        .args(command);
    Run::from(cmd.output().unwrap())
}

/// Debian's package tester on a clean Debian 12 root (its base tarball
/// cached beside the test roots): install, remove and purge, and piuparts'
/// own check that purge leaves nothing behind.
#[test]
fn piuparts_installs_removes_and_purges_on_a_clean_root() {
    if !package::can_run(
        "piuparts",
        &["piuparts", "debootstrap", "dpkg-buildpackage"],
    ) {
        return;
    }
    let deb = package().deb();
    let cache = std::env::var_os("TROOPS_TEST_CACHE")
        .map_or_else(|| PathBuf::from("/var/cache/troops-test"), PathBuf::from);
    fs::create_dir_all(&cache).unwrap();
    let lock = fs::File::create(cache.join(".piuparts.lock")).unwrap();
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .unwrap();
    let base = cache.join("piuparts-bookworm.tar.gz");
    let fresh = cache.join("piuparts-bookworm.tar.gz.new");
    let mirror =
        std::env::var("DEBIAN_MIRROR").unwrap_or_else(|_| "http://deb.debian.org/debian".into());
    let mut cmd = Command::new("piuparts");
    // sudo's prerm refuses to let piuparts remove it without this.
    cmd.env("SUDO_FORCE_REMOVE", "yes").args([
        "--no-upgrade-test",
        "-d",
        "bookworm",
        "-m",
        &mirror,
    ]);
    if base.exists() {
        cmd.arg("--basetgz").arg(&base);
    } else {
        cmd.arg("--save").arg(&fresh);
    }
    let run = Run::from(cmd.arg(&deb).output().unwrap());
    let log = format!("{}{}", run.stdout, run.stderr);
    assert_eq!(
        run.code,
        Some(0),
        "piuparts failed:\n{}",
        package::tail(&log, 60)
    );
    assert!(
        log.contains("PASS: Installation and purging test."),
        "{}",
        package::tail(&log, 20)
    );
    if fresh.exists() {
        fs::rename(&fresh, &base).unwrap();
    }
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

    // Root's repository: root's alone.
    let deploy = format!("{lib}/deploy.git");
    assert_eq!(root.stat(&deploy), (0o700, "root".into(), "root".into()));
    assert_eq!(root.stat(&format!("{deploy}/objects")).1, "root");

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
            .contains("exec '/usr/bin/troops' --root '/' hook pre-receive"),
        "{}",
        root.read(hook)
    );
    let sudoers = "/etc/sudoers.d/troops";
    assert_eq!(root.stat(sudoers), (0o440, "root".into(), "root".into()));
    assert!(
        root.read(sudoers).contains(
            "%troops ALL=(root) NOPASSWD: /usr/bin/troops --root / hook receive, \
             /usr/bin/troops --root / deploy\n"
        ),
        "{}",
        root.read(sudoers)
    );
    root.ok(&["visudo", "-c"]);
}

/// Units: valid, the pull timer and first-boot seeding enabled, the drift
/// check's timer not, the services started by their timers alone, and none
/// started by dpkg.
fn check_units(root: &DebRoot) {
    let units = [
        "troops-pull.service",
        "troops-first-pull.service",
        "troops-pull.timer",
        "troops-seed.service",
        "troops-check.service",
        "troops-check.timer",
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
    for unit in &units[..2] {
        assert_eq!(
            root.run(&["systemctl", "is-enabled", unit]).stdout.trim(),
            "static",
            "{unit}"
        );
    }
    for unit in &units[2..4] {
        assert_eq!(
            root.run(&["systemctl", "is-enabled", unit]).stdout.trim(),
            "enabled",
            "{unit}"
        );
    }
    // The drift check runs hourly once the admin enables its timer; drift
    // (exit 1) does not fail the unit.
    for (unit, state) in [
        ("troops-check.service", "static"),
        ("troops-check.timer", "disabled"),
    ] {
        assert_eq!(
            root.run(&["systemctl", "is-enabled", unit]).stdout.trim(),
            state,
            "{unit}"
        );
    }
    let check = root.read("/lib/systemd/system/troops-check.service");
    assert!(
        check.contains("ExecStart=/usr/bin/troops check\n")
            && check.contains("SuccessExitStatus=1\n"),
        "{check}"
    );
    let pull = root.read("/lib/systemd/system/troops-pull.service");
    assert!(
        pull.contains("Type=oneshot") && !pull.lines().any(|l| l == "[Install]"),
        "{pull}"
    );
    let timer = root.read("/lib/systemd/system/troops-pull.timer");
    for setting in ["OnBootSec=", "OnUnitActiveSec=", "RandomizedDelaySec="] {
        assert!(timer.contains(setting), "{timer}");
    }
    // The seed unit runs at every boot; `troops seed` decides per instance.
    // It is bounded, and hands the first pull to a unit of its own, which
    // records its deploy as the seed's.
    let seed = root.read("/lib/systemd/system/troops-seed.service");
    assert!(
        seed.contains("ExecStart=/usr/bin/troops seed --start-pull troops-first-pull.service\n"),
        "{seed}"
    );
    assert!(seed.contains("\nTimeoutStartSec="), "{seed}");
    assert!(!seed.contains("ConditionPathExists"), "{seed}");
    let first = root.read("/lib/systemd/system/troops-first-pull.service");
    assert!(
        first.contains("ExecStart=/usr/bin/troops pull --first\n")
            && first.contains("After=network-online.target troops-seed.service"),
        "{first}"
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

/// Every path with its type, mode and owner, and the content of every file
/// in /etc: what purge must put back as it was.
fn snapshot(root: &DebRoot) -> BTreeSet<String> {
    let listing = root.sh_ok(
        "find / -xdev \\( -path /proc -o -path /sys -o -path /dev -o -path /run -o -path /tmp \\) \
         -prune -o -printf '%p %y %m %u %g\\n'; \
         find /etc -xdev -type f -exec sha256sum {} +",
    );
    let lines: BTreeSet<String> = listing.stdout.lines().map(str::to_owned).collect();
    // A listing that missed the root would make the comparison pass vacuously.
    assert!(
        lines.len() > 1000 && lines.iter().any(|l| l.ends_with("/etc/passwd")),
        "the snapshot of the root is incomplete ({} lines)",
        lines.len()
    );
    lines
}

/// What may differ between before the install and after the purge: apt's
/// and dpkg's own state, logs and caches, and what this test itself made
/// (its users and their homes, its sshd configuration, the deployment's
/// file in /srv).
const EXPECTED_CHANGES: &[&str] = &[
    "/var/lib/dpkg",
    "/var/lib/apt",
    "/var/cache",
    "/var/log",
    "/var/lib/systemd/deb-systemd-helper",
    "/home",
    "/srv",
    "/var/mail",
    "/etc/passwd",
    "/etc/shadow",
    "/etc/group",
    "/etc/gshadow",
    "/etc/subuid",
    "/etc/subgid",
    "/etc/ssh/sshd_test_config",
];

fn assert_restored(before: &BTreeSet<String>, after: &BTreeSet<String>) {
    let path_of = |line: &String| {
        // `PATH TYPE MODE USER GROUP`, or sha256sum's `HASH  PATH`.
        match line.split_once("  ") {
            Some((hash, path)) if hash.len() == 64 => path.to_owned(),
            _ => line.rsplitn(5, ' ').last().unwrap_or_default().to_owned(),
        }
    };
    let unexpected: Vec<String> = before
        .symmetric_difference(after)
        .filter(|line| {
            let path = path_of(line);
            !EXPECTED_CHANGES.iter().any(|p| {
                path == *p
                    || path.starts_with(&format!("{p}/"))
                    || path.starts_with(&format!("{p}-"))
            })
        })
        .map(|line| {
            let side = if before.contains(line) { "-" } else { "+" };
            format!("{side} {line}")
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "purge did not restore the system:\n{}",
        unexpected.join("\n")
    );
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
