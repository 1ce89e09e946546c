//! `troops pull` from an HTTPS remote: `git http-backend` behind a TLS server
//! on loopback whose certificate the node trusts only once told to.

mod common;

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::nginx::Certificate;
use common::{DeployRepo, Node, Run};

/// The server process, killed when the test ends.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(root: &Path, tls: &Path) -> Server {
    let mut child =
        Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/git-https-server"))
            .arg(root)
            .arg(tls.join("cert.pem"))
            .arg(tls.join("key.pem"))
            .arg("127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().parse().expect("the server prints its port");
    Server { child, port }
}

#[test]
fn pull_fetches_over_https_once_the_certificate_is_trusted() {
    let tls = tempfile::tempdir().unwrap();
    Certificate::self_signed(tls.path(), Ipv4Addr::LOCALHOST);
    let repo = DeployRepo::with("print('pulled over https')\n");
    let served = tempfile::tempdir().unwrap();
    let bare = served.path().join("deploy.git");
    let bare = bare.to_str().unwrap();
    repo.git(&["clone", "--quiet", "--bare", "--", &repo.path_str(), bare]);
    let server = serve(served.path(), tls.path());

    let node = Node::new();
    node.troops(["init"]).success();
    let url = format!("https://127.0.0.1:{}/deploy.git", server.port);
    // A member adds it, as the tutorial does: network URLs are theirs to add.
    node.git(&["remote", "add", "origin", &url]).success();

    // A certificate nobody vouched for: the remote cannot be fetched, and
    // the message says why.
    let run = node.troops(["pull"]).failure();
    assert!(
        run.stderr.contains("cannot fetch `origin`")
            && run.stderr.contains("certificate")
            && run.stderr.contains("http.sslCAInfo"),
        "{}",
        run.stderr
    );
    assert_eq!(node.branch(), None);

    // The admin trusts it for root's fetches (or system-wide, with
    // update-ca-certificates); the members' configuration cannot.
    let ca = tls.path().join("cert.pem");
    node.git(&["config", "http.sslCAInfo", ca.to_str().unwrap()])
        .success();
    node.troops(["pull"]).failure();
    node.set_root_git_config("http.sslCAInfo", ca.to_str().unwrap());
    let run = node.troops(["pull"]).success();
    assert!(run.stderr.contains("pulled over https"), "{}", run.stderr);
    assert_eq!(node.branch(), Some(repo.head()));
    assert_eq!(node.status_json()["history"][0]["trigger"], "pull");

    let next = repo.commit(&[("deploy.py", "print('second over https')\n")]);
    repo.git(&["push", "--quiet", "--", bare, "master"]);
    let run = node.troops(["pull"]).success();
    assert!(run.stderr.contains("second over https"), "{}", run.stderr);
    assert_eq!(node.branch(), Some(next));
}

#[test]
fn a_static_mirror_is_verified_before_anything_uses_it() {
    let tls = tempfile::tempdir().unwrap();
    Certificate::self_signed(tls.path(), Ipv4Addr::LOCALHOST);
    let repo = DeployRepo::with("print('from the static mirror')\n");
    let served = tempfile::tempdir().unwrap();
    let bare = served.path().join("deploy.git");
    let bare_git = |args: &[&str]| {
        let out = common::clean_command("git", served.path())
            .arg("--git-dir")
            .arg(&bare)
            .args(args)
            .output()
            .unwrap();
        Run::from(out).success().stdout.trim().to_owned()
    };
    repo.git(&[
        "clone",
        "--quiet",
        "--bare",
        "--",
        &repo.path_str(),
        bare.to_str().unwrap(),
    ]);
    bare_git(&["update-server-info"]);
    let server = serve(served.path(), tls.path());

    let node = Node::new();
    node.troops(["init"]).success();
    node.add_remote(
        "mirror",
        &format!("https://127.0.0.1:{}/static/deploy.git", server.port),
    );
    node.set_root_git_config(
        "http.sslCAInfo",
        tls.path().join("cert.pem").to_str().unwrap(),
    );
    // Control: a well-formed commit arrives over the dumb protocol and deploys.
    let run = node.troops(["pull"]).success();
    assert!(
        run.stderr.contains("from the static mirror"),
        "{}",
        run.stderr
    );
    let good = repo.head();
    assert_eq!(node.branch(), Some(good.clone()));

    // A commit whose hash is right but which fsck refuses (no author email),
    // as a tampering mirror might serve: git's dumb walker takes it as is.
    let tree = bare_git(&["rev-parse", &format!("{good}^{{tree}}")]);
    let text = format!(
        "tree {tree}\nparent {good}\nauthor Mallory 1700000000 +0000\ncommitter Mallory 1700000000 +0000\n\nmalformed\n"
    );
    let file = served.path().join("commit.txt");
    std::fs::write(&file, text).unwrap();
    let bad = bare_git(&[
        "hash-object",
        "--literally",
        "-t",
        "commit",
        "-w",
        file.to_str().unwrap(),
    ]);
    bare_git(&["update-ref", "refs/heads/master", &bad]);
    bare_git(&["update-server-info"]);
    let run = node.troops(["pull"]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("does not verify"), "{}", run.stderr);
    assert_eq!(node.branch(), Some(good));
    assert!(
        node.root_git(&["cat-file", "-e", &bad]).code != Some(0),
        "the malformed commit reached root's repository"
    );
}
