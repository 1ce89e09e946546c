//! `troops pull` over SSH: a git server on a loopback sshd that authorises
//! the node's own key, fetched by a namespaced node with the system's known
//! hosts or with the host key its seed pinned.

mod common;

use common::DeployRepo;
use common::cluster::{Client, SshNode};

/// A bare repository in alice's home on `server` holding a deployment of
/// `deploy_py`: its SSH URL and the deployment.
fn serve_deployment(client: &Client, server: &SshNode, deploy_py: &str) -> (String, DeployRepo) {
    let url = client.bare_repository(server, "alice", "deploy");
    let repo = DeployRepo::with(deploy_py);
    client.push_to("alice", repo.path(), &url).success();
    (url, repo)
}

#[test]
fn pull_fetches_over_ssh_with_the_nodes_key() {
    let client = Client::new();
    let server = SshNode::start("git.example.com", &client);
    let node = SshNode::start("web-1.example.com", &client);
    let (url, repo) = serve_deployment(
        &client,
        &server,
        "import troops\nprint('pulled onto', troops.hostname())\n",
    );
    node.git(&["remote", "add", "origin", &url]).success();

    // Unknown host key, key not authorised: the remote is unreachable, said so.
    let run = node.troops_inside(&["pull"]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains("cannot fetch `origin`"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("no remote could be fetched"),
        "{}",
        run.stderr
    );

    node.trust_host(&server);
    server.authorize("alice", &node.public_key());
    let run = node.troops_inside(&["pull"]).success();
    assert!(
        run.stderr.contains("pulled onto web-1.example.com"),
        "{}",
        run.stderr
    );
    assert_eq!(node.deployed(), Some(repo.head()));
    assert_eq!(node.branch(), Some(repo.head()));

    let run = node.troops_inside(&["pull"]).success();
    assert!(
        run.stderr.trim_end().ends_with("troops: pull: nothing new"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_seed_pins_the_git_servers_host_key() {
    let client = Client::new();
    let server = SshNode::start("git.pinned.example.com", &client);
    let node = SshNode::start("web-2.example.com", &client);
    let impostor = SshNode::start("impostor.example.com", &client);
    let (url, repo) = serve_deployment(&client, &server, "print('pulled over a pinned key')\n");
    server.authorize("alice", &node.public_key());

    let seed = |host_line: &str| {
        let text = format!(
            "troops:\n  remotes: [{{name: origin, url: \"{url}\"}}]\n  known_hosts: [\"{}\"]\n",
            host_line.trim()
        );
        std::fs::write(node.dir.path().join("etc/troops/seed.yaml"), text).unwrap();
        // Asked with --file: a seed applies again on the same instance.
        node.troops_inside(&["seed", "--no-pull", "--file", "/etc/troops/seed.yaml"])
            .success();
    };
    // Another server's key pinned for this address: refused, nothing deployed.
    let wrong = impostor.known_host_line().replace(
        &format!("[{}]:{}", impostor.addr, impostor.port),
        &format!("[{}]:{}", server.addr, server.port),
    );
    seed(&wrong);
    let run = node.troops_inside(&["pull"]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains("cannot fetch `origin`"),
        "{}",
        run.stderr
    );
    assert_eq!(node.deployed(), None);

    seed(&server.known_host_line());
    let run = node.troops_inside(&["pull"]).success();
    assert!(
        run.stderr.contains("pulled over a pinned key"),
        "{}",
        run.stderr
    );
    assert_eq!(node.deployed(), Some(repo.head()));
    // Nothing system-wide was needed or changed.
    assert!(!node.dir.path().join("etc/ssh/ssh_known_hosts").exists());
}
