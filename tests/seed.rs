//! First boot: `troops seed` from an IMDSv2 server on loopback, a NoCloud
//! seed and a preseed-written file, then the first pull; bad seeds change
//! nothing.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{DeployRepo, Node, Run};

/// A minimal IMDSv2: a token from PUT, user-data only with that token.
struct Imds {
    url: String,
    tokenless: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Imds {
    fn serve(user_data: String, unavailable_first: bool) -> Imds {
        let listener = TcpListener::bind("127.0.0.3:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let tokenless = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (counter, log) = (Arc::clone(&tokenless), Arc::clone(&requests));
        let mut fail_once = unavailable_first;
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut head = Vec::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                        break;
                    }
                    head.push(line.trim_end().to_owned());
                }
                let first = head.first().cloned().unwrap_or_default();
                log.lock().unwrap().push(first.clone());
                let header = |name: &str| {
                    head.iter()
                        .find_map(|h| h.strip_prefix(&format!("{name}: ")).map(str::to_owned))
                };
                let (status, body) = if fail_once {
                    fail_once = false;
                    ("503 Service Unavailable", String::new())
                } else if first.starts_with("PUT /latest/api/token ")
                    && header("X-aws-ec2-metadata-token-ttl-seconds").is_some()
                {
                    ("200 OK", "TOKEN-123".to_owned())
                } else if first.starts_with("GET /latest/user-data ") {
                    if header("X-aws-ec2-metadata-token").as_deref() == Some("TOKEN-123") {
                        ("200 OK", user_data.clone())
                    } else {
                        counter.fetch_add(1, Ordering::SeqCst);
                        ("401 Unauthorized", String::new())
                    }
                } else {
                    ("404 Not Found", String::new())
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Imds {
            url,
            tokenless,
            requests,
        }
    }
}

fn seed_yaml(origin: &DeployRepo) -> String {
    format!(
        "troops:\n  remotes:\n    - name: origin\n      url: {}\n  roles: [web]\n  pull_interval: 30min\n",
        origin.path_str()
    )
}

fn cloud_config(seed: &str) -> String {
    let indented: String = seed.lines().map(|l| format!("      {l}\n")).collect();
    format!(
        "#cloud-config\npackage_update: true\nwrite_files:\n  - path: /etc/troops/seed.yaml\n    owner: root:root\n    permissions: '0644'\n    content: |\n{indented}"
    )
}

fn deployment() -> DeployRepo {
    DeployRepo::with(
        "import troops\nprint('first boot on', troops.hostname(), 'roles', troops.roles())\n",
    )
}

/// What a successful seed leaves: config, remote, timer, marker, first deploy.
fn assert_seeded(node: &Node, origin: &DeployRepo, run: &Run) {
    assert!(
        run.stderr
            .contains("first boot on shellbox-1.example.com roles ['web']"),
        "{}",
        run.stderr
    );
    let config = fs::read_to_string(node.root().join("etc/troops/troops.toml")).unwrap();
    assert!(config.contains("roles = [\"web\"]"), "{config}");
    let remote = common::clean_command("git", &node.home())
        .args(["config", "--file"])
        .arg(node.root().join("etc/troops/gitconfig"))
        .arg("remote.origin.url")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&remote.stdout).trim(),
        origin.path_str()
    );
    let timer = fs::read_to_string(
        node.root()
            .join("etc/systemd/system/troops-pull.timer.d/troops-seed.conf"),
    )
    .unwrap();
    assert!(timer.contains("OnUnitActiveSec=30min"), "{timer}");
    assert!(node.lib().join("state/seeded").exists());
    let status = node.status_json();
    assert_eq!(status["commit"], origin.head().as_str());
    assert_eq!(status["history"][0]["trigger"], "seed");
}

