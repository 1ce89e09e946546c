//! Fault injection: `troops pull` killed with SIGKILL at each phase of a
//! deploy (fetch, export, virtualenv build, deploy.py running, history
//! write, ref update), stopped there by a failpoint of the debug build
//! (`TROOPS_FAILPOINT`) so that each test knows the phase was reached. After
//! each kill the lock is free, nothing the deploy started runs on, the node
//! runs what `troops status` and its branch say, and the next pull deploys.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{DeployRepo, Node, running};

/// deploy.py leaves a background process with `marker` in its command line.
fn deployment(marker: &str, version: u32) -> String {
    format!(
        "import subprocess, time\n\
         subprocess.Popen(['sleep', '{marker}'])\n\
         print('deploying version {version}', flush=True)\n\
         time.sleep({pause})\n",
        pause = if version == 0 { 0 } else { 2 }
    )
}

/// Runs `troops pull` until it says `needle`, then kills it with SIGKILL.
fn pull_killed_at(node: &Node, failpoint: Option<&str>, needle: &str) {
    let mut cmd = node.command(["pull"]);
    if let Some(name) = failpoint {
        cmd.env("TROOPS_FAILPOINT", name);
    }
    let mut child = cmd.stderr(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = Vec::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "never reached `{needle}`: {seen:?}"
        );
        let Some(Ok(line)) = lines.next() else {
            panic!("troops ended before `{needle}`: {seen:?}");
        };
        if line.contains(needle) {
            break;
        }
        seen.push(line);
    }
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::spawn(move || lines.for_each(drop));
}

/// What the node runs, by `troops status` and by root's branch.
fn state(node: &Node) -> (Option<String>, Option<String>) {
    let status = node.status_json()["commit"].as_str().map(str::to_owned);
    (status, node.branch())
}

/// The scenario of one phase: A deployed, B on the remote, a pull of B
/// killed at `failpoint` (or, for deploy.py, at its output).
struct Killed {
    node: Node,
    first: String,
    second: String,
    _origin: DeployRepo,
}

fn killed_at(failpoint: Option<&str>, needle: &str, requirements: &str) -> Killed {
    let node = Node::new();
    node.troops(["init"]).success();
    let marker = format!("600.{}{}", std::process::id(), needle.len());
    let origin = DeployRepo::new();
    let first = origin.commit(&[
        ("deploy.py", &deployment(&marker, 0)),
        ("requirements.txt", ""),
    ]);
    node.add_remote("origin", &origin.path_str());
    node.troops(["pull"]).success();
    assert_eq!(state(&node), (Some(first.clone()), Some(first.clone())));
    let second = origin.commit(&[
        ("deploy.py", &deployment(&marker, 2)),
        ("requirements.txt", requirements),
    ]);
    pull_killed_at(&node, failpoint, needle);

    // Whatever deploy.py started is stopped within seconds.
    let deadline = Instant::now() + Duration::from_secs(10);
    while running(&marker) {
        assert!(Instant::now() < deadline, "a process of the deploy ran on");
        std::thread::sleep(Duration::from_millis(100));
    }
    Killed {
        node,
        first,
        second,
        _origin: origin,
    }
}

/// The next pull (which may not wait: the lock is free) deploys the new
/// commit, and both views agree on it.
fn next_pull_completes(node: &Node, second: &str) {
    node.troops(["pull", "--no-wait"]).success();
    assert_eq!(
        state(node),
        (Some(second.to_owned()), Some(second.to_owned()))
    );
}

/// A kill before the deploy completed: the node keeps the last good commit
/// by both views, the pull's record (if it started one) says interrupted,
/// and the next pull deploys the new commit.
fn before_completion(
    failpoint: Option<&str>,
    needle: &str,
    requirements: &str,
    recorded: bool,
) -> Node {
    let Killed {
        node,
        first,
        second,
        _origin,
    } = killed_at(failpoint, needle, requirements);
    assert_eq!(state(&node), (Some(first.clone()), Some(first)));
    if recorded {
        let record = &node.status_json()["history"][0];
        assert_eq!(record["commit"], second.as_str());
        let reason = record["reason"].as_str().unwrap_or_default();
        assert!(reason.starts_with("interrupted"), "{record}");
    }
    next_pull_completes(&node, &second);
    node
}

