//! `troops deploy` with real git repositories and real virtualenvs.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{DeployRepo, Node, running};

const HELLO: &str = "print('hello from deploy.py')\n";

#[test]
fn deploy_runs_deploy_py_and_records_it() {
    let node = Node::new();
    let repo = DeployRepo::with(
        "import os, pathlib\n\
         print('hello from', os.getcwd())\n\
         pathlib.Path(os.environ['TROOPS_ROOT'], 'done').write_text(os.environ['TROOPS_COMMIT'])\n",
    );
    let run = node.deploy(&repo).success();
    let sha = repo.head();
    let work = node.lib().join("work").join(&sha);
    assert!(
        run.stderr
            .contains(&format!("hello from {}", work.display())),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains(&format!("troops: deployed {}", &sha[..12]))
    );
    assert_eq!(fs::read_to_string(node.root().join("done")).unwrap(), sha);

    let status = node.status_json();
    assert_eq!(status["commit"], sha.as_str());
    let record = &status["history"][0];
    assert_eq!(record["commit"], sha.as_str());
    assert_eq!(record["trigger"], "manual");
    assert_eq!(record["result"], "success");
    assert_eq!(record["user"], "root");
    assert!(record["started_at"].as_str().unwrap().ends_with('Z'));
    assert!(record["duration_ms"].as_u64().is_some());
    let log = fs::read_to_string(record["log"].as_str().unwrap()).unwrap();
    assert!(log.contains("hello from"), "log: {log}");

    let table = node.troops(["status"]).success().stdout;
    assert!(table.contains(&format!("deployed: {sha}")), "{table}");
    assert!(
        table.contains("manual") && table.contains("success"),
        "{table}"
    );
}

fn assert_failed(node: &Node, run: &common::Run, reason: &str) {
    assert!(
        run.stderr.contains(reason),
        "expected `{reason}` in:\n{}",
        run.stderr
    );
    let status = node.status_json();
    assert_eq!(status["history"][0]["result"], "failure");
    let recorded = status["history"][0]["reason"].as_str().unwrap();
    assert!(recorded.contains(reason), "recorded reason: {recorded}");
}

#[test]
fn deploy_py_sees_the_commit_with_its_subdirectories_modes_and_symlinks() {
    use std::os::unix::fs::PermissionsExt;
    let node = Node::new();
    let repo = DeployRepo::new();
    repo.write("lib/helpers.py", "GREETING = 'hello from lib'\n");
    repo.write("bin/check", "#!/bin/sh\necho script ran\n");
    let script = repo.path().join("bin/check");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("lib/helpers.py", repo.path().join("helpers-link")).unwrap();
    repo.commit(&[
        (
            "deploy.py",
            "import os, subprocess, sys\n\
             sys.path.insert(0, 'lib')\n\
             from helpers import GREETING\n\
             print(GREETING)\n\
             print(subprocess.run(['bin/check'], capture_output=True, text=True).stdout.strip())\n\
             print('link to', os.readlink('helpers-link'))\n",
        ),
        ("requirements.txt", ""),
    ]);
    let run = node.deploy(&repo).success();
    for line in ["hello from lib", "script ran", "link to lib/helpers.py"] {
        assert!(run.stderr.contains(line), "no `{line}` in:\n{}", run.stderr);
    }
}

#[test]
fn failing_deploy_py_exits_1_and_keeps_the_last_good_commit() {
    let node = Node::new();
    let repo = DeployRepo::with(HELLO);
    node.deploy(&repo).success();
    let good = repo.head();
    repo.commit(&[(
        "deploy.py",
        "import sys\nprint('about to fail')\nsys.exit(3)\n",
    )]);
    let run = node.deploy(&repo).failure();
    assert_failed(&node, &run, "deploy.py exited with status 3");
    assert!(run.stderr.contains("about to fail"));
    assert_eq!(node.status_json()["commit"], good.as_str());
}

