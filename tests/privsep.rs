//! The trust boundary: with `signatures = "ssh"`, nothing a member of the
//! group `troops` writes makes root run an unsigned commit or change a file
//! root owns. Each test plays one attack as the member `alice` (who has no
//! sudo beyond the troops rule) on a namespaced node, checks that the
//! attack's payload did reach the node (so a test cannot pass because
//! nothing arrived), that root never ran it, and that the node then deploys
//! a signed commit as usual.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::cluster::{Client, SshNode};
use common::signer::Signer;
use common::{DeployRepo, Run};

/// Root writes a marker into /etc/troops, which only root can write.
fn payload(tag: &str) -> String {
    format!("import os\nopen('/etc/troops/pwned-{tag}', 'w').write(str(os.getuid()))\n")
}

const SIGNED: &str = "print('signed deploy ran')\n";

struct Scene {
    client: Client,
    node: SshNode,
    signer: Signer,
    repo: DeployRepo,
    _keys: tempfile::TempDir,
}

impl Scene {
    /// A node that requires SSH signatures, with one signed commit deployed.
    fn start(hostname: &str) -> Scene {
        let client = Client::new();
        let node = SshNode::start(hostname, &client);
        let keys = tempfile::tempdir().unwrap();
        let signer = Signer::ssh(keys.path(), "trusted");
        let etc = node.dir.path().join("etc/troops");
        signer.trust(&etc);
        fs::write(etc.join("troops.toml"), "signatures = \"ssh\"\n").unwrap();
        let repo = DeployRepo::new();
        signer.commit(&repo, &[("deploy.py", SIGNED), ("requirements.txt", "")]);
        let scene = Scene {
            client,
            node,
            signer,
            repo,
            _keys: keys,
        };
        scene.push("master").success();
        assert_eq!(scene.node.deployed(), Some(scene.repo.head()));
        scene
    }

    /// `git push` of HEAD to `refspec`'s destination, as alice.
    fn push(&self, dest: &str) -> Run {
        let out = self
            .client
            .command("git", "alice")
            .arg("-C")
            .arg(self.repo.path())
            .args(["push", "--force", &self.node.url("alice")])
            .arg(format!("HEAD:{dest}"))
            .output()
            .unwrap();
        Run::from(out)
    }

    /// A shell command line run by alice on the node.
    fn alice(&self, script: &str) -> Run {
        self.client.ssh(&self.node, "alice", &[script])
    }

    /// An unsigned commit carrying `payload(tag)`, on top of HEAD.
    fn unsigned(&self, tag: &str) -> String {
        self.repo.commit(&[("deploy.py", &payload(tag))])
    }

    /// A new signed commit pushed to the deploy branch must deploy.
    #[track_caller]
    fn still_deploys_signed(&self, round: u32) {
        self.signer.commit(
            &self.repo,
            &[("deploy.py", &format!("print('signed round {round}')\n"))],
        );
        let run = self.push("master");
        assert_eq!(run.code, Some(0), "signed push refused:\n{}", run.stderr);
        assert!(
            run.stderr.contains(&format!("signed round {round}")),
            "{}",
            run.stderr
        );
        assert_eq!(self.node.deployed(), Some(self.repo.head()));
        assert_eq!(self.node.branch(), Some(self.repo.head()));
    }

    /// What root's deploys would have written (none, if the boundary holds).
    #[track_caller]
    fn assert_nothing_ran(&self) {
        let etc = self.node.dir.path().join("etc/troops");
        let pwned: Vec<_> = fs::read_dir(&etc)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("pwned"))
            .collect();
        assert!(pwned.is_empty(), "root ran the member's code: {pwned:?}");
    }

    /// The members' repository holds `commit` (the payload arrived).
    #[track_caller]
    fn assert_arrived(&self, commit: &str) {
        self.node.git(&["cat-file", "-e", commit]).success();
    }

    fn redeploy(&self) -> Run {
        let exe = self.node.troops();
        self.alice(&format!("{exe} --root / deploy"))
    }
}

