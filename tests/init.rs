//! `troops init`: the node layout, owners and modes, idempotence.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::Node;

fn mode(path: &std::path::Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn init_creates_the_layout_and_is_idempotent() {
    let node = Node::new();
    node.troops(["init"]).success();
    let lib = node.lib();
    let repo = lib.join("repo/main.git");
    let bare = common::clean_command("git", &node.home())
        .arg("--git-dir")
        .arg(&repo)
        .args(["rev-parse", "--is-bare-repository"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&bare.stdout).trim(), "true");
    let config = fs::read_to_string(repo.join("config")).unwrap();
    assert!(config.contains("sharedrepository = 0660"), "{config}");
    assert!(config.contains("denyNonFastForwards = false"), "{config}");
    assert_eq!(
        fs::read_to_string(repo.join("HEAD")).unwrap(),
        "ref: refs/heads/master\n"
    );
    assert_eq!(
        mode(&repo.join("refs")) & 0o2070,
        0o2070,
        "repository not group-shared"
    );

    let hook = fs::read_to_string(repo.join("hooks/pre-receive")).unwrap();
    assert!(hook.contains("hook pre-receive"), "{hook}");
    assert_eq!(mode(&repo.join("hooks/pre-receive")), 0o755);
    assert_eq!(
        mode(&repo.join("hooks")),
        0o755,
        "members must not change hooks"
    );
    assert_eq!(
        mode(&repo.join("config")),
        0o640,
        "members must not change config"
    );

    // Root's repository: only root writes it, and it runs no hooks.
    let deploy = lib.join("deploy.git");
    assert_eq!(fs::metadata(&deploy).unwrap().uid(), 0);
    assert_eq!(mode(&deploy), 0o700);
    assert_eq!(
        mode(&deploy.join("objects")) & 0o022,
        0,
        "group or others may write"
    );
    assert!(!deploy.join("hooks").exists());

    let key = lib.join("ssh/id_ed25519");
    assert_eq!(mode(&lib.join("ssh")), 0o700);
    assert_eq!(mode(&key), 0o600);
    assert!(
        fs::read_to_string(key.with_extension("pub"))
            .unwrap()
            .starts_with("ssh-ed25519 ")
    );
    assert_eq!(fs::metadata(&key).unwrap().uid(), 0);
    assert_eq!(mode(&lib), 0o750);
    assert_eq!(mode(&lib.join("state")), 0o750);

    let pub_before = fs::read(key.with_extension("pub")).unwrap();
    fs::set_permissions(lib.join("state"), fs::Permissions::from_mode(0o777)).unwrap();
    node.troops(["init"]).success();
    assert_eq!(
        fs::read(key.with_extension("pub")).unwrap(),
        pub_before,
        "key replaced"
    );
    assert_eq!(mode(&lib.join("state")), 0o750, "mode not repaired");
}

#[test]
fn init_uses_the_configured_branch() {
    let node = Node::new();
    node.write_config("branch = \"production\"\n");
    node.troops(["init"]).success();
    let head = fs::read_to_string(node.lib().join("repo/main.git/HEAD")).unwrap();
    assert_eq!(head, "ref: refs/heads/production\n");

    node.write_config("branch = \"--upload-pack=evil\"\n");
    let run = node.troops(["init"]).failure();
    assert!(run.stderr.contains("invalid `branch`"), "{}", run.stderr);
}