#[test]
fn exception_in_deploy_py_shows_the_traceback() {
    let node = Node::new();
    let repo =
        DeployRepo::with("def broken():\n    raise RuntimeError('disk on fire')\nbroken()\n");
    let run = node.deploy(&repo).failure();
    assert_failed(&node, &run, "deploy.py exited with status 1");
    assert!(
        run.stderr.contains("RuntimeError: disk on fire"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("deploy.py\", line 2"), "{}", run.stderr);
    assert!(
        !run.stderr.contains("troops/__main__.py") && !run.stderr.contains("<string>"),
        "runner frames leak:\n{}",
        run.stderr
    );
}

#[test]
fn syntax_error_fails_the_deploy() {
    let node = Node::new();
    let repo = DeployRepo::with("def (:\n");
    let run = node.deploy(&repo).failure();
    assert_failed(&node, &run, "deploy.py exited with status 1");
    assert!(run.stderr.contains("SyntaxError"), "{}", run.stderr);
}

#[test]
fn deploy_py_killed_by_a_signal_is_reported() {
    let node = Node::new();
    let repo = DeployRepo::with("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n");
    let run = node.deploy(&repo).failure();
    assert_failed(&node, &run, "deploy.py was killed by signal 9 (SIGKILL)");
}

#[test]
fn missing_deploy_py_is_reported() {
    let node = Node::new();
    let repo = DeployRepo::new();
    repo.commit(&[("README", "no deploy here\n")]);
    let run = node.deploy(&repo).failure();
    assert_failed(&node, &run, "has no deploy.py at its top");
    assert!(run.stderr.contains("hint: add deploy.py"), "{}", run.stderr);
}

#[test]
fn uninstallable_requirement_is_reported() {
    let node = Node::new();
    let repo = DeployRepo::new();
    repo.commit(&[
        ("deploy.py", HELLO),
        ("requirements.txt", "./no-such-package\n"),
    ]);
    let run = node.deploy(&repo).failure();
    assert_failed(&node, &run, "requirements.txt could not be installed");
    assert!(run.stderr.contains("no-such-package"), "{}", run.stderr);
    assert_eq!(node.venv_count(), 0, "a failed build must not be published");
}

#[test]
fn dirty_tree_deploys_the_commit_and_says_so() {
    let node = Node::new();
    let repo = DeployRepo::with("print('committed version')\n");
    repo.write("deploy.py", "print('uncommitted version')\n");
    let run = node.deploy(&repo).success();
    assert!(
        run.stderr.contains("uncommitted changes (deploy.py)"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("committed version"));
    assert!(!run.stderr.contains("uncommitted version"));
}

#[test]
fn rev_deploys_an_older_commit() {
    let node = Node::new();
    let repo = DeployRepo::with("print('version one')\n");
    let first = repo.head();
    repo.commit(&[("deploy.py", "print('version two')\n")]);
    let deploy_rev =
        |rev: &str| node.troops(["deploy", "--repository", &repo.path_str(), "--rev", rev]);
    let run = deploy_rev("HEAD~1").success();
    assert!(run.stderr.contains("version one"), "{}", run.stderr);
    assert_eq!(node.status_json()["commit"], first.as_str());

    let run = deploy_rev("nosuch").failure();
    assert!(
        run.stderr.contains("has no revision `nosuch`"),
        "{}",
        run.stderr
    );
    let run = node
        .troops(["deploy", "--repository", &repo.path_str(), "--rev=--all"])
        .failure();
    assert!(
        run.stderr.contains("looks like an option"),
        "{}",
        run.stderr
    );
}

#[test]
fn virtualenv_is_reused_until_requirements_change() {
    let node = Node::new();
    let repo = DeployRepo::with(HELLO);
    let first = node.deploy(&repo).success();
    assert!(first.stderr.contains("building a virtualenv"));
    assert_eq!(node.venv_count(), 1);

    repo.commit(&[("deploy.py", "print('new code, same requirements')\n")]);
    let second = node.deploy(&repo).success();
    assert!(
        !second.stderr.contains("building a virtualenv"),
        "{}",
        second.stderr
    );
    assert_eq!(node.venv_count(), 1);

    repo.commit(&[("requirements.txt", "# now pinned differently\n")]);
    let third = node.deploy(&repo).success();
    assert!(third.stderr.contains("building a virtualenv"));
    assert_eq!(node.venv_count(), 2);
}

#[test]
fn troops_module_is_importable_without_being_listed() {
    let node = Node::new();
    let repo = DeployRepo::with(
        "import troops, sys\nprint('prefix', sys.prefix)\nprint('host', troops.hostname())\n",
    );
    let run = node.deploy(&repo).success();
    assert!(
        run.stderr.contains("host shellbox-1.example.com"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains(&format!(
        "prefix {}",
        node.lib().join("cache/venvs").display()
    )));
}

#[test]
fn not_a_repository_and_empty_repository_are_user_errors() {
    let node = Node::new();
    let plain = tempfile::tempdir().unwrap();
    let run = node
        .troops(["deploy", "--repository", plain.path().to_str().unwrap()])
        .failure();
    assert!(
        run.stderr.contains("is not a git repository"),
        "{}",
        run.stderr
    );

    let empty = DeployRepo::new();
    let run = node
        .troops(["deploy", "--repository", &empty.path_str()])
        .failure();
    assert!(run.stderr.contains("has no HEAD"), "{}", run.stderr);

    let run = node.troops(["deploy"]).failure();
    assert!(
        run.stderr.contains("hint: run `troops init` first"),
        "{}",
        run.stderr
    );
}

/// deploy.py that appends its start and end times to a shared file.
fn slow_deploy(stamp_file: &std::path::Path, seconds: f64) -> String {
    format!(
        "import time\n\
         with open({path:?}, 'a') as f: f.write(f'start {{time.time()}}\\n')\n\
         print('working', flush=True)\n\
         time.sleep({seconds})\n\
         with open({path:?}, 'a') as f: f.write(f'end {{time.time()}}\\n')\n",
        path = stamp_file.to_str().unwrap()
    )
}

#[test]
fn concurrent_deploys_are_serialised() {
    let node = Node::new();
    let stamps = node.root().join("stamps");
    let repo = DeployRepo::with(&slow_deploy(&stamps, 1.0));
    node.deploy(&repo).success(); // builds the virtualenv
    fs::remove_file(&stamps).unwrap();

    let mut first = node
        .command(["deploy", "--repository", &repo.path_str()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_line(first.stderr.take().unwrap(), "working");
    let busy = node
        .troops(["deploy", "--no-wait", "--repository", &repo.path_str()])
        .failure();
    assert!(
        busy.stderr.contains("another deploy is in progress"),
        "{}",
        busy.stderr
    );
    let second = node.deploy(&repo).success();
    assert!(first.wait().unwrap().success());
    assert!(
        second.stderr.contains("waiting for the deploy in progress"),
        "{}",
        second.stderr
    );

    let text = fs::read_to_string(&stamps).unwrap();
    let events: Vec<&str> = text.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(
        events,
        ["start", "end", "start", "end"],
        "deploys overlapped:\n{text}"
    );
}

/// Reads `stderr` until a line contains `needle`, then keeps draining it.
fn wait_for_line(stderr: impl std::io::Read + Send + 'static, needle: &str) {
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    for line in lines.by_ref() {
        assert!(Instant::now() < deadline, "timed out waiting for {needle}");
        if line.unwrap().contains(needle) {
            break;
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
}

#[test]
fn sigkill_mid_deploy_then_a_clean_redeploy() {
    let node = Node::new();
    let stamps = node.root().join("stamps");
    let repo = DeployRepo::with(&slow_deploy(&stamps, 30.0));

    // Killed while building the virtualenv.
    let mut child = node
        .command(["deploy", "--repository", &repo.path_str()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_line(child.stderr.take().unwrap(), "building a virtualenv");
    child.kill().unwrap();
    child.wait().unwrap();

    // Killed while deploy.py runs.
    let mut child = node
        .command(["deploy", "--repository", &repo.path_str()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_line(child.stderr.take().unwrap(), "working");
    child.kill().unwrap();
    child.wait().unwrap();

    let status = node.status_json();
    for record in status["history"].as_array().unwrap() {
        assert_eq!(record["result"], "failure");
        assert!(
            record["reason"]
                .as_str()
                .unwrap()
                .starts_with("interrupted")
        );
    }
    assert!(status["commit"].is_null());

    let fixed = repo.commit(&[("deploy.py", HELLO)]);
    node.troops(["deploy", "--no-wait", "--repository", &repo.path_str()])
        .success();
    assert_eq!(node.status_json()["commit"], fixed.as_str());
    let leftovers: Vec<_> = ["cache/venvs", "work"]
        .iter()
        .flat_map(|d| fs::read_dir(node.lib().join(d)).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "half-made leftovers: {leftovers:?}");
    // deploy.py of the killed deploy died with troops instead of running on.
    std::thread::sleep(Duration::from_millis(300));
    let text = fs::read_to_string(&stamps).unwrap();
    assert!(!text.contains("end"), "killed deploy kept running:\n{text}");
}

#[test]
fn a_background_child_neither_holds_the_deploy_nor_outlives_it() {
    let node = Node::new();
    // A daemon deploy.py forgot to detach: it keeps the output open.
    let marker = format!("15.{}1", std::process::id());
    let repo = DeployRepo::with(&format!(
        "import subprocess\nsubprocess.Popen(['sleep', '{marker}'])\nprint('left a child running')\n"
    ));
    let started = Instant::now();
    let run = node.deploy(&repo).success();
    assert!(
        run.stderr.contains("left a child running"),
        "{}",
        run.stderr
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the deploy waited for its background child: {:?}",
        started.elapsed()
    );
    assert!(
        !running(&marker),
        "the background child outlived the deploy"
    );
    // Nor does it hold the lock.
    node.troops(
        ["deploy", "--no-wait", "--repository"]
            .map(String::from)
            .into_iter()
            .chain([repo.path_str()]),
    )
    .success();
}

#[test]
fn a_deploy_past_its_time_limit_is_stopped_and_recorded() {
    let node = Node::new();
    let marker = format!("60.{}2", std::process::id());
    let repo = DeployRepo::with(&format!(
        "import subprocess\nprint('working', flush=True)\nsubprocess.run(['sleep', '{marker}'])\n"
    ));
    let started = Instant::now();
    let run = node.troops(
        ["deploy", "--deploy-timeout", "2s", "--repository"]
            .map(String::from)
            .into_iter()
            .chain([repo.path_str()]),
    );
    let run = run.failure();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert!(run.stderr.contains("working"), "{}", run.stderr);
    assert!(run.stderr.contains("timed out"), "{}", run.stderr);
    assert!(
        !running(&marker),
        "the deploy's process outlived its time limit"
    );
    let record = &node.status_json()["history"][0];
    assert_eq!(record["result"], "failure");
    assert!(
        record["reason"].as_str().unwrap().starts_with("timed out"),
        "{record}"
    );
    assert!(node.status_json()["commit"].is_null());

    // The node's own limit, from troops.toml, and a bad one refused.
    node.write_config("deploy_timeout = \"1s\"\n");
    node.deploy(&repo).failure();
    assert!(!running(&marker));
    node.write_config("deploy_timeout = \"soon\"\n");
    let run = node.deploy(&repo).failure();
    assert!(
        run.stderr.contains("invalid `deploy_timeout`"),
        "{}",
        run.stderr
    );
}

#[test]
fn sigkill_of_troops_stops_what_deploy_py_started() {
    let node = Node::new();
    let marker = format!("300.{}3", std::process::id());
    let repo = DeployRepo::with(&format!(
        "import subprocess, time\nsubprocess.Popen(['sleep', '{marker}'])\n\
         print('working', flush=True)\ntime.sleep(300)\n"
    ));
    let mut child = node
        .command(["deploy", "--repository", &repo.path_str()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_line(child.stderr.take().unwrap(), "working");
    // Control: deploy.py's child is running.
    assert!(running(&marker));
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while running(&marker) {
        assert!(
            Instant::now() < deadline,
            "a child of deploy.py outlived troops"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        node.status_json()["history"][0]["result"],
        "failure",
        "the killed deploy is recorded as interrupted"
    );
}

#[test]
fn a_damaged_history_never_stops_a_deploy() {
    let node = Node::new();
    let repo = DeployRepo::with(HELLO);
    node.deploy(&repo).success();
    let history = node.lib().join("state/history");
    // A directory named like a record, an unreadable record, and garbage.
    fs::create_dir(history.join("0000000000001-1.json")).unwrap();
    fs::write(history.join("0000000000002-2.json"), "{ not json").unwrap();
    fs::write(history.join("0000000000003-3.json"), [0xff, 0xfe, 0x00]).unwrap();
    let run = node.deploy(&repo).success();
    assert!(
        run.stderr
            .contains("skipping the unreadable history record"),
        "{}",
        run.stderr
    );
    let status = node.status_json();
    assert_eq!(status["commit"], repo.head().as_str());
    assert_eq!(status["history"].as_array().unwrap().len(), 2);
}

/// A wheel of `mylib` 1.0 whose module says `version`, written by Python's
/// zipfile at `path` (same file name whatever the version says).
fn write_wheel(path: &std::path::Path, version: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let script = format!(
        "import zipfile\n\
         files = {{'mylib/__init__.py': 'VERSION = {version}\\n',\n\
         'mylib-1.0.dist-info/METADATA': 'Metadata-Version: 2.1\\nName: mylib\\nVersion: 1.0\\n',\n\
         'mylib-1.0.dist-info/WHEEL': 'Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n'}}\n\
         files['mylib-1.0.dist-info/RECORD'] = ''.join(f'{{name}},,\\n' for name in list(files) + ['mylib-1.0.dist-info/RECORD'])\n\
         with zipfile.ZipFile({path:?}, 'w') as wheel:\n\
         \x20   for name, text in files.items():\n\
         \x20       wheel.writestr(name, text)\n",
        path = path.to_str().unwrap()
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    common::Run::from(out).success();
}

#[test]
fn a_local_requirement_runs_each_commits_own_code() {
    let node = Node::new();
    let repo = DeployRepo::new();
    let wheel = repo.path().join("lib/mylib-1.0-py3-none-any.whl");
    let deploy_py = "import mylib\nprint('library version', mylib.VERSION)\n";
    let mut commits = Vec::new();
    for version in 1..=3 {
        write_wheel(&wheel, version);
        commits.push(repo.commit(&[
            ("deploy.py", deploy_py),
            ("requirements.txt", "./lib/mylib-1.0-py3-none-any.whl\n"),
        ]));
        let run = node.deploy(&repo).success();
        assert!(
            run.stderr.contains(&format!("library version {version}")),
            "commit {version} ran another commit's library:\n{}",
            run.stderr
        );
    }
    // An unchanged commit reuses its own environment.
    let run = node
        .troops(
            ["deploy", "--rev", &commits[1], "--repository"]
                .map(String::from)
                .into_iter()
                .chain([repo.path_str()]),
        )
        .success();
    assert!(run.stderr.contains("library version 2"), "{}", run.stderr);
    assert!(
        !run.stderr.contains("building a virtualenv"),
        "{}",
        run.stderr
    );
}

/// The guard that stops a deploy's process group when troops dies leaves
/// as soon as troops says the run is over: a group id it watched may since
/// belong to another deploy (ids are reused), which it must not stop.
#[test]
fn a_guard_told_the_run_is_over_stops_nothing() {
    use std::io::Write;
    use std::os::unix::process::CommandExt;
    for (said, survives) in [(&b"done"[..], true), (&b""[..], false)] {
        let marker = format!("300.{}{}", std::process::id(), said.len() + 4);
        let mut group = std::process::Command::new("sleep")
            .arg(&marker)
            .process_group(0)
            .spawn()
            .unwrap();
        let mut guard =
            common::clean_command(env!("CARGO_BIN_EXE_troops"), std::path::Path::new("/"))
                .args(["guard", "--group", &group.id().to_string()])
                .stdin(Stdio::piped())
                .spawn()
                .unwrap();
        let mut pipe = guard.stdin.take().unwrap();
        pipe.write_all(said).unwrap();
        drop(pipe);
        assert!(guard.wait().unwrap().success());
        assert_eq!(running(&marker), survives, "told {said:?}");
        let _ = group.kill();
        let _ = group.wait();
    }
}
