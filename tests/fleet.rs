//! `troops push` to many namespaced nodes: canary, waves, thresholds,
//! --role, --json, an unreachable host, and the user's ssh multiplexing.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::cluster::{Client, SshNode};
use common::{DeployRepo, Run};

struct Fleet {
    client: Client,
    nodes: Vec<SshNode>,
    ssh: String,
}

impl Fleet {
    fn start(prefix: &str, n: usize) -> Fleet {
        let client = Client::new();
        let nodes: Vec<SshNode> = (1..=n)
            .map(|i| SshNode::start(&format!("{prefix}-{i}.example.com"), &client))
            .collect();
        let aliases: Vec<(String, &SshNode)> = nodes
            .iter()
            .enumerate()
            .map(|(i, node)| (format!("{prefix}-{}", i + 1), node))
            .collect();
        let aliases: Vec<(&str, &SshNode)> =
            aliases.iter().map(|(a, n)| (a.as_str(), *n)).collect();
        let ssh = client.ssh_with_aliases("alice", &aliases);
        Fleet { client, nodes, ssh }
    }

    fn push(&self, repo: &DeployRepo, args: &[&str]) -> (Run, serde_json::Value) {
        let out = common::clean_command(env!("CARGO_BIN_EXE_troops"), self.client.dir.path())
            .env("GIT_SSH_COMMAND", &self.ssh)
            .arg("push")
            .arg("--repository")
            .arg(repo.path())
            .arg("--log-dir")
            .arg(self.client.dir.path().join("logs"))
            .arg("--json")
            .args(args)
            .output()
            .unwrap();
        let run = Run::from(out);
        let json = serde_json::from_str(&run.stdout).unwrap_or(serde_json::Value::Null);
        (run, json)
    }
}

/// deploy.py that fails on the hosts named in `failing`.
fn deployment(failing: &[&str]) -> DeployRepo {
    DeployRepo::with(&format!(
        "import troops\nprint('deploying on', troops.hostname())\n\
         if troops.hostname() in {failing:?}: raise SystemExit('failing on purpose')\n"
    ))
}

