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
