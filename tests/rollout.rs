//! Gradual rollout across a pull fleet: `rollout` in troops.yaml.

mod common;

use common::{DeployRepo, Node};

fn fleet(origin: &DeployRepo) -> Vec<Node> {
    (0..20)
        .map(|i| {
            let mut node = Node::new();
            node.hostname = format!("node-{i}.example.com");
            node.troops(["init"]).success();
            node.add_remote("origin", &origin.path_str());
            node
        })
        .collect()
}

/// Pulls on every node; returns the indexes of the nodes that deployed `commit`.
fn pull_all(nodes: &[Node], commit: &str) -> Vec<usize> {
    let mut took = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let run = node.troops(["pull", "--json"]).success();
        let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        let deployed = node.status_json()["commit"] == commit;
        match json["result"].as_str().unwrap() {
            "held-back" => assert!(!deployed),
            "deployed" | "nothing" => assert!(deployed, "{}", run.stderr),
            other => panic!("node {i}: {other}: {}", run.stderr),
        }
        if deployed {
            took.push(i);
        }
    }
    took
}

#[test]
fn a_quarter_then_everyone_and_the_first_set_is_kept() {
    let origin = DeployRepo::new();
    origin.commit(&[
        ("deploy.py", "print('v1')\n"),
        ("requirements.txt", ""),
        ("troops.yaml", "rollout: 25\n"),
    ]);
    let nodes = fleet(&origin);
    let first = pull_all(&nodes, &origin.head());
    assert!(
        (2..=8).contains(&first.len()),
        "{} of 20 took a 25% rollout",
        first.len()
    );

    // A new commit at the same fraction reaches the same nodes.
    origin.commit(&[("deploy.py", "print('v2')\n")]);
    let again = pull_all(&nodes, &origin.head());
    assert_eq!(again, first);

    origin.commit(&[("troops.yaml", "rollout: 100%\n")]);
    let all = pull_all(&nodes, &origin.head());
    assert_eq!(all, (0..20).collect::<Vec<_>>());
}