#[test]
fn without_signatures_a_member_may_deploy_anything() {
    // The documented model, and the control that the payload works.
    let client = Client::new();
    let node = SshNode::start("open-node.example.com", &client);
    let repo = DeployRepo::with(&payload("open"));
    client.push(&node, "alice", repo.path(), &[]).success();
    let marker = node.dir.path().join("etc/troops/pwned-open");
    assert_eq!(fs::read_to_string(marker).unwrap(), "0", "ran as root");
}

#[test]
fn an_unsigned_push_is_refused() {
    let scene = Scene::start("unsigned.example.com");
    let signed = scene.repo.head();
    let bad = scene.unsigned("push");
    let run = scene.push("master");
    assert_ne!(run.code, Some(0));
    assert!(run.stderr.contains("is not signed"), "{}", run.stderr);
    scene.assert_nothing_ran();
    assert_eq!(scene.node.branch(), Some(signed.clone()));
    // Control: stored on another branch, the payload is on the node.
    scene.push("side").success();
    scene.assert_arrived(&bad);
    scene.repo.git(&["reset", "--quiet", "--hard", &signed]);
    scene.still_deploys_signed(1);
    scene.assert_nothing_ran();
}

#[test]
fn a_replace_ref_does_not_substitute_what_root_exports() {
    let scene = Scene::start("replace.example.com");
    let signed = scene.repo.head();
    let bad = scene.unsigned("replace");
    scene.push("side").success();
    // refs/replace/SIGNED -> BAD: git substitutes BAD wherever SIGNED is read.
    let out = scene
        .client
        .command("git", "alice")
        .arg("-C")
        .arg(scene.repo.path())
        .args(["push", &scene.node.url("alice")])
        .arg(format!("{bad}:refs/replace/{signed}"))
        .output()
        .unwrap();
    Run::from(out).success();
    // Control: in the members' repository the replacement is in force.
    let shown = scene.node.git(&[
        "-c",
        "core.useReplaceRefs=true",
        "show",
        &format!("{signed}:deploy.py"),
    ]);
    assert!(shown.stdout.contains("pwned-replace"), "{}", shown.stdout);
    scene.assert_arrived(&bad);

    let run = scene.redeploy();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stderr.contains("signed deploy ran"), "{}", run.stderr);
    scene.assert_nothing_ran();
    scene.repo.git(&["reset", "--quiet", "--hard", &signed]);
    scene.still_deploys_signed(1);
    scene.assert_nothing_ran();
}

#[test]
fn a_members_config_and_hooks_choose_no_program_root_runs() {
    let scene = Scene::start("config.example.com");
    // A program that says who ran it, and writes root's marker if root did.
    let evil = "/tmp/troops-evil-program";
    let script = format!(
        "cat > {evil} <<'EOF'\n#!/bin/sh\nid -u >> /tmp/troops-evil-ran\necho x > /etc/troops/pwned-program\nexit 0\nEOF\n\
         chmod 755 {evil}\n\
         cd /var/lib/troops/repo/main.git\n\
         cp config config.new && mv config config.old && mv config.new config\n\
         for key in gpg.program gpg.ssh.program core.sshCommand core.fsmonitor uploadpack.packObjectsHook core.alternateRefsCommand; do\n\
           git config --file config \"$key\" {evil}\n\
         done\n\
         git config --file config include.path /etc/troops/gitconfig\n\
         git config --file config remote.origin.url 'ext::sh -c {evil}'\n\
         git config --file config remote.opt.url '--upload-pack={evil}'\n\
         git config --file config remote.local.url /srv/elsewhere.git\n\
         mkdir -p hooks.evil && for h in reference-transaction post-update update pre-auto-gc; do\n\
           cp {evil} hooks.evil/$h; done\n\
         mv hooks hooks.old && mv hooks.evil hooks && cp hooks.old/pre-receive hooks/pre-receive"
    );
    scene.alice(&script).success();
    // Control: the planted configuration is what the members' git now reads.
    let config = scene.node.git(&["config", "gpg.ssh.program"]);
    assert_eq!(config.stdout.trim(), evil);
    assert!(
        scene
            .node
            .lib()
            .join("repo/main.git/hooks/reference-transaction")
            .exists()
    );

    // Root: a signed push (signature check, ref update), a re-deploy, a pull
    // that reads the members' remotes, and init, as the package runs it.
    scene.still_deploys_signed(1);
    scene.redeploy().success();
    let pull = scene.node.troops_inside(&["pull"]);
    for name in ["origin", "opt", "local"] {
        assert!(
            pull.stderr.contains(&format!("remote `{name}`")) && pull.stderr.contains("is ignored"),
            "{name}: {}",
            pull.stderr
        );
    }
    scene.node.troops_inside(&["init"]).success();
    scene.assert_nothing_ran();
    let ran = fs::read_to_string("/tmp/troops-evil-ran").unwrap_or_default();
    assert!(
        !ran.lines().any(|uid| uid == "0"),
        "root ran the program: {ran}"
    );
    scene.still_deploys_signed(2);
}

