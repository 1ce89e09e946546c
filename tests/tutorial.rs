//! README.md's tutorial, end to end, on real Debian nodes with the package
//! installed (issue 6's acceptance), and the preseed example's
//! late_command run as the Debian installer runs it.
//!
//! Each node is a throwaway overlay of the cached Debian root
//! (tests/debroot/make-root) in its own mount, UTS and pid namespaces
//! (tests/package/root-init, through tests/common/package.rs), with the
//! package installed by apt, its own hostname, and its own sshd on a
//! 127.0.0.x address. The admin works from this machine with ssh, git and
//! scp, through an ssh configuration naming the nodes as the tutorial does.
//!
//! Needs root, debootstrap, unshare, nsenter, dpkg-dev and debhelper (see
//! .ci/run). Only loopback and the Debian mirror are reached, the mirror
//! only for .debs not yet kept beside the cached root (tmux comes from the
//! cached root's own apt cache). Without root the tests say so and pass,
//! except with CI=true, where they fail.

mod common;
#[path = "common/package.rs"]
mod package;

use std::fs;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::apt::{Repository, Signer};
use common::cluster::Client;
use common::nginx::Nginx;
use common::{DeployRepo, Run, clean_command};
use package::{DebRoot, TOP, package};

/// The admin: a user of each node, added to group troops as the tutorial says.
const ADMIN: &str = "alice";
const ONE: (&str, Ipv4Addr) = ("shellbox-1.example.com", Ipv4Addr::new(127, 0, 0, 61));
const TWO: (&str, Ipv4Addr) = ("shellbox-2.example.com", Ipv4Addr::new(127, 0, 0, 62));
/// Where the preseed test serves the signed apt repository.
const MIRROR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 72);
/// The git server of the pull model, served by shellbox-2's sshd.
const REPOS: &str = "repos.example.com";
const REPO_URL: &str = "git@repos.example.com:deploy.git";
const LIB_REPO: &str = "/var/lib/troops/repo/main.git";

fn can_run() -> bool {
    package::can_run(
        "the tutorial tests",
        &[
            "dpkg-buildpackage",
            "dh",
            "debootstrap",
            "unshare",
            "nsenter",
            "ssh",
            "scp",
            "git",
            "reprepro",
            "nginx",
            "gpg",
        ],
    )
}

// ---------------------------------------------------------------------------
// The deployment, as the tutorial grows it

const REQUIREMENTS: &str = "PyDebianAdmin\n";

/// Roles: tmux only where people log in.
const ROLES: &str = "\
import troops
from pydebianadmin import apt

troops.define_role('interactive', hosts=['shellbox-1.example.com'])


@troops.deployable(roles=['interactive'])
def tmux():
    apt.install('tmux')
";

/// What the pull model delivers: a file on every node.
const PULLED: &str = "

from pydebianadmin import files


@troops.deployable()
def pulled():
    files.file('/srv/pulled', 'pulled onto %s\\n' % troops.hostname())
";

/// Coordinating nodes: B (shellbox-2) makes a key pair; A (shellbox-1) lets
/// the admin drop keys into /srv/foo/keys/ and uses whatever it finds there.
const COORDINATION: &str = "

import glob
import os
import subprocess

troops.define_role('foo-client', hosts=['shellbox-2.example.com'])
troops.define_role('foo-server', hosts=['shellbox-1.example.com'])


@troops.deployable(roles=['foo-client'])
def foo_key():
    if not os.path.exists('/srv/foo/ssh'):
        os.makedirs('/srv/foo', exist_ok=True)
        subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', '/srv/foo/ssh'], check=True)


@troops.deployable(roles=['foo-server'])
def foo_keys():
    files.directory('/srv/foo/keys', mode=0o755, owner='alice')
    keys = [open(path).read().strip() for path in sorted(glob.glob('/srv/foo/keys/*.pub'))]
    files.file('/srv/foo/authorized_keys', ''.join(key + '\\n' for key in keys))
    print('foo: %d key(s) in /srv/foo/keys' % len(keys))
";

// ---------------------------------------------------------------------------
// Nodes and the admin's machine

