//! `troops check`: drift of a node from its deployed commit, found by a dry
//! run that records no deploy; exit 0 clean, 1 drift, 2 failed.

mod common;

use std::fs;

use common::{DeployRepo, Node, Run};

const DEPLOY_PY: &str = r#"
import os
from pydebianadmin import files

if os.environ.get("FAIL_DRY_RUN") and os.environ.get("PYDEBIANADMIN_DRY_RUN"):
    raise SystemExit("this deployment cannot run dry")
files.file(os.environ["TROOPS_ROOT"] + "/etc/motd", content="managed by troops\n", mode=0o644)
"#;

struct Setup {
    node: Node,
    wheels: tempfile::TempDir,
}

impl Setup {
    /// A node that pulled and deployed the PyDebianAdmin deployment.
    fn deployed() -> Setup {
        let setup = Setup::new();
        let repo = DeployRepo::new();
        repo.commit(&[
            ("deploy.py", DEPLOY_PY),
            ("requirements.txt", "PyDebianAdmin\n"),
        ]);
        setup.node.add_remote("origin", &repo.path_str());
        setup.troops(&["pull"]).success();
        setup
    }

    fn new() -> Setup {
        let setup = Setup {
            node: Node::new(),
            wheels: common::bundled_wheels(),
        };
        setup.node.troops(["init"]).success();
        setup
    }

    fn troops(&self, args: &[&str]) -> Run {
        let mut cmd = self.node.command(args);
        cmd.env("TROOPS_WHEELS", self.wheels.path());
        Run::from(cmd.output().unwrap())
    }

    fn check(&self) -> (Run, serde_json::Value) {
        let run = self.troops(&["check", "--json"]);
        let json = serde_json::from_str(&run.stdout).unwrap_or(serde_json::Value::Null);
        (run, json)
    }

    fn deploys(&self) -> usize {
        self.node.status_json()["history"].as_array().unwrap().len()
    }
}

#[test]
fn check_finds_a_hand_edit_and_the_next_deploy_repairs_it() {
    let (run, _) = Setup::new().check();
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("nothing is deployed"), "{}", run.stderr);

    let setup = Setup::deployed();
    let node = &setup.node;
    let deployed = node.status_json()["commit"].as_str().unwrap().to_owned();
    let motd = node.root().join("etc/motd");
    assert_eq!(fs::read_to_string(&motd).unwrap(), "managed by troops\n");

    let (run, json) = setup.check();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stderr.contains("no drift"), "{}", run.stderr);
    assert_eq!(json["result"], "clean");
    assert_eq!(json["commit"], deployed.as_str());

    fs::write(&motd, "edited by hand\n").unwrap();
    let (run, json) = setup.check();
    assert_eq!(run.code, Some(1), "drift exits 1: {}", run.stderr);
    assert_eq!(json["result"], "drift");
    assert_eq!(
        json["changes"],
        serde_json::json!([format!("files: {} content would change", motd.display())])
    );
    assert_eq!(fs::read_to_string(&motd).unwrap(), "edited by hand\n");
    assert_eq!(setup.deploys(), 1, "a check is not a deploy");
    assert_eq!(node.status_json()["last_check"]["result"], "drift");
    let metrics = fs::read_to_string(node.lib().join("state/metrics.prom")).unwrap();
    assert!(metrics.contains("\ntroops_drift 1\n"), "{metrics}");

    setup.troops(&["deploy"]).success();
    assert_eq!(fs::read_to_string(&motd).unwrap(), "managed by troops\n");
    let (run, _) = setup.check();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let metrics = fs::read_to_string(node.lib().join("state/metrics.prom")).unwrap();
    assert!(metrics.contains("\ntroops_drift 0\n"), "{metrics}");
}

#[test]
fn a_check_that_fails_exits_2_and_records_no_deploy() {
    let setup = Setup::deployed();
    let node = &setup.node;
    let history = node.status_json()["history"].clone();

    let mut cmd = node.command(["check", "--json"]);
    cmd.env("TROOPS_WHEELS", setup.wheels.path())
        .env("FAIL_DRY_RUN", "1");
    let run = Run::from(cmd.output().unwrap());
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains("this deployment cannot run dry"),
        "{}",
        run.stderr
    );
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["result"], "failed");
    assert_eq!(node.status_json()["history"], history);
    assert_eq!(node.status_json()["last_check"]["result"], "failed");
    let metrics = fs::read_to_string(node.lib().join("state/metrics.prom")).unwrap();
    assert!(
        metrics.contains("\ntroops_last_check_success 0\n"),
        "{metrics}"
    );
}