fn results(json: &serde_json::Value) -> Vec<(String, String)> {
    json["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["host"].as_str().unwrap().to_owned(),
                h["result"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(h, r)| (h.to_string(), r.to_string()))
        .collect()
}

#[test]
fn all_nodes_succeed_and_json_matches() {
    let fleet = Fleet::start("all", 3);
    let repo = deployment(&[]);
    let (run, json) = fleet.push(&repo, &["--canary", "1", "all-1", "all-2", "all-3"]);
    let run = run.success();
    assert_eq!(json["result"], "success");
    assert_eq!(json["commit"], repo.head().as_str());
    assert_eq!(
        results(&json),
        pairs(&[
            ("all-1", "success"),
            ("all-2", "success"),
            ("all-3", "success")
        ])
    );
    for node in &fleet.nodes {
        assert_eq!(node.deployed(), Some(repo.head()), "{}", node.hostname);
    }
    let log = std::fs::read_to_string(json["hosts"][1]["log"].as_str().unwrap()).unwrap();
    assert!(log.contains("deploying on all-2.example.com"), "{log}");
    assert!(
        run.stderr.contains("wave of 1 node(s) (canary)"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("wave of 2 node(s)"), "{}", run.stderr);
}

#[test]
fn pushes_go_through_the_users_ssh_multiplexing() {
    let fleet = Fleet::start("mux", 1);
    let config = fleet.ssh.trim_start_matches("ssh -F ");
    let sockets = fleet.client.dir.path().join("mux");
    std::fs::create_dir(&sockets).unwrap();
    let mut text = std::fs::read_to_string(config).unwrap();
    text.push_str(&format!(
        "Host *\n  ControlMaster auto\n  ControlPath {}/%C\n  ControlPersist 60\n",
        sockets.display()
    ));
    std::fs::write(config, text).unwrap();
    let ssh = |args: &[&str]| {
        common::clean_command("ssh", fleet.client.dir.path())
            .args(["-F", config])
            .args(args)
            .output()
            .unwrap()
    };

    let repo = deployment(&[]);
    let (run, _) = fleet.push(&repo, &["mux-1"]);
    run.success();
    let check = ssh(&["-O", "check", "mux-1"]);
    assert!(
        check.status.success(),
        "no master connection after the push: {}",
        String::from_utf8_lossy(&check.stderr)
    );

    // A new connection would now fail host key checking: the second push
    // can only succeed through the master the first one left.
    std::fs::write(fleet.client.dir.path().join("known_hosts"), "").unwrap();
    let second = repo.commit(&[("deploy.py", "print('second')\n")]);
    let (run, json) = fleet.push(&repo, &["mux-1"]);
    run.success();
    assert_eq!(json["commit"], second.as_str());
    assert_eq!(fleet.nodes[0].deployed(), Some(second));
    ssh(&["-O", "exit", "mux-1"]);
}

#[test]
fn a_failing_canary_stops_the_rollout() {
    let fleet = Fleet::start("canary", 3);
    let repo = deployment(&["canary-1.example.com"]);
    let (run, json) = fleet.push(&repo, &["canary-1", "canary-2", "canary-3"]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert_eq!(
        results(&json),
        pairs(&[
            ("canary-1", "failure"),
            ("canary-2", "skipped"),
            ("canary-3", "skipped")
        ])
    );
    assert!(
        json["hosts"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("deploy"),
        "{json}"
    );
    assert!(
        json["hosts"][1]["reason"]
            .as_str()
            .unwrap()
            .contains("halted"),
        "{json}"
    );
    for node in &fleet.nodes {
        assert_eq!(node.deployed(), None, "{}", node.hostname);
    }
}

#[test]
fn a_failure_threshold_halts_later_waves() {
    let fleet = Fleet::start("wave", 5);
    let repo = deployment(&["wave-2.example.com", "wave-3.example.com"]);
    let targets = ["wave-1", "wave-2", "wave-3", "wave-4", "wave-5"];
    let mut args = vec!["--canary", "1", "--parallel", "1", "--max-failures", "1"];
    args.extend(targets);
    let (run, json) = fleet.push(&repo, &args);
    assert_eq!(run.code, Some(1));
    assert_eq!(
        results(&json),
        pairs(&[
            ("wave-1", "success"),
            ("wave-2", "failure"),
            ("wave-3", "failure"),
            ("wave-4", "skipped"),
            ("wave-5", "skipped"),
        ])
    );
    assert_eq!(fleet.nodes[3].deployed(), None);
}

#[test]
fn role_picks_the_hosts_deploy_py_defines() {
    let fleet = Fleet::start("role", 3);
    let repo = DeployRepo::with(
        "import troops\ntroops.define_role('web', hosts=['role-1', 'role-3'])\nprint('deployed')\n",
    );
    let (run, json) = fleet.push(&repo, &["--role", "web"]);
    run.success();
    assert_eq!(
        results(&json),
        pairs(&[("role-1", "success"), ("role-3", "success")])
    );
    assert_eq!(fleet.nodes[0].deployed(), Some(repo.head()));
    assert_eq!(fleet.nodes[1].deployed(), None);
    assert_eq!(fleet.nodes[2].deployed(), Some(repo.head()));
}

#[test]
fn an_unreachable_host_is_reported_not_hung_on() {
    let fleet = Fleet::start("reach", 1);
    // Accepts connections and never speaks: only the connect timeout ends it.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let repo = deployment(&[]);
    let started = Instant::now();
    let (run, json) = fleet.push(
        &repo,
        &[
            "--connect-timeout",
            "2",
            "--max-failures",
            "1",
            "reach-1",
            &format!("alice@127.0.0.1 -p {port}"),
        ],
    );
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("is not a target"), "{}", run.stderr);
    assert!(json.is_null());

    let config = std::fs::read_to_string(fleet.ssh.trim_start_matches("ssh -F ")).unwrap();
    let with_silent = format!("Host silent\n  HostName 127.0.0.1\n  Port {port}\n{config}");
    let path = fleet.client.dir.path().join("ssh_config_silent");
    std::fs::write(&path, with_silent).unwrap();
    let out = common::clean_command(env!("CARGO_BIN_EXE_troops"), fleet.client.dir.path())
        .env("GIT_SSH_COMMAND", format!("ssh -F {}", path.display()))
        .args([
            "push",
            "--json",
            "--connect-timeout",
            "2",
            "--max-failures",
            "1",
            "--repository",
        ])
        .arg(repo.path())
        .args(["reach-1", "silent"])
        .output()
        .unwrap();
    let run = Run::from(out);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(run.code, Some(1));
    assert_eq!(
        results(&json),
        pairs(&[("reach-1", "success"), ("silent", "failure")])
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    let reason = json["hosts"][1]["reason"].as_str().unwrap();
    assert!(
        reason.to_lowercase().contains("timed out") || reason.contains("banner"),
        "{reason}"
    );
    drop(silent);
}

#[test]
fn ctrl_c_starts_no_new_node_and_still_summarises() {
    let fleet = Fleet::start("stop", 3);
    let repo = DeployRepo::with("import time\nprint('slow deploy', flush=True)\ntime.sleep(3)\n");
    let mut child = common::clean_command(env!("CARGO_BIN_EXE_troops"), fleet.client.dir.path())
        .env("GIT_SSH_COMMAND", &fleet.ssh)
        .args([
            "push",
            "--json",
            "--parallel",
            "1",
            "--canary",
            "3",
            "--repository",
        ])
        .arg(repo.path())
        .args(["stop-1", "stop-2", "stop-3"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    assert!(
        lines
            .by_ref()
            .map(|l| l.unwrap())
            .any(|l| l.contains("stop-1: pushing"))
    );
    std::thread::sleep(Duration::from_millis(500));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    std::thread::spawn(move || lines.for_each(drop));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        results(&json),
        pairs(&[
            ("stop-1", "success"),
            ("stop-2", "skipped"),
            ("stop-3", "skipped")
        ])
    );
    assert_eq!(fleet.nodes[0].deployed(), Some(repo.head()));
    assert_eq!(fleet.nodes[1].deployed(), None);
}