#[test]
fn seed_from_imdsv2_user_data_then_pull() {
    let node = Node::new();
    let origin = deployment();
    let imds = Imds::serve(cloud_config(&seed_yaml(&origin)), true);
    let run = node.troops(["seed", "--imds-url", &imds.url]).success();
    assert_seeded(&node, &origin, &run);
    assert_eq!(
        imds.tokenless.load(Ordering::SeqCst),
        0,
        "asked IMDSv1-style"
    );
    let requests = imds.requests.lock().unwrap().clone();
    assert!(
        requests[0].starts_with("PUT /latest/api/token"),
        "{requests:?}"
    );

    // At the next boot the same instance is not seeded again.
    let config = fs::read_to_string(node.root().join("etc/troops/troops.toml")).unwrap();
    let run = node.troops(["seed", "--imds-url", &imds.url]).success();
    assert!(
        run.stderr.contains("this instance is seeded already"),
        "{}",
        run.stderr
    );
    assert_eq!(
        fs::read_to_string(node.root().join("etc/troops/troops.toml")).unwrap(),
        config
    );
    assert_eq!(node.status_json()["history"].as_array().unwrap().len(), 1);
}

#[test]
fn seed_from_a_nocloud_seed() {
    let node = Node::new();
    let origin = deployment();
    let dir = node.root().join("var/lib/cloud/seed/nocloud");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("user-data"), cloud_config(&seed_yaml(&origin))).unwrap();
    let run = node.troops(["seed"]).success();
    assert_seeded(&node, &origin, &run);
}

/// The boot unit hands the first pull to troops-first-pull.service; without
/// a systemd to start it (here: a relocated node) the pull runs in place.
#[test]
fn the_boot_units_first_pull_is_recorded_as_the_seeds() {
    let node = Node::new();
    let origin = deployment();
    let dir = node.root().join("var/lib/cloud/seed/nocloud");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("user-data"), cloud_config(&seed_yaml(&origin))).unwrap();
    for bad in ["--help.service", "troops-first-pull", "a b.service"] {
        let run = node.troops(["seed", &format!("--start-pull={bad}")]);
        assert_eq!(run.code, Some(2), "a usage error: {}", run.stderr);
        assert!(
            run.stderr.contains("is not a service unit name"),
            "{}",
            run.stderr
        );
    }
    assert!(!node.root().join("etc/troops/gitconfig").exists());

    let run = node
        .troops(["seed", "--start-pull", "troops-first-pull.service"])
        .success();
    assert!(
        run.stderr
            .contains("could not start troops-first-pull.service (the node is relocated"),
        "{}",
        run.stderr
    );
    assert_seeded(&node, &origin, &run);

    // What the unit runs: `troops pull --first` records its deploy as the seed's.
    let node = Node::new();
    fs::create_dir_all(node.root().join("etc/troops")).unwrap();
    fs::write(node.root().join("etc/troops/seed.yaml"), seed_yaml(&origin)).unwrap();
    node.troops(["seed", "--no-pull"]).success();
    assert!(node.status_json()["history"].as_array().unwrap().is_empty());
    let run = node.troops(["pull", "--first"]).success();
    assert_seeded(&node, &origin, &run);
}