#[test]
fn an_overwritten_loose_object_is_caught_by_its_hash() {
    let scene = Scene::start("objects.example.com");
    let base = scene.repo.head();
    let signed = scene.signer.commit(
        &scene.repo,
        &[("deploy.py", "print('second signed commit')\n")],
    );
    scene.push("side").success();
    let blob = scene
        .repo
        .git(&["rev-parse", &format!("{signed}:deploy.py")]);
    // Replace the signed blob's loose object with the payload under its name.
    let script = format!(
        "cd /var/lib/troops/repo/main.git && python3 -c \"
import zlib, os
evil = open('/dev/stdin', 'rb').read()
path = 'objects/{}/{}'
os.remove(path)
open(path, 'wb').write(zlib.compress(b'blob %d\\\\0' % len(evil) + evil))
\" <<'EOF'\n{}EOF",
        &blob[..2],
        &blob[2..],
        payload("object")
    );
    scene.alice(&script).success();
    // Control: the members' git serves the payload as the signed blob.
    let shown = scene.node.git(&["cat-file", "-p", &blob]);
    assert!(shown.stdout.contains("pwned-object"), "{}", shown.stdout);

    let run = scene.push("master");
    assert_ne!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stderr.contains("do not verify"), "{}", run.stderr);
    scene.assert_nothing_ran();
    assert_eq!(scene.node.branch(), Some(base.clone()));
    scene.repo.git(&["reset", "--quiet", "--hard", &base]);
    scene.still_deploys_signed(1);
}

#[test]
fn moving_the_members_branch_changes_nothing_root_runs() {
    let scene = Scene::start("update-ref.example.com");
    let signed = scene.repo.head();
    let bad = scene.unsigned("branch");
    scene.push("side").success();
    scene
        .alice(&format!(
            "git --git-dir=/var/lib/troops/repo/main.git update-ref refs/heads/master {bad}"
        ))
        .success();
    // Control: the members' branch names the payload.
    let members = scene.node.git(&["rev-parse", "refs/heads/master"]);
    assert_eq!(members.stdout.trim(), bad);

    let exe = scene.node.troops();
    scene
        .alice(&format!("sudo -n {exe} --root / deploy"))
        .success();
    // Root's repository is root's alone: a member lists roles from a clone.
    let roles = scene.alice(&format!("{exe} --root / roles"));
    assert_eq!(roles.code, Some(1), "{}", roles.stderr);
    assert!(roles.stderr.contains("is root's alone"), "{}", roles.stderr);
    scene.node.troops_inside(&["roles"]).success();
    scene.node.troops_inside(&["hosts", "web"]).success();
    scene.assert_nothing_ran();
    assert_eq!(scene.node.deployed(), Some(signed.clone()));
    scene.repo.git(&["reset", "--quiet", "--hard", &signed]);
    scene.still_deploys_signed(1);
}

