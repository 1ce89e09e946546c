//! The node's metrics, as Debian's prometheus-node-exporter serves them from
//! its textfile collector directory, scraped over HTTP on loopback.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::nginx::wait_until_listening;
use common::{DeployRepo, Node};

const ADDRESS: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 76);
const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";

/// node exporter with only the textfile collector, reading `dir`.
struct NodeExporter {
    child: Child,
    port: u16,
}

impl NodeExporter {
    fn start(dir: &Path) -> NodeExporter {
        let port = TcpListener::bind(SocketAddrV4::new(ADDRESS, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(NODE_EXPORTER)
            .arg(format!("--web.listen-address={ADDRESS}:{port}"))
            .args(["--collector.disable-defaults", "--collector.textfile"])
            .arg(format!("--collector.textfile.directory={}", dir.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_until_listening(SocketAddrV4::new(ADDRESS, port), || {
            "node exporter did not start".to_owned()
        });
        NodeExporter { child, port }
    }

    /// The troops_ lines of a scrape of /metrics.
    fn scrape(&self) -> Vec<String> {
        let mut stream = TcpStream::connect(SocketAddrV4::new(ADDRESS, self.port)).unwrap();
        write!(
            stream,
            "GET /metrics HTTP/1.0\r\nHost: {ADDRESS}:{}\r\n\r\n",
            self.port
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(response.starts_with("HTTP/1.0 200"), "{response}");
        assert!(
            response
                .lines()
                .any(|l| l == "node_textfile_scrape_error 0"),
            "node exporter cannot read the file:\n{response}"
        );
        response
            .lines()
            .filter(|l| l.starts_with("troops_"))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn value<'a>(lines: &'a [String], name: &str) -> &'a str {
    lines
        .iter()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} in {lines:#?}"))
        .rsplit(' ')
        .next()
        .unwrap()
}

#[test]
fn node_exporter_serves_what_each_deploy_and_pull_changed() {
    if !Path::new(NODE_EXPORTER).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "prometheus-node-exporter is missing under CI"
        );
        eprintln!("skipping: prometheus-node-exporter is not installed");
        return;
    }
    let node = Node::new();
    node.troops(["init"]).success();
    let textfile = node.root().join("var/lib/prometheus/node-exporter");
    fs::create_dir_all(&textfile).unwrap();
    let exporter = NodeExporter::start(&textfile);
    let repo = DeployRepo::with("print('one')\n");
    node.add_remote("origin", &repo.path_str());

    node.troops(["pull"]).success();
    let first = exporter.scrape();
    let one = repo.head();
    assert!(
        first.contains(&format!("troops_deployed_info{{commit=\"{one}\"}} 1")),
        "{first:#?}"
    );
    assert_eq!(
        value(&first, "troops_last_deploy_success{trigger=\"pull\"}"),
        "1"
    );
    assert_eq!(value(&first, "troops_last_pull_success"), "1");
    assert_eq!(value(&first, "troops_pull_held_back"), "0");

    // A failing commit: the node still runs the first, and says so.
    repo.commit(&[("deploy.py", "raise SystemExit(3)\n")]);
    node.troops(["pull"]).failure();
    let second = exporter.scrape();
    assert!(
        second.contains(&format!("troops_deployed_info{{commit=\"{one}\"}} 1")),
        "{second:#?}"
    );
    assert_eq!(
        value(&second, "troops_last_deploy_success{trigger=\"pull\"}"),
        "0"
    );
    assert_eq!(value(&second, "troops_last_pull_success"), "0");
    let stamp = |lines: &[String]| value(lines, "troops_last_pull_timestamp_seconds").to_owned();
    assert!(stamp(&second).parse::<f64>().unwrap() >= stamp(&first).parse::<f64>().unwrap());

    // The fix deploys, and a manual deploy counts too.
    repo.commit(&[("deploy.py", "print('three')\n")]);
    node.troops(["pull"]).success();
    let third = exporter.scrape();
    let three = repo.head();
    assert!(
        third.contains(&format!("troops_deployed_info{{commit=\"{three}\"}} 1")),
        "{third:#?}"
    );
    node.troops(["deploy"]).success();
    let fourth = exporter.scrape();
    assert_eq!(
        value(&fourth, "troops_last_deploy_success{trigger=\"manual\"}"),
        "1"
    );
    // The node's own copy is the same text.
    assert_eq!(
        fs::read_to_string(node.lib().join("state/metrics.prom")).unwrap(),
        fs::read_to_string(textfile.join("troops.prom")).unwrap()
    );
}

/// /var/lib/prometheus is the prometheus user's: a link it plants for the
/// textfile directory is not followed, and the pull still succeeds.
#[test]
fn a_linked_textfile_directory_is_not_written_through() {
    let node = Node::new();
    node.troops(["init"]).success();
    let elsewhere = tempfile::tempdir().unwrap();
    let prometheus = node.root().join("var/lib/prometheus");
    fs::create_dir_all(&prometheus).unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), prometheus.join("node-exporter")).unwrap();
    let repo = DeployRepo::with("print('one')\n");
    node.add_remote("origin", &repo.path_str());
    let run = node.troops(["pull"]).success();
    assert!(
        run.stderr.contains("cannot write the metrics"),
        "{}",
        run.stderr
    );
    assert_eq!(fs::read_dir(elsewhere.path()).unwrap().count(), 0);
    let own = fs::read_to_string(node.lib().join("state/metrics.prom")).unwrap();
    assert!(own.contains(&repo.head()), "{own}");
}
