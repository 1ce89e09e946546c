//! Push to deploy, end to end: namespaced nodes serving real sshd on
//! loopback, pushed to by users in and out of the group troops.

mod common;

use std::thread;

use common::cluster::{Client, SshNode};
use common::{DeployRepo, Run};

fn version(n: u32) -> String {
    format!("import troops\nprint('deploying version {n} on', troops.hostname())\n")
}

#[test]
fn push_deploys_streams_output_and_moves_the_branch() {
    let client = Client::new();
    let node = SshNode::start("shellbox-1.example.com", &client);
    let repo = DeployRepo::with(&version(1));
    let run = client.push(&node, "alice", repo.path(), &[]).success();
    assert!(
        run.stderr
            .contains("remote: deploying version 1 on shellbox-1.example.com"),
        "{}",
        run.stderr
    );
    assert_eq!(node.branch(), Some(repo.head()));
    assert_eq!(node.deployed(), Some(repo.head()));
    let record = &node.status()["history"][0];
    assert_eq!(record["trigger"], "push");
    assert_eq!(record["user"], "alice");

    // Another member pushes on top: files stay group-writable.
    repo.commit(&[("deploy.py", &version(2))]);
    client.push(&node, "bob", repo.path(), &[]).success();
    assert_eq!(node.deployed(), Some(repo.head()));
    assert_eq!(node.status()["history"][0]["user"], "bob");
}

