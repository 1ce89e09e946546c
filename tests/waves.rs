//! Pull-mode canary waves (`rollout: {canary, wait, max_failures}` in
//! troops.yaml): 20 namespaced nodes pull from one git server over SSH and
//! decide from the canaries' signed status reports alone.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use common::cluster::SshNode;
use common::pull_fleet::{PullFleet, row, tried};
use common::{Run, clean_command};

/// A node's place in [0, 100), as README says Troops places it: the first
/// eight bytes of SHA-256 of the lower-case hostname, modulo 10,000.
fn position(hostname: &str) -> f64 {
    let digest = Sha256::digest(hostname.as_bytes());
    let first = u64::from_be_bytes(digest[..8].try_into().unwrap());
    (first % 10_000) as f64 / 100.0
}

/// 20 hostnames of which exactly two fall inside 10%: those two first.
fn hostnames() -> Vec<String> {
    let (mut canaries, mut others) = (Vec::new(), Vec::new());
    for i in 0.. {
        let name = format!("w{i}.example.com");
        if position(&name) < 10.0 {
            if canaries.len() < 2 {
                canaries.push(name);
            }
        } else if others.len() < 18 {
            others.push(name);
        }
        if canaries.len() == 2 && others.len() == 18 {
            break;
        }
    }
    canaries.into_iter().chain(others).collect()
}

const CANARIES: [usize; 2] = [0, 1];

fn others() -> Vec<usize> {
    (2..20).collect()
}

/// Asserts that each run held its commit back with a reason containing `why`.
#[track_caller]
fn held_back(runs: &[Run], why: &str) {
    held_back_saying(runs, &[why]);
}

/// Asserts that each run held its commit back with a reason containing
/// every one of `words`.
#[track_caller]
fn held_back_saying(runs: &[Run], words: &[&str]) {
    for run in runs {
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        assert_eq!(json["result"], "held-back", "{}", run.stderr);
        let reason = json["remotes"][0]["reason"].as_str().unwrap();
        assert!(words.iter().all(|w| reason.contains(w)), "{reason}");
    }
}

#[track_caller]
fn deployed(runs: &[Run]) {
    for run in runs {
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        assert_eq!(json["result"], "deployed", "{}", run.stderr);
    }
}

#[test]
fn canary_waves_follow_the_canaries_verified_reports() {
    let names = hostnames();
    let fleet = PullFleet::start(&names, "1h");
    let (a, b) = (names[0].as_str(), names[1].as_str());
    let nobody_else_tried = |commit: &str| {
        for &i in &others() {
            let node = &fleet.nodes[i];
            assert!(
                !tried(node).iter().any(|c| c == commit),
                "{} tried {commit}",
                node.hostname
            );
        }
    };

    let v1 = fleet.publish("v1", &[], "");
    deployed(&fleet.pull(&(0..20).collect::<Vec<_>>()));

    // A commit that fails on the canaries reaches nobody else, even after the wait.
    let waves = "rollout: {canary: 10%, wait: 2s, max_failures: 0}\n";
    let v2 = fleet.publish("v2", &[a, b], waves);
    for run in fleet.pull(&CANARIES) {
        assert_eq!(run.code, Some(1), "{}", run.stderr);
    }
    held_back(&fleet.pull(&others()), "2 canary node(s) failed");
    std::thread::sleep(Duration::from_millis(2500));
    held_back(&fleet.pull(&others()), "failed to deploy");
    nobody_else_tried(&v2);
    assert!(
        fleet.nodes[2..]
            .iter()
            .all(|n| n.deployed() == Some(v1.clone()))
    );

    // A good commit: the others hold back until the wait after the first
    // canary's success report has passed, then take it.
    let v3 = fleet.publish("v3", &[], "rollout: {canary: 10%, wait: 10s}\n");
    deployed(&fleet.pull(&CANARIES));
    let canaries_done = Instant::now();
    held_back(&fleet.pull(&[2, 3, 4]), "the others wait until");
    nobody_else_tried(&v3);
    let wait_over = canaries_done + Duration::from_secs(11);
    std::thread::sleep(wait_over.saturating_duration_since(Instant::now()));
    deployed(&fleet.pull(&others()));
    assert!(fleet.nodes.iter().all(|n| n.deployed() == Some(v3.clone())));

    // Silent canaries: nobody else deploys, however long they wait.
    let v4 = fleet.publish("v4", &[], "rollout: {canary: 10%, wait: 1s}\n");
    held_back_saying(&fleet.pull(&others()), &["waiting for", a, b]);
    std::thread::sleep(Duration::from_millis(1500));
    held_back_saying(&fleet.pull(&[2, 10, 19]), &["waiting for", a, b]);
    nobody_else_tried(&v4);

    // Mixed canaries: one fails, one succeeds; max_failures decides.
    let v5 = fleet.publish("v5", &[a], "rollout: {canary: 10%, max_failures: 0}\n");
    let runs = fleet.pull(&CANARIES);
    assert_eq!((runs[0].code, runs[1].code), (Some(1), Some(0)));
    held_back(&fleet.pull(&others()), "1 canary node(s) failed");
    // Deleting the failing canary's report (anyone who may push to the
    // report remote can) lets nobody through: a silent canary counts as a
    // failure.
    fleet.delete_report(a);
    held_back(&fleet.pull(&[2, 3]), &format!("waiting for {a}"));
    nobody_else_tried(&v5);
    let v6 = fleet.publish("v6", &[a], "rollout: {canary: 10%, max_failures: 1}\n");
    let runs = fleet.pull(&CANARIES);
    assert_eq!((runs[0].code, runs[1].code), (Some(1), Some(0)));
    deployed(&fleet.pull(&others()));
    assert!(
        fleet.nodes[1..]
            .iter()
            .all(|n| n.deployed() == Some(v6.clone()))
    );

    // Forged success reports for both canaries, by anyone who may push to
    // the report remote: unsigned, and signed by a non-canary node's key.
    let v7 = fleet.publish("v7", &[], "rollout: {canary: 10%}\n");
    forge_report(&fleet, a, &v7, None);
    forge_report(&fleet, b, &v7, Some(&fleet.nodes[5]));
    held_back_saying(&fleet.pull(&others()), &["waiting for", a, b]);
    nobody_else_tried(&v7);
    let view = fleet.fleet();
    let (row_a, row_b) = (row(&view, a), row(&view, b));
    assert_eq!(row_a["verified"], false, "{view:#}");
    assert!(
        row_a["problem"].as_str().unwrap().contains("not signed"),
        "{view:#}"
    );
    assert_eq!(row_b["verified"], false, "{view:#}");
    assert!(
        row_b["problem"]
            .as_str()
            .unwrap()
            .contains(&format!("signed by {}'s key", names[5])),
        "{view:#}"
    );
    // Forged reports count for nothing in the commit counts either.
    assert_eq!(view["commits"][0]["nodes"], 18, "{view:#}");

    // Control: the real canaries' reports let the others through.
    deployed(&fleet.pull(&CANARIES));
    deployed(&fleet.pull(&others()));
    assert!(fleet.nodes.iter().all(|n| n.deployed() == Some(v7.clone())));
}

