//! Status reports and `troops fleet`: namespaced nodes pull one deployment
//! from a git server over SSH and push signed reports back to it; the admin
//! reads them from a clone.

mod common;

use std::time::{Duration, Instant};

use common::pull_fleet::{PullFleet, row};

#[test]
fn fleet_shows_every_node_its_failures_and_who_went_silent() {
    let names: Vec<String> = ["app-1", "app-2", "app-3"]
        .map(|n| format!("{n}.example.com"))
        .to_vec();
    let fleet = PullFleet::start(&names, "2s");

    // Before any node reported, the deployment's key file still lists them.
    let good = fleet.publish("v1", &[], "");
    let view = fleet.fleet();
    for name in &names {
        assert_eq!(row(&view, name)["state"], "no report", "{view:#}");
    }

    for run in fleet.pull(&[0, 1, 2]) {
        assert_eq!(run.code, Some(0), "{}", run.stderr);
    }
    let view = fleet.fleet();
    for name in &names {
        let node = row(&view, name);
        assert_eq!(node["state"], "current", "{view:#}");
        assert_eq!(node["verified"], true, "{view:#}");
        assert_eq!(node["report"]["deployed"]["commit"], good.as_str());
        assert_eq!(node["report"]["last_deploy"]["result"], "success");
        assert_eq!(node["report"]["pull"], "ok");
    }
    assert_eq!(
        view["commits"],
        serde_json::json!([{"commit": good, "nodes": 3}])
    );
    // On the git server, its owner reads the reports in place.
    let troops = fleet.server.troops();
    let run = fleet
        .client
        .ssh(
            &fleet.server,
            "alice",
            &[&troops, "fleet", "--repository", "deploy.git", "--json"],
        )
        .success();
    let in_place: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(in_place["commits"], view["commits"], "{in_place:#}");
    assert_eq!(in_place["nodes"].as_array().unwrap().len(), 3);

    // With the update hook README gives, a node's key writes its own report
    // and nothing else: not another node's, not the deploy branch.
    // (Its own reports reaching the server, above, are the control.)
    let theirs = fleet.report_ref(&names[1]).unwrap();
    let evil = fleet
        .repo
        .git(&["commit-tree", "HEAD^{tree}", "-p", "HEAD", "-m", "evil"]);
    for dst in [
        format!("refs/troops/status/{}", names[1]),
        "refs/heads/master".to_owned(),
    ] {
        let run = fleet.push_as_node(0, &evil, &dst);
        assert_ne!(run.code, Some(0), "{dst}");
        assert!(
            run.stderr
                .contains("may write refs/troops/status/app-1.example.com only"),
            "{}",
            run.stderr
        );
    }
    assert_eq!(fleet.report_ref(&names[1]).unwrap(), theirs);
    assert_eq!(fleet.server_ref("refs/heads/master").unwrap(), good);

    let before = fleet.report_ref(&names[0]).unwrap();

    // A commit that fails on app-2: its row says so, the others run it.
    let bad_here = fleet.publish("v2", &[&names[1]], "");
    let runs = fleet.pull(&[0, 1, 2]);
    assert_eq!(runs[1].code, Some(1), "{}", runs[1].stderr);
    let view = fleet.fleet();
    let failing = row(&view, &names[1]);
    assert_eq!(failing["report"]["last_deploy"]["result"], "failure");
    assert_eq!(
        failing["report"]["last_deploy"]["commit"],
        bad_here.as_str()
    );
    assert_eq!(failing["report"]["deployed"]["commit"], good.as_str());
    assert_eq!(failing["report"]["pull"], "failed");
    assert_eq!(
        row(&view, &names[0])["report"]["deployed"]["commit"],
        bad_here.as_str()
    );
    let table = fleet.fleet_command(&[]);
    let line = table
        .stdout
        .lines()
        .find(|l| l.starts_with(&names[1]))
        .unwrap_or_else(|| panic!("{}", table.stdout));
    assert!(
        line.contains("failure") && line.contains("failed"),
        "{line}"
    );
    assert!(
        table
            .stdout
            .contains(&format!("{}  2 node(s)", &bad_here[..12])),
        "{}",
        table.stdout
    );

    // app-3 stops pulling; once three heartbeats have passed without its
    // report, it is stale, while the others' heartbeats keep them current.
    let silent_since = Instant::now();
    while silent_since.elapsed() < Duration::from_secs(7) {
        std::thread::sleep(Duration::from_millis(2100));
        fleet.pull(&[0, 1]);
    }
    let view = fleet.fleet();
    assert_eq!(row(&view, &names[2])["state"], "stale", "{view:#}");
    assert_eq!(row(&view, &names[0])["state"], "current", "{view:#}");
    assert_eq!(row(&view, &names[1])["state"], "current", "{view:#}");
    assert_ne!(fleet.report_ref(&names[0]).unwrap(), before);
    let table = fleet.fleet_command(&[]);
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.starts_with(&names[2]) && l.contains("stale")),
        "{}",
        table.stdout
    );
}

