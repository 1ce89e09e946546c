//! Signed deploys: required SSH or GnuPG signatures, present, missing and by
//! an untrusted key, refused by pull and by push alike.

mod common;

use std::path::Path;

use common::signer::Signer;
use common::{DeployRepo, Node, Run};

const DEPLOY: &str = "print('signed deploy ran')\n";

fn node_with_policy(policy: &str) -> Node {
    let node = Node::new();
    node.write_config(&format!("signatures = \"{policy}\"\n"));
    node.troops(["init"]).success();
    node
}

/// A local `git push` into the node's repository: its hook runs as root.
fn push(node: &Node, repo: &DeployRepo) -> Run {
    let out = common::clean_command("git", &node.home())
        .arg("-C")
        .arg(repo.path())
        .args([
            "push",
            node.lib().join("repo/main.git").to_str().unwrap(),
            "master",
        ])
        .output()
        .unwrap();
    Run::from(out)
}

/// `troops pull` from `repo` as the node's only remote.
fn pull(node: &Node, repo: &DeployRepo) -> Run {
    node.add_remote("origin", &repo.path_str());
    node.troops(["pull"])
}

fn check_policy(policy: &str, make: fn(&Path, &str) -> Signer) {
    let keys = tempfile::tempdir().unwrap();
    let trusted = make(keys.path(), "trusted");
    let stranger = make(keys.path(), "stranger");

    for via_push in [true, false] {
        let node = node_with_policy(policy);
        trusted.trust(&node.root().join("etc/troops"));
        let deliver = |repo: &DeployRepo| {
            if via_push {
                push(&node, repo)
            } else {
                pull(&node, repo)
            }
        };

        let unsigned = DeployRepo::with(DEPLOY);
        let run = deliver(&unsigned);
        assert_ne!(run.code, Some(0));
        let expected = format!("commit {} is not signed", &unsigned.head()[..12]);
        assert!(
            run.stderr.contains(&expected),
            "{policy} push={via_push}: {}",
            run.stderr
        );
        assert!(node.status_json()["commit"].is_null());

        let untrusted = DeployRepo::new();
        let commit = stranger.commit(&untrusted, &[("deploy.py", DEPLOY)]);
        let node = node_with_policy(policy);
        trusted.trust(&node.root().join("etc/troops"));
        let run = if via_push {
            push(&node, &untrusted)
        } else {
            pull(&node, &untrusted)
        };
        assert_ne!(run.code, Some(0));
        let expected = format!("commit {} is signed by key", &commit[..12]);
        assert!(
            run.stderr.contains(&expected),
            "{policy} push={via_push}: {}",
            run.stderr
        );
        assert!(
            run.stderr.contains("which this node does not trust"),
            "{}",
            run.stderr
        );
        assert!(node.status_json()["commit"].is_null());

        let signed = DeployRepo::new();
        let commit = trusted.commit(&signed, &[("deploy.py", DEPLOY)]);
        let run = if via_push {
            push(&node, &signed)
        } else {
            pull(&node, &signed)
        };
        let run = run.success();
        assert!(run.stderr.contains("signed deploy ran"), "{}", run.stderr);
        assert_eq!(node.status_json()["commit"], commit.as_str());
    }
}

#[test]
fn ssh_signatures_are_required_by_push_and_pull() {
    check_policy("ssh", Signer::ssh);
}

#[test]
fn gpg_signatures_are_required_by_push_and_pull() {
    check_policy("gpg", Signer::gpg);
}

#[test]
fn ssh_policy_without_allowed_signers_is_explained() {
    let node = node_with_policy("ssh");
    let repo = DeployRepo::with(DEPLOY);
    let run = node.deploy(&repo).failure();
    assert!(
        run.stderr.contains("has no allowed-signers file"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_rogue_mirror_is_skipped_and_upstreams_signed_commit_deploys() {
    let keys = tempfile::tempdir().unwrap();
    let trusted = Signer::ssh(keys.path(), "trusted");
    // Both orders of the remotes: the rogue one first, then last.
    for (first, second) in [("mirror", "upstream"), ("upstream", "mirror")] {
        let node = node_with_policy("ssh");
        trusted.trust(&node.root().join("etc/troops"));
        let upstream = DeployRepo::new();
        trusted.commit(&upstream, &[("deploy.py", "print('one')\n")]);
        node.add_remote("upstream", &upstream.path_str());
        node.troops(["pull"]).success();

        let signed = trusted.commit(&upstream, &[("deploy.py", "print('two, signed')\n")]);
        let mirror = DeployRepo::new();
        mirror.git(&["pull", "--quiet", &upstream.path_str(), "master"]);
        let rogue = mirror.commit(&[("deploy.py", "print('rogue')\n")]);
        // Root's configuration lists remotes in the order they were added.
        let gitconfig = node.root().join("etc/troops/gitconfig");
        std::fs::remove_file(&gitconfig).unwrap();
        for name in [first, second] {
            let repo = if name == "mirror" { &mirror } else { &upstream };
            node.add_remote(name, &repo.path_str());
        }
        let run = node.troops(["pull", "--json"]);
        assert_eq!(run.code, Some(0), "{first} first: {}", run.stderr);
        assert!(run.stderr.contains("skipping `mirror`"), "{}", run.stderr);
        assert!(run.stderr.contains("is not signed"), "{}", run.stderr);
        assert!(run.stderr.contains("two, signed"), "{}", run.stderr);
        let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        let outcome = |name: &str| {
            json["remotes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["name"] == name)
                .unwrap()
                .clone()
        };
        assert_eq!(outcome("upstream")["outcome"], "deployed");
        assert_eq!(outcome("mirror")["outcome"], "failed");
        assert_eq!(outcome("mirror")["commit"], rogue.as_str());
        assert_eq!(node.branch(), Some(signed.clone()));

        // The refusal is recorded once, not at every pull.
        let refusals = |node: &Node| {
            node.status_json()["history"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["commit"] == rogue.as_str())
                .count()
        };
        assert_eq!(refusals(&node), 1);
        node.troops(["pull"]).success();
        assert_eq!(refusals(&node), 1);
    }
}

#[test]
fn a_members_local_remote_is_not_fetched_by_root() {
    let node = node_with_policy("none");
    let repo = DeployRepo::with(DEPLOY);
    let add = node.git(&["remote", "add", "origin", &repo.path_str()]);
    add.success();
    let run = node.troops(["pull"]);
    assert!(
        run.stderr
            .contains("a local path is fetched only when root added it"),
        "{}",
        run.stderr
    );
    assert!(node.status_json()["commit"].is_null());
}
