//! A no-change `troops pull` against a plain `git fetch` of the same remotes.
//!
//! Starts a git server (a namespaced node with sshd on loopback) holding two
//! deployment repositories, and a node that has both as remotes and has
//! deployed their commit. Then times RUNS no-change `troops pull` runs against
//! RUNS `git fetch --all --jobs=2` of the same repository and remotes, with
//! the same ssh command. Prints both medians and the ratio (target: at most
//! 1.3). Needs root.
//!
//! `cargo bench --bench pull [-- RUNS]`

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::{Client, SshNode};
use common::{DeployRepo, Node, timing};

fn main() {
    let runs = timing::runs_from_args(15);
    let client = Client::new();
    let server = SshNode::start("git.example.com", &client);
    let repo = DeployRepo::with("print('hello')\n");
    let node = Node::new();
    node.troops(["init"]).success();
    for name in ["origin", "mirror"] {
        let url = client.bare_repository(&server, "alice", name);
        client.push_to("alice", repo.path(), &url).success();
        git(&node, &client)
            .args(["remote", "add", name, &url])
            .output()
            .unwrap();
    }
    let pull = || {
        let mut cmd = node.command(["pull"]);
        cmd.env("GIT_SSH_COMMAND", client.ssh_command("alice"));
        cmd
    };
    assert!(pull().output().unwrap().status.success());

    let mut troops = Vec::new();
    let mut fetch = Vec::new();
    for _ in 0..runs {
        troops.push(timed(&mut pull()));
        fetch.push(timed(git(&node, &client).args([
            "fetch",
            "--quiet",
            "--no-tags",
            "--all",
            "--jobs=2",
        ])));
    }
    let (t, f) = (timing::median(troops), timing::median(fetch));
    println!("runs: {runs}, remotes: 2 (ssh on loopback)");
    println!(
        "troops pull, nothing new (median):   {:7.1} ms",
        timing::ms(t)
    );
    println!(
        "git fetch --all --jobs=2 (median):   {:7.1} ms",
        timing::ms(f)
    );
    println!(
        "ratio: {:.2} (target: at most 1.3)",
        t.as_secs_f64() / f.as_secs_f64()
    );
}

fn git(node: &Node, client: &Client) -> Command {
    let mut cmd = common::clean_command("git", &node.home());
    cmd.env("GIT_SSH_COMMAND", client.ssh_command("alice"))
        .arg("--git-dir")
        .arg(node.lib().join("repo/main.git"));
    cmd
}

fn timed(cmd: &mut Command) -> Duration {
    let started = Instant::now();
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    started.elapsed()
}
