//! Roles from each source, `troops roles` and `troops hosts`, and which
//! deployables run.

mod common;

use common::{DeployRepo, Node};

const DEPLOY: &str = r#"
import os, pathlib
import troops

def mark(name):
    pathlib.Path(os.environ["TROOPS_ROOT"], name).write_text("ran")

@troops.deployable(roles=["web"])
def web():
    mark("web-ran")

@troops.deployable(roles=["db"])
def db():
    mark("db-ran")

@troops.deployable()
def everywhere():
    mark("everywhere-ran")
    print("roles:", troops.roles())

# Defined after the deployables: still counts.
troops.define_role("web", hosts=["shellbox-1.example.com", "shellbox-2.example.com"])
troops.define_role("db", hosts=["db-1.example.com"])
troops.activate_role("greeter")
"#;

#[test]
fn roles_come_from_deploy_py_and_node_configuration() {
    let node = Node::new();
    node.write_config("roles = [\"monitored\"]\n");
    let repo = DeployRepo::with(DEPLOY);
    let run = node
        .troops(["roles", "--repository", &repo.path_str()])
        .success();
    assert_eq!(run.stdout, "greeter\nmonitored\nweb\n");
}

#[test]
fn roles_and_hosts_run_no_deployable_and_record_nothing() {
    let node = Node::new();
    let repo = DeployRepo::with(DEPLOY);
    node.troops(["roles", "--repository", &repo.path_str()])
        .success();
    let run = node
        .troops(["hosts", "web", "--repository", &repo.path_str()])
        .success();
    assert_eq!(
        run.stdout,
        "shellbox-1.example.com\nshellbox-2.example.com\n"
    );
    let run = node
        .troops(["hosts", "nosuchrole", "--repository", &repo.path_str()])
        .success();
    assert_eq!(run.stdout, "");
    for marker in ["web-ran", "db-ran", "everywhere-ran"] {
        assert!(!node.root().join(marker).exists(), "{marker} ran");
    }
    assert!(node.status_json()["history"].as_array().unwrap().is_empty());
}

#[test]
fn only_matching_deployables_run() {
    let node = Node::new();
    let repo = DeployRepo::with(DEPLOY);
    let run = node.deploy(&repo).success();
    assert!(node.root().join("web-ran").exists());
    assert!(node.root().join("everywhere-ran").exists());
    assert!(!node.root().join("db-ran").exists());
    assert!(
        run.stderr
            .contains("troops: skipping db (needs a role of: db)"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("roles: ['greeter', 'web']"),
        "{}",
        run.stderr
    );
}

#[test]
fn hostname_decides_defined_roles() {
    let mut node = Node::new();
    node.hostname = "DB-1.example.com.".to_owned();
    let repo = DeployRepo::with(DEPLOY);
    let run = node
        .troops(["roles", "--repository", &repo.path_str()])
        .success();
    assert_eq!(run.stdout, "db\ngreeter\n");
}

#[test]
fn roles_of_the_node_repository_and_bad_configuration() {
    let node = Node::new();
    node.troops(["init"]).success();
    let run = node.troops(["roles"]).failure();
    assert!(
        run.stderr.contains("has no branch `master`"),
        "{}",
        run.stderr
    );

    node.write_config("roles = [\"two words\"]\n");
    let run = node.troops(["roles"]).failure();
    assert!(
        run.stderr.contains("invalid role `two words`"),
        "{}",
        run.stderr
    );
    node.write_config("rolez = []\n");
    let run = node.troops(["roles"]).failure();
    assert!(
        run.stderr.contains("unknown field `rolez`"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_failing_deploy_py_fails_roles() {
    let node = Node::new();
    let repo = DeployRepo::with("raise SystemExit('no roles today')\n");
    let run = node
        .troops(["roles", "--repository", &repo.path_str()])
        .failure();
    assert!(run.stderr.contains("no roles today"), "{}", run.stderr);
    assert!(
        run.stderr.contains("while its roles were being read"),
        "{}",
        run.stderr
    );
}