#[test]
fn seed_from_a_preseed_written_file() {
    let node = Node::new();
    let origin = deployment();
    let etc = node.root().join("etc/troops");
    fs::create_dir_all(&etc).unwrap();
    fs::write(etc.join("seed.yaml"), seed_yaml(&origin)).unwrap();
    let run = node.troops(["seed"]).success();
    assert_seeded(&node, &origin, &run);
    // It may carry credentials: root's alone, whoever wrote it.
    let mode = fs::metadata(etc.join("seed.yaml"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn no_seed_anywhere_is_not_an_error_and_imds_is_not_asked_off_ec2() {
    let node = Node::new();
    let started = std::time::Instant::now();
    let run = node.troops(["seed"]).success();
    assert!(
        run.stderr.contains("no seed configuration found"),
        "{}",
        run.stderr
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert!(!node.lib().join("state/seeded").exists());
}

#[test]
fn malformed_and_hostile_user_data_is_rejected_with_nothing_applied() {
    let cases = [
        (
            "troops:\n  remotes:\n    - {name: origin, url: '--upload-pack=touch /tmp/pwned'}\n",
            "troops.remotes[0].url",
        ),
        (
            "troops:\n  remotes:\n    - {name: origin, url: 'ext::sh -c touch% /tmp/pwned'}\n",
            "troops.remotes[0].url",
        ),
        (
            "troops:\n  roles: [web]\n  pull_interval: '5min\\nExecStart=/bin/evil'\n",
            "troops.pull_interval",
        ),
        ("troops:\n  roles: [web]\n  sudo: everyone\n", "troops.sudo"),
        // Names git would refuse as a ref are refused before anything is
        // written (troops.toml included).
        (
            "troops:\n  roles: [web]\n  remotes:\n    - {name: origin.lock, url: 'git@h:d'}\n",
            "troops.remotes[0].name",
        ),
        ("troops:\n  roles: web\n", "troops.roles"),
        ("troops: [\n", "troops"),
        (
            "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n",
            "troops",
        ),
    ];
    for (text, key) in cases {
        let node = Node::new();
        let path = node.root().join("seed.yaml");
        fs::write(&path, text).unwrap();
        let run = node
            .troops(["seed", "--file", path.to_str().unwrap()])
            .failure();
        assert!(
            run.stderr.contains("invalid seed"),
            "{text}: {}",
            run.stderr
        );
        assert!(
            run.stderr.contains(&format!("`{key}")),
            "{text}: {}",
            run.stderr
        );
        assert!(run.stderr.contains("nothing was applied"), "{}", run.stderr);
        assert!(
            !node.root().join("etc/troops/troops.toml").exists(),
            "{text}"
        );
        assert!(!node.lib().join("state/seeded").exists(), "{text}");
        assert!(!node.lib().join("repo/main.git").exists(), "{text}");
        assert!(!std::path::Path::new("/tmp/pwned").exists());
    }
}

#[test]
fn user_data_for_someone_else_means_no_seed_and_boot_goes_on() {
    let script = "#!/bin/sh\necho configuring something else\n";
    let cloud_only = "#cloud-config\npackages: [tmux]\n";
    let multipart_script = "Content-Type: multipart/mixed; boundary=\"B\"\nMIME-Version: 1.0\n\n\
        --B\nContent-Type: text/x-shellscript\n\n#!/bin/sh\necho hi\n\n--B--\n";
    for user_data in ["", script, cloud_only, multipart_script] {
        let node = Node::new();
        let dir = node.root().join("var/lib/cloud/seed/nocloud");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("user-data"), user_data).unwrap();
        let run = node.troops(["seed"]).success();
        assert!(
            run.stderr.contains("no seed configuration found"),
            "{user_data:?}: {}",
            run.stderr
        );
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
        assert!(!node.lib().join("state/seeded").exists());
        assert!(!node.root().join("etc/troops/gitconfig").exists());
    }
}

#[test]
fn a_multipart_user_data_seeds_from_its_cloud_config_part() {
    let node = Node::new();
    let origin = deployment();
    let multipart = format!(
        "Content-Type: multipart/mixed; boundary=\"==B==\"\nMIME-Version: 1.0\n\n\
         --==B==\nContent-Type: text/x-shellscript\n\n#!/bin/sh\necho hi\n\n\
         --==B==\nContent-Type: text/cloud-config\n\n{}\n--==B==--\n",
        cloud_config(&seed_yaml(&origin))
    );
    let dir = node.root().join("var/lib/cloud/seed/nocloud");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("user-data"), multipart).unwrap();
    let run = node.troops(["seed"]).success();
    assert_seeded(&node, &origin, &run);
}

#[test]
fn a_metadata_service_that_trickles_is_given_up_on() {
    // One byte every second, for longer than anyone should wait.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut line = String::new();
                let _ = BufReader::new(stream.try_clone().unwrap()).read_line(&mut line);
                for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
                    .iter()
                    .cycle()
                    .take(120)
                {
                    if stream.write_all(&[*byte]).is_err() {
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_secs(1));
                }
            });
        }
    });
    let node = Node::new();
    let started = std::time::Instant::now();
    let run = node.troops(["seed", "--imds-url", &url]);
    assert_ne!(run.code, Some(0));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(40),
        "{:?}",
        started.elapsed()
    );
    assert!(
        run.stderr.contains("did not answer within"),
        "{}",
        run.stderr
    );
    assert!(!node.lib().join("state/seeded").exists());
}

