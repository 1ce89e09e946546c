//! A pull fleet: namespaced nodes (cluster.rs) that pull one deployment
//! from one git server over SSH and push their status reports back to it.

use std::fs;
use std::path::Path;

use super::cluster::{Client, SshNode};
use super::{DeployRepo, Run, clean_command};

pub struct PullFleet {
    pub client: Client,
    pub server: SshNode,
    pub nodes: Vec<SshNode>,
    /// The deployment's URL on the server, also the nodes' report remote.
    pub url: String,
    /// The admin's clone of the deployment.
    pub repo: DeployRepo,
}

impl PullFleet {
    /// Nodes named `hostnames`, each reporting to the server with this
    /// heartbeat, and a deployment whose nodes.allowed_signers lists them.
    pub fn start(hostnames: &[String], heartbeat: &str) -> PullFleet {
        let client = Client::new();
        let server = SshNode::start("git.fleet.example.com", &client);
        let url = client.bare_repository(&server, "alice", "deploy");
        // The hook README gives for a git server where nodes share an account.
        let hook = server.dir.path().join("home/alice/deploy.git/hooks/update");
        fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/report-update-hook"),
            &hook,
        )
        .unwrap();
        std::os::unix::fs::chown(&hook, Some(2001), Some(2001)).unwrap();
        let nodes: Vec<SshNode> = hostnames
            .iter()
            .map(|name| SshNode::start(name, &client))
            .collect();
        let mut keys = String::new();
        for node in &nodes {
            node.trust_host(&server);
            server.authorize("alice", &node_key_line(&node.hostname, &node.public_key()));
            let etc = node.dir.path().join("etc/troops");
            fs::write(
                etc.join("gitconfig"),
                format!("[remote \"origin\"]\n\turl = {url}\n"),
            )
            .unwrap();
            fs::write(
                etc.join("troops.toml"),
                format!("[report]\nurl = \"{url}\"\nheartbeat = \"{heartbeat}\"\n"),
            )
            .unwrap();
            keys.push_str(&format!("{} {}", node.hostname, node.public_key()));
        }
        let repo = DeployRepo::new();
        repo.write("nodes.allowed_signers", &keys);
        PullFleet {
            client,
            server,
            nodes,
            url,
            repo,
        }
    }

    /// Commits a deployment that prints `version` and fails on the nodes
    /// named in `fail`, with `troops_yaml`, and pushes it to the server.
    pub fn publish(&self, version: &str, fail: &[&str], troops_yaml: &str) -> String {
        let deploy_py = format!(
            "import sys\nimport troops\nif troops.hostname() in {fail:?}:\n    \
             sys.exit(f'{{troops.hostname()}}: {version} is broken here')\n\
             print('{version} on', troops.hostname())\n"
        );
        let commit = self.repo.commit(&[
            ("deploy.py", &deploy_py),
            ("requirements.txt", ""),
            ("troops.yaml", troops_yaml),
        ]);
        self.client
            .push_to("alice", self.repo.path(), &self.url)
            .success();
        commit
    }

    /// `troops pull --json` on the nodes at `which`, a few at once (sshd
    /// drops connections beyond its MaxStartups, 10 by default).
    pub fn pull(&self, which: &[usize]) -> Vec<Run> {
        which
            .chunks(6)
            .flat_map(|chunk| {
                std::thread::scope(|scope| {
                    let runs: Vec<_> = chunk
                        .iter()
                        .map(|&i| {
                            scope.spawn(move || self.nodes[i].troops_inside(&["pull", "--json"]))
                        })
                        .collect();
                    runs.into_iter()
                        .map(|r| r.join().unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect()
    }

    /// `troops fleet URL --json` in the admin's clone: the parsed output.
    pub fn fleet(&self) -> serde_json::Value {
        let run = self.fleet_command(&["--json"]);
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        serde_json::from_str(&run.stdout).unwrap()
    }

    /// `troops fleet URL ARGS...` in the admin's clone.
    pub fn fleet_command(&self, args: &[&str]) -> Run {
        let out = clean_command(env!("CARGO_BIN_EXE_troops"), self.repo.path())
            .current_dir(self.repo.path())
            .env("GIT_SSH_COMMAND", self.client.ssh_command("alice"))
            .arg("fleet")
            .arg(&self.url)
            .args(args)
            .output()
            .unwrap();
        Run::from(out)
    }

    /// `git push --force URL SRC:DST` from the admin's clone, with the key
    /// of the node at `index`.
    pub fn push_as_node(&self, index: usize, src: &str, dst: &str) -> Run {
        let node = &self.nodes[index];
        let ssh = format!(
            "ssh -F /dev/null -o BatchMode=yes -o IdentitiesOnly=yes \
             -o UserKnownHostsFile={} -i {}",
            self.client.dir.path().join("known_hosts").display(),
            node.lib().join("ssh/id_ed25519").display()
        );
        let out = clean_command("git", self.repo.path())
            .arg("-C")
            .arg(self.repo.path())
            .env("GIT_SSH_COMMAND", ssh)
            .args(["push", "--force", "--quiet", &self.url])
            .arg(format!("{src}:{dst}"))
            .output()
            .unwrap();
        Run::from(out)
    }

    /// Deletes `hostname`'s report on the server, as anyone who may push
    /// there could.
    pub fn delete_report(&self, hostname: &str) {
        let out = self
            .client
            .command("git", "alice")
            .arg("-C")
            .arg(self.repo.path())
            .args(["push", "--quiet", &self.url])
            .arg(format!(":refs/troops/status/{hostname}"))
            .output()
            .unwrap();
        Run::from(out).success();
    }

    /// The report ref of `hostname` on the server, if any.
    pub fn report_ref(&self, hostname: &str) -> Option<String> {
        self.server_ref(&format!("refs/troops/status/{hostname}"))
    }

    /// What `name` names in the server's repository, if anything.
    pub fn server_ref(&self, name: &str) -> Option<String> {
        let out = clean_command("git", self.server.dir.path())
            .args(["-c", "safe.directory=*", "--git-dir"])
            .arg(self.server.dir.path().join("home/alice/deploy.git"))
            .args(["rev-parse", "--verify", "--quiet", name])
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
}

/// An authorized_keys line that lets a node's key write its own report ref
/// only (with examples/report-update-hook).
fn node_key_line(hostname: &str, public_key: &str) -> String {
    format!(
        "restrict,command=\"env TROOPS_NODE={hostname} git-shell -c \\\"$SSH_ORIGINAL_COMMAND\\\"\" {public_key}"
    )
}

/// The node named `hostname` in `fleet --json` output.
pub fn row<'a>(fleet: &'a serde_json::Value, hostname: &str) -> &'a serde_json::Value {
    fleet["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["hostname"] == hostname)
        .unwrap_or_else(|| panic!("{hostname} is not in {fleet:#}"))
}

/// The commits `node`'s history has a record of.
pub fn tried(node: &SshNode) -> Vec<String> {
    node.status()["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["commit"].as_str().map(str::to_owned))
        .collect()
}
