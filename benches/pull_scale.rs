//! How many pull nodes one git server carries: no-change pulls of one
//! deployment by many relocated nodes, over SSH and from a static mirror.
//!
//! The git server is a namespaced node serving git over sshd on loopback;
//! the static mirror is what `troops publish` makes, served by nginx from
//! Debian (one process) on loopback over HTTPS, and over plain HTTP to show
//! what TLS costs. Each server runs in a
//! cgroup of its own, and so does this process with everything it starts
//! (the nodes' side), so CPU time is read from the cgroups' `cpu.stat`.
//!
//! Every node (`troops --root DIR`, a PyDebianAdmin deployment already
//! deployed) pulls once per row, with nothing new, one node after another
//! and on each node the rows in turn:
//!
//! - the floor: one bare `git fetch` of the deploy branch into the node's
//!   repository, with the same transport settings;
//! - `troops pull`;
//! - the peer: `ansible-pull --only-if-changed` (ansible-core from PyPI,
//!   installed once by bench/fleet/setup-tools) on a sample of the nodes,
//!   since each of its runs takes seconds.
//!
//! It prints the node's and the server's CPU per pull, how many nodes one
//! server core carries at one pull every 15 minutes, and the time from
//! `troops seed` to the first deploy on a fresh node pulling from the
//! mirror. Needs root (the server node, the cgroups).
//!
//! ```text
//! cargo bench --bench pull_scale                       # 200 nodes, ansible-pull on 10
//! cargo bench --bench pull_scale -- --nodes 50 --ansible-nodes 0
//! ```

#[path = "../tests/common/mod.rs"]
mod common;

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::{Client, SshNode};
use common::nginx::{Certificate, Nginx};
use common::{DeployRepo, Node, Run, clean_command, timing};

const MIRROR_ADDRESS: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 75);
/// The pull interval the capacity figure assumes.
const INTERVAL: Duration = Duration::from_secs(15 * 60);

const DEPLOY_PY: &str = r#"import os
from pydebianadmin import files

files.file(os.environ["TROOPS_ROOT"] + "/etc/motd", content="deployed by troops\n", mode=0o644)
"#;

/// What ansible-pull runs when the repository changed.
const PLAYBOOK: &str = "- hosts: localhost\n  connection: local\n  gather_facts: false\n  \
                        tasks:\n    - ansible.builtin.debug: {msg: changed}\n";

/// A cgroup (v2, where this machine mounts it) that counts CPU time.
struct Cgroup {
    path: PathBuf,
}