/// Pushes a report for `hostname` saying it deployed `commit` an hour ago,
/// signed by `signer`'s node key, or unsigned.
fn forge_report(fleet: &PullFleet, hostname: &str, commit: &str, signer: Option<&SshNode>) {
    let dir = tempfile::tempdir().unwrap();
    let git = |args: &[&str], input: Option<&str>| -> String {
        let mut cmd = clean_command("git", dir.path());
        cmd.arg("--git-dir").arg(dir.path()).args(args);
        run_with_input(cmd, input)
    };
    git(&["init", "--quiet", "--bare"], None);
    let json = serde_json::json!({
        "version": 1, "hostname": hostname,
        "deployed": {"commit": commit, "at": "2026-01-01T00:00:00Z"},
        "last_deploy": {"commit": commit, "result": "success", "trigger": "pull",
                        "finished_at": "2026-01-01T00:00:00Z", "reason": null},
        "pull": "ok", "held_back": null, "check": null,
        "reported_at": "2026-01-01T00:00:00Z", "heartbeat_seconds": 3600,
    });
    let blob = git(&["hash-object", "-w", "--stdin"], Some(&json.to_string()));
    let tree = git(
        &["mktree"],
        Some(&format!("100644 blob {blob}\tstatus.json\n")),
    );
    let key;
    let mut args = vec![];
    if let Some(node) = signer {
        key = format!(
            "user.signingKey={}",
            node.lib().join("ssh/id_ed25519").display()
        );
        args.extend(["-c", "gpg.format=ssh", "-c", &key]);
        args.extend(["commit-tree", "-S", "-m", "forged", &tree]);
    } else {
        args.extend(["commit-tree", "-m", "forged", &tree]);
    }
    let forged = git(&args, None);
    let out = fleet
        .client
        .command("git", "alice")
        .arg("--git-dir")
        .arg(dir.path())
        .args(["push", "--quiet", "--force", &fleet.url])
        .arg(format!("{forged}:refs/troops/status/{hostname}"))
        .output()
        .unwrap();
    Run::from(out).success();
}

fn run_with_input(mut cmd: Command, input: Option<&str>) -> String {
    use std::io::Write;
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    if let Some(input) = input {
        stdin.write_all(input.as_bytes()).unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