struct Node {
    name: &'static str,
    address: Ipv4Addr,
    root: DebRoot,
    port: u16,
}

impl Node {
    /// A root named `name` and resolving `extra_hosts`. Started on this
    /// thread: the root dies with the thread that started it.
    fn start(name: &'static str, address: Ipv4Addr, extra_hosts: &str) -> DebRoot {
        let root = DebRoot::start();
        // tmux's .debs come from beside the cached root, not from the mirror.
        root.seed_archives();
        root.private_archives();
        root.set_hostname(name, address, extra_hosts);
        root
    }

    /// Installs the package with apt (with openssh-server, which it
    /// recommends); returns how long it took.
    fn install(root: &DebRoot) -> f64 {
        let started = Instant::now();
        let deb = root.put(&package().deb());
        root.apt_get(&["install", "--no-install-recommends", &deb, "openssh-server"]);
        root.save_archives();
        started.elapsed().as_secs_f64()
    }

    fn dpkg_status(&self, package: &str) -> String {
        let run = self
            .root
            .run(&["dpkg-query", "-W", "-f", "${Status}", package]);
        if run.code == Some(0) {
            run.stdout
        } else {
            format!("unknown ({})", run.stderr.trim())
        }
    }

    fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.root.ok(&["troops", "status", "--json"]).stdout).unwrap()
    }
}

/// The admin's ssh configuration: each node (and the git server) by its
/// name, logging in as the admin with its key.
fn ssh_config(client: &Client, hosts: &[(&str, Ipv4Addr, u16)]) -> String {
    let mut config = String::new();
    for (name, address, port) in hosts {
        config.push_str(&format!(
            "Host {name}\n  HostName {address}\n  Port {port}\n"
        ));
    }
    config.push_str(&format!(
        "Host *\n  User {ADMIN}\n  IdentityFile {}\n  IdentitiesOnly yes\n  BatchMode yes\n  \
         StrictHostKeyChecking yes\n  UserKnownHostsFile {}\n  ConnectTimeout 10\n",
        client.key(ADMIN).display(),
        client.dir.path().join("known_hosts").display()
    ));
    let path = client.dir.path().join("ssh_config");
    fs::write(&path, config).unwrap();
    path.to_string_lossy().into_owned()
}

/// A command of the admin's, with its ssh configuration for ssh and git.
fn admin(client: &Client, config: &str, program: &str) -> Command {
    let mut cmd = clean_command(program, client.dir.path());
    cmd.env("GIT_SSH_COMMAND", format!("ssh -F {config}"));
    if program == "ssh" || program == "scp" {
        cmd.args(["-F", config]);
    }
    cmd
}

#[track_caller]
fn succeeded(what: &str, run: Run) -> Run {
    assert_eq!(
        run.code,
        Some(0),
        "{what} failed:\n{}\n{}",
        run.stdout,
        run.stderr
    );
    run
}

fn git_push(client: &Client, config: &str, repo: &DeployRepo, url: &str) -> Run {
    Run::from(
        admin(client, config, "git")
            .arg("-C")
            .arg(repo.path())
            .args(["push", url, "master"])
            .output()
            .unwrap(),
    )
}

// ---------------------------------------------------------------------------
// The tests

