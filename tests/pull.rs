//! `troops pull` with real remotes (local paths here; SSH in pull_ssh.rs).

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

use common::{DeployRepo, Node, Run};

fn marker_deploy(node: &Node, text: &str) -> String {
    format!(
        "with open({:?}, 'a') as f: f.write({text:?} + '\\n')\nprint('deploying', {text:?})\n",
        node.root().join("runs").to_str().unwrap()
    )
}

fn runs(node: &Node) -> Vec<String> {
    fs::read_to_string(node.root().join("runs"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn pull_json(node: &Node) -> (Run, serde_json::Value) {
    let run = node.troops(["pull", "--json"]);
    let json = serde_json::from_str(&run.stdout).unwrap_or(serde_json::Value::Null);
    (run, json)
}

fn outcome<'a>(json: &'a serde_json::Value, remote: &str) -> &'a serde_json::Value {
    json["remotes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == remote)
        .unwrap()
}

fn init_node() -> Node {
    let node = Node::new();
    node.troops(["init"]).success();
    node
}

#[test]
fn pull_deploys_a_new_commit_then_finds_nothing_without_starting_python() {
    let node = init_node();
    let origin = DeployRepo::with(&marker_deploy(&node, "one"));
    node.add_remote("origin", &origin.path_str());

    let (run, json) = pull_json(&node);
    let run = run.success();
    assert!(run.stderr.contains("deploying one"), "{}", run.stderr);
    assert!(run.stderr.trim_end().ends_with(&format!(
        "troops: pull: deployed {} from `origin`",
        &origin.head()[..12]
    )));
    assert_eq!(json["result"], "deployed");
    assert_eq!(outcome(&json, "origin")["outcome"], "deployed");
    assert_eq!(node.branch(), Some(origin.head()));
    let status = node.status_json();
    assert_eq!(status["commit"], origin.head().as_str());
    assert_eq!(status["history"][0]["trigger"], "pull");
    assert_eq!(status["last_pull"]["result"], "deployed");

    // Any Python started from now on would leave a trace.
    let venvs = node.lib().join("cache/venvs");
    let venv = fs::read_dir(&venvs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_symlink())
        .unwrap();
    let python = venv.join("bin/python");
    let real = fs::canonicalize(&python).unwrap();
    fs::remove_file(&python).unwrap();
    let trace = node.root().join("python-started");
    // `exec -a` keeps argv[0], by which Python finds its virtualenv.
    fs::write(
        &python,
        format!(
            "#!/bin/bash\ntouch {}\nexec -a \"$0\" {} \"$@\"\n",
            trace.display(),
            real.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&python, fs::Permissions::from_mode(0o755)).unwrap();

    let (run, json) = pull_json(&node);
    let run = run.success();
    assert!(
        run.stderr.trim_end().ends_with("troops: pull: nothing new"),
        "{}",
        run.stderr
    );
    assert_eq!(json["result"], "nothing");
    assert_eq!(outcome(&json, "origin")["reason"], "up to date");
    assert!(!trace.exists(), "a pull with nothing new started Python");
    assert_eq!(runs(&node), ["one"]);
    assert_eq!(node.status_json()["history"].as_array().unwrap().len(), 1);

    // The wrapper works: a real deploy goes through it.
    origin.commit(&[("deploy.py", &marker_deploy(&node, "two"))]);
    node.troops(["pull"]).success();
    assert!(trace.exists());
}

#[test]
fn diverged_remote_is_skipped_while_another_deploys() {
    let node = init_node();
    let good = DeployRepo::with(&marker_deploy(&node, "base"));
    node.add_remote("good", &good.path_str());
    node.troops(["pull"]).success();

    let rogue = DeployRepo::with(&marker_deploy(&node, "rogue"));
    node.add_remote("rogue", &rogue.path_str());
    good.commit(&[("deploy.py", &marker_deploy(&node, "next"))]);
    let (run, json) = pull_json(&node);
    let run = run.success();
    assert!(
        run.stderr.contains("`rogue`") && run.stderr.contains("has diverged"),
        "{}",
        run.stderr
    );
    assert_eq!(outcome(&json, "rogue")["outcome"], "nothing");
    assert_eq!(outcome(&json, "rogue")["reason"], "diverged");
    assert_eq!(outcome(&json, "good")["outcome"], "deployed");
    assert_eq!(runs(&node), ["base", "next"]);
    assert_eq!(node.branch(), Some(good.head()));
}

#[test]
fn unreachable_remote_is_a_warning_unless_it_is_the_only_one() {
    let node = init_node();
    node.add_remote("gone", "/nonexistent/deploy.git");
    let (run, json) = pull_json(&node);
    let run = run.failure();
    assert!(run.stderr.contains("cannot fetch `gone`"), "{}", run.stderr);
    assert!(
        run.stderr.contains("no remote could be fetched"),
        "{}",
        run.stderr
    );
    assert_eq!(json["result"], "failed");
    assert_eq!(outcome(&json, "gone")["outcome"], "failed");

    let origin = DeployRepo::with(&marker_deploy(&node, "one"));
    node.add_remote("origin", &origin.path_str());
    let (run, json) = pull_json(&node);
    run.success();
    assert_eq!(json["result"], "deployed");
    assert_eq!(outcome(&json, "gone")["outcome"], "failed");
}

#[test]
fn a_fetch_that_times_out_leaves_no_process_behind() {
    let node = init_node();
    // An ssh that never answers, with an argument no other process has.
    let marker = format!("2999.{}", std::process::id());
    let ssh = node.root().join("slow-ssh");
    fs::write(&ssh, format!("#!/bin/sh\nsleep {marker}\n")).unwrap();
    fs::set_permissions(&ssh, fs::Permissions::from_mode(0o755)).unwrap();
    node.add_remote("slow", "ssh://git.invalid/deploy.git");
    let run = Run::from(
        node.command(["pull", "--timeout", "1"])
            .env("GIT_SSH_COMMAND", &ssh)
            .output()
            .unwrap(),
    );
    let run = run.failure();
    assert!(run.stderr.contains("cannot fetch `slow`"), "{}", run.stderr);
    assert!(run.stderr.contains("timed out"), "{}", run.stderr);
    // Control: the ssh did start (its process was found while it ran), and
    // none of it outlives the pull.
    let running = || common::running(&marker);
    let started = std::time::Instant::now();
    let mut child = node
        .command(["pull", "--timeout", "2"])
        .env("GIT_SSH_COMMAND", &ssh)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = false;
    while child.try_wait().unwrap().is_none() {
        seen |= running();
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(seen, "the slow ssh never ran");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert!(!running(), "the fetch's ssh outlived the pull");
}

#[test]
fn failing_deploy_is_retried_and_a_fix_is_deployed() {
    let node = init_node();
    let origin = DeployRepo::with(&marker_deploy(&node, "good"));
    node.add_remote("origin", &origin.path_str());
    node.troops(["pull"]).success();
    let good = origin.head();

    origin.commit(&[("deploy.py", "raise SystemExit('broken')\n")]);
    for attempt in 1..=2 {
        let (run, json) = pull_json(&node);
        let run = run.failure();
        assert!(
            run.stderr.contains("the next pull retries"),
            "{}",
            run.stderr
        );
        assert_eq!(json["result"], "failed");
        assert!(
            outcome(&json, "origin")["reason"]
                .as_str()
                .unwrap()
                .contains("deploy.py exited with status 1")
        );
        assert_eq!(node.branch(), Some(good.clone()), "attempt {attempt}");
        assert_eq!(node.status_json()["history"][0]["result"], "failure");
    }
    assert_eq!(node.status_json()["history"].as_array().unwrap().len(), 3);

    origin.commit(&[("deploy.py", &marker_deploy(&node, "fixed"))]);
    node.troops(["pull"]).success();
    assert_eq!(node.branch(), Some(origin.head()));
    assert_eq!(runs(&node), ["good", "fixed"]);
}

#[test]
fn the_newer_of_two_linear_remotes_is_deployed() {
    let node = init_node();
    let older = DeployRepo::with(&marker_deploy(&node, "older"));
    let newer = DeployRepo::new();
    newer.git(&["pull", "--quiet", &older.path_str(), "master"]);
    newer.commit(&[("deploy.py", &marker_deploy(&node, "newer"))]);
    node.add_remote("a-older", &older.path_str());
    node.add_remote("b-newer", &newer.path_str());
    let (run, json) = pull_json(&node);
    let run = run.success();
    assert_eq!(runs(&node), ["newer"]);
    assert_eq!(outcome(&json, "b-newer")["outcome"], "deployed");
    let skipped = outcome(&json, "a-older")["reason"].as_str().unwrap();
    assert!(
        skipped.contains("`b-newer` has a newer commit"),
        "{skipped}"
    );
    assert!(run.stderr.contains("skipping `a-older`"), "{}", run.stderr);

    // A remote removed from root's configuration leaves no tracking ref
    // behind in root's repository; the other's stays.
    let tracking = || {
        node.root_git(&["for-each-ref", "--format=%(refname)", "refs/remotes/"])
            .stdout
    };
    assert!(
        tracking().contains("refs/remotes/a-older/master"),
        "{}",
        tracking()
    );
    common::clean_command("git", &node.home())
        .args(["config", "--file"])
        .arg(node.root().join("etc/troops/gitconfig"))
        .args(["--remove-section", "remote.a-older"])
        .status()
        .unwrap();
    node.troops(["pull"]).success();
    assert_eq!(tracking().trim(), "refs/remotes/b-newer/master");
}

#[test]
fn a_push_racing_a_pull_is_refused_with_a_reason_and_nothing_is_lost() {
    let node = init_node();
    let origin = DeployRepo::with(&marker_deploy(&node, "base"));
    node.add_remote("origin", &origin.path_str());
    node.troops(["pull"]).success();
    let pusher = DeployRepo::new();
    pusher.git(&["pull", "--quiet", &origin.path_str(), "master"]);

    origin.commit(&[(
        "deploy.py",
        &format!(
            "{}import time\nprint('working', flush=True)\ntime.sleep(2)\n",
            marker_deploy(&node, "pulled")
        ),
    )]);
    let mut pull = node
        .command(["pull"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = pull.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    assert!(
        lines
            .by_ref()
            .map(|l| l.unwrap())
            .any(|l| l.contains("working"))
    );
    std::thread::spawn(move || lines.for_each(drop));

    pusher.commit(&[("deploy.py", &marker_deploy(&node, "pushed"))]);
    let repo_path = node.lib().join("repo/main.git");
    let out = common::clean_command("git", &node.home())
        .arg("-C")
        .arg(pusher.path())
        .args(["push", repo_path.to_str().unwrap(), "master"])
        .output()
        .unwrap();
    let push = Run::from(out);
    assert!(pull.wait().unwrap().success());
    assert_ne!(push.code, Some(0));
    assert!(
        push.stderr.contains("moved to") && push.stderr.contains("while this push waited"),
        "{}",
        push.stderr
    );
    assert_eq!(node.branch(), Some(origin.head()));
    assert_eq!(node.status_json()["commit"], origin.head().as_str());
    assert_eq!(runs(&node), ["base", "pulled"]);
}

#[test]
fn rollout_holds_back_nodes_outside_the_fraction() {
    let node = init_node();
    let origin = DeployRepo::with(&marker_deploy(&node, "base"));
    node.add_remote("origin", &origin.path_str());
    node.troops(["pull"]).success();
    origin.commit(&[
        ("deploy.py", &marker_deploy(&node, "next")),
        ("troops.yaml", "rollout: 0\n"),
    ]);
    let (run, json) = pull_json(&node);
    run.success();
    assert_eq!(json["result"], "held-back");
    assert_eq!(outcome(&json, "origin")["outcome"], "held-back");
    assert_eq!(runs(&node), ["base"]);

    origin.commit(&[("troops.yaml", "rollout: 100%\n")]);
    let (_, json) = pull_json(&node);
    assert_eq!(json["result"], "deployed");
    assert_eq!(runs(&node), ["base", "next"]);

    origin.commit(&[("troops.yaml", "rollout: lots\n")]);
    let run = node.troops(["pull"]).failure();
    assert!(run.stderr.contains("invalid troops.yaml"), "{}", run.stderr);
}

#[test]
fn credentials_in_a_remote_url_are_never_shown() {
    let node = init_node();
    node.add_remote(
        "private",
        "https://deploy:s3cr3t-t0ken@127.0.0.1:9/deploy.git",
    );
    let (run, json) = pull_json(&node);
    let run = run.failure();
    let status = node.troops(["status", "--json"]).success();
    for (what, text) in [
        ("stderr", run.stderr.as_str()),
        ("--json", &json.to_string()),
        ("status --json", status.stdout.as_str()),
    ] {
        assert!(
            !text.contains("s3cr3t-t0ken"),
            "{what} shows the password:\n{text}"
        );
    }
    // Control: the remote is there, named, with the password masked.
    assert_eq!(
        outcome(&json, "private")["url"],
        "https://deploy:***@127.0.0.1:9/deploy.git"
    );
    assert!(
        run.stderr.contains("cannot fetch `private`"),
        "{}",
        run.stderr
    );
}
