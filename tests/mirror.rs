//! A pull fleet served by static mirrors: `troops publish` keeps a mirror
//! current from the post-receive hook of the repository admins push to,
//! nginx serves the mirrors over HTTPS on loopback, and nodes that require
//! signed commits trust the CA their seed pins, never the mirrors.

mod common;

use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use common::nginx::{Certificate, Nginx};
use common::signer::Signer;
use common::{DeployRepo, Node, Run};

const ADDRESS: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 74);

fn troops_publish(repository: &Path, dest: &Path) -> Run {
    let out = common::clean_command(env!("CARGO_BIN_EXE_troops"), repository)
        .arg("publish")
        .arg("--repository")
        .arg(repository)
        .arg(dest)
        .output()
        .unwrap();
    Run::from(out)
}

/// The repository admins push to, publishing to `dest` after each push.
fn hosting_repository(dir: &Path, dest: &Path) -> std::path::PathBuf {
    let hosting = dir.join("hosting.git");
    let out = common::clean_command("git", dir)
        .args(["init", "--quiet", "--bare"])
        .arg(&hosting)
        .output()
        .unwrap();
    Run::from(out).success();
    let hook = hosting.join("hooks/post-receive");
    fs::write(
        &hook,
        format!(
            "#!/bin/sh\nexec {} publish --repository . {}\n",
            env!("CARGO_BIN_EXE_troops"),
            dest.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).unwrap();
    hosting
}

/// A seed for a node pulling from both mirrors with signed commits only.
fn seed(url: &str, tls: &Certificate, signer_public: &str) -> String {
    let ca = fs::read_to_string(&tls.cert).unwrap();
    let indent = |text: &str| text.trim_end().replace('\n', "\n    ");
    format!(
        "troops:\n  remotes:\n    - {{name: mirror-a, url: '{url}/a/deploy.git'}}\n    \
         - {{name: mirror-b, url: '{url}/b/deploy.git'}}\n  signatures: ssh\n  \
         allowed_signers: ['test@example.com {}']\n  https_ca: |\n    {}\n",
        signer_public.trim(),
        indent(&ca)
    )
}

fn remote_report<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["remotes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no remote {name} in {report}"))
}

#[test]
fn nodes_pull_signed_commits_from_published_mirrors_and_refuse_tampered_or_lagging_ones() {
    let work = tempfile::tempdir().unwrap();
    let www = work.path().join("www");
    let tls = Certificate::self_signed(work.path(), ADDRESS);
    let admin = Signer::ssh(work.path(), "admin");
    let (mirror_a, mirror_b) = (www.join("a/deploy.git"), www.join("b/deploy.git"));
    let hosting = hosting_repository(work.path(), &mirror_a);

    // An admin pushes a signed commit: the hook publishes mirror a; mirror b
    // is published by hand from the hosting repository.
    let repo = DeployRepo::new();
    let push = |repo: &DeployRepo| {
        let out = common::clean_command("git", repo.path())
            .arg("-C")
            .arg(repo.path())
            .args(["push", "--quiet", "--"])
            .arg(&hosting)
            .arg("master")
            .output()
            .unwrap();
        let run = Run::from(out).success();
        assert!(
            run.stderr.contains("troops: published branch master"),
            "{}",
            run.stderr
        );
    };
    let first = admin.commit(&repo, &[("deploy.py", "print('release one')\n")]);
    push(&repo);
    troops_publish(&hosting, &mirror_b).success();
    let nginx = Nginx::serve_https(&www, ADDRESS, &tls);
    let url = format!("https://{ADDRESS}:{}", nginx.port);

    // Two nodes seeded to pull from both mirrors, the CA pinned.
    let public = fs::read_to_string(work.path().join("admin.pub")).unwrap();
    let nodes = [Node::new(), Node::new()];
    for node in &nodes {
        let file = node.dir.path().join("seed.yaml");
        fs::write(&file, seed(&url, &tls, &public)).unwrap();
        node.troops(["seed", "--no-pull", "--file", file.to_str().unwrap()])
            .success();
        let run = node.troops(["pull"]).success();
        assert!(run.stderr.contains("release one"), "{}", run.stderr);
        assert_eq!(node.branch(), Some(first.clone()));
    }
    assert!(
        nginx
            .requests()
            .iter()
            .any(|r| r.contains("GET /a/deploy.git/info/refs")),
        "{:?}",
        nginx.requests()
    );

    // The next push reaches mirror a alone: b lags behind, and never makes a
    // node go back.
    let second = admin.commit(&repo, &[("deploy.py", "print('release two')\n")]);
    push(&repo);
    for node in &nodes {
        let run = node.troops(["pull"]).success();
        assert!(run.stderr.contains("release two"), "{}", run.stderr);
        assert_eq!(node.branch(), Some(second.clone()));
        let run = node.troops(["pull", "--json"]).success();
        let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        assert_eq!(report["result"], "nothing", "{report}");
        assert_eq!(remote_report(&report, "mirror-b")["commit"], first.as_str());
        assert_eq!(
            remote_report(&report, "mirror-b")["reason"],
            "behind the node"
        );
        assert_eq!(node.branch(), Some(second.clone()));
    }

    // Whoever can write mirror b's files serves an unsigned commit on top:
    // it is refused by name, and the nodes keep the signed one.
    troops_publish(&hosting, &mirror_b).success();
    let mirror_git = |args: &[&str]| {
        let out = common::clean_command("git", work.path())
            .arg("--git-dir")
            .arg(&mirror_b)
            .args(args)
            .output()
            .unwrap();
        Run::from(out).success().stdout.trim().to_owned()
    };
    let tree = mirror_git(&["rev-parse", &format!("{second}^{{tree}}")]);
    let forged = mirror_git(&["commit-tree", "-p", &second, "-m", "forged", &tree]);
    mirror_git(&["update-ref", "refs/heads/master", &forged]);
    mirror_git(&["update-server-info"]);
    for node in &nodes {
        let run = node.troops(["pull", "--json"]);
        let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        let b = remote_report(&report, "mirror-b");
        assert_eq!(b["commit"], forged.as_str(), "{report}");
        assert_eq!(b["outcome"], "failed", "{report}");
        assert!(
            b["reason"].as_str().unwrap().starts_with("refused"),
            "{report}"
        );
        assert!(run.stderr.contains("mirror-b"), "{}", run.stderr);
        assert_eq!(node.branch(), Some(second.clone()));
        assert_eq!(node.status_json()["commit"], second.as_str());
    }
}

