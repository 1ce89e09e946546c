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

use std::time::{Duration, Instant};

use common::DeployRepo;
use common::cluster::{Client, SshNode};

fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(15);
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
        let out = client
            .command("git", "alice")
            .arg("-C")
            .arg(repo.path())
            .args(["push", "--quiet", &plain, "master"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        git.push(started.elapsed());
    }
    let (t, g) = (median(troops), median(git));
    println!("runs: {runs}");
    println!(
        "push to a troops node, no-change deploy (median): {:7.1} ms",
        ms(t)
    );
    println!(
        "plain git push to a bare repository (median):     {:7.1} ms",
        ms(g)
    );
    println!("ratio: {:.2}", t.as_secs_f64() / g.as_secs_f64());
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