#[test]
fn failing_deploy_rejects_the_push_until_fixed() {
    let client = Client::new();
    let node = SshNode::start("shellbox-2.example.com", &client);
    let repo = DeployRepo::with(&version(1));
    client.push(&node, "alice", repo.path(), &[]).success();
    let good = repo.head();

    repo.commit(&[("deploy.py", "raise SystemExit('broken on purpose')\n")]);
    let run = client.push(&node, "alice", repo.path(), &[]);
    assert_ne!(run.code, Some(0));
    assert!(
        run.stderr.contains("remote: broken on purpose"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("deploy.py exited with status 1"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("pre-receive hook declined"),
        "{}",
        run.stderr
    );
    assert_eq!(node.branch(), Some(good.clone()));
    assert_eq!(node.deployed(), Some(good));

    repo.commit(&[("deploy.py", &version(3))]);
    client.push(&node, "alice", repo.path(), &[]).success();
    assert_eq!(node.branch(), Some(repo.head()));
    assert_eq!(node.deployed(), Some(repo.head()));
}

#[test]
fn users_outside_the_group_cannot_push() {
    let client = Client::new();
    let node = SshNode::start("shellbox-3.example.com", &client);
    let repo = DeployRepo::with(&version(1));
    let run = client.push(&node, "mallory", repo.path(), &[]);
    assert_ne!(run.code, Some(0));
    assert!(
        run.stderr
            .contains("does not appear to be a git repository"),
        "{}",
        run.stderr
    );
    assert_eq!(node.branch(), None);
    assert!(node.status()["history"].as_array().unwrap().is_empty());

    // Nor can they reach troops as root through sudo, and members get
    // exactly the allowed command lines, nothing else.
    let exe = node.troops();
    for (user, command) in [
        ("mallory", vec!["sudo", "-n", &exe, "--root", "/", "deploy"]),
        ("alice", vec!["sudo", "-n", &exe, "--root", "/", "init"]),
        (
            "alice",
            vec!["sudo", "-n", &exe, "--root", "/", "deploy", "--rev", "HEAD"],
        ),
        ("alice", vec!["sudo", "-n", "id"]),
    ] {
        let run = client.ssh(&node, user, &command);
        assert_ne!(run.code, Some(0), "{user} ran {command:?}");
        assert!(
            run.stderr.contains("a password is required"),
            "{}",
            run.stderr
        );
    }
}

#[test]
fn root_believes_only_objects_that_arrive_whole() {
    let client = Client::new();
    let node = SshNode::start("shellbox-8.example.com", &client);
    let repo = DeployRepo::with(&version(1));
    client.push(&node, "alice", repo.path(), &[]).success();
    let next = repo.commit(&[("deploy.py", &version(2))]);
    // The commit is in the members' repository (pushed to another branch),
    // but a member running root's side by hand names it without its objects.
    client
        .command("git", "alice")
        .arg("-C")
        .arg(repo.path())
        .args(["push", "--quiet", &node.url("alice"), "master:side"])
        .status()
        .unwrap();
    let zero = "0".repeat(40);
    let script = format!(
        "{{ printf 'update {zero} {next} refs/heads/master\\n\\n'; \
         git --git-dir=/var/lib/troops/repo/main.git pack-objects --stdout </dev/null; }} \
         | sudo -n {} --root / hook receive",
        node.troops()
    );
    let run = client.ssh(&node, "alice", &[&script]);
    assert_ne!(run.code, Some(0));
    assert!(
        run.stderr.contains("did not carry commit"),
        "{}",
        run.stderr
    );
    assert_eq!(node.status()["history"].as_array().unwrap().len(), 1);
    assert_eq!(node.branch(), Some(repo.git(&["rev-parse", "HEAD~1"])));
    // The pusher's side is not root's to run.
    let exe = node.troops();
    let run = client.ssh(
        &node,
        "alice",
        &["sudo", "-n", &exe, "--root", "/", "hook", "pre-receive"],
    );
    assert!(
        run.stderr.contains("a password is required"),
        "{}",
        run.stderr
    );
}

#[test]
fn rollback_by_forced_push_and_branch_rules() {
    let client = Client::new();
    let node = SshNode::start("shellbox-4.example.com", &client);
    let repo = DeployRepo::with(&version(1));
    let first = repo.head();
    client.push(&node, "alice", repo.path(), &[]).success();
    repo.commit(&[("deploy.py", &version(2))]);
    client.push(&node, "alice", repo.path(), &[]).success();

    repo.git(&["reset", "--quiet", "--hard", "HEAD~1"]);
    let run = client
        .push(&node, "alice", repo.path(), &["--force"])
        .success();
    assert!(
        run.stderr.contains("remote: deploying version 1"),
        "{}",
        run.stderr
    );
    assert_eq!(node.branch(), Some(first.clone()));
    assert_eq!(node.deployed(), Some(first.clone()));

    let out = client
        .command("git", "alice")
        .arg("-C")
        .arg(repo.path())
        .args(["push", &node.url("alice"), "--delete", "master"])
        .output()
        .unwrap();
    let run = Run::from(out);
    assert!(
        run.stderr.contains("refusing to delete the deploy branch"),
        "{}",
        run.stderr
    );
    assert_eq!(node.branch(), Some(first.clone()));

    repo.git(&["checkout", "--quiet", "-b", "experiment"]);
    let other = repo.commit(&[("deploy.py", "raise SystemExit('never deployed')\n")]);
    let out = client
        .command("git", "alice")
        .arg("-C")
        .arg(repo.path())
        .args(["push", &node.url("alice"), "experiment"])
        .output()
        .unwrap();
    let run = Run::from(out).success();
    assert!(
        run.stderr
            .contains("refs/heads/experiment stored, not deployed"),
        "{}",
        run.stderr
    );
    assert_eq!(node.deployed(), Some(first));
    assert_ne!(node.branch(), Some(other));
}

#[test]
fn ssh_troops_deploy_redeploys_the_current_commit() {
    let client = Client::new();
    let node = SshNode::start("shellbox-5.example.com", &client);
    let repo = DeployRepo::with(&version(7));
    client.push(&node, "alice", repo.path(), &[]).success();
    let run = client
        .ssh(&node, "alice", &[&node.troops(), "deploy"])
        .success();
    assert!(run.stderr.contains("deploying version 7"), "{}", run.stderr);
    let history = node.status()["history"].clone();
    assert_eq!(history[0]["trigger"], "manual");
    assert_eq!(history[0]["user"], "alice");
    assert_eq!(history[0]["commit"], repo.head().as_str());
    assert_eq!(history[1]["trigger"], "push");
}

#[test]
fn concurrent_pushes_always_leave_the_branch_deployed() {
    let client = Client::new();
    let node = SshNode::start("shellbox-6.example.com", &client);
    let alice = DeployRepo::with(&version(0));
    client.push(&node, "alice", alice.path(), &[]).success();
    let bob = DeployRepo::new();
    bob.git(&["pull", "--quiet", alice.path().to_str().unwrap(), "master"]);

    for round in 1..=8 {
        for (repo, who) in [(&alice, "alice"), (&bob, "bob")] {
            let fetch = client
                .command("git", who)
                .arg("-C")
                .arg(repo.path())
                .args(["pull", "--quiet", "--rebase", &node.url(who), "master"])
                .output()
                .unwrap();
            assert!(
                fetch.status.success(),
                "{}",
                String::from_utf8_lossy(&fetch.stderr)
            );
            repo.commit(&[(&format!("{who}.txt"), &format!("{round}\n"))]);
        }
        let runs: Vec<Run> = thread::scope(|s| {
            let a = s.spawn(|| client.push(&node, "alice", alice.path(), &[]));
            let b = s.spawn(|| client.push(&node, "bob", bob.path(), &[]));
            vec![a.join().unwrap(), b.join().unwrap()]
        });
        let accepted = runs.iter().filter(|r| r.code == Some(0)).count();
        assert!(accepted >= 1, "round {round}: both rejected: {runs:#?}");
        for run in runs.iter().filter(|r| r.code != Some(0)) {
            assert!(
                run.stderr.contains("while this push waited")
                    || run.stderr.contains("which this push does not contain")
                    || run.stderr.contains("fetch first")
                    || run.stderr.contains("non-fast-forward"),
                "round {round}: rejected without a reason:\n{}",
                run.stderr
            );
        }
        assert_eq!(node.deployed(), node.branch(), "round {round}");
    }
}

#[test]
fn dry_run_push_reports_and_leaves_the_branch() {
    let client = Client::new();
    let node = SshNode::start("shellbox-7.example.com", &client);
    let repo = DeployRepo::with(&version(1));
    client.push(&node, "alice", repo.path(), &[]).success();
    let good = repo.head();

    repo.commit(&[(
        "deploy.py",
        "import os\nprint('dry run switch:', os.environ.get('PYDEBIANADMIN_DRY_RUN'))\n",
    )]);
    let run = client.push(&node, "alice", repo.path(), &["-o", "dry-run"]);
    assert_ne!(run.code, Some(0));
    assert!(
        run.stderr.contains("remote: dry run switch: 1"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("dry run: nothing was deployed"),
        "{}",
        run.stderr
    );
    assert_eq!(node.branch(), Some(good.clone()));
    assert_eq!(node.deployed(), Some(good.clone()));
    assert_eq!(node.status()["history"].as_array().unwrap().len(), 1);

    let run = client.push(&node, "alice", repo.path(), &["-o", "yolo"]);
    assert!(
        run.stderr.contains("unknown push option `yolo`"),
        "{}",
        run.stderr
    );
    assert_eq!(node.branch(), Some(good));
}