#[test]
fn publish_refuses_a_directory_it_did_not_make_and_updates_its_own() {
    let work = tempfile::tempdir().unwrap();
    let repo = DeployRepo::with("print('one')\n");
    let other = work.path().join("other");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("index.html"), "keep me").unwrap();
    let run = troops_publish(repo.path(), &other).failure();
    assert!(
        run.stderr.contains("not a mirror `troops publish` made"),
        "{}",
        run.stderr
    );
    assert_eq!(
        fs::read_to_string(other.join("index.html")).unwrap(),
        "keep me"
    );

    // Published, branches deleted upstream are removed, and many publishes
    // do not pile up packs without bound (each costs a new node a request).
    let mirror = work.path().join("deploy.git");
    repo.git(&["branch", "old"]);
    troops_publish(repo.path(), &mirror).success();
    let refs = fs::read_to_string(mirror.join("info/refs")).unwrap();
    assert!(refs.contains("refs/heads/old"), "{refs}");
    repo.git(&["branch", "-D", "old"]);
    for i in 0..60 {
        repo.commit(&[("deploy.py", &format!("print({i})\n"))]);
        troops_publish(repo.path(), &mirror).success();
    }
    let refs = fs::read_to_string(mirror.join("info/refs")).unwrap();
    assert!(!refs.contains("refs/heads/old"), "{refs}");
    assert!(refs.contains(&format!("{}\trefs/heads/master", repo.head())));
    let packs = fs::read_to_string(mirror.join("objects/info/packs")).unwrap();
    let listed = packs.lines().filter(|l| l.starts_with("P ")).count();
    let on_disk = fs::read_dir(mirror.join("objects/pack"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension() == Some("pack".as_ref()))
        .count();
    assert_eq!(listed, on_disk, "{packs}");
    assert!(listed <= 51, "{listed} packs");
    // Whoever else can write the mirror (a sync account) cannot make the
    // publisher run a hook through its config.
    let hooks = work.path().join("hooks");
    fs::create_dir_all(&hooks).unwrap();
    let planted = work.path().join("hook-ran");
    let hook = hooks.join("reference-transaction");
    fs::write(&hook, format!("#!/bin/sh\ntouch {}\n", planted.display())).unwrap();
    fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).unwrap();
    let config = mirror.join("config");
    let mut text = fs::read_to_string(&config).unwrap();
    text.push_str(&format!("[core]\n\thooksPath = {}\n", hooks.display()));
    fs::write(&config, text).unwrap();
    repo.commit(&[("deploy.py", "print('after the plant')\n")]);
    troops_publish(repo.path(), &mirror).success();
    assert!(!planted.exists(), "publish ran the mirror's hook");
    // A web server reads it whatever the publisher's umask.
    let mode = fs::metadata(mirror.join("info/refs"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o444, 0o444);
}

