//! Seeing before doing: `troops deploy --dry-run`, the content diff, and the
//! bundled PyDebianAdmin wheel installed without any package index.

mod common;

use std::fs;

use common::{DeployRepo, Node};

const MOTD: &str = r#"
import os
from pydebianadmin import files

files.file(os.environ["TROOPS_ROOT"] + "/motd", content="welcome to CONTENT\n", mode=0o644)
"#;

#[test]
fn dry_run_reports_the_change_and_changes_nothing() {
    let node = Node::new();
    let wheels = common::bundled_wheels();
    let repo = DeployRepo::new();
    repo.commit(&[
        ("deploy.py", &MOTD.replace("CONTENT", "v1")),
        ("requirements.txt", "PyDebianAdmin\n"),
    ]);
    let deploy = |extra: &[&str]| {
        let mut cmd = node.command(["deploy", "--repository", &repo.path_str()]);
        // No index at all: the bundled wheel must be enough.
        cmd.args(extra)
            .env("TROOPS_WHEELS", wheels.path())
            .env("PIP_INDEX_URL", "http://127.0.0.1:9/simple");
        common::Run::from(cmd.output().unwrap())
    };
    let motd = node.root().join("motd");

    let run = deploy(&["--dry-run"]).success();
    assert!(
        run.stderr
            .contains(&format!("files: {} would be created", motd.display())),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("nothing was deployed"),
        "{}",
        run.stderr
    );
    assert!(!motd.exists());
    let status = node.status_json();
    assert!(status["commit"].is_null());
    assert!(status["history"].as_array().unwrap().is_empty());

    deploy(&[]).success();
    assert_eq!(fs::read_to_string(&motd).unwrap(), "welcome to v1\n");

    repo.commit(&[("deploy.py", &MOTD.replace("CONTENT", "v2"))]);
    let run = deploy(&["--dry-run"]).success();
    assert!(run.stderr.contains("-welcome to v1"), "{}", run.stderr);
    assert!(run.stderr.contains("+welcome to v2"), "{}", run.stderr);
    assert_eq!(fs::read_to_string(&motd).unwrap(), "welcome to v1\n");

    let run = deploy(&[]).success();
    assert!(run.stderr.contains("+welcome to v2"), "{}", run.stderr);
    assert_eq!(fs::read_to_string(&motd).unwrap(), "welcome to v2\n");
}

/// A deployment that needs only the bundled library gets it unpacked from
/// the wheel: the environment has no pip of its own and none runs, yet
/// deploy.py can still `python -m pip install` (the system's pip wheel),
/// which can even replace what Troops unpacked.
#[test]
fn the_bundled_library_needs_no_pip_and_deploy_py_can_still_run_pip() {
    let node = Node::new();
    let wheels = common::bundled_wheels();
    let deploy_py = format!(
        r#"
import importlib.metadata, os, subprocess, sys, sysconfig
import pydebianadmin
def installer():
    return importlib.metadata.distribution("PyDebianAdmin").read_text("INSTALLER").strip()
site = sysconfig.get_paths()["purelib"]
print("installed by", installer(), "own pip", os.path.isdir(os.path.join(site, "pip")))
subprocess.run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check",
                "--no-index", "--find-links", {wheels:?}, "--force-reinstall", "PyDebianAdmin"],
               check=True)
print("reinstalled by", installer())
"#,
        wheels = wheels.path().to_str().unwrap()
    );
    let repo = DeployRepo::new();
    repo.commit(&[
        ("deploy.py", deploy_py.as_str()),
        ("requirements.txt", "PyDebianAdmin >= 0.1  # bundled\n"),
    ]);
    let mut cmd = node.command(["deploy", "--repository", &repo.path_str()]);
    cmd.env("TROOPS_WHEELS", wheels.path())
        .env("PIP_INDEX_URL", "http://127.0.0.1:9/simple");
    let run = common::Run::from(cmd.output().unwrap()).success();
    let (build, deploy) = run.stderr.split_once("installed by").unwrap();
    assert!(!build.contains("pip"), "pip ran to build it:\n{build}");
    assert!(
        deploy.starts_with(" troops own pip False"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("reinstalled by pip"), "{}", run.stderr);
}