#[test]
fn roles_refuse_an_unsigned_commit_once_signatures_are_required() {
    let client = Client::new();
    let node = SshNode::start("roles.example.com", &client);
    let repo = DeployRepo::with(&format!(
        "import troops\n{}troops.activate_role('web')\n",
        "import os\nif os.environ.get('TROOPS_TRIGGER') == 'inspect':\n    open('/etc/troops/pwned-roles', 'w').write('x')\n"
    ));
    client.push(&node, "alice", repo.path(), &[]).success();
    // Control: before signatures are required, roles read the top level.
    assert_eq!(node.troops_inside(&["roles"]).success().stdout, "web\n");
    let marker = node.dir.path().join("etc/troops/pwned-roles");
    assert!(marker.exists());
    fs::remove_file(&marker).unwrap();

    let keys = tempfile::tempdir().unwrap();
    Signer::ssh(keys.path(), "trusted").trust(&node.dir.path().join("etc/troops"));
    fs::write(
        node.dir.path().join("etc/troops/troops.toml"),
        "signatures = \"ssh\"\n",
    )
    .unwrap();
    for args in [&["roles"][..], &["hosts", "web"][..]] {
        let run = node.troops_inside(args);
        assert_eq!(run.code, Some(1), "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains("is not signed"), "{}", run.stderr);
    }
    assert!(!marker.exists(), "troops roles ran unsigned code as root");
}

#[test]
fn planted_symlinks_are_replaced_or_refused_never_followed() {
    let scene = Scene::start("links.example.com");
    // A root-only victim the member may name but not touch.
    let victim = scene.node.dir.path().join("etc/troops/victim");
    fs::create_dir(&victim).unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(victim.join("file"), "root's\n").unwrap();
    fs::set_permissions(victim.join("file"), fs::Permissions::from_mode(0o600)).unwrap();
    let script = "cd /var/lib/troops/repo/main.git && \
        mv hooks hooks.old && mkdir hooks && \
        ln -s /etc/troops/victim/file hooks/pre-receive && \
        mv config config.old && ln -s /etc/troops/victim/file config && \
        mkdir -p logs/refs/heads && ln -sf /etc/troops/victim/file logs/refs/heads/master";
    scene.alice(script).success();
    // Control: the links are in place.
    let repo = scene.node.lib().join("repo/main.git");
    assert!(
        fs::symlink_metadata(repo.join("hooks/pre-receive"))
            .unwrap()
            .is_symlink()
    );
    assert!(
        fs::symlink_metadata(repo.join("config"))
            .unwrap()
            .is_symlink()
    );

    scene.node.troops_inside(&["pull"]);
    scene.node.troops_inside(&["init"]).success();
    let file = victim.join("file");
    assert_eq!(fs::read_to_string(&file).unwrap(), "root's\n");
    let meta = fs::metadata(&file).unwrap();
    assert_eq!(
        (meta.mode() & 0o7777, meta.uid(), meta.gid()),
        (0o600, 0, 0)
    );
    let dir = fs::metadata(&victim).unwrap();
    assert_eq!((dir.mode() & 0o7777, dir.gid()), (0o700, 0));
    // init put a real hook back in place of the link.
    assert!(
        !fs::symlink_metadata(repo.join("hooks/pre-receive"))
            .unwrap()
            .is_symlink()
    );
    scene
        .alice("cd /var/lib/troops/repo/main.git && rm config logs/refs/heads/master && mv config.old config")
        .success();
    scene.still_deploys_signed(1);
    scene.assert_nothing_ran();
}

#[test]
fn running_roots_side_by_hand_deploys_nothing_unsigned() {
    let scene = Scene::start("by-hand.example.com");
    let base = scene.repo.head();
    let bad = scene.unsigned("by-hand");
    scene.push("side").success();
    let script = format!(
        "{{ printf 'update {base} {bad} refs/heads/master\\n\\n'; \
         printf '{bad}\\n--not\\n{base}\\n' | git --git-dir=/var/lib/troops/repo/main.git pack-objects --revs --stdout; }} \
         | sudo -n {} --root / hook receive",
        scene.node.troops()
    );
    let run = scene.alice(&script);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("is not signed"), "{}", run.stderr);
    // Control: root did get the commit (it names it as unsigned); and the
    // refused objects went with their quarantine.
    assert!(
        run.stderr
            .contains(&format!("commit {} is not signed", &bad[..12])),
        "{}",
        run.stderr
    );
    let root_git = |args: &[&str]| {
        Run::from(
            common::clean_command("git", scene.node.dir.path())
                .arg("--git-dir")
                .arg(scene.node.lib().join("deploy.git"))
                .args(args)
                .output()
                .unwrap(),
        )
    };
    assert_ne!(root_git(&["cat-file", "-e", &bad]).code, Some(0));
    let objects = fs::read_dir(scene.node.lib().join("deploy.git/objects")).unwrap();
    assert!(
        !objects
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().starts_with("incoming-")),
        "a refused push left its objects behind"
    );
    scene.assert_nothing_ran();
    assert_eq!(scene.node.branch(), Some(base.clone()));
    scene.repo.git(&["reset", "--quiet", "--hard", &base]);
    scene.still_deploys_signed(1);
}