/// Two pulls at once (the first-pull unit and the timer's) share a mirror's
/// scratch repository: the second waits for the first instead of fetching
/// into it at the same time, and both succeed.
#[test]
fn two_pulls_at_once_from_one_mirror_both_succeed() {
    let work = tempfile::tempdir().unwrap();
    let www = work.path().join("www");
    let tls = Certificate::self_signed(work.path(), ADDRESS);
    let repo = DeployRepo::new();
    let files: Vec<(String, String)> = (0..2000)
        .map(|i| (format!("data/{i}.txt"), format!("file {i}\n")))
        .collect();
    let mut commit: Vec<(&str, &str)> = files
        .iter()
        .map(|(n, c)| (n.as_str(), c.as_str()))
        .collect();
    commit.push(("deploy.py", "print('many files')\n"));
    repo.commit(&commit);
    troops_publish(repo.path(), &www.join("deploy.git")).success();
    let nginx = Nginx::serve_https(&www, ADDRESS, &tls);
    let node = Node::new();
    node.troops(["init"]).success();
    node.add_remote(
        "mirror",
        &format!("https://{ADDRESS}:{}/deploy.git", nginx.port),
    );
    node.set_root_git_config("http.sslCAInfo", tls.cert.to_str().unwrap());
    let pulls: Vec<_> = (0..2)
        .map(|_| {
            node.command(["pull"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for pull in pulls {
        let out = pull.wait_with_output().unwrap();
        Run::from(out).success();
    }
    assert_eq!(node.branch(), Some(repo.head()));
}

/// The seed's `https_ca` is the only CA its HTTPS remotes may chain to: a
/// mirror whose certificate a CA of the system's store signed (anyone can
/// buy one for a name) is refused. The node's /etc/ssl/certs is replaced, in
/// a mount namespace of the pull's own, by a store that trusts that CA.
#[test]
fn the_seeds_ca_is_a_pin_not_one_more_trusted_ca() {
    let work = tempfile::tempdir().unwrap();
    let public_ca = Certificate::self_signed(&work.path().join("public"), ADDRESS);
    let store = work.path().join("store");
    fs::create_dir_all(&store).unwrap();
    fs::copy(&public_ca.cert, store.join("public-ca.pem")).unwrap();
    let out = Command::new("openssl")
        .arg("rehash")
        .arg(&store)
        .output()
        .unwrap();
    Run::from(out).success();
    let served = Certificate::signed_by(&public_ca, &work.path().join("served"), ADDRESS);
    let ops_ca = Certificate::self_signed(&work.path().join("ops"), ADDRESS);

    let repo = DeployRepo::with("print('from the mirror')\n");
    let www = work.path().join("www");
    troops_publish(repo.path(), &www.join("deploy.git")).success();
    let nginx = Nginx::serve_https(&www, ADDRESS, &served);
    let url = format!("https://{ADDRESS}:{}/deploy.git", nginx.port);
    let pull_with_store = |node: &Node| {
        let out = common::clean_command("unshare", &node.home())
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg("mount --bind \"$1\" /etc/ssl/certs && shift && exec \"$@\"")
            .arg("sh")
            .arg(&store)
            .arg(env!("CARGO_BIN_EXE_troops"))
            .arg("--root")
            .arg(node.root())
            .arg("pull")
            .output()
            .unwrap();
        Run::from(out)
    };
    let seeded = |ca: Option<&Certificate>| {
        let node = Node::new();
        let mut seed = format!("troops:\n  remotes: [{{name: mirror, url: '{url}'}}]\n");
        if let Some(ca) = ca {
            let pem = fs::read_to_string(&ca.cert).unwrap();
            seed.push_str(&format!(
                "  https_ca: |\n    {}\n",
                pem.trim_end().replace('\n', "\n    ")
            ));
        }
        let file = node.dir.path().join("seed.yaml");
        fs::write(&file, seed).unwrap();
        node.troops(["seed", "--no-pull", "--file", file.to_str().unwrap()])
            .success();
        node
    };

    // Control: without a pin, the (replaced) system store is trusted.
    let trusting = seeded(None);
    let run = pull_with_store(&trusting).success();
    assert!(run.stderr.contains("from the mirror"), "{}", run.stderr);

    let pinned = seeded(Some(&ops_ca));
    let run = pull_with_store(&pinned);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains("cannot fetch `mirror`") && run.stderr.contains("certificate"),
        "{}",
        run.stderr
    );
    assert_eq!(pinned.branch(), None);
}