#[test]
fn fleet_names_what_is_wrong() {
    let outside = tempfile::tempdir().unwrap();
    let fleet = |dir: &std::path::Path, args: &[&str]| {
        common::Run::from(
            common::clean_command(env!("CARGO_BIN_EXE_troops"), dir)
                .current_dir(dir)
                .arg("fleet")
                .args(args)
                .output()
                .unwrap(),
        )
    };
    let run = fleet(outside.path(), &[]).failure();
    assert!(
        run.stderr
            .contains("cannot read `.` as a git repository: fatal: not a git repository"),
        "{}",
        run.stderr
    );

    let repo = common::DeployRepo::with("print('x')\n");
    let run = fleet(repo.path(), &["--rev", "nosuch"]).failure();
    assert!(
        run.stderr.contains("--rev `nosuch` names no commit"),
        "{}",
        run.stderr
    );
    for remote in ["-oProxyCommand=touch /tmp/pwned", "/nonexistent"] {
        let run = fleet(repo.path(), &["--", remote]).failure();
        assert!(
            run.stderr.contains(remote.split(' ').next().unwrap()),
            "{}",
            run.stderr
        );
    }

    // No report and no keys file: said, and an empty fleet.
    let run = fleet(repo.path(), &[]).success();
    assert!(
        run.stderr.contains("has no nodes.allowed_signers"),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout.contains("no node has reported yet"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_report_is_pushed_when_something_changed_or_a_heartbeat_is_due() {
    let server = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        common::Run::from(
            common::clean_command("git", server.path())
                .arg("--git-dir")
                .arg(server.path())
                .args(args)
                .output()
                .unwrap(),
        )
    };
    git(&["init", "--quiet", "--bare"]).success();
    let repo = common::DeployRepo::with("print('v1')\n");
    repo.git(&["push", "--quiet", server.path().to_str().unwrap(), "master"]);
    let report = || {
        git(&[
            "rev-parse",
            &format!("refs/troops/status/{}", common::HOSTNAME),
        ])
        .success()
        .stdout
    };
    let node = common::Node::new();
    node.troops(["init"]).success();
    node.add_remote("origin", server.path().to_str().unwrap());
    let configure = |heartbeat: &str| {
        node.write_config(&format!(
            "[report]\nurl = \"{}\"\nheartbeat = \"{heartbeat}\"\n",
            server.path().display()
        ))
    };
    configure("1h");
    node.troops(["pull"]).success();
    let first = report();
    let status = node.status_json();
    assert_eq!(
        status["last_report"]["url"],
        server.path().to_str().unwrap(),
        "{status:#}"
    );

    // Nothing changed and no heartbeat due: nothing is pushed, by a pull
    // or by a check that finds what the last one found.
    node.troops(["pull"]).success();
    node.troops(["check"]).success();
    let checked = report();
    assert_ne!(checked, first, "a first check is news");
    node.troops(["pull"]).success();
    node.troops(["check"]).success();
    assert_eq!(report(), checked);

    // A heartbeat due: the same facts are reported again.
    configure("1s");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    node.troops(["pull"]).success();
    assert_ne!(report(), checked);

    // An unreachable report remote is a warning: the pull still succeeds.
    node.write_config("[report]\nurl = \"/nonexistent/reports.git\"\n");
    let run = node.troops(["pull"]).success();
    assert!(
        run.stderr
            .contains("cannot push the status report to `/nonexistent/reports.git`"),
        "{}",
        run.stderr
    );
}
