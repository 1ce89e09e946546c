//! `apt install troops` from a signed apt repository: made with
//! debian/publish-apt-repo, served by nginx on loopback, added to a Debian 12
//! root (suite bookworm) and a Debian 13 root (suite trixie) with the source
//! line and key of cloud-init/user-data.yaml, through apt. The previous
//! version is the package of the last commit before root got its own
//! repository; the upgrade from it through the repository keeps the node's
//! repository, key, deployed commit and history. A repository signed by
//! another key is refused by apt.

mod common;
#[path = "common/package.rs"]
mod package;

use std::collections::BTreeSet;
use std::fs;
use std::net::Ipv4Addr;
use std::path::Path;

use common::apt::{Repository, Signer};
use common::nginx::Nginx;
use package::{DebRoot, TOP, package, package_at};

/// The last commit with the one-repository layout (as in tests/package.rs).
const BEFORE_PRIVSEP: &str = "d01a44d378d36c6b39ec98d1541395b98abe8d42";

fn can_run() -> bool {
    package::can_run(
        "the apt repository tests",
        &[
            "reprepro",
            "nginx",
            "gpg",
            "dpkg-buildpackage",
            "debootstrap",
            "unshare",
            "nsenter",
        ],
    )
}

/// The apt source line of cloud-init/user-data.yaml, for this repository
/// and suite, with its key at `key_file`.
fn example_source_line(url: &str, suite: &str, key_file: &str) -> String {
    let example = fs::read_to_string(Path::new(TOP).join("cloud-init/user-data.yaml")).unwrap();
    let line = example
        .lines()
        .find_map(|l| l.trim().strip_prefix("source: "))
        .expect("the example has an apt source")
        .trim_matches('"')
        .to_owned();
    assert!(
        line.contains("$KEY_FILE") && line.contains(" bookworm "),
        "{line}"
    );
    line.replace("$KEY_FILE", key_file)
        .replace("https://apt.example.com/troops", url)
        .replace(" bookworm ", &format!(" {suite} "))
}

/// Each root's own suite: the same scenario on Debian 12 and Debian 13.
fn install_and_upgrade_from_the_repository(suite: &str, address: Ipv4Addr) {
    if !can_run() {
        return;
    }
    let old = package_at(BEFORE_PRIVSEP);
    let new = package();
    let operator = Signer::new("archive");
    let stranger = Signer::new("stranger");
    let repository = Repository::new();
    repository.publish(&operator, &old.deb());
    let nginx = Nginx::serve(repository.out.path(), address);
    let url = format!("http://{address}:{}", nginx.port);

    let root = DebRoot::start_suite(suite);
    root.private_archives();
    let key_file = "/etc/apt/keyrings/troops.asc";
    fs::create_dir_all(root.path("/etc/apt/keyrings")).unwrap();
    fs::write(
        root.path("/etc/apt/sources.list.d/troops.list"),
        example_source_line(&url, suite, key_file) + "\n",
    )
    .unwrap();

    // Another key than the repository's: apt refuses the repository.
    fs::write(root.path(key_file), stranger.public_key()).unwrap();
    let update = root.run(&["apt-get", "-q", "update"]);
    assert!(
        update.code != Some(0) || update.stderr.contains("NO_PUBKEY"),
        "apt accepted a repository signed by another key:\n{}",
        update.stderr
    );
    assert!(
        update.stderr.contains("not signed") || update.stderr.contains("NO_PUBKEY"),
        "{}",
        update.stderr
    );
    let install = root.run(&["apt-get", "-q", "-y", "install", "troops"]);
    assert_ne!(
        install.code,
        Some(0),
        "installed from an untrusted repository"
    );

    // The key the repository publishes for `signed-by`.
    fs::copy(
        repository.out.path().join("troops-archive-keyring.asc"),
        root.path(key_file),
    )
    .unwrap();
    root.ok(&["apt-get", "-q", "update"]);
    root.apt_get(&["install", "--no-install-recommends", "troops"]);
    assert_eq!(installed_version(&root), "0.1.0");
    let deployed = deploy_by_local_push(&root);

    let before = node_data(&root);
    repository.publish(&operator, &new.deb());
    root.ok(&["apt-get", "-q", "update"]);
    root.apt_get(&["install", "--no-install-recommends", "troops"]);
    assert_eq!(installed_version(&root), "0.2.0");
    let after = node_data(&root);
    assert_eq!(
        after.history, before.history,
        "the upgrade changed the history"
    );
    assert_eq!(after.key, before.key, "the upgrade replaced the node's key");
    assert_eq!(after.deployed, deployed);
    assert_eq!(
        root.master_of("deploy.git"),
        deployed,
        "root's repository did not start at the deployed commit"
    );
    assert_eq!(
        root.master_of("repo/main.git"),
        deployed,
        "the members' repository lost its branch"
    );
    // The node still deploys, with this release's Python.
    let run = root.ok(&["troops", "deploy"]);
    assert!(
        run.stderr.contains("hello from the apt repository"),
        "{}",
        run.stderr
    );

    root.apt_get(&["remove", "troops"]);
    assert!(
        root.exists("/var/lib/troops/deploy.git"),
        "remove deleted the node's data"
    );
    root.apt_get(&["purge", "troops"]);
    assert!(
        !root.exists("/var/lib/troops"),
        "purge left /var/lib/troops"
    );
    assert!(!root.exists("/etc/troops"), "purge left /etc/troops");
    root.save_archives();
}

fn installed_version(root: &DebRoot) -> String {
    root.ok(&["dpkg-query", "-W", "-f", "${Version}", "troops"])
        .stdout
}

/// A commit deployed the 0.1 way: pushed into the node's repository (root's
/// push runs the hook without sudo). Returns the commit.
fn deploy_by_local_push(root: &DebRoot) -> String {
    let script = "set -e\n\
        git init -q -b master /tmp/deployment && cd /tmp/deployment\n\
        printf \"print('hello from the apt repository')\\n\" > deploy.py\n\
        : > requirements.txt\n\
        git add -A && git -c user.name=Admin -c user.email=admin@example.com commit -q -m deploy\n\
        git push -q /var/lib/troops/repo/main.git master\n\
        git rev-parse HEAD\n";
    let run = root.sh_ok(script);
    let commit = run.stdout.trim().to_owned();
    let status: serde_json::Value =
        serde_json::from_str(&root.ok(&["troops", "status", "--json"]).stdout).unwrap();
    assert_eq!(status["commit"], commit.as_str(), "{}", run.stderr);
    commit
}

struct NodeData {
    history: BTreeSet<String>,
    key: String,
    deployed: String,
}

fn node_data(root: &DebRoot) -> NodeData {
    let history = fs::read_dir(root.path("/var/lib/troops/state/history"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    NodeData {
        history,
        key: root.read("/var/lib/troops/ssh/id_ed25519"),
        deployed: root
            .read("/var/lib/troops/state/deployed")
            .trim()
            .to_owned(),
    }
}

#[test]
fn debian_12_installs_and_upgrades_from_the_bookworm_suite() {
    install_and_upgrade_from_the_repository("bookworm", Ipv4Addr::new(127, 0, 0, 70));
}

#[test]
fn debian_13_installs_and_upgrades_from_the_trixie_suite() {
    install_and_upgrade_from_the_repository("trixie", Ipv4Addr::new(127, 0, 0, 71));
}
