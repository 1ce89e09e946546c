//! Round trip of a no-change push against a plain `git push`.
//!
//! Starts one namespaced node with sshd on loopback (the push tests' node),
//! pushes once to build the virtualenv, then times RUNS pushes of a new commit
//! whose requirements are cached (a comment edit) against RUNS pushes of the
//! same kind of commit to a plain bare repository on the same node, over the
//! same SSH. Prints both medians and their ratio. Needs root.
//!
//! `cargo bench --bench push [-- RUNS]`

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::cluster::{Client, SshNode};
use common::{DeployRepo, timing};

fn main() {
    let runs = timing::runs_from_args(15);
    let client = Client::new();
    let node = SshNode::start("bench-1.example.com", &client);
    let repo = DeployRepo::with("import troops\nprint('hello from', troops.hostname())\n");
    client.push(&node, "alice", repo.path(), &[]).success();
    client
        .ssh(
            &node,
            "alice",
            &["git", "init", "--quiet", "--bare", "plain.git"],
        )
        .success();
    let plain = format!("ssh://alice@{}:{}/~/plain.git", node.addr, node.port);

    let mut troops = Vec::new();
    let mut git = Vec::new();
    for i in 0..runs {
        repo.commit(&[(
            "deploy.py",
            &format!("import troops\nprint('hello', troops.hostname())  # {i}\n"),
        )]);
        let started = Instant::now();
        client.push(&node, "alice", repo.path(), &[]).success();
        troops.push(started.elapsed());

        let started = Instant::now();
        client.push_to("alice", repo.path(), &plain).success();
        git.push(started.elapsed());
    }
    let (t, g) = (timing::median(troops), timing::median(git));
    println!("runs: {runs}");
    println!(
        "push to a troops node, no-change deploy (median): {:7.1} ms",
        timing::ms(t)
    );
    println!(
        "plain git push to a bare repository (median):     {:7.1} ms",
        timing::ms(g)
    );
    println!("ratio: {:.2}", t.as_secs_f64() / g.as_secs_f64());
}