#[test]
fn a_seed_applies_once_per_instance_and_a_new_instance_gets_its_own_key() {
    let node = Node::new();
    let origin = deployment();
    let instance = node.root().join("var/lib/cloud/data/instance-id");
    fs::create_dir_all(instance.parent().unwrap()).unwrap();
    fs::write(&instance, "i-0aaa\n").unwrap();
    let drive = node.root().join("var/lib/cloud/seed/nocloud");
    fs::create_dir_all(&drive).unwrap();
    fs::write(drive.join("user-data"), cloud_config(&seed_yaml(&origin))).unwrap();
    node.troops(["init"]).success();
    let key = || fs::read_to_string(node.lib().join("ssh/id_ed25519.pub")).unwrap();
    let first_key = key();
    let run = node.troops(["seed"]).success();
    assert_seeded(&node, &origin, &run);
    assert_eq!(key(), first_key, "the instance's own key was replaced");

    // The seed drive stays attached, with other content: the next boot of
    // the same instance applies nothing.
    let other = seed_yaml(&origin).replace("roles: [web]", "roles: [db]");
    fs::write(drive.join("user-data"), cloud_config(&other)).unwrap();
    let run = node.troops(["seed"]).success();
    assert!(run.stderr.contains("seeded already"), "{}", run.stderr);
    let config = || fs::read_to_string(node.root().join("etc/troops/troops.toml")).unwrap();
    assert!(config().contains("roles = [\"web\"]"), "{}", config());

    // A new instance made from an image of this node: seeded, with a key
    // of its own (the image's is shared by every machine made from it).
    fs::write(&instance, "i-0bbb\n").unwrap();
    let run = node.troops(["seed"]).success();
    assert!(run.stderr.contains("a key of its own"), "{}", run.stderr);
    assert!(run.stderr.contains("applied the seed"), "{}", run.stderr);
    assert!(config().contains("roles = [\"db\"]"), "{}", config());
    assert_ne!(key(), first_key);
    assert!(run.stderr.contains(key().trim()), "{}", run.stderr);
}

#[test]
fn a_seeded_report_remote_gets_the_first_deploys_signed_report() {
    let node = Node::new();
    let origin = deployment();
    let reports = tempfile::tempdir().unwrap();
    common::clean_command("git", reports.path())
        .args(["init", "--quiet", "--bare"])
        .arg(reports.path())
        .output()
        .unwrap();
    let seed = format!(
        "{}  report: {{url: '{}', heartbeat: 2h}}\n",
        seed_yaml(&origin),
        reports.path().display()
    );
    let file = node.root().join("seed.yaml");
    fs::write(&file, seed).unwrap();
    let run = node
        .troops(["seed", "--file", file.to_str().unwrap()])
        .success();
    assert_seeded(&node, &origin, &run);
    let config = fs::read_to_string(node.root().join("etc/troops/troops.toml")).unwrap();
    assert!(
        config.contains("[report]") && config.contains("heartbeat = \"2h\""),
        "{config}"
    );

    // The report names the node and its first deploy, signed by the node's key.
    let git = |args: &[&str]| {
        let out = common::clean_command("git", reports.path())
            .arg("--git-dir")
            .arg(reports.path())
            .args(args)
            .output()
            .unwrap();
        Run::from(out).success().stdout
    };
    let name = format!("refs/troops/status/{}", common::HOSTNAME);
    let report: serde_json::Value =
        serde_json::from_str(&git(&["show", &format!("{name}:status.json")])).unwrap();
    assert_eq!(report["hostname"], common::HOSTNAME);
    assert_eq!(report["deployed"]["commit"], origin.head().as_str());
    assert_eq!(report["last_deploy"]["trigger"], "seed");
    assert_eq!(report["heartbeat_seconds"], 7200);
    let key = fs::read_to_string(node.lib().join("ssh/id_ed25519.pub")).unwrap();
    let signers = node.root().join("nodes.allowed_signers");
    fs::write(&signers, format!("{} {key}", common::HOSTNAME)).unwrap();
    let verified = git(&[
        "-c",
        &format!("gpg.ssh.allowedSignersFile={}", signers.display()),
        "log",
        "-1",
        "--format=%G? %GS",
        &name,
    ]);
    assert_eq!(verified.trim(), format!("G {}", common::HOSTNAME));
}