#[test]
fn a_reader_that_stops_reading_does_not_hold_the_deploy_lock() {
    let scene = Scene::start("stalled.example.com");
    // Signed, and loud (20 MB) when re-deployed by hand.
    let loud = "import os\nif os.environ['TROOPS_TRIGGER'] == 'manual':\n    \
                for i in range(20000):\n        print('x' * 1000)\nprint('done')\n";
    scene.signer.commit(&scene.repo, &[("deploy.py", loud)]);
    scene.push("master").success();
    let records = |node: &SshNode| node.status()["history"].as_array().unwrap().clone();
    let before = records(&scene.node).len();
    // The member re-deploys and never reads what it prints.
    let exe = scene.node.troops();
    scene
        .alice(&format!(
            "(sudo -n {exe} --root / deploy 2>&1 | sleep 120) >/dev/null 2>&1 </dev/null &"
        ))
        .success();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let finished = loop {
        let history = records(&scene.node);
        if history.len() > before && history[0]["result"] != "running" {
            break history[0].clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the deploy stalled with its reader: {history:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(finished["result"], "success", "{finished}");
    assert_eq!(finished["trigger"], "manual");
    // The lock is free within seconds (stderr gets a few to drain), and
    // the log has every line the terminal missed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while scene.node.troops_inside(&["deploy", "--no-wait"]).code != Some(0) {
        assert!(
            std::time::Instant::now() < deadline,
            "the deploy lock is still held"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let log = fs::read_to_string(
        scene
            .node
            .dir
            .path()
            .join(finished["log"].as_str().unwrap().trim_start_matches('/')),
    )
    .unwrap();
    assert_eq!(log.lines().filter(|l| l.len() == 1000).count(), 20000);
}

#[test]
fn root_imports_nothing_from_the_directory_it_was_started_in() {
    let scene = Scene::start("cwd.example.com");
    // Python's `-m` puts the working directory first on the import path, and
    // sudo keeps the caller's: a member's venv.py there, in the members'
    // repository (where git runs the hook) and in their home.
    let plant = "mkdir -p ~/x && cat > ~/x/venv.py <<'EOF'\n\
        import os\n\
        try:\n    open('/etc/troops/pwned-cwd', 'w')\nexcept OSError:\n    pass\n\
        EOF\n\
        for d in ~/x /var/lib/troops/repo/main.git; do\n\
          cp ~/x/venv.py $d/venv.py 2>/dev/null; cp ~/x/venv.py $d/ensurepip.py; done";
    scene.alice(plant).success();
    // Control: the planted module is what Python imports from there.
    let control = scene.alice("cd ~/x && python3 -c 'import venv; print(venv.__file__)'");
    assert!(control.stdout.contains("/x/venv.py"), "{}", control.stdout);

    // New requirements: root builds a virtualenv for this push.
    scene.signer.commit(
        &scene.repo,
        &[("requirements.txt", "# round 1\n"), ("deploy.py", SIGNED)],
    );
    let run = scene.push("master");
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr.contains("building a virtualenv"),
        "{}",
        run.stderr
    );
    // And root's side of the hook run by hand from the member's directory.
    let base = scene.repo.head();
    let next = scene
        .signer
        .commit(&scene.repo, &[("requirements.txt", "# round 2\n")]);
    scene.push("side").success();
    let script = format!(
        "cd ~/x && {{ printf 'update {base} {next} refs/heads/master\\n\\n'; \
         printf '{next}\\n--not\\n{base}\\n' | git --git-dir=/var/lib/troops/repo/main.git pack-objects --revs --stdout; }} \
         | sudo -n {} --root / hook receive",
        scene.node.troops()
    );
    let run = scene.alice(&script);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr.contains("building a virtualenv"),
        "{}",
        run.stderr
    );
    scene.assert_nothing_ran();
}