/// README.md's tutorial: roles and push, then pull, then two nodes
/// exchanging a key.
#[test]
fn tutorial_on_two_nodes_with_the_package_installed() {
    if !can_run() {
        return;
    }
    let timer = Instant::now();
    let lap = |what: &str| eprintln!("{what} at {:.0?}", timer.elapsed());
    package();
    lap("package ready");

    // Two nodes, installed side by side; both resolve the git server's name.
    let repos_line = format!("{} {REPOS}\n", TWO.1);
    let one = Node::start(ONE.0, ONE.1, &repos_line);
    let two = Node::start(TWO.0, TWO.1, &repos_line);
    let (one_took, two_took) = std::thread::scope(|s| {
        let one = s.spawn(|| Node::install(&one));
        let two = s.spawn(|| Node::install(&two));
        (one.join().unwrap(), two.join().unwrap())
    });
    eprintln!(
        "installed: {} in {one_took:.0}s, {} in {two_took:.0}s",
        ONE.0, TWO.0
    );
    lap("nodes installed");

    // On each node, once: the admin is a user there; `gpasswd -a` lets it push.
    let client = Client::new();
    let sftp = "Subsystem sftp /usr/lib/openssh/sftp-server\n";
    let mut nodes = Vec::new();
    for ((name, address), root) in [ONE, TWO].into_iter().zip([one, two]) {
        root.add_user(&client, ADMIN, false);
        root.ok(&["gpasswd", "-a", ADMIN, "troops"]);
        let port = root.start_sshd(&client, address, sftp);
        nodes.push(Node {
            name,
            address,
            root,
            port,
        });
    }
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut hosts: Vec<(&str, Ipv4Addr, u16)> =
        nodes.iter().map(|n| (n.name, n.address, n.port)).collect();
    hosts.push((REPOS, b.address, b.port));
    let config = ssh_config(&client, &hosts);

    // Remote deployment by push: both nodes deploy; tmux only where the
    // role is.
    let repo = DeployRepo::new();
    let first = repo.commit(&[("deploy.py", ROLES), ("requirements.txt", REQUIREMENTS)]);
    let pushes: Vec<Run> = std::thread::scope(|s| {
        let handles: Vec<_> = nodes
            .iter()
            .map(|node| {
                let url = format!("{ADMIN}@{}:{LIB_REPO}", node.name);
                let (client, config, repo) = (&client, &config, &repo);
                s.spawn(move || git_push(client, config, repo, &url))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    a.root.save_archives();
    for (node, run) in nodes.iter().zip(pushes) {
        let run = succeeded(&format!("the push to {}", node.name), run);
        // The deploy's output reaches the admin as git's `remote:` lines.
        let installed = run.stderr.contains("remote: apt: installed tmux");
        assert_eq!(installed, node.name == ONE.0, "{}", run.stderr);
        let status = node.status();
        assert_eq!(status["commit"], first, "{}", node.name);
        assert_eq!(status["history"][0]["trigger"], "push");
        assert_eq!(status["history"][0]["user"], ADMIN);
    }
    assert_eq!(a.dpkg_status("tmux"), "install ok installed");
    assert!(
        !b.dpkg_status("tmux").ends_with(" installed"),
        "tmux is on {}: {}",
        b.name,
        b.dpkg_status("tmux")
    );
    lap("pushed");

    // The pull model: a git server (user git on shellbox-2) authorising each
    // node's key; the nodes trust its host key and name it as origin.
    b.root.ok(&[
        "useradd",
        "--create-home",
        "--home-dir",
        "/srv/git",
        "--shell",
        "/usr/bin/git-shell",
        "git",
    ]);
    b.root.ok(&["usermod", "--password", "*", "git"]);
    b.root.ok(&[
        "git",
        "init",
        "--quiet",
        "--bare",
        "--initial-branch=master",
        "/srv/git/deploy.git",
    ]);
    b.root
        .ok(&["chown", "-R", "git:git", "/srv/git/deploy.git"]);
    b.root.authorize(
        "git",
        &fs::read_to_string(client.key(ADMIN).with_extension("pub")).unwrap(),
    );
    let server_key = b.root.read("/etc/ssh/ssh_host_ed25519_key.pub");
    for node in &nodes {
        b.root
            .authorize("git", &node.root.read("/var/lib/troops/ssh/id_ed25519.pub"));
        fs::write(
            node.root.path("/etc/ssh/ssh_known_hosts"),
            format!("[{REPOS}]:{} {server_key}", b.port),
        )
        .unwrap();
        fs::write(
            node.root.path("/etc/ssh/ssh_config.d/repos.conf"),
            format!("Host {REPOS}\n  Port {}\n", b.port),
        )
        .unwrap();
        node.root.ok(&[
            "git",
            &format!("--git-dir={LIB_REPO}"),
            "remote",
            "add",
            "origin",
            REPO_URL,
        ]);
    }
    let second = repo.commit(&[("deploy.py", &format!("{ROLES}{PULLED}"))]);
    succeeded(
        "the push to the git server",
        git_push(&client, &config, &repo, REPO_URL),
    );
    pull_everywhere(&nodes, &second);
    for node in &nodes {
        assert_eq!(
            node.root.read("/srv/pulled"),
            format!("pulled onto {}\n", node.name)
        );
    }
    lap("pulled");

    // Coordinating nodes: B makes a key pair, A uses the keys in
    // /srv/foo/keys/ (which its deployment lets the admin write).
    let third = repo.commit(&[("deploy.py", &format!("{ROLES}{PULLED}{COORDINATION}"))]);
    succeeded(
        "the push to the git server",
        git_push(&client, &config, &repo, REPO_URL),
    );
    pull_everywhere(&nodes, &third);
    let b_key = b.root.read("/srv/foo/ssh.pub");
    assert!(b_key.starts_with("ssh-ed25519 "), "{b_key}");
    assert!(!a.root.exists("/srv/foo/ssh"), "A made a key pair");
    assert_eq!(a.root.read("/srv/foo/authorized_keys"), "");

    let here = tempfile::tempdir().unwrap();
    let local = here.path().join("B.pub");
    let local = local.to_str().unwrap();
    succeeded(
        "scp from B",
        Run::from(
            admin(&client, &config, "scp")
                .arg(format!("{ADMIN}@{}:/srv/foo/ssh.pub", b.name))
                .arg(local)
                .output()
                .unwrap(),
        ),
    );
    succeeded(
        "scp to A",
        Run::from(
            admin(&client, &config, "scp")
                .arg(local)
                .arg(format!("{ADMIN}@{}:/srv/foo/keys/B.pub", a.name))
                .output()
                .unwrap(),
        ),
    );
    let run = succeeded(
        "ssh A troops deploy",
        Run::from(
            admin(&client, &config, "ssh")
                .arg(format!("{ADMIN}@{}", a.name))
                .args(["troops", "deploy"])
                .output()
                .unwrap(),
        ),
    );
    let output = format!("{}{}", run.stdout, run.stderr);
    assert!(
        output.contains("foo: 1 key(s) in /srv/foo/keys"),
        "{output}"
    );
    assert_eq!(a.root.read("/srv/foo/authorized_keys"), b_key);
    let status = a.status();
    assert_eq!(status["commit"], third);
    assert_eq!(status["history"][0]["trigger"], "manual");
    assert_eq!(status["history"][0]["user"], ADMIN);
    lap("keys exchanged");
    drop(nodes);
    lap("nodes removed");
}

/// `troops pull` on every node, at once; each deploys `commit`.
fn pull_everywhere(nodes: &[Node], commit: &str) {
    let runs: Vec<Run> = std::thread::scope(|s| {
        let handles: Vec<_> = nodes
            .iter()
            .map(|node| s.spawn(move || node.root.run(&["troops", "pull"])))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (node, run) in nodes.iter().zip(runs) {
        succeeded(&format!("troops pull on {}", node.name), run);
        let status = node.status();
        assert_eq!(status["commit"], commit, "{}", node.name);
        assert_eq!(status["history"][0]["trigger"], "pull", "{}", node.name);
        assert_eq!(status["history"][0]["result"], "success", "{}", node.name);
    }
}

/// The `d-i preseed/late_command` of a preseed file, its continuation
/// lines joined as debconf joins them.
fn late_command(preseed: &str) -> String {
    let mut lines = preseed.lines();
    let mut command = lines
        .by_ref()
        .find_map(|l| l.strip_prefix("d-i preseed/late_command string "))
        .expect("no d-i preseed/late_command in the preseed file")
        .to_owned();
    while let Some(stripped) = command.strip_suffix('\\') {
        command = stripped.to_owned();
        let next = lines.next().expect("the late_command ends in a backslash");
        command.push_str(next);
    }
    command
}

#[test]
fn late_command_joins_continuation_lines() {
    let preseed =
        "# comment\nd-i preseed/late_command string \\\n    a && \\\n    b\nd-i x string y\n";
    assert_eq!(late_command(preseed), "    a &&     b");
}

/// preseed/troops.cfg's late_command, run as the installer runs it: it
/// installs the package into /target from a signed apt repository (served by
/// nginx on loopback, its key on the install medium) and writes a seed that
/// `troops seed` accepts.
#[test]
fn preseed_late_command_installs_the_package_and_writes_the_seed() {
    if !can_run() {
        return;
    }
    let timer = Instant::now();
    let package = package();
    let root = DebRoot::start();
    root.private_archives();
    assert!(!root.exists("/usr/bin/troops"));
    let operator = Signer::new("archive");
    let repository = Repository::new();
    repository.publish(&operator, &package.deb());
    let nginx = Nginx::serve(repository.out.path(), MIRROR);
    // The install medium carries the repository's key.
    let medium = tempfile::tempdir().unwrap();
    fs::copy(
        repository.out.path().join("troops-archive-keyring.asc"),
        medium.path().join("troops-archive-keyring.asc"),
    )
    .unwrap();
    let example =
        late_command(&fs::read_to_string(Path::new(TOP).join("preseed/troops.cfg")).unwrap());
    assert!(
        example.contains("https://apt.example.com/troops"),
        "{example}"
    );
    let command = example.replace(
        "https://apt.example.com/troops",
        &format!("http://{MIRROR}:{}", nginx.port),
    );
    let command_file = root.work.path().join("late_command");
    fs::write(&command_file, &command).unwrap();

    let run_late_command = || {
        let installer = tempfile::tempdir().unwrap();
        let script = Path::new(TOP).join("tests/package/late-command");
        let args = [
            "unshare".to_owned(),
            "--mount".to_owned(),
            "--propagation".to_owned(),
            "private".to_owned(),
            "--".to_owned(),
            script.to_string_lossy().into_owned(),
            root.lower.to_string_lossy().into_owned(),
            installer.path().to_string_lossy().into_owned(),
            root.inner().to_string_lossy().into_owned(),
            medium.path().to_string_lossy().into_owned(),
            command_file.to_string_lossy().into_owned(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Run::from(root.enter(&args).output().unwrap())
    };
    let mut run = run_late_command();
    if run.code != Some(0)
        && (run.stderr.contains("Failed to fetch") || run.stderr.contains("Unable to fetch"))
    {
        // The root's package lists have gone stale: what a real installer,
        // with fresh lists, would not meet.
        root.ok(&["apt-get", "-q", "update"]);
        run = run_late_command();
    }
    root.save_archives();
    let run = succeeded(&format!("the late_command {command:?}"), run);

    assert_eq!(
        root.ok(&["dpkg-query", "-W", "-f", "${Status}", "troops"])
            .stdout,
        "install ok installed",
        "{}",
        run.stdout
    );
    assert!(root.exists("/usr/bin/troops"));
    assert!(root.exists("/var/lib/troops/ssh/id_ed25519.pub"));
    let left: Vec<_> = fs::read_dir(root.path("/tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("troops_"))
        .collect();
    assert!(left.is_empty(), "the late_command left {left:?} in /tmp");
    let seed = root.read("/etc/troops/seed.yaml");
    assert!(seed.starts_with("troops:\n"), "{seed}");

    // The node accepts the seed (the first pull is left out: there is no
    // repos.example.com).
    root.ok(&[
        "troops",
        "seed",
        "--no-pull",
        "--file",
        "/etc/troops/seed.yaml",
    ]);
    // Seeded remotes are root's: /etc/troops/gitconfig, 0600.
    assert_eq!(
        root.ok(&[
            "git",
            "config",
            "--file=/etc/troops/gitconfig",
            "remote.origin.url"
        ])
        .stdout
        .trim(),
        "git@repos.example.com:deploy"
    );
    assert_eq!(root.stat("/etc/troops/gitconfig").0, 0o600);
    let config = root.read("/etc/troops/troops.toml");
    assert!(config.contains("roles = [\"web\"]"), "{config}");
    let timer_dropin = root.read("/etc/systemd/system/troops-pull.timer.d/troops-seed.conf");
    assert!(
        timer_dropin.contains("OnUnitActiveSec=15min"),
        "{timer_dropin}"
    );
    assert!(root.exists("/var/lib/troops/state/seeded"));
    eprintln!("preseed late_command checked in {:.0?}", timer.elapsed());
}
