//! What status reports cost a pull: a no-change `troops pull` on a node with
//! a report remote and no heartbeat due, against the same pull on a node
//! without one (target: no measurable difference), and a pull that signs
//! and pushes a report (its record of the last report removed each time).
//!
//! Two relocated nodes pull from one local bare repository, which is also
//! the report remote. Runs are interleaved, so drift in the machine's speed
//! weighs on both alike. Prints medians of wall time.
//!
//! `cargo bench --bench report [-- RUNS]`

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{DeployRepo, Node, timing};

fn main() {
    let runs = timing::runs_from_args(100);
    let server = tempfile::tempdir().unwrap();
    let url = server.path().join("deploy.git");
    common::clean_command("git", server.path())
        .args(["init", "--quiet", "--bare"])
        .arg(&url)
        .output()
        .unwrap();
    let repo = DeployRepo::with("print('hello')\n");
    repo.git(&["push", "--quiet", url.to_str().unwrap(), "master"]);
    let node = |heartbeat: Option<&str>| {
        let node = Node::new();
        node.troops(["init"]).success();
        node.add_remote("origin", url.to_str().unwrap());
        if let Some(heartbeat) = heartbeat {
            node.write_config(&format!(
                "[report]\nurl = \"{}\"\nheartbeat = \"{heartbeat}\"\n",
                url.display()
            ));
        }
        node.troops(["pull"]).success();
        node
    };
    let plain = node(None);
    let quiet = node(Some("1h"));
    let beating = node(Some("1h"));
    let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        a.push(timed(&plain));
        b.push(timed(&quiet));
        // Without its record of the last report, the node reports again.
        std::fs::remove_file(beating.lib().join("state/report-sent.json")).unwrap();
        c.push(timed(&beating));
    }
    let (a, b, pushing) = (timing::median(a), timing::median(b), timing::median(c));
    println!("runs: {runs}, remote and report remote: a local bare repository");
    println!(
        "no report remote, nothing new (median):      {:6.1} ms",
        timing::ms(a)
    );
    println!(
        "report remote, no heartbeat due (median):    {:6.1} ms",
        timing::ms(b)
    );
    println!(
        "ratio: {:.2} (target: no measurable difference)",
        b.as_secs_f64() / a.as_secs_f64()
    );
    println!(
        "a pull that signs and pushes a report (median): {:6.1} ms",
        timing::ms(pushing)
    );
}

fn timed(node: &Node) -> Duration {
    let start = Instant::now();
    node.troops(["pull"]).success();
    start.elapsed()
}