impl Cgroup {
    fn new(name: &str) -> Cgroup {
        let root = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
            .iter()
            .map(Path::new)
            .find(|p| p.join("cgroup.procs").exists() && p.join("cgroup.subtree_control").exists())
            .expect("no cgroup v2 hierarchy mounted (/sys/fs/cgroup or /sys/fs/cgroup/unified)");
        let path = root.join(name);
        let _ = fs::remove_dir(&path);
        fs::create_dir(&path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        Cgroup { path }
    }

    /// Moves `pid` and everything it started into this cgroup; what they
    /// start later is born in it.
    fn adopt(&self, pid: u32) {
        for pid in process_tree(pid) {
            // A process may have ended meanwhile.
            let _ = fs::write(self.path.join("cgroup.procs"), pid.to_string());
        }
    }

    fn usage(&self) -> Duration {
        let stat = fs::read_to_string(self.path.join("cpu.stat")).unwrap();
        let usec = stat
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .and_then(|v| v.trim().parse().ok())
            .expect("cpu.stat has usage_usec");
        Duration::from_micros(usec)
    }
}

impl Drop for Cgroup {
    /// Hands what is left to the parent, then removes the cgroup.
    fn drop(&mut self) {
        let parent = self.path.parent().unwrap().join("cgroup.procs");
        for pid in fs::read_to_string(self.path.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
        {
            let _ = fs::write(&parent, pid);
        }
        for _ in 0..50 {
            if fs::remove_dir(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `pid` and its descendants.
fn process_tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let tasks = fs::read_dir(format!("/proc/{}/task", all[i]));
        for task in tasks.into_iter().flatten().flatten() {
            let children = fs::read_to_string(task.path().join("children")).unwrap_or_default();
            all.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
        i += 1;
    }
    all
}

struct Options {
    nodes: usize,
    ansible_nodes: usize,
}

fn options() -> Options {
    let mut o = Options {
        nodes: 200,
        ansible_nodes: 10,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.windows(2) {
        let value = || pair[1].parse().expect("a number");
        match pair[0].as_str() {
            "--nodes" => o.nodes = value(),
            "--ansible-nodes" => o.ansible_nodes = value(),
            _ => {}
        }
    }
    o
}

/// One way of reaching the deployment: its URL and what git needs for it.
struct Transport {
    name: &'static str,
    url: String,
    /// Root's gitconfig on the nodes (remote, CA).
    gitconfig: String,
    /// Environment for the fetching git (ssh command or CA file).
    env: Vec<(&'static str, String)>,
}

/// One way of pulling, run on the first `nodes` nodes.
struct Tool<'a> {
    name: &'static str,
    nodes: usize,
    command: Box<dyn Fn(&Node) -> Command + 'a>,
    /// Whether the run did what a no-change pull does.
    check: Box<dyn Fn(&Run) -> bool + 'a>,
}

/// CPU and wall time of one row, per pull.
struct Row {
    transport: &'static str,
    tool: String,
    pulls: usize,
    node: Duration,
    server: Duration,
    wall: Duration,
}

struct Bench {
    nodes: Vec<Node>,
    client_cg: Cgroup,
    server_cg: Cgroup,
    tools: PathBuf,
    wheels: tempfile::TempDir,
}

impl Bench {
    /// Runs each tool on the first `n` nodes it takes, node by node (the
    /// floor, then Troops, then the peer on the same node), so that a drift
    /// of the machine's speed during the run weighs on all of them alike;
    /// reports the CPU both sides used per run of each.
    fn measure(&self, transport: &Transport, tools: &[Tool]) -> Vec<Row> {
        let mut used = vec![(Duration::ZERO, Duration::ZERO, Duration::ZERO); tools.len()];
        for (i, node) in self.nodes.iter().enumerate() {
            for (tool, used) in tools.iter().zip(&mut used) {
                if i >= tool.nodes {
                    continue;
                }
                let (client, server, started) = (
                    self.client_cg.usage(),
                    self.server_cg.usage(),
                    Instant::now(),
                );
                let run = Run::from((tool.command)(node).output().unwrap());
                used.0 += self.client_cg.usage() - client;
                used.1 += self.server_cg.usage() - server;
                used.2 += started.elapsed();
                assert!(
                    run.code == Some(0) && (tool.check)(&run),
                    "{} over {} failed or changed something:\n{}\n{}",
                    tool.name,
                    transport.name,
                    run.stdout,
                    run.stderr
                );
            }
        }
        tools
            .iter()
            .zip(used)
            .map(|(tool, (node, server, wall))| {
                let per = |d: Duration| d / tool.nodes as u32;
                Row {
                    transport: transport.name,
                    tool: tool.name.to_owned(),
                    pulls: tool.nodes,
                    node: per(node),
                    server: per(server),
                    wall: per(wall),
                }
            })
            .collect()
    }

    fn use_transport(&self, transport: &Transport) {
        for node in &self.nodes {
            fs::write(
                node.root().join("etc/troops/gitconfig"),
                &transport.gitconfig,
            )
            .unwrap();
        }
    }

    fn troops(&self, node: &Node, transport: &Transport) -> Command {
        let mut cmd = node.command(["pull"]);
        cmd.env("TROOPS_WHEELS", self.wheels.path());
        cmd.envs(transport.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    fn floor(&self, node: &Node, transport: &Transport) -> Command {
        let mut cmd = clean_command("git", &node.home());
        cmd.envs(transport.env.iter().map(|(k, v)| (k, v)))
            .arg("--git-dir")
            .arg(node.lib().join("deploy.git"))
            .args(["fetch", "--quiet", "--no-tags", "--", &transport.url])
            .arg("+refs/heads/master:refs/remotes/floor/master");
        cmd
    }

    fn ansible_pull(&self, node: &Node, transport: &Transport) -> Command {
        let mut cmd = clean_command(
            self.tools.join("ansible-core/bin/ansible-pull"),
            &node.home(),
        );
        cmd.envs(transport.env.iter().map(|(k, v)| (k, v)))
            .env("LC_ALL", "C.UTF-8")
            .env("ANSIBLE_LOCALHOST_WARNING", "False")
            .env("ANSIBLE_INVENTORY_UNPARSED_WARNING", "False")
            .args(["--only-if-changed", "--full", "-U", &transport.url, "-d"])
            .arg(node.dir.path().join(format!("ansible-{}", transport.name)))
            .arg("local.yml");
        cmd
    }
}

fn main() {
    let o = options();
    assert!(
        nix::unistd::geteuid().is_root(),
        "the pull-scale benchmark starts a namespaced git server and cgroups: run it as root"
    );
    let tools = if o.ansible_nodes > 0 {
        common::peer_tools()
    } else {
        PathBuf::new()
    };
    let wheels = common::bundled_wheels();

    // This process and all it starts count as the nodes' side; the servers
    // are moved to a cgroup of their own.
    let client_cg = Cgroup::new("troops-bench-nodes");
    client_cg.adopt(std::process::id());
    let server_cg = Cgroup::new("troops-bench-server");

    let repo = DeployRepo::new();
    repo.commit(&[
        ("deploy.py", DEPLOY_PY),
        ("requirements.txt", "PyDebianAdmin\n"),
        ("local.yml", PLAYBOOK),
    ]);

    // The SSH git server.
    let client = Client::new();
    let server = SshNode::start("git.example.com", &client);
    let ssh_url = client.bare_repository(&server, "alice", "deploy");
    client.push_to("alice", repo.path(), &ssh_url).success();
    server_cg.adopt(server.pid());

    // The static mirror.
    let work = tempfile::tempdir().unwrap();
    let www = work.path().join("www");
    let out = clean_command(env!("CARGO_BIN_EXE_troops"), work.path())
        .arg("publish")
        .arg("--repository")
        .arg(repo.path())
        .arg(www.join("deploy.git"))
        .output()
        .unwrap();
    Run::from(out).success();
    let tls = Certificate::self_signed(work.path(), MIRROR_ADDRESS);
    let nginx = Nginx::serve_https(&www, MIRROR_ADDRESS, &tls);
    server_cg.adopt(nginx.pid());
    let https_url = format!("https://{MIRROR_ADDRESS}:{}/deploy.git", nginx.port);
    // The same files over plain HTTP: what TLS costs the server. With
    // signed deploys nodes need not trust the transport either.
    let plain = Nginx::serve(&www, MIRROR_ADDRESS);
    server_cg.adopt(plain.pid());
    let http_url = format!("http://{MIRROR_ADDRESS}:{}/deploy.git", plain.port);

    let ca = tls.cert.display().to_string();
    let transports = [
        Transport {
            name: "ssh",
            gitconfig: format!("[remote \"origin\"]\n\turl = {ssh_url}\n"),
            env: vec![("GIT_SSH_COMMAND", client.ssh_command("alice"))],
            url: ssh_url,
        },
        Transport {
            name: "https-mirror",
            gitconfig: format!(
                "[http]\n\tsslCAInfo = {ca}\n[remote \"origin\"]\n\turl = {https_url}\n"
            ),
            env: vec![("GIT_SSL_CAINFO", ca.clone())],
            url: https_url.clone(),
        },
        Transport {
            name: "http-mirror",
            gitconfig: format!("[remote \"origin\"]\n\turl = {http_url}\n"),
            env: Vec::new(),
            url: http_url,
        },
    ];

    eprintln!("pull-scale: {} nodes deploy the commit once", o.nodes);
    let mut bench = Bench {
        nodes: Vec::new(),
        client_cg,
        server_cg,
        tools,
        wheels,
    };
    for i in 0..o.nodes {
        let node = Node::new();
        node.troops(["init"]).success();
        fs::write(
            node.root().join("etc/troops/gitconfig"),
            &transports[0].gitconfig,
        )
        .unwrap();
        let run = Run::from(bench.troops(&node, &transports[0]).output().unwrap()).success();
        assert!(run.stderr.contains("deployed"), "node {i}: {}", run.stderr);
        bench.nodes.push(node);
    }

    let mut rows = Vec::new();
    let ansible_n = o.ansible_nodes.min(o.nodes);
    for transport in &transports {
        bench.use_transport(transport);
        // The peer clones once (its first run), outside the measurement.
        for node in &bench.nodes[..ansible_n] {
            let run = Run::from(bench.ansible_pull(node, transport).output().unwrap());
            assert_eq!(
                run.code,
                Some(0),
                "ansible-pull:\n{}\n{}",
                run.stdout,
                run.stderr
            );
        }
        // Each node's first pull over this transport (the HTTP scratch
        // repository, a new remote) is not a no-change pull.
        for node in &bench.nodes {
            Run::from(bench.troops(node, transport).output().unwrap()).success();
        }
        eprintln!("pull-scale: {}: {} nodes", transport.name, o.nodes);
        let mut tools = vec![
            Tool {
                name: "git fetch (floor)",
                nodes: o.nodes,
                command: Box::new(|n| bench.floor(n, transport)),
                check: Box::new(|_| true),
            },
            Tool {
                name: "troops pull",
                nodes: o.nodes,
                command: Box::new(|n| bench.troops(n, transport)),
                check: Box::new(|run| run.stderr.contains("nothing new")),
            },
        ];
        if ansible_n > 0 {
            tools.push(Tool {
                name: "ansible-pull --only-if-changed",
                nodes: ansible_n,
                command: Box::new(|n| bench.ansible_pull(n, transport)),
                check: Box::new(|run| run.stdout.contains("has not changed")),
            });
        }
        rows.extend(bench.measure(transport, &tools));
    }
    let seed = seed_to_first_deploy(&bench, &https_url, &tls);
    print_table(&rows, o.nodes, seed);
    drop((nginx, plain, server));
}

/// Median wall time of `troops seed` (which ends with the first pull and
/// deploy) on fresh nodes pulling the PyDebianAdmin deployment from the
/// mirror.
fn seed_to_first_deploy(bench: &Bench, url: &str, tls: &Certificate) -> Duration {
    let ca = fs::read_to_string(&tls.cert).unwrap();
    let seed = format!(
        "troops:\n  remotes: [{{name: mirror, url: '{url}'}}]\n  https_ca: |\n    {}\n",
        ca.trim_end().replace('\n', "\n    ")
    );
    let times = (0..5)
        .map(|_| {
            let node = Node::new();
            let file = node.dir.path().join("seed.yaml");
            fs::write(&file, &seed).unwrap();
            let mut cmd = node.command(["seed", "--file", file.to_str().unwrap()]);
            cmd.env("TROOPS_WHEELS", bench.wheels.path());
            let started = Instant::now();
            let run = Run::from(cmd.output().unwrap()).success();
            let elapsed = started.elapsed();
            assert!(
                fs::read_to_string(node.root().join("etc/motd")).unwrap() == "deployed by troops\n",
                "{}",
                run.stderr
            );
            elapsed
        })
        .collect();
    timing::median(times)
}

fn print_table(rows: &[Row], nodes: usize, seed: Duration) {
    let ms = |d: Duration| timing::ms(d);
    println!();
    println!(
        "pull-scale: no-change pulls of one deployment, one node after another; CPU per pull \
         (node = everything the pull ran; server = the git server's or nginx's cgroup)"
    );
    println!(
        "{:<13} {:<32} {:>6} {:>9} {:>7} {:>10} {:>9} {:>16}",
        "transport", "tool", "pulls", "node ms", "/floor", "server ms", "wall ms", "nodes/core@15m"
    );
    let floor = |t: &str| {
        rows.iter()
            .find(|r| r.transport == t && r.tool.contains("floor"))
    };
    for r in rows {
        let versus = floor(r.transport)
            .map(|f| format!("{:.2}", r.node.as_secs_f64() / f.node.as_secs_f64()))
            .unwrap_or_default();
        let capacity = INTERVAL.as_secs_f64() / r.server.as_secs_f64().max(1e-9);
        println!(
            "{:<13} {:<32} {:>6} {:>9.2} {:>7} {:>10.3} {:>9.1} {:>16.0}",
            r.transport,
            r.tool,
            r.pulls,
            ms(r.node),
            versus,
            ms(r.server),
            ms(r.wall),
            capacity
        );
    }
    println!();
    let troops = |t: &str| {
        rows.iter()
            .find(|r| r.transport == t && r.tool == "troops pull")
    };
    for t in ["ssh", "https-mirror", "http-mirror"] {
        if let (Some(r), Some(f)) = (troops(t), floor(t)) {
            let ratio = r.node.as_secs_f64() / f.node.as_secs_f64();
            println!(
                "goal {t}: troops pull node CPU / git fetch = {ratio:.2} (<= 1.2: {})",
                yes(ratio <= 1.2)
            );
        }
    }
    for mirror in ["https-mirror", "http-mirror"] {
        if let (Some(ssh), Some(m)) = (troops("ssh"), troops(mirror)) {
            let ratio = ssh.server.as_secs_f64() / m.server.as_secs_f64().max(1e-9);
            println!(
                "goal: server CPU per pull, ssh / {mirror} = {ratio:.0} (>= 100: {})",
                yes(ratio >= 100.0)
            );
        }
    }
    println!(
        "goal: troops seed to first deploy on a fresh node (PyDebianAdmin, from the mirror), \
         median of 5: {:.2} s (< 3: {})",
        seed.as_secs_f64(),
        yes(seed < Duration::from_secs(3))
    );
    println!("nodes: {nodes}");
}

fn yes(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}