#[test]
fn killed_while_fetching() {
    before_completion(Some("fetch"), "failpoint fetch", "", false);
}

#[test]
fn killed_while_exporting_the_commit() {
    before_completion(Some("export"), "failpoint export", "", true);
}

#[test]
fn killed_while_building_the_virtualenv() {
    let node = before_completion(Some("venv"), "failpoint venv", "# new requirements\n", true);
    // The half-built one was never used, and the next deploy removed it.
    let leftovers: Vec<_> = fs::read_dir(node.lib().join("cache/venvs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".build-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "half-built virtualenvs: {leftovers:?}"
    );
}

#[test]
fn killed_while_deploy_py_runs() {
    before_completion(None, "deploying version 2", "", true);
}

#[test]
fn killed_before_the_history_record_is_closed() {
    // deploy.py finished, but the deploy did not: reported as interrupted,
    // and the node still names the last commit whose deploy completed.
    before_completion(Some("history"), "failpoint history", "", true);
}

#[test]
fn killed_before_the_branch_moves() {
    let Killed {
        node,
        first,
        second,
        _origin,
    } = killed_at(Some("ref"), "failpoint ref", "");
    // The deploy succeeded and is recorded (the node runs the new commit);
    // the branch had not moved yet. The next pull completes it: never lost.
    let record = &node.status_json()["history"][0];
    assert_eq!(record["commit"], second.as_str());
    assert_eq!(record["result"], "success");
    assert_eq!(state(&node), (Some(second.clone()), Some(first)));
    next_pull_completes(&node, &second);
}

/// A small tmpfs mounted over `dir`, unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &std::path::Path, size: &str) -> SmallDisk {
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk(dir.to_path_buf())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_full_disk_fails_the_deploy_and_keeps_the_last_good_one() {
    let node = Node::new();
    node.troops(["init"]).success();
    let origin = DeployRepo::with("print('small')\n");
    let first = origin.head();
    node.add_remote("origin", &origin.path_str());
    node.troops(["pull"]).success();
    let work = node.lib().join("work");
    let disk = SmallDisk::mount(&work, "256k");
    // A commit larger than what is left where commits are exported.
    let second = origin.commit(&[("data.bin", &"x".repeat(1024 * 1024))]);
    let run = node.troops(["pull"]).failure();
    let message = format!(
        "no space left on the filesystem holding `{}`",
        work.display()
    );
    assert!(run.stderr.contains(&message), "{}", run.stderr);
    assert_eq!(state(&node), (Some(first.clone()), Some(first)));
    let record = &node.status_json()["history"][0];
    assert_eq!(record["commit"], second.as_str());
    assert!(
        record["reason"].as_str().unwrap().contains("no space left"),
        "{record}"
    );
    // With room again, the next pull deploys it.
    drop(disk);
    next_pull_completes(&node, &second);
}

#[test]
fn a_hanging_commit_does_not_block_its_fix() {
    let node = Node::new();
    node.write_config("deploy_timeout = \"2s\"\n");
    node.troops(["init"]).success();
    let origin = DeployRepo::with("print('fine')\n");
    node.add_remote("origin", &origin.path_str());
    node.troops(["pull"]).success();
    let good = origin.head();
    origin.commit(&[(
        "deploy.py",
        "import time\nprint('hanging', flush=True)\ntime.sleep(600)\n",
    )]);
    let run = node.troops(["pull"]).failure();
    assert!(run.stderr.contains("timed out"), "{}", run.stderr);
    assert_eq!(state(&node), (Some(good.clone()), Some(good)));
    // The fix arrives: the next pull fetches it and deploys it.
    let fix = origin.commit(&[("deploy.py", "print('fixed')\n")]);
    let run = node.troops(["pull"]).success();
    assert!(run.stderr.contains("fixed"), "{}", run.stderr);
    assert_eq!(state(&node), (Some(fix.clone()), Some(fix)));
}
